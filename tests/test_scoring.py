"""Tests for dpo_toxicity.scoring: the offline scorer against Perspective, the exclusion of the challenge prompts,
and the clear failures of the networked backends."""

import math
import sys

import numpy as np
import pytest

from dpo_toxicity.data import challenge_prompts
from dpo_toxicity.scoring import (
    OfflineScorer,
    PerspectiveScorer,
    ScorerUnavailableError,
    ToxicityScorer,
    agreement_with_perspective,
    make_scorer,
    max_attribute_score,
    perspective_holdout,
    perspective_records,
    scored_texts,
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


def test_agreement_of_a_perfect_scorer_is_one_and_auc_is_nan_with_one_label():
    class EchoScorer:
        name = "echo"

        def __init__(self, scores):
            self.scores = np.asarray(scores, dtype=np.float64)

        def score(self, texts):
            return self.scores

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
        return {"attributeScores": {"TOXICITY": {"summaryScore": {"value": toxicity}},
                                    "INSULT": {"summaryScore": {"value": insult}}}}

    class CannedPerspective(PerspectiveScorer):
        def _analyze(self, text):
            assert text.strip(), "blank texts must not reach the API"
            return response(0.2, 0.6) if text == "insult" else response(0.9, 0.1)

    assert max_attribute_score(response(0.2, 0.6), ["TOXICITY"]) == 0.2
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "test-key")
    canned = CannedPerspective(attributes=("TOXICITY", "INSULT"), requests_per_second=1e6)
    np.testing.assert_allclose(canned.score(["insult", "", "  ", "toxic"]), [0.6, 0.0, 0.0, 0.9])
    assert canned.score([]).shape == (0,)
