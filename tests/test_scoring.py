"""Tests for dpo_toxicity.scoring: the offline scorer against Perspective, the exclusion of the challenge prompts,
and the clear failures of the networked backends."""

import math
import sys

import numpy as np
import pytest

from sklearn.metrics import roc_auc_score

from dpo_toxicity.data import challenge_prompts, jigsaw
from dpo_toxicity.scoring import (
    OFFLINE_COMPONENTS,
    OfflineScorer,
    PerspectiveScorer,
    ScorerUnavailableError,
    ToxicityScorer,
    agreement_with_labels,
    agreement_with_perspective,
    make_scorer,
    max_attribute_score,
    perspective_holdout,
    perspective_records,
    scored_texts,
    weighted_auc,
)

TOXIC = [
    "You are a fucking idiot.",
    "Shut up, you stupid bitch.",
    "I will kill you, you worthless piece of shit.",
    "What a pathetic moron, go to hell.",
]
NEUTRAL = [
    "The meeting has been moved to Thursday afternoon.",
    "She planted tomatoes and basil in the garden.",
    "The train to Lyon leaves at nine.",
    "Add the flour slowly and stir until smooth.",
]


@pytest.fixture(scope="module")
def scorer():
    return OfflineScorer()


@pytest.fixture(scope="module")
def holdout():
    return perspective_holdout(seed=0, fraction=0.2)


def test_offline_scorer_ranks_obviously_toxic_strings_above_neutral_ones(scorer):
    assert scorer.score(TOXIC).min() > scorer.score(NEUTRAL).max()


def test_offline_scores_are_float64_in_unit_interval_and_deterministic(scorer, holdout):
    texts, _ = scored_texts(holdout[1])
    scores = scorer.score(texts)
    assert scores.dtype == np.float64 and scores.shape == (len(texts),)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    np.testing.assert_array_equal(scores, scorer.score(texts))
    np.testing.assert_array_equal(scores, OfflineScorer().score(texts))


def test_empty_input_returns_empty_float64_array(scorer):
    scores = scorer.score([])
    assert scores.shape == (0,) and scores.dtype == np.float64


def test_offline_scorer_follows_the_protocol_and_names_its_backend(scorer):
    assert isinstance(scorer, ToxicityScorer)
    assert scorer.name == "offline"
    assert "alt-profanity-check" in repr(scorer) and "ridge" in repr(scorer)


def test_challenge_prompt_records_are_left_out_of_the_fit(scorer):
    # 1,196 records of the toxic file are challenge prompts, and so are 4 records of the non-toxic file.
    assert scorer.excluded_records == 1_200
    challenge = set(challenge_prompts())
    excluded_continuations = {r.continuation for r in perspective_records() if r.prompt in challenge}
    fitted = set(scorer.training_texts)
    assert not fitted & challenge
    assert not fitted & excluded_continuations


def test_exclusion_is_a_constructor_argument(scorer):
    everything = OfflineScorer(exclude=())
    assert everything.excluded_records == 0
    assert len(everything.training_texts) > len(scorer.training_texts)
    assert OfflineScorer(exclude=[challenge_prompts()[0]]).excluded_records == 1


def test_holdout_split_is_seeded_disjoint_and_free_of_challenge_prompts(holdout):
    train, heldout = holdout
    assert len(heldout) == round(0.2 * (len(train) + len(heldout)))
    assert not {r.prompt for r in train} & {r.prompt for r in heldout}
    assert not {r.prompt for r in train + heldout} & set(challenge_prompts())
    assert perspective_holdout(seed=0, fraction=0.2) == holdout
    assert perspective_holdout(seed=1, fraction=0.2)[1] != heldout


def test_offline_scorer_tracks_perspective_on_heldout_continuations(holdout):
    train, heldout = holdout
    heldout_scorer = OfflineScorer(training=train)
    agreement = agreement_with_perspective(heldout_scorer, *scored_texts(heldout, parts=("continuation",)))
    # Measured 0.81 and 0.93 with seed 0; the floors leave room for other library versions.
    assert agreement.n > 200
    assert agreement.spearman > 0.7
    assert agreement.auc_at_half > 0.85


class EchoScorer:
    """A toy scorer that gives the texts the scores it was built with."""

    name = "echo"

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float64)

    def score(self, texts):
        return self.scores


def test_agreement_of_a_perfect_scorer_is_one_and_auc_is_nan_with_one_label():
    truth = [0.1, 0.7, 0.3, 0.9]
    perfect = agreement_with_perspective(EchoScorer(truth), ["a", "b", "c", "d"], truth)
    assert perfect.spearman == pytest.approx(1.0) and perfect.auc_at_half == pytest.approx(1.0)
    assert perfect.n == 4 and "Spearman 1.000" in repr(perfect)
    assert math.isnan(agreement_with_perspective(EchoScorer([0.1, 0.2]), ["a", "b"], [0.1, 0.2]).auc_at_half)
    with pytest.raises(ValueError, match="one Perspective score each"):
        agreement_with_perspective(EchoScorer(truth), ["a", "b"], truth)


def test_unknown_scorer_name_raises_listing_known_names():
    with pytest.raises(ValueError, match="offline, detoxify, perspective"):
        make_scorer("jigsaw")


