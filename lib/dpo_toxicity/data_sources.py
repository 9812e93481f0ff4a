"""Where the offline data comes from: every data file the book reads, its public source and its hash.

The book reads its data from a local folder (see :func:`dpo_toxicity.paths.data_root`). Where the project's
``../shared/data`` copy is absent (Colab, a fresh clone), :func:`fetch_data` rebuilds that folder from the
public sources the data README records, each pinned to a commit, and checks every file against the first
16 hex digits of its sha256 (the digits ``MANIFEST.tsv`` lists), so a fetched folder is byte for byte the
offline one::

    python -m dpo_toxicity.data_sources          # fetches what is missing (about 10 MB), prints the folder
    DPO_TOX_DATA=<that folder> jupyter ...        # or leave it: the book finds the fetched copy itself

``make book`` and ``make test`` run that command first (:func:`ensure_data`): where the data folder is complete
it downloads nothing; offline, with files missing, it stops with a message naming the folder to fill.

:data:`SOURCES` has two kinds of rows. A :class:`PublicFile` is a file some public GitHub repository holds as
it is, downloaded from ``raw.githubusercontent.com`` at a fixed commit. A :class:`DerivedFile` is one that no
repository holds: WikiText-2's raw test split in the row layout of Hugging Face's ``wikitext-2-raw-v1``
(what Lee et al.'s perplexity code joins), rebuilt here from two public files exactly as the data README says
it was made. Files arrive whole or not at all (:func:`~dpo_toxicity.paths.written_atomically`); a download
whose hash differs raises :class:`DataHashError` and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .paths import DATA_ENV, FETCHED_DATA, MissingDataError, cache_dir, data_root, written_atomically

HASH_DIGITS = 16  # MANIFEST.tsv keeps the first 16 hex digits of each sha256

Fetcher = Callable[[str], bytes]


class DataHashError(RuntimeError):
    """A fetched or rebuilt data file is not the one the book was built with."""


@dataclass(frozen=True)
class PublicFile:
    """A data file held as it is by a public GitHub repository, at ``source_path`` in ``commit``."""

    path: str  # where the book reads it, relative to the data folder
    sha256: str  # first HASH_DIGITS hex digits
    repo: str
    commit: str
    source_path: str

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.source_path}"


@dataclass(frozen=True)
class DerivedFile:
    """A data file no repository holds, rebuilt by ``derive`` from other rows' files (``inputs``)."""

    path: str
    sha256: str
    inputs: tuple[str, ...]
    derive: Callable[..., bytes]  # called with the inputs' paths, in order
    recipe: str


def wikitext2_hf_test_rows(raw: Path, tokenised: Path) -> bytes:
    """WikiText-2's raw test split as Hugging Face ``wikitext-2-raw-v1`` test rows, one JSON object a line.

    ``raw`` (TyloQuant's ``wiki.test.raw``) has the raw lines with blank lines removed and CRLF line ends;
    ``tokenised`` (pytorch/examples' ``test.txt``) has every line, blank ones included, in the same order.
    A blank tokenised line gives the row ``""``; any other gives the next raw line plus ``"\\n"``, which is
    how the Hugging Face rows end.
    """
    raw_lines = iter(line for line in raw.read_bytes().decode("utf-8").split("\r\n") if line)
    rows = []
    for line in tokenised.read_text(encoding="utf-8").splitlines():
        rows.append("" if not line.strip() else next(raw_lines) + "\n")
    if next(raw_lines, None) is not None:
        raise ValueError(f"{raw} has more non-blank lines than {tokenised}: they are not the same split.")
    return "".join(json.dumps({"text": row}) + "\n" for row in rows).encode("utf-8")


