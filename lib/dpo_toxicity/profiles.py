"""Run profiles: the sizes a chapter runs at, chosen by one name.

``ci`` fits the whole book into CI on 2 CPU cores (a fixed, seeded subset of every data set); ``full`` runs
at the paper's sizes (or the largest the offline data allows), for long CPU runs or a user's GPU. Every
chapter takes the profile's name as a papermill parameter and reads its sizes from here, so the sizes of a
run are stated in one place and printed in each chapter's provenance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class UnknownProfileError(ValueError):
    """The requested profile name is not in :data:`PROFILES`."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one run. ``None`` means "all the data there is".

    ``probe_train_per_class`` / ``probe_test_per_class``: Jigsaw comments per label (balanced) used to fit
    and to evaluate the probe; ``probe_max_tokens``: tokens kept per comment; ``batch_size``: texts per
    forward pass. ``eval_prompts``: challenge prompts scored for toxicity (a seeded subset of the 1,199);
    ``perplexity_windows``: 1,024-token WikiText-2 test windows; ``f1_paragraphs``: WikiText-2 validation
    paragraphs for F1. ``pair_prompts``: DPO preference pairs generated; ``generator_trial_prompts``: prompts
    on which the rejected-side generators are compared; ``pair_new_tokens``: continuation length of a pair.
    ``table_eval_prompts``, ``table_perplexity_windows``, ``table_f1_paragraphs``: the smaller evaluation of
    chapters whose tables have many rows (one evaluation per intervention).
    """

    name: str
    probe_train_per_class: int | None
    probe_test_per_class: int | None
    probe_max_tokens: int
    batch_size: int
    eval_prompts: int | None
    perplexity_windows: int | None
    f1_paragraphs: int | None
    pair_prompts: int
    generator_trial_prompts: int
    pair_new_tokens: int
    table_eval_prompts: int | None
    table_perplexity_windows: int | None
    table_f1_paragraphs: int | None

    def sizes(self) -> dict:
        """The profile as a plain mapping, for provenance tables."""
        return asdict(self)


CI = Profile(
    name="ci", probe_train_per_class=1000, probe_test_per_class=300, probe_max_tokens=64, batch_size=16,
    eval_prompts=200, perplexity_windows=8, f1_paragraphs=100,
    pair_prompts=240, generator_trial_prompts=32, pair_new_tokens=24,
    table_eval_prompts=64, table_perplexity_windows=2, table_f1_paragraphs=32,
)
FULL = Profile(
    name="full", probe_train_per_class=2000, probe_test_per_class=600, probe_max_tokens=128, batch_size=32,
    eval_prompts=None, perplexity_windows=None, f1_paragraphs=None,
    pair_prompts=2000, generator_trial_prompts=200, pair_new_tokens=32,
    table_eval_prompts=None, table_perplexity_windows=None, table_f1_paragraphs=None,
)

PROFILES: dict[str, Profile] = {profile.name: profile for profile in (CI, FULL)}


def profile(name: str) -> Profile:
    """The profile called ``name``; :class:`UnknownProfileError` lists the known ones otherwise."""
    if name not in PROFILES:
        raise UnknownProfileError(f"Unknown profile {name!r}; use one of {sorted(PROFILES)} (e.g. --profile ci).")
    return PROFILES[name]
