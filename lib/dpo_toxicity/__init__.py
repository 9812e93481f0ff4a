"""Executable reproduction of "Ablation is Not Enough to Emulate DPO" (Yang et al. 2024) on offline models.

Two layers, imports one way. The top-level modules compute the paper's results, lowest layer first: ``paths``
(data and cache folders), ``result_cache`` (results kept under a hash of their inputs and code, so long runs
resume), ``architectures`` (the table of where each site lives per model family), ``models`` (named models and
loading), ``data`` (offline data sets), ``profiles`` (run sizes), ``activations`` (nnsight reads), ``probe``
(the toxicity probe), ``neurons`` (value vectors vs the probe, logit lens), ``scoring`` (toxicity scorers),
``interventions`` (neuron and residual edits through nnsight), ``evaluation`` (toxicity, perplexity, F1),
``pairs`` (DPO preference pairs), ``dpo`` (DPO training with trl), ``attribution`` and ``null_control``
(per-neuron reductions, groups, random-direction controls), ``run_artefacts`` (one model's probe, DPO model
and neuron statistics, cached), ``patching`` (group activation patching), ``mediation`` (token-wise patching on
a teacher-forced margin), ``editing`` (activation editing), ``plots`` and ``attribution_plots``, the claims
(``paper_claims``, ``verdicts``) and ``data_sources`` (where the offline data comes from, and fetching it).

The subpackage :mod:`dpo_toxicity.book` turns them into the book (the build driver, runs, the table of
contents, provenance, glue and the claims ledger); it imports the science, never the other way round.
"""
