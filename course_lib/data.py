"""Multi30k (task 1, German-English): fetch the files once, verify them, read sentence pairs.

    >>> pairs = load_split("train")          # 29,000 (German, English) pairs
    >>> pairs[0]
    ('Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.',
     'Two young, White males are outside near many bushes.')

Each file comes from the first of: the cache (``data/cache/multi30k`` in the repository, or
``$COURSE_DATA_CACHE/multi30k``, or the ``cache_dir`` argument), a local mirror folder (the
``mirror`` argument, else ``$COURSE_MULTI30K_MIRROR``), or a download from the public
repository ``multi30k/dataset`` at a pinned commit. Every file is checked against its SHA-256
digest before it enters the cache and each time it is taken from there, and it is written
through a temporary file, so the cache never holds half a file or a file with other contents.

Splits and sizes: ``train`` 29,000 pairs, ``val`` 1,014, ``test_2016_flickr`` 1,000.

Data and citation: the files are the raw, untokenised task-1 files of Multi30K,
https://github.com/multi30k/dataset (folder ``data/task1/raw/``). Cite: D. Elliott, S. Frank,
K. Sima'an and L. Specia, "Multi30K: Multilingual English-German Image Descriptions",
Proceedings of the 5th Workshop on Vision and Language, 2016. Terms of use: the data is provided
for researchers and educators, for non-commercial research and educational use. This project
does not ship the files; this module downloads them on the user's machine.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import warnings
import zlib
from contextlib import closing
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.request import urlopen

SPLITS = ("train", "val", "test_2016_flickr")
LANGUAGES = ("de", "en")
#: Number of sentence pairs in each split.
SPLIT_SIZES = {"train": 29_000, "val": 1_014, "test_2016_flickr": 1_000}

#: The commit of ``multi30k/dataset`` the files are downloaded from. Every file is verified
#: against MULTI30K_SHA256, so a wrong pin fails loudly with a ChecksumError rather than
#: giving wrong data.
MULTI30K_COMMIT = "10b8ae249740aafcab3b47dd6e2c3af1559eb802"
MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/{commit}/data/task1/raw/{filename}"

#: SHA-256 digest of each file, as downloaded (the gzip file, not its text).
MULTI30K_SHA256 = {
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
}

#: A local folder holding the six files, used instead of the download (CI points it at a mirror).
MIRROR_ENV = "COURSE_MULTI30K_MIRROR"
#: A data cache root; Multi30k files go in its ``multi30k`` folder.
CACHE_ENV = "COURSE_DATA_CACHE"
ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "data" / "cache" / "multi30k"

_CHUNK = 1 << 16


class DataError(RuntimeError):
    """A data file could not be fetched or read; the message says what to do."""


class DownloadError(DataError):
    """The download failed (offline, HTTP error, cut connection) and the cache has no copy."""


class ChecksumError(DataError):
    """A fetched file's SHA-256 digest is not the expected one; nothing was written."""


class MirrorError(DataError):
    """The mirror folder does not exist or lacks a file."""


class CorruptFileError(DataError):
    """A file is not valid gzip-compressed UTF-8 text (truncated, damaged, or not gzip)."""


class LineCountError(DataError):
    """The German and English files of a split have different numbers of lines."""


class CacheWarning(UserWarning):
    """A cached file failed its checksum and is being fetched again."""


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$COURSE_DATA_CACHE/multi30k``, else CACHE_DIR."""
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get(CACHE_ENV)
    return Path(root) / "multi30k" if root else CACHE_DIR


def resolve_mirror(mirror: str | os.PathLike | None = None) -> Path | None:
    """The mirror folder: ``mirror`` if given, else ``$COURSE_MULTI30K_MIRROR``, else None (download)."""
    if mirror is not None:
        return Path(mirror)
    folder = os.environ.get(MIRROR_ENV)
    return Path(folder) if folder else None


def _expected_digest(filename: str) -> str:
    if filename not in MULTI30K_SHA256:
        raise ValueError(f"unknown Multi30k file {filename!r}: expected one of "
                         f"{', '.join(sorted(MULTI30K_SHA256))}")
    return MULTI30K_SHA256[filename]


def _file_mode() -> int:
    """The permissions a plain open() would give a new file (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _mirror_file(mirror: Path, filename: str) -> Path:
    """The mirror's copy of ``filename``; MirrorError when the folder or the file is missing."""
    if not mirror.is_dir():
        raise MirrorError(f"the Multi30k mirror folder {mirror} does not exist (it comes from the "
                          f"mirror argument or ${MIRROR_ENV}); point it at a folder that holds the "
                          f"files, or use no mirror ({MIRROR_ENV} unset) to download them")
    path = mirror / filename
    if not path.is_file():
        raise MirrorError(f"the Multi30k mirror folder {mirror} has no file {filename}; copy it "
                          f"there from the source, or use no mirror (no argument, {MIRROR_ENV} unset) to download it")
    return path


def _download_error(filename: str, url: str, target: Path, err: BaseException) -> DownloadError:
    return DownloadError(
        f"could not download {filename} from {url} ({type(err).__name__}: {err}), and the cache has "
        f"no verified copy at {target}. Connect to the internet and try again, or set {MIRROR_ENV} "
        f"to a folder that holds the Multi30k files (such as a shared mirror)")


def _download_chunks(url: str, timeout: float, filename: str, target: Path) -> Iterator[bytes]:
    """The bytes at ``url`` in chunks; any network failure, early or midway, is a DownloadError."""
    try:
        with urlopen(url, timeout=timeout) as response:
            announced = response.headers.get("Content-Length", "")
            received = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                received += len(chunk)
                yield chunk
            if announced.isdigit() and received < int(announced):  # read(n) does not raise on a cut
                raise ConnectionError(f"the connection closed after {received} of {announced} bytes")
    except (OSError, http.client.HTTPException) as err:
        raise _download_error(filename, url, target, err) from err


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(_CHUNK), b"")


