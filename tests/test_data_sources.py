"""Fetching the data: the sources table covers what the loaders read, matches the manifest, and a fetch from a
fake server rebuilds the offline folder byte for byte; a corrupted download fails clearly and writes nothing.
`make` fetches only what is missing, where the book then looks, and offline says which folder to fill."""

import hashlib
import re
import urllib.error
import urllib.request

import pytest

from dpo_toxicity import data, data_sources, paths, scoring
from dpo_toxicity.data_sources import SOURCES, DataHashError, PublicFile, fetch_data

SHARED = paths.project_root().parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED.is_dir(), reason="needs the offline data in ../shared/data")


def manifest() -> dict[str, str]:
    rows = (line.split("\t") for line in (SHARED / "MANIFEST.tsv").read_text().splitlines() if line.strip())
    return {path: digest for digest, _size, path in rows}


def loader_files() -> set[str]:
    """Every data file the loaders open: the literal paths in data.py and scoring.py, and the Jigsaw pools."""
    named = set()
    for module in (data, scoring):
        source = open(module.__file__, encoding="utf-8").read()
        named |= set(re.findall(r'"((?:rtp|jigsaw|wikitext2)/[^"{}]+)"', source))
    pools = {f"jigsaw/{pool}.csv" for split in data.JIGSAW_POOLS.values() for pool in split}
    return named | pools


def serve_shared(url: str) -> bytes:
    """A fake fetcher: the offline copy of the file a URL names."""
    (source,) = [s for s in SOURCES if isinstance(s, PublicFile) and s.url == url]
    return (SHARED / source.path).read_bytes()


def test_every_file_the_loaders_read_is_in_the_table():
    table = {source.path for source in SOURCES}
    assert "wikitext2/pytorch_examples_valid.txt" in loader_files()
    assert loader_files() <= table


def test_urls_are_pinned_to_a_commit():
    for source in SOURCES:
        if isinstance(source, PublicFile):
            assert re.fullmatch(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+", source.url)


@needs_shared_data
def test_table_hashes_equal_the_manifest():
    listed = manifest()
    for source in SOURCES:
        assert listed[source.path] == source.sha256, source.path


@needs_shared_data
def test_fetch_reproduces_the_offline_files_and_the_loaders_read_them(tmp_path, monkeypatch):
    folder = fetch_data(tmp_path / "data", fetch=serve_shared)
    for source in SOURCES:
        assert (folder / source.path).read_bytes() == (SHARED / source.path).read_bytes(), source.path
    assert not list(folder.rglob("*.partial*"))
    monkeypatch.setenv(paths.DATA_ENV, str(folder))
    assert len(data.challenge_prompts()) == 1199
    assert len(data.jigsaw("test")) == 1200
    assert "Robert Boulter" in data.wikitext2_test_text()[:200]
    assert data.wikitext2_validation_paragraphs()


@needs_shared_data
def test_a_second_fetch_downloads_nothing(tmp_path):
    folder = fetch_data(tmp_path, fetch=serve_shared)

    def refuse(url):
        raise AssertionError(f"fetched {url} again")

    assert fetch_data(folder, fetch=refuse) == folder


@needs_shared_data
def test_a_corrupted_download_names_file_url_and_hashes_and_leaves_no_file(tmp_path):
    corrupted = [source for source in SOURCES if isinstance(source, PublicFile)][-1]

    def corrupting(url):
        content = serve_shared(url)
        return content[:-10] if url == corrupted.url else content

    with pytest.raises(DataHashError) as error:
        fetch_data(tmp_path, fetch=corrupting)
    message = str(error.value)
    actual = hashlib.sha256(serve_shared(corrupted.url)[:-10]).hexdigest()[:16]
    assert corrupted.path in message and corrupted.url in message
    assert corrupted.sha256 in message and actual in message
    assert not (tmp_path / corrupted.path).exists() and not list(tmp_path.rglob("*.partial*"))
    assert (tmp_path / SOURCES[0].path).is_file()  # files fetched before it stay: they are whole and checked


def test_the_entry_point_prints_the_folder_last(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_sources, "ensure_data", lambda: tmp_path)
    data_sources.main()
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path.resolve())


