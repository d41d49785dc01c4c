"""The Multi30k loader: cache, mirror and download paths, checksums, atomic writes, clear errors.

No test touches the internet: downloads come from a server on 127.0.0.1, fake files are checked
against a patched digest table, and every cache folder is under tmp_path.
"""
import gzip
import hashlib
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from course_lib import data
from course_lib.data import (CacheWarning, ChecksumError, CorruptFileError, DataError, DownloadError,
                             LineCountError, MirrorError, fetch, load_split, read_lines, sha256_of)

ROOT = Path(__file__).resolve().parent.parent
# Read before the autouse fixture below clears it for the other tests.
ENV_MIRROR = os.environ.get(data.MIRROR_ENV)
REAL_URL = data.MULTI30K_URL  # the autouse fixture below points MULTI30K_URL at a closed port
SHARED_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"

FAKE_TEXT = {
    "train.de": "Ein Hund läuft.\nZwei Kinder  spielen. \n\nEnde",
    "train.en": "A dog runs.\nTwo children  play. \n\nEnd\n",
    "val.de": "Hallo.\n",
    "val.en": "Hello.\n",
    "test_2016_flickr.de": "Eins.\nZwei.\n",
    "test_2016_flickr.en": "One.\n",  # one line short: a line-count mismatch
}
FAKE = {f"{name}.gz": gzip.compress(text.encode("utf-8"), mtime=0) for name, text in FAKE_TEXT.items()}


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real network, no real mirror, no writes into the repository's data/ folder."""
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "env-cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(data, "MULTI30K_URL", f"http://127.0.0.1:{_free_port()}/{{filename}}")


@pytest.fixture
def fake(monkeypatch):
    """The fake files, with their digests in the table."""
    monkeypatch.setattr(data, "MULTI30K_SHA256", {name: _digest(blob) for name, blob in FAKE.items()})
    return FAKE


@pytest.fixture
def server(monkeypatch, fake):
    """A file server on 127.0.0.1 that counts requests; MULTI30K_URL points at it."""
    state = {"files": dict(fake), "requests": [], "short": set()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.lstrip("/")
            state["requests"].append(name)
            if name not in state["files"]:
                self.send_error(404)
                return
            body = state["files"][name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (100 if name in state["short"] else 0)))
            self.end_headers()
            self.wfile.write(body)  # a "short" file sends less than it announced, then closes

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setattr(data, "MULTI30K_URL", f"http://127.0.0.1:{httpd.server_address[1]}/{{filename}}")
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def mirror(tmp_path, fake):
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name, blob in fake.items():
        (folder / name).write_bytes(blob)
    return folder


# --- constants and sha256_of --------------------------------------------------------------

def test_constants_describe_six_files_at_a_pinned_commit():
    assert set(data.MULTI30K_SHA256) == {f"{s}.{lang}.gz" for s in data.SPLITS for lang in data.LANGUAGES}
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in data.MULTI30K_SHA256.values())
    assert re.fullmatch(r"[0-9a-f]{40}", data.MULTI30K_COMMIT)
    url = REAL_URL.format(commit=data.MULTI30K_COMMIT, filename="val.de.gz")
    assert url == ("https://raw.githubusercontent.com/multi30k/dataset/"
                   "10b8ae249740aafcab3b47dd6e2c3af1559eb802/data/task1/raw/val.de.gz")
    assert data.SPLIT_SIZES == {"train": 29_000, "val": 1_014, "test_2016_flickr": 1_000}
    assert data.CACHE_DIR == ROOT / "data" / "cache" / "multi30k"
    assert issubclass(DataError, RuntimeError)
    for cls in (DownloadError, ChecksumError, MirrorError, CorruptFileError, LineCountError):
        assert issubclass(cls, DataError)


def test_sha256_of_streams_a_file(tmp_path):
    blob = os.urandom(200_000)  # several chunks
    (tmp_path / "f").write_bytes(blob)
    assert sha256_of(tmp_path / "f") == _digest(blob)
    assert sha256_of(str(tmp_path / "f")) == _digest(blob)


# --- fetch: download, cache ---------------------------------------------------------------

def test_fetch_downloads_verifies_and_then_uses_the_cache(tmp_path, server):
    cache = tmp_path / "cache"
    path = fetch("val.de.gz", cache_dir=cache, timeout=5)
    assert path == cache / "val.de.gz" and path.read_bytes() == FAKE["val.de.gz"]
    assert server["requests"] == ["val.de.gz"]
    assert _leftovers(cache) == []
    assert fetch("val.de.gz", cache_dir=cache, timeout=5) == path
    assert server["requests"] == ["val.de.gz"]  # the second call made no request


