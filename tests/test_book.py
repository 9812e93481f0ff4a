"""The book's structure: profiles, chapters' parameters cells, and the build driver's input checks."""

import jupytext
import pytest

from dpo_toxicity import book
from dpo_toxicity.models import UnknownModelError
from dpo_toxicity.paths import project_root
from dpo_toxicity.profiles import PROFILES, UnknownProfileError, profile


def chapters():
    root = project_root()
    return [book.source_of(root, d) for d in book.toc_documents(root) if book.source_of(root, d).suffix == ".py"]


def test_unknown_profile_is_rejected_with_the_known_names():
    with pytest.raises(UnknownProfileError, match="ci"):
        profile("huge")


def test_build_checks_profile_and_model_before_running_anything():
    with pytest.raises(UnknownProfileError):
        book.build("huge", "smollm2-135m")
    with pytest.raises(UnknownModelError):
        book.build("ci", "no-such-model")


def test_ci_profile_is_smaller_than_full():
    ci, full = PROFILES["ci"], PROFILES["full"]
    assert ci.probe_train_per_class < full.probe_train_per_class
    assert ci.probe_test_per_class <= full.probe_test_per_class


@pytest.mark.parametrize("chapter", chapters(), ids=lambda p: p.stem)
def test_every_chapter_has_a_parameters_cell_with_profile_and_model(chapter):
    notebook = jupytext.read(chapter, fmt="py:percent")
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert 'profile = "ci"' in tagged[0].source and "model = " in tagged[0].source


def test_toc_lists_existing_sources():
    root = project_root()
    documents = book.toc_documents(root)
    assert documents[0] == "intro"
    for document in documents:
        assert book.source_of(root, document).is_file()
