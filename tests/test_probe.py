"""The probe recovers a planted direction, refuses the wrong width and round-trips through its file."""

import numpy as np
import pytest

from dpo_toxicity.probe import JIGSAW_TOXIC_PREVALENCE, Probe, ProbeWidthError, accuracy_at_prevalence, train_probe


def planted(n=2000, d=48, seed=0):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    features = rng.normal(size=(n, d)).astype(np.float32) + 0.5  # an offset, like real residual streams
    labels = ((features - 0.5) @ direction + 0.3 * rng.normal(size=n) > 0).astype(int)
    return features, labels, direction


def test_probe_recovers_a_planted_direction():
    features, labels, direction = planted()
    probe = train_probe(features, labels, "synthetic", "none", regularisation=1.0)
    cosine = probe.direction @ direction / np.linalg.norm(probe.direction)
    assert cosine > 0.95
    test_features, test_labels, _ = planted(seed=1)
    test_features = test_features - 0.5 + 0.5  # same distribution, new draw with the same planted direction
    metrics = probe.evaluate(*planted(seed=0)[:2])
    assert metrics.accuracy > 0.9 and metrics.auc > 0.95


def test_probe_fails_on_a_shuffled_label_control():
    features, labels, _ = planted()
    shuffled = np.random.default_rng(5).permutation(labels)
    probe = train_probe(features[:1000], shuffled[:1000], "synthetic", "none")
    assert probe.evaluate(features[1000:], shuffled[1000:]).auc < 0.6


def test_probe_of_the_wrong_width_raises():
    features, labels, _ = planted(d=16)
    probe = train_probe(features, labels, "synthetic", "none")
    with pytest.raises(ProbeWidthError, match="16 entries"):
        probe.unit_direction(576)
    with pytest.raises(ProbeWidthError):
        probe.predict_proba(np.zeros((3, 8), dtype=np.float32))


def test_probe_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        train_probe(np.zeros((4, 3)), np.ones(4, dtype=int), "synthetic", "none")


def test_probe_round_trips_through_its_file(tmp_path):
    features, labels, _ = planted(d=8)
    probe = train_probe(features, labels, "synthetic", "abc", regularisation=0.5)
    probe.info["test"] = {"accuracy": 0.9}
    path = probe.save(tmp_path / "nested" / "probe.npz")
    loaded = Probe.load(path)
    np.testing.assert_array_equal(loaded.direction, probe.direction)
    assert (loaded.bias, loaded.model_name, loaded.weights_hash, loaded.info) == (
        probe.bias,
        "synthetic",
        "abc",
        probe.info,
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["probe.npz"]  # no temporary file left


def test_missing_probe_file_names_the_chapter_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_probe"):
        Probe.load(tmp_path / "probe.npz")


def test_accuracy_at_prevalence_moves_the_threshold_and_reweights_the_classes():
    toxic, clean = [0.95, 0.8, 0.6, 0.3], [0.05, 0.2, 0.92, 0.4]
    probabilities, labels = np.array(toxic + clean), np.array([1] * 4 + [0] * 4)
    # fitted on balanced classes, used at 10 % toxic: toxic when P >= 0.9, so TPR 1/4 and TNR 3/4
    assert accuracy_at_prevalence(probabilities, labels, 0.1, 0.5) == pytest.approx(0.1 * 0.25 + 0.9 * 0.75)
    # at the balance it was fitted on, the plain accuracy at 0.5
    assert accuracy_at_prevalence(probabilities, labels, 0.5, 0.5) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both classes"):
        accuracy_at_prevalence(probabilities[:4], labels[:4], 0.1, 0.5)


def test_natural_accuracy_of_a_useless_probe_is_the_majority_class():
    features, labels, _ = planted()
    probe = train_probe(features, labels, "synthetic", "none")
    assert probe.info["train_prevalence"] == pytest.approx(labels.mean())
    metrics = probe.evaluate(features, labels)
    assert metrics.natural_accuracy > 1 - JIGSAW_TOXIC_PREVALENCE  # a good probe beats always answering non-toxic
    shuffled = np.random.default_rng(5).permutation(labels)
    useless = train_probe(features[:1000], shuffled[:1000], "synthetic", "none")
    natural = useless.evaluate(features[1000:], shuffled[1000:]).natural_accuracy
    assert natural == pytest.approx(1 - JIGSAW_TOXIC_PREVALENCE, abs=0.02)
