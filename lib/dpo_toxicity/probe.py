"""The linear toxicity probe: the toxic direction ``w`` every later chapter projects onto.

Lee et al. train a logistic-regression probe on the last-layer residual stream averaged over positions
(the final-norm output, Hugging Face's ``hidden_states[-1]``) of Jigsaw comments; its weight vector ``w`` is
the "toxic direction". The book does the same with scikit-learn on the offline Jigsaw pools
(:func:`~dpo_toxicity.activations.pooled_final_states` gives the features).

A :class:`Probe` is an artefact: it records the model it was trained on (name and weights hash) and its
held-out metrics, is saved atomically, and refuses to be used with a model of another width.

**Accuracy depends on the class balance.** Lee et al.'s 94 % was measured on Jigsaw's natural balance, about
one toxic comment in ten, where always answering "non-toxic" already scores 90 %; the book fits and tests on
balanced samples (chance 50 %). :func:`accuracy_at_prevalence` gives the accuracy a probe would have at another
prevalence, so the two numbers can be compared like with like.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from .paths import written_atomically

JIGSAW_TOXIC_PREVALENCE = 0.1  # about a tenth of Jigsaw's comments are labelled toxic: Lee et al.'s test balance


class ProbeWidthError(ValueError):
    """The probe's width does not match the model's residual stream."""


@dataclass(frozen=True)
class ProbeMetrics:
    """Accuracy (threshold 0.5) and ROC-AUC of a probe on labelled features, and ``natural_accuracy``: the
    accuracy at Jigsaw's natural toxic prevalence (:data:`JIGSAW_TOXIC_PREVALENCE`, :func:`accuracy_at_prevalence`)."""

    accuracy: float
    auc: float
    n: int
    natural_accuracy: float


@dataclass
class Probe:
    """A toxicity probe: ``P(toxic | x) = sigmoid(direction . x + bias)`` on pooled final-norm states.

    ``model_name`` and ``weights_hash`` identify the model whose features trained it; ``info`` carries the
    training sizes and held-out metrics for provenance.
    """

    direction: np.ndarray
    bias: float
    model_name: str
    weights_hash: str
    info: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.direction.shape[0])

    def unit_direction(self, d_model: int | None = None) -> torch.Tensor:
        """``w / |w|`` as a float32 tensor; checks the width against ``d_model`` when given."""
        if d_model is not None:
            self.check_width(d_model)
        w = torch.as_tensor(self.direction, dtype=torch.float32)
        return w / w.norm()

    def check_width(self, d_model: int) -> None:
        """Raise :class:`ProbeWidthError` unless the probe has ``d_model`` entries."""
        if self.width != d_model:
            raise ProbeWidthError(
                f"The probe has {self.width} entries but the model's residual stream has {d_model}: it was "
                f"trained on {self.model_name!r}. Train a probe for this model (chapter 1 with the same "
                "`model` parameter) before using it."
            )

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``P(toxic)`` for each row of ``features`` ``[n, d_model]``."""
        self.check_width(features.shape[1])
        return 1.0 / (1.0 + np.exp(-(features.astype(np.float64) @ self.direction + self.bias)))

    def evaluate(self, features: np.ndarray, labels: np.ndarray) -> ProbeMetrics:
        """Accuracy at 0.5, ROC-AUC and the accuracy at Jigsaw's natural prevalence on labelled features."""
        probabilities = self.predict_proba(features)
        return ProbeMetrics(
            accuracy=float(accuracy_score(labels, probabilities >= 0.5)),
            auc=float(roc_auc_score(labels, probabilities)),
            n=int(len(labels)),
            natural_accuracy=accuracy_at_prevalence(
                probabilities, labels, JIGSAW_TOXIC_PREVALENCE, self.info["train_prevalence"]
            ),
        )

    def save(self, path: Path) -> Path:
        """Write the probe as ``.npz`` (vector + JSON metadata), atomically."""
        metadata = json.dumps(
            {"bias": self.bias, "model_name": self.model_name, "weights_hash": self.weights_hash, "info": self.info}
        )
        with written_atomically(path) as partial:
            np.savez(partial, direction=self.direction, metadata=np.array(metadata))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "Probe":
        """Read a probe written by :meth:`save`; a missing file says which chapter makes it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No probe at {path}. Run chapter 1 (book/01_probe.py) with the same model and profile first."
            )
        with np.load(path) as stored:
            direction = stored["direction"]
            metadata = json.loads(str(stored["metadata"]))
        return cls(direction=direction, **metadata)

    def __repr__(self) -> str:
        return f"Probe({self.model_name!r}, width {self.width}, |w| {np.linalg.norm(self.direction):.3g}, {self.info})"


def train_probe(
    features: np.ndarray,
    labels: np.ndarray,
    model_name: str,
    weights_hash: str,
    regularisation: float = 0.1,
    seed: int = 0,
) -> Probe:
    """Fit an L2 logistic regression (``C = regularisation``) on raw features and wrap it as a :class:`Probe`.

    Features are not standardised: the probe's weight vector must live in the residual-stream basis so that
    value vectors can be compared with it.
    """
    if len(np.unique(labels)) != 2:
        raise ValueError("train_probe needs labels of both classes (0 = non-toxic, 1 = toxic).")
    classifier = LogisticRegression(C=regularisation, max_iter=2000, random_state=seed)
    classifier.fit(features.astype(np.float64), labels)
    info = {"n_train": int(len(labels)), "regularisation_C": regularisation, "train_prevalence": float(np.mean(labels))}
    return Probe(
        direction=classifier.coef_[0].astype(np.float32),
        bias=float(classifier.intercept_[0]),
        model_name=model_name,
        weights_hash=weights_hash,
        info=info,
    )


def accuracy_at_prevalence(
    probabilities: np.ndarray, labels: np.ndarray, prevalence: float, train_prevalence: float
) -> float:
    """The accuracy a probe would have on comments of which a fraction ``prevalence`` is toxic.

    A probe fitted where a fraction ``train_prevalence`` was toxic has that prior in its bias; at another
    prevalence the Bayes rule moves its decision threshold by the change in prior log-odds (fitted on balanced
    classes and used at 10 % toxic: toxic when ``P ≥ 0.9``). The accuracy is then ``prevalence × TPR +
    (1 − prevalence) × TNR``, each rate measured on the labelled test comments of its class, whatever their
    balance. At ``prevalence = train_prevalence`` on a test set of that balance it is the plain accuracy.
    """
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    if len(np.unique(labels)) != 2:
        raise ValueError("accuracy_at_prevalence needs test comments of both classes (0 = non-toxic, 1 = toxic).")
    threshold_logit = np.log(train_prevalence / (1 - train_prevalence)) - np.log(prevalence / (1 - prevalence))
    with np.errstate(divide="ignore"):
        toxic = np.log(probabilities) - np.log1p(-probabilities) >= threshold_logit
    true_positive_rate = float(toxic[labels == 1].mean())
    true_negative_rate = float((~toxic[labels == 0]).mean())
    return prevalence * true_positive_rate + (1 - prevalence) * true_negative_rate


def metrics_dict(metrics: ProbeMetrics) -> dict:
    """A :class:`ProbeMetrics` as a plain mapping (for :attr:`Probe.info`)."""
    return asdict(metrics)
