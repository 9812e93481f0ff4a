"""``python -m dpo_toxicity.book [--profile ...] [--model ...] [--chapters ...] [--results] [--site RUN]``:
the build driver's command line (:func:`dpo_toxicity.book.build.main`)."""

from .build import main

main()
