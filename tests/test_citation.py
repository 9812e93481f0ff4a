"""CITATION.cff: valid YAML that names the licence pyproject.toml declares, the repository _config.yml names, and
the papers the book reproduces with references.bib's author lists."""

import re
import tomllib

import yaml

from dpo_toxicity.paths import project_root

ROOT = project_root()


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_citation_names_the_packages_licence_and_the_books_repository():
    cff = citation()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert cff["cff-version"] == "1.2.0"
    assert cff["license"] == project["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith(f"{cff['license']} License\n")
    repository = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]
    assert cff["repository-code"] == repository


def test_references_carry_the_bibliographys_authors():
    bibliography = (ROOT / "references.bib").read_text(encoding="utf-8")
    for key, title in [
        ("yang2024ablation", "Ablation is Not Enough to Emulate DPO"),
        ("yang2025dpo", "How Does DPO Reduce Toxicity?"),
        ("lee2024mechanistic", "A Mechanistic Understanding of Alignment Algorithms"),
    ]:
        (reference,) = [r for r in citation()["references"] if r["title"].startswith(title)]
        entry = re.search(rf"@\w+{{{key},.*?author\s*=\s*{{(.*?)}},", bibliography, re.S).group(1)
        listed = [f"{a['family-names']}, {a['given-names']}" for a in reference["authors"]]
        assert listed == [name.strip() for name in entry.split(" and ")], key