def refuse(url):
    raise AssertionError(f"downloaded {url}")


def unreachable(url, timeout=None):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


@pytest.fixture
def no_shared_data(tmp_path, monkeypatch):
    """A fresh clone: no ../shared/data beside the project, no DPO_TOX_DATA, an empty cache."""
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path / "project")
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    return tmp_path


def test_a_complete_data_folder_is_used_as_it_is(tmp_path, monkeypatch):
    for source in SOURCES:
        (tmp_path / source.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source.path).write_text("")
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))
    assert data_sources.ensure_data(fetch=refuse) == tmp_path


@needs_shared_data
def test_missing_files_are_fetched_and_checked_into_the_folder_the_variable_names(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    kept = folder / SOURCES[0].path
    kept.parent.mkdir(parents=True)
    kept.write_bytes((SHARED / SOURCES[0].path).read_bytes())
    monkeypatch.setenv(paths.DATA_ENV, str(folder))
    fetched = []
    assert data_sources.ensure_data(fetch=lambda url: fetched.append(url) or serve_shared(url)) == folder
    assert SOURCES[0].url not in fetched and len(fetched) == sum(isinstance(s, PublicFile) for s in SOURCES) - 1
    for source in SOURCES:
        assert (folder / source.path).read_bytes() == (SHARED / source.path).read_bytes(), source.path


@needs_shared_data
def test_without_shared_data_the_fetched_copy_goes_where_the_book_looks(no_shared_data):
    folder = data_sources.ensure_data(fetch=serve_shared)
    assert folder == no_shared_data / "cache" / paths.FETCHED_DATA == paths.data_root()
    assert len(data.challenge_prompts()) == 1199


def test_offline_missing_data_stops_with_the_folder_the_variable_and_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as stop:
        data_sources.main()
    message = str(stop.value.code)
    assert f"{tmp_path / 'empty'} lacks {len(SOURCES)} of its {len(SOURCES)} files" in message
    assert f"{paths.DATA_ENV}=/path/to/data" in message and "`python -m dpo_toxicity.data_sources`" in message
    assert "Name or service not known" in message and capsys.readouterr().out == ""
    assert not (tmp_path / "empty").exists()


def test_offline_without_shared_data_names_the_shared_folder_and_leaves_no_empty_copy(no_shared_data, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    shared = no_shared_data / "shared" / "data"
    with pytest.raises(paths.MissingDataError, match=f"copy the offline data folder to {re.escape(str(shared))}"):
        data_sources.ensure_data()
    assert paths.data_root() == shared and not (no_shared_data / "cache" / paths.FETCHED_DATA).exists()


def test_data_root_prefers_the_variable_then_shared_then_the_fetched_copy(tmp_path, monkeypatch):
    project = tmp_path / "project"
    shared = tmp_path / "shared" / "data"
    fetched = tmp_path / "cache" / paths.FETCHED_DATA
    monkeypatch.setattr(paths, "project_root", lambda: project)
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(paths.DATA_ENV, raising=False)

    assert paths.data_root() == shared  # neither exists: the shared folder, which the error names
    with pytest.raises(paths.MissingDataError, match="python -m dpo_toxicity.data_sources"):
        paths.data_file("rtp/challenge_prompts.jsonl")
    fetched.mkdir(parents=True)
    assert paths.data_root() == fetched
    shared.mkdir(parents=True)
    assert paths.data_root() == shared
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "elsewhere"))
    assert paths.data_root() == tmp_path / "elsewhere"


def test_a_failed_download_names_the_file_and_url(tmp_path):
    def offline(url):
        raise OSError("network unreachable")

    with pytest.raises(OSError, match=re.escape(SOURCES[0].url)) as error:
        fetch_data(tmp_path, fetch=offline)
    assert SOURCES[0].path in str(error.value) and not list(tmp_path.rglob("*.*"))