_MIB = "PamelaBha/MIB", "b6b9d9724abdb3b2fc7859dcfd989114202d237a"  # full-history mirror of Yushi-Y/dpo-toxic-neurons
_DECODINGTRUST = "AI-secure/DecodingTrust", "c9b63ad4aba15a388dcfd6c5626ef5e87571a93a"
_JIGSAW = "predibase/llm_distillation_playbook", "c1b1c0d3c9b5e0accfe12474813356c434ca9b46"
_TYLOQUANT = "Tylogi/TyloQuant", "aa7023b3a96905a70f7a7ce9836834f02694c670"
_PYTORCH_EXAMPLES = "pytorch/examples", "d5678bc8ac0cdd79dbd5e44d4130271018bcec4e"


def _jigsaw_pool(pool: str, sha256: str) -> PublicFile:
    return PublicFile(f"jigsaw/{pool}.csv", sha256, *_JIGSAW, f"data/data_pools/{pool}.csv")


SOURCES: tuple[PublicFile | DerivedFile, ...] = (
    PublicFile("rtp/challenge_prompts.jsonl", "7b0012653b52ee43", *_MIB, "toxicity/challenge_prompts.jsonl"),
    PublicFile(
        "rtp/decodingtrust_toxic.jsonl", "a51d4650b14af9c0", *_DECODINGTRUST, "data/toxicity/user_prompts/toxic.jsonl"
    ),
    PublicFile(
        "rtp/decodingtrust_nontoxic.jsonl",
        "feb50408f4958575",
        *_DECODINGTRUST,
        "data/toxicity/user_prompts/nontoxic.jsonl",
    ),
    _jigsaw_pool("train.a.ok.1k", "a33899b046738486"),
    _jigsaw_pool("train.b.ok.1k", "3f2638e427535643"),
    _jigsaw_pool("train.a.bad.1k", "c59d2e8cb1b85444"),
    _jigsaw_pool("train.b.bad.1k", "47e9ba736edb7ab8"),
    _jigsaw_pool("train.c.bad.1k", "a837182059ae3c49"),
    _jigsaw_pool("test.a.ok.200", "6a5e1ff3c73c7576"),
    _jigsaw_pool("test.b.ok.200", "458c7dff082600e2"),
    _jigsaw_pool("test.c.ok.200", "80a2a86f6d3d4e50"),
    _jigsaw_pool("test.a.bad.200", "e5eaab2c5679d25c"),
    _jigsaw_pool("test.b.bad.200", "c3f8b905111eef5c"),
    _jigsaw_pool("test.c.bad.200", "6c381a0334b5fdcf"),
    PublicFile("wikitext2/wiki.test.raw", "4f3e427e4aff23ac", *_TYLOQUANT, "data/wikitext-2-raw/wiki.test.raw"),
    PublicFile(
        "wikitext2/pytorch_examples_test.txt",
        "d790b833ef8cf03a",
        *_PYTORCH_EXAMPLES,
        "word_language_model/data/wikitext-2/test.txt",
    ),
    PublicFile(
        "wikitext2/pytorch_examples_valid.txt",
        "f0737ed31fc13290",
        *_PYTORCH_EXAMPLES,
        "word_language_model/data/wikitext-2/valid.txt",
    ),
    DerivedFile(
        "wikitext2/wikitext2_raw_test_hf_rows.jsonl",
        "9bce95eb77e24108",
        ("wikitext2/wiki.test.raw", "wikitext2/pytorch_examples_test.txt"),
        wikitext2_hf_test_rows,
        "Hugging Face wikitext-2-raw-v1 test rows, from the raw split and the tokenised split's blank lines",
    ),
)


def short_sha256(content: bytes) -> str:
    """The first :data:`HASH_DIGITS` hex digits of ``content``'s sha256, as ``MANIFEST.tsv`` writes them."""
    return hashlib.sha256(content).hexdigest()[:HASH_DIGITS]


def download(url: str) -> bytes:
    """The bytes at ``url`` (the default fetcher of :func:`fetch_data`)."""
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def _has_content(path: Path, sha256: str) -> bool:
    return path.is_file() and short_sha256(path.read_bytes()) == sha256