def test_downloaded_file_gets_ordinary_permissions(tmp_path, server):
    umask = os.umask(0o022)
    try:
        path = fetch("val.de.gz", cache_dir=tmp_path, timeout=5)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_fetch_cache_hit_needs_no_network(tmp_path, fake):
    (tmp_path / "val.en.gz").write_bytes(fake["val.en.gz"])
    # MULTI30K_URL points at a closed port: any download attempt would fail
    assert fetch("val.en.gz", cache_dir=tmp_path, timeout=5).read_bytes() == fake["val.en.gz"]


def test_corrupted_cache_is_reported_and_replaced(tmp_path, server):
    (tmp_path / "val.de.gz").write_bytes(b"not the right file")
    with pytest.warns(CacheWarning, match=r"val\.de\.gz has SHA-256 [0-9a-f]{64}, expected"):
        path = fetch("val.de.gz", cache_dir=tmp_path, timeout=5)
    assert path.read_bytes() == FAKE["val.de.gz"]
    assert server["requests"] == ["val.de.gz"]


def test_checksum_mismatch_on_download_leaves_nothing(tmp_path, server):
    server["files"]["val.de.gz"] = gzip.compress(b"Something else.\n")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        fetch("val.de.gz", cache_dir=cache, timeout=5)
    message = str(info.value)
    assert data.MULTI30K_SHA256["val.de.gz"] in message
    assert _digest(server["files"]["val.de.gz"]) in message
    assert "http://127.0.0.1:" in message and "nothing was written" in message
    assert list(cache.iterdir()) == []


def test_http_404_without_cache_is_an_offline_error_naming_the_fix(tmp_path, server):
    del server["files"]["val.de.gz"]
    with pytest.raises(DownloadError) as info:
        fetch("val.de.gz", cache_dir=tmp_path, timeout=5)
    message = str(info.value)
    assert "/val.de.gz" in message and "404" in message
    assert str(tmp_path / "val.de.gz") in message and data.MIRROR_ENV in message
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_without_cache_is_an_offline_error(tmp_path, fake):
    with pytest.raises(DownloadError, match=data.MIRROR_ENV) as info:
        fetch("val.en.gz", cache_dir=tmp_path, timeout=5)
    assert data.MULTI30K_URL.format(filename="val.en.gz") in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_download_cut_short_leaves_no_temporary_file(tmp_path, server):
    server["short"].add("train.de.gz")
    with pytest.raises(DownloadError, match=r"connection closed after \d+ of \d+ bytes"):
        fetch("train.de.gz", cache_dir=tmp_path, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_midway_leaves_no_temporary_file(tmp_path, fake, monkeypatch):
    class Response:
        headers = {"Content-Length": str(len(fake["val.de.gz"]))}

        def __init__(self):
            self.sent = False

        def read(self, size):
            if self.sent:
                raise KeyboardInterrupt
            self.sent = True
            return fake["val.de.gz"][:10]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(data, "urlopen", lambda url, timeout: Response())
    with pytest.raises(KeyboardInterrupt):
        fetch("val.de.gz", cache_dir=tmp_path, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_unknown_filename_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown Multi30k file 'train\.fr\.gz': expected one of .*train\.de\.gz"):
        fetch("train.fr.gz", cache_dir=tmp_path)


# --- fetch: mirror ------------------------------------------------------------------------

def test_fetch_copies_from_a_mirror_folder(tmp_path, mirror):
    cache = tmp_path / "cache"
    path = fetch("train.en.gz", cache_dir=cache, mirror=mirror)
    assert path.read_bytes() == FAKE["train.en.gz"]
    assert _leftovers(cache) == []


def test_mirror_lacking_a_file_names_folder_and_file(tmp_path, mirror):
    (mirror / "val.en.gz").unlink()
    cache = tmp_path / "cache"
    with pytest.raises(MirrorError, match=rf"mirror folder {re.escape(str(mirror))} has no file val\.en\.gz"):
        fetch("val.en.gz", cache_dir=cache, mirror=mirror)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_missing_mirror_folder_is_a_mirror_error(tmp_path, fake):
    with pytest.raises(MirrorError, match="does not exist"):
        fetch("val.en.gz", cache_dir=tmp_path / "cache", mirror=tmp_path / "nowhere")


def test_checksum_mismatch_from_a_mirror_leaves_nothing(tmp_path, mirror):
    (mirror / "val.de.gz").write_bytes(gzip.compress(b"Falsch.\n"))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=rf"from {re.escape(str(mirror / 'val.de.gz'))} has SHA-256"):
        fetch("val.de.gz", cache_dir=cache, mirror=mirror)
    assert list(cache.iterdir()) == []


# --- environment overrides ----------------------------------------------------------------

def test_env_vars_choose_the_cache_and_the_mirror(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "root"))
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    path = fetch("val.de.gz")
    assert path == tmp_path / "root" / "multi30k" / "val.de.gz"
    assert path.read_bytes() == FAKE["val.de.gz"]


def test_arguments_beat_env_vars(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "root"))
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "nowhere"))
    path = fetch("val.de.gz", cache_dir=tmp_path / "mine", mirror=mirror)
    assert path == tmp_path / "mine" / "val.de.gz"
    assert not (tmp_path / "root").exists()