def _write_hashing(chunks: Iterator[bytes], handle: BinaryIO) -> str:
    """Write the chunks to ``handle`` and return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with closing(chunks):
        for chunk in chunks:
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def fetch(filename: str, cache_dir: str | os.PathLike | None = None,
          mirror: str | os.PathLike | None = None, url_template: str | None = None,
          timeout: float = 60) -> Path:
    """Return the path of a cached, verified Multi30k file, fetching it first when needed.

    A cached file with the right SHA-256 digest is used as is. Otherwise the file is copied from
    the mirror folder (``mirror``, else ``$COURSE_MULTI30K_MIRROR``) or downloaded from
    ``url_template`` (default MULTI30K_URL at MULTI30K_COMMIT), into a temporary file in the cache
    folder that is verified and then renamed into place; on any failure it is deleted. A cached
    file with a wrong digest is reported with a CacheWarning, deleted and fetched again.

    Args:
        filename: e.g. ``"train.de.gz"``; one of the keys of MULTI30K_SHA256.
        cache_dir: the cache folder (default: ``$COURSE_DATA_CACHE/multi30k``, else CACHE_DIR).
        mirror: a local folder holding the files, used instead of the download.
        url_template: a URL with ``{filename}`` (and optionally ``{commit}``) fields.
        timeout: seconds to wait on the network before giving up.

    Raises:
        ValueError: ``filename`` is not a Multi30k file.
        DownloadError: the download failed and the cache has no verified copy.
        MirrorError: the mirror folder does not exist or lacks the file.
        ChecksumError: the fetched file is not the expected one (nothing is written).
    """
    expected = _expected_digest(filename)
    folder = resolve_cache_dir(cache_dir)
    target = folder / filename
    if target.is_file():
        actual = sha256_of(target)
        if actual == expected:
            return target
        warnings.warn(f"the cached {target} has SHA-256 {actual}, expected {expected}; "
                      f"deleting it and fetching it again", CacheWarning, stacklevel=2)
        target.unlink()
    source_dir = resolve_mirror(mirror)
    if source_dir is not None:
        source = _mirror_file(source_dir, filename)
        where, chunks = str(source), _file_chunks(source)
    else:
        where = (url_template or MULTI30K_URL).format(commit=MULTI30K_COMMIT, filename=filename)
        chunks = _download_chunks(where, timeout, filename, target)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            actual = _write_hashing(chunks, handle)
        if actual != expected:
            raise ChecksumError(
                f"{filename} from {where} has SHA-256 {actual}, expected {expected}; nothing was "
                f"written to {folder}. The source holds a different file than this course expects: "
                f"copy the mirror afresh from the source, or check MULTI30K_COMMIT ({MULTI30K_COMMIT})")
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException:
        chunks.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a gzip-compressed UTF-8 text file, each without its trailing newline.

    Only the ``"\\n"`` that ends each line is removed; all other characters are kept as they are.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CorruptFileError: the file is empty, not gzip, truncated or damaged, or not UTF-8.
    """
    path = Path(path)
    advice = "delete it so that it is fetched again"
    if path.stat().st_size == 0:
        raise CorruptFileError(f"{path} is empty, not a gzip file; {advice}")
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except EOFError as err:
        raise CorruptFileError(f"{path} is truncated: the gzip stream ends early ({err}); {advice}") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise CorruptFileError(f"{path} is not a valid gzip file ({err}); {advice}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise CorruptFileError(f"{path} is not UTF-8 text: line {line} has bytes {err.object[err.start:err.end]!r} "
                               f"({err.reason}); {advice}") from err
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def load_split(split: str, cache_dir: str | os.PathLike | None = None,
               mirror: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The (German, English) sentence pairs of a split, fetched with :func:`fetch` when needed.

    Args:
        split: ``"train"``, ``"val"`` or ``"test_2016_flickr"``.
        cache_dir, mirror: as for :func:`fetch`.

    Raises:
        ValueError: ``split`` is not one of SPLITS.
        LineCountError: the two files have different numbers of lines.
        DataError: any error of :func:`fetch` or :func:`read_lines`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Multi30k split {split!r}: expected one of {', '.join(SPLITS)}")
    paths = [fetch(f"{split}.{lang}.gz", cache_dir=cache_dir, mirror=mirror) for lang in LANGUAGES]
    german, english = (read_lines(path) for path in paths)
    if len(german) != len(english):
        raise LineCountError(f"Multi30k {split}: {paths[0]} has {len(german)} lines but {paths[1]} has "
                             f"{len(english)}; line N of one must translate line N of the other. "
                             f"Delete both files so that they are fetched again")
    return list(zip(german, english))