def _content_of(source: PublicFile | DerivedFile, target: Path, fetch: Fetcher) -> bytes:
    """The checked bytes of one row: downloaded, or rebuilt from its inputs (already in ``target``)."""
    if isinstance(source, PublicFile):
        try:
            content, origin = fetch(source.url), source.url
        except OSError as error:  # urllib's URLError and HTTPError, timeouts
            raise OSError(f"Could not download data file {source.path!r} from {source.url}: {error}") from error
    else:
        content = source.derive(*(target / name for name in source.inputs))
        origin = f"{source.recipe} (from {', '.join(source.inputs)})"
    actual = short_sha256(content)
    if actual != source.sha256:
        raise DataHashError(
            f"Data file {source.path!r} from {origin} has sha256 {actual}..., expected {source.sha256}... "
            "(the hash in the data MANIFEST.tsv): nothing was written. The source may have changed or the "
            "download was cut short; run `python -m dpo_toxicity.data_sources` again."
        )
    return content


def fetch_data(target: Path | None = None, fetch: Fetcher = download) -> Path:
    """Fill ``target`` (default: the cache's fetched-data folder) with every file of :data:`SOURCES`; returns it.

    A file already there with the right hash is kept; every other is fetched (or rebuilt), checked against its
    hash and written atomically. ``fetch(url) -> bytes`` is the downloader (tests pass a fake). Raises
    :class:`DataHashError` naming the file, its source and both hashes when one does not match.
    """
    target = Path(target) if target is not None else cache_dir(FETCHED_DATA)
    for source in tqdm(SOURCES, desc="data files", unit="file"):
        path = target / source.path
        if _has_content(path, source.sha256):
            continue
        content = _content_of(source, target, fetch)
        with written_atomically(path) as partial:
            partial.write_bytes(content)
    return target


def ensure_data(fetch: Fetcher = download) -> Path:
    """The data folder the book reads (:func:`~dpo_toxicity.paths.data_root`), with every file of :data:`SOURCES`.

    A complete folder is returned as it is, nothing downloaded. Otherwise the missing files are fetched and
    hash-checked (:func:`fetch_data`) into the folder the book reads when that is named (``$DPO_TOX_DATA``) or
    exists, else into the cache's fetched-data folder, which :func:`~dpo_toxicity.paths.data_root` then finds.
    Raises :class:`~dpo_toxicity.paths.MissingDataError` saying what to do when the fetch fails (offline).
    """
    root = data_root()
    missing = [source.path for source in SOURCES if not (root / source.path).is_file()]
    if not missing:
        return root
    # cache_dir() / FETCHED_DATA, not cache_dir(FETCHED_DATA): a failed fetch must not leave an empty folder
    # that data_root() would then take for the data.
    target = root if os.environ.get(DATA_ENV) or root.is_dir() else cache_dir() / FETCHED_DATA
    try:
        return fetch_data(target, fetch)
    except OSError as error:
        raise MissingDataError(
            f"The book's data folder {root} lacks {len(missing)} of its {len(SOURCES)} files ({missing[0]}, ...) "
            f"and fetching them into {target} failed: {error}\nEither copy the offline data folder to {root}, or "
            f"set {DATA_ENV}=/path/to/data to a copy of it; or, on a machine with a network, run "
            "`python -m dpo_toxicity.data_sources` (it downloads about 10 MB, checks every file's hash and prints the "
            "folder the book then reads)."
        ) from error


def main() -> None:
    """Make the book's data complete (:func:`ensure_data`) and print its folder, the last line of stdout, to set as
    DPO_TOX_DATA. A failure exits with its message alone: ``make`` shows what to do, not a traceback."""
    try:
        folder = ensure_data()
    except (MissingDataError, DataHashError) as error:
        sys.exit(str(error))
    print(folder.resolve())


if __name__ == "__main__":
    sys.exit(main())