def test_default_cache_dir_is_in_the_repository(monkeypatch):
    monkeypatch.delenv(data.CACHE_ENV)
    assert data.resolve_cache_dir() == ROOT / "data" / "cache" / "multi30k"
    assert data.resolve_mirror() is None


# --- read_lines ---------------------------------------------------------------------------

def test_read_lines_strips_only_the_newline(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(" lead\ttab \r\n\nÄrger – ok\nlast".encode("utf-8")))
    assert read_lines(path) == [" lead\ttab \r", "", "Ärger – ok", "last"]
    path.write_bytes(gzip.compress(b"one\ntwo\n"))
    assert read_lines(str(path)) == ["one", "two"]
    path.write_bytes(gzip.compress(b""))
    assert read_lines(path) == []


@pytest.mark.parametrize("damage, words", [
    (lambda blob: blob[: len(blob) // 2], "truncated"),
    (lambda blob: b"plain text, not gzip\n", "not a valid gzip file"),
    (lambda blob: blob[:12] + bytes(b ^ 0xFF for b in blob[12:-8]) + blob[-8:], "not a valid gzip file"),
    (lambda blob: blob[:-8] + b"\0" * 8, "not a valid gzip file"),  # wrong CRC and length
    (lambda blob: b"", "is empty"),
])
def test_read_lines_names_a_corrupt_file(tmp_path, damage, words):
    path = tmp_path / "bad.gz"
    path.write_bytes(damage(gzip.compress("Zeile eins\nZeile zwei\n".encode() * 50)))
    with pytest.raises(CorruptFileError, match=re.escape(str(path)) + ".*" + words) as info:
        read_lines(path)
    assert "delete it" in str(info.value)


def test_read_lines_names_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.gz"
    path.write_bytes(gzip.compress("gut\nschön\n".encode("latin-1")))
    with pytest.raises(CorruptFileError, match=re.escape(str(path)) + r" is not UTF-8 text: line 2"):
        read_lines(path)


# --- load_split ---------------------------------------------------------------------------

def test_load_split_pairs_german_with_english(tmp_path, server):
    pairs = load_split("train", cache_dir=tmp_path)
    assert pairs == [("Ein Hund läuft.", "A dog runs."), ("Zwei Kinder  spielen. ", "Two children  play. "),
                     ("", ""), ("Ende", "End")]
    assert sorted(server["requests"]) == ["train.de.gz", "train.en.gz"]
    assert load_split("train", cache_dir=tmp_path, mirror=tmp_path / "unused") == pairs
    assert len(server["requests"]) == 2  # cached: neither the mirror nor the server was asked


def test_load_split_refuses_files_of_different_lengths(tmp_path, mirror):
    with pytest.raises(LineCountError, match=r"test_2016_flickr\.de\.gz has 2 lines but .*test_2016_flickr\.en\.gz has 1"):
        load_split("test_2016_flickr", cache_dir=tmp_path, mirror=mirror)


def test_load_split_reports_a_corrupt_file_that_passed_its_checksum(tmp_path, monkeypatch, fake):
    broken = fake["val.de.gz"][:-5]
    monkeypatch.setitem(data.MULTI30K_SHA256, "val.de.gz", _digest(broken))
    (tmp_path / "val.de.gz").write_bytes(broken)
    (tmp_path / "val.en.gz").write_bytes(fake["val.en.gz"])
    with pytest.raises(CorruptFileError, match=r"val\.de\.gz is truncated"):
        load_split("val", cache_dir=tmp_path)


def test_unknown_split_lists_the_splits(tmp_path):
    with pytest.raises(ValueError, match="unknown Multi30k split 'test': expected one of train, val, test_2016_flickr"):
        load_split("test", cache_dir=tmp_path)


# --- the real files -----------------------------------------------------------------------

def _real_mirror() -> Path:
    for folder in (Path(ENV_MIRROR) if ENV_MIRROR else None, SHARED_MIRROR):
        if folder is not None and folder.is_dir():
            return folder
    pytest.skip(f"no Multi30k mirror: neither ${data.MIRROR_ENV} nor {SHARED_MIRROR} is a folder")


def test_real_splits_load_from_the_mirror(tmp_path):
    folder = _real_mirror()
    sums = folder / "SHA256SUMS"
    if sums.exists():
        listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line.strip())
        assert listed == data.MULTI30K_SHA256
    sizes = {split: len(load_split(split, cache_dir=tmp_path, mirror=folder)) for split in data.SPLITS}
    assert sizes == {"train": 29_000, "val": 1_014, "test_2016_flickr": 1_000}
    german, english = load_split("train", cache_dir=tmp_path)[0]  # from the cache now
    assert isinstance(german, str) and isinstance(english, str) and german.strip() and english.strip()
    assert "Männer" in german and "males" in english
