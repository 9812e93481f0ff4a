"""The names of the files a run saves, in one table: what each file is, and which module writes it.

A run (one model under one profile) keeps the artefacts later chapters reload in
``paths.artefact_dir(model, profile)`` (``.cache/artefacts/<model>/<profile>/``); a DPO model has its own cache
folder, ``dpo.dpo_folder(...)`` (``.cache/dpo/<model>-<key>/``), keyed by its base model, pairs and settings. The
modules that write and read a file import its name from here, so that a reader looking at a cache folder finds
every file's meaning in one place::

    artefact_dir("smollm2-135m", "ci") / NEURON_TABLE_FILE   # chapter 3's per-neuron table of that run

Names of files that only live while a function runs (DPO's weights set aside on disk) stay in that function;
the DPO model's weights and tokenizer carry the names ``save_pretrained`` gives them.
"""

# In a run's artefact folder.
PROBE_FILE = "probe.npz"  # the toxicity probe, with the weights and Jigsaw sample it was fitted on (chapter 1)
PAIRS_FILE = "pairs.jsonl"  # the preference pairs DPO trains on (run_artefacts.generate_pairs, chapter 2)
HELDOUT_PAIRS_FILE = "heldout_pairs.jsonl"  # pairs on other prompts, which DPO never trains on (the mediation's)
BASE_ACTIVATIONS_FILE = "activations_base.pt"  # the base model's mean neuron activations (run_artefacts)
DPO_ACTIVATIONS_FILE = "activations_dpo.pt"  # the DPO model's mean neuron activations (run_artefacts)
NEURON_TABLE_FILE = "neuron_table.csv.gz"  # the per-neuron table: activations, projections, groups (attribution)
STATISTICS_INPUTS_FILE = "neuron_statistics.json"  # the digest of what the three files above were computed from

# In a DPO model's cache folder.
DPO_RECORD_FILE = "dpo.json"  # settings, sizes, timings, history; written last: without it the folder is unfinished
