"""Executable reproduction of "Ablation is Not Enough to Emulate DPO" (Yang et al. 2024) on offline models.

Modules, lowest layer first: ``paths`` (data and cache folders), ``architectures`` (the table of where each
site lives per model family), ``models`` (named models and loading), ``data`` (offline data sets),
``profiles`` (run sizes), ``activations`` (nnsight reads), ``probe`` (the toxicity probe), ``neurons``
(value vectors vs the probe, logit lens), ``plots``, ``provenance``, and ``book`` (the build driver).
"""