def test_missing_detoxify_raises_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "detoxify", None)  # makes `import detoxify` fail even where it is installed
    with pytest.raises(ScorerUnavailableError, match="pip install detoxify"):
        make_scorer("detoxify")


def test_perspective_without_api_key_raises_clear_error(monkeypatch):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(ScorerUnavailableError, match="PERSPECTIVE_API_KEY"):
        make_scorer("perspective")


def test_perspective_scores_are_the_max_over_attributes_and_blank_texts_score_zero(monkeypatch):
    def response(toxicity, insult):
        return {
            "attributeScores": {
                "TOXICITY": {"summaryScore": {"value": toxicity}},
                "INSULT": {"summaryScore": {"value": insult}},
            }
        }

    class CannedPerspective(PerspectiveScorer):
        def _analyze(self, text):
            assert text.strip(), "blank texts must not reach the API"
            return response(0.2, 0.6) if text == "insult" else response(0.9, 0.1)

    assert max_attribute_score(response(0.2, 0.6), ["TOXICITY"]) == 0.2
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "test-key")
    canned = CannedPerspective(attributes=("TOXICITY", "INSULT"), requests_per_second=1e6)
    np.testing.assert_allclose(canned.score(["insult", "", "  ", "toxic"]), [0.6, 0.0, 0.0, 0.9])
    assert canned.score([]).shape == (0,)


def test_each_component_scores_alone_and_the_two_average_to_the_scorer(scorer):
    texts = TOXIC + NEUTRAL
    profanity, ridge = scorer.component_scores(texts)
    alone = {component: scorer.component(component) for component in OFFLINE_COMPONENTS}
    np.testing.assert_array_equal(alone["profanity"].score(texts), profanity)
    np.testing.assert_array_equal(alone["ridge"].score(texts), ridge)
    np.testing.assert_allclose((alone["profanity"].score(texts) + alone["ridge"].score(texts)) / 2, scorer.score(texts))
    assert not np.allclose(profanity, ridge)  # two different scorers, not one twice
    assert [each.name for each in alone.values()] == ["offline:profanity", "offline:ridge"]
    assert all(isinstance(each, ToxicityScorer) for each in alone.values())
    assert "ridge alone" in repr(alone["ridge"])
    with pytest.raises(ValueError, match="profanity, ridge"):
        scorer.component("perspective")


def test_label_agreement_is_the_auc_of_toxic_over_non_toxic_not_the_reverse():
    # Toxic texts outscore non-toxic ones in 3 of the 4 (toxic, non-toxic) pairs: 0.35 < 0.4 is the one miss.
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    agreement = agreement_with_labels(EchoScorer(scores), ["a", "b", "c", "d"], labels, resamples=200)
    assert agreement.auc == pytest.approx(0.75)
    assert agreement.n == 4 and agreement.positives == 2 and agreement.scorer == "echo"
    assert 0.0 <= agreement.low <= agreement.high <= 1.0
    flipped = agreement_with_labels(EchoScorer(scores), ["a", "b", "c", "d"], [1, 1, 0, 0], resamples=200)
    assert flipped.auc == pytest.approx(0.25)


def test_label_agreement_interval_is_seeded_and_narrows_with_more_texts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = labels + rng.normal(0, 1, 400)
    few = agreement_with_labels(EchoScorer(scores[:40]), ["t"] * 40, labels[:40])
    many = agreement_with_labels(EchoScorer(scores), ["t"] * 400, labels)
    assert many.low < many.auc < many.high and few.low < few.auc < few.high
    assert many.high - many.low < few.high - few.low
    assert agreement_with_labels(EchoScorer(scores), ["t"] * 400, labels) == many


def test_weighted_auc_matches_scikit_learn_with_ties_and_weights():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    weights = rng.integers(0, 3, (3, 60))
    expected = [roc_auc_score(labels, scores, sample_weight=row) for row in weights]
    np.testing.assert_allclose(weighted_auc(labels, scores, weights), expected)
    assert weighted_auc(labels, scores, np.ones((1, 60)))[0] == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(weighted_auc(labels, scores, (labels == 1)[None, :].astype(float))[0])


def test_label_agreement_rejects_bad_labels():
    with pytest.raises(ValueError, match="one label per text"):
        agreement_with_labels(EchoScorer([0.1, 0.2]), ["a", "b"], [0, 1, 1])
    with pytest.raises(ValueError, match="both present"):
        agreement_with_labels(EchoScorer([0.1, 0.2]), ["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="0 .not toxic. and 1"):
        agreement_with_labels(EchoScorer([0.1, 0.2]), ["a", "b"], [0, 2])


def test_offline_scorer_agrees_with_jigsaws_human_labels(scorer):
    comments = jigsaw("test")
    agreement = agreement_with_labels(scorer, comments.text.tolist(), comments.label, resamples=200)
    # Measured 0.961 (profanity alone 0.957, ridge alone 0.926); the floor leaves room for other library versions.
    assert agreement.n == 1_200 and agreement.positives == 584
    assert agreement.auc > 0.9
    assert (
        agreement_with_labels(scorer.component("ridge"), comments.text.tolist(), comments.label, resamples=200).auc
        > 0.85
    )
