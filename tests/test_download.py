"""The real download path (urllib, .part file, Range resume, md5) against a local HTTP server."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from data_fixtures import spec_for

from cifar100.data.cifar_archives import CIFAR10, CIFAR100, MIRROR_ENV, archive_spec, ensure_archive, load_cifar
from cifar100.data.sources import load_dataset
from cifar100.data.download import download_file
from cifar100.errors import DownloadError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
NAME = "payload.bin"


def fetch(server, dest, md5=PAYLOAD_MD5, **kwargs):
    kwargs.setdefault("retry_wait", 0)
    return download_file(server.url(NAME), dest, md5, size=len(PAYLOAD), quiet=True, **kwargs)


def assert_clear_message(exc: DownloadError, url: str, md5: str, dest) -> None:
    message = str(exc)
    assert url in message and md5 in message and str(dest) in message, message
    assert "\n" not in message


def test_good_download_is_verified_and_renamed(http_server, tmp_path):
    http_server.files[NAME] = PAYLOAD
    dest = tmp_path / "cache" / NAME
    assert fetch(http_server, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name(NAME + ".part").exists()
    assert http_server.requests == [(NAME, None)]


def test_wrong_checksum_leaves_nothing_that_looks_good(http_server, tmp_path):
    http_server.files[NAME] = PAYLOAD
    dest = tmp_path / NAME
    wrong = "0" * 32
    with pytest.raises(DownloadError, match="has md5") as info:
        fetch(http_server, dest, md5=wrong)
    assert_clear_message(info.value, http_server.url(NAME), wrong, dest)
    assert PAYLOAD_MD5 in str(info.value)  # what we actually got, to tell a stale mirror apart
    assert sorted(tmp_path.iterdir()) == []


def test_broken_transfer_resumes_with_a_range_request(http_server, tmp_path):
    http_server.files[NAME] = PAYLOAD
    http_server.truncate[NAME] = (100_000, 1)  # announces 300,000 bytes, sends 100,000, hangs up
    dest = tmp_path / NAME
    fetch(http_server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests == [(NAME, None), (NAME, "bytes=100000-")]


def test_transfer_that_keeps_breaking_ends_in_one_message_and_resumes_next_time(http_server, tmp_path):
    http_server.files[NAME] = PAYLOAD
    http_server.truncate[NAME] = (50_000, 3)
    dest = tmp_path / NAME
    with pytest.raises(DownloadError, match="after 3 attempts") as info:
        fetch(http_server, dest, attempts=3)
    assert_clear_message(info.value, http_server.url(NAME), PAYLOAD_MD5, dest)
    assert not dest.exists()
    part = dest.with_name(NAME + ".part")
    assert part.stat().st_size == 150_000  # three times 50,000: each try resumed the last
    assert [r for _, r in http_server.requests] == [None, "bytes=50000-", "bytes=100000-"]

    # The server recovers: the next run picks up the .part where it stopped.
    fetch(http_server, dest)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert http_server.requests[-1] == (NAME, "bytes=150000-")


def test_server_that_ignores_range_gets_a_clean_restart(http_server, tmp_path):
    http_server.files[NAME] = PAYLOAD
    http_server.ignore_range = True
    dest = tmp_path / NAME
    dest.with_name(NAME + ".part").write_bytes(PAYLOAD[:123_456])
    fetch(http_server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests == [(NAME, "bytes=123456-")]


def test_stale_part_with_wrong_bytes_is_discarded_once(http_server, tmp_path):
    http_server.files[NAME] = PAYLOAD
    dest = tmp_path / NAME
    dest.with_name(NAME + ".part").write_bytes(b"\xff" * 1000)  # not the start of this file
    fetch(http_server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests == [(NAME, "bytes=1000-"), (NAME, None)]


def test_part_longer_than_the_file_starts_over(http_server, tmp_path):
    http_server.files[NAME] = PAYLOAD
    dest = tmp_path / NAME
    dest.with_name(NAME + ".part").write_bytes(PAYLOAD + b"junk")
    fetch(http_server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests == [(NAME, f"bytes={len(PAYLOAD) + 4}-"), (NAME, None)]


def test_connection_refused_is_one_clear_error_without_retries(closed_port_url, tmp_path):
    url = f"{closed_port_url}/{NAME}"
    dest = tmp_path / NAME
    with pytest.raises(DownloadError, match="refused") as info:
        download_file(url, dest, PAYLOAD_MD5, quiet=True, retry_wait=30)  # a retry would take 30 s
    assert_clear_message(info.value, url, PAYLOAD_MD5, dest)
    assert not dest.exists()


def test_missing_file_on_server_is_not_retried(http_server, tmp_path):
    dest = tmp_path / NAME
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        fetch(http_server, dest, retry_wait=30)
    assert_clear_message(info.value, http_server.url(NAME), PAYLOAD_MD5, dest)
    assert len(http_server.requests) == 1 and not dest.exists()


# --- the archive layer on top of it ---------------------------------------------------------


def test_cifar100_archive_downloads_verifies_and_extracts_once(http_server, tmp_path, mini_cifar100_archive):
    http_server.files[CIFAR100.filename] = mini_cifar100_archive.read_bytes()
    spec = spec_for(CIFAR100, mini_cifar100_archive, url=http_server.url(CIFAR100.filename))
    dataset = load_cifar(spec, tmp_path, quiet=True)
    assert (len(dataset.train), len(dataset.test), dataset.num_classes) == (1117, 916, 100)
    assert (tmp_path / CIFAR100.filename).read_bytes() == mini_cifar100_archive.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CIFAR100.filename, CIFAR100.folder])

    again = load_cifar(spec, tmp_path, quiet=True)
    assert len(http_server.requests) == 1  # neither downloaded nor extracted again
    assert np.array_equal(again.train.images, dataset.train.images)


def test_cifar10_archive_through_the_server(http_server, tmp_path, mini_cifar10_archive, mini_cifar10_images):
    http_server.files["mirror/" + CIFAR10.filename] = mini_cifar10_archive.read_bytes()
    spec = spec_for(CIFAR10, mini_cifar10_archive).with_base_url(http_server.url("mirror"))
    dataset = load_cifar(spec, tmp_path, quiet=True)
    images, labels, _, _ = mini_cifar10_images
    assert np.array_equal(dataset.train.images, images) and np.array_equal(dataset.train.labels, labels)


def test_mirror_variable_moves_the_download(http_server, tmp_path, monkeypatch, mini_cifar100_archive):
    # The mirror serves an archive that is not the official one: the official md5 refuses it.
    http_server.files[CIFAR100.filename] = mini_cifar100_archive.read_bytes()
    monkeypatch.setenv(MIRROR_ENV, http_server.base_url + "/")
    url = http_server.url(CIFAR100.filename)
    assert archive_spec("cifar100").url == url
    assert archive_spec("cifar10").url == http_server.url(CIFAR10.filename)
    with pytest.raises(DownloadError, match="has md5") as info:
        load_dataset("cifar100", tmp_path, quiet=True)
    assert_clear_message(info.value, url, CIFAR100.md5, tmp_path / CIFAR100.filename)
    assert list(tmp_path.iterdir()) == []


def test_official_url_without_mirror(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert archive_spec("cifar100").url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert archive_spec("cifar100").md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert archive_spec("cifar10").url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert archive_spec("cifar10").md5 == "c58f30108f718f92721af3b95e74349a"


def test_server_down_through_load_dataset(closed_port_url, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, closed_port_url)
    with pytest.raises(DownloadError) as info:
        load_dataset("cifar100", tmp_path, quiet=True)
    assert_clear_message(info.value, f"{closed_port_url}/{CIFAR100.filename}", CIFAR100.md5, tmp_path / CIFAR100.filename)
    assert list(tmp_path.iterdir()) == []


def test_archive_placed_by_hand_with_wrong_md5_is_refused_and_kept(tmp_path):
    placed = tmp_path / CIFAR100.filename
    placed.write_bytes(b"not the archive")
    with pytest.raises(DownloadError, match="Delete it") as info:
        ensure_archive(CIFAR100, tmp_path)
    assert str(placed) in str(info.value) and CIFAR100.md5 in str(info.value)
    assert placed.read_bytes() == b"not the archive"


def test_no_download_allowed_names_where_to_put_the_file(tmp_path, http_server):
    spec = CIFAR100.with_base_url(http_server.base_url)
    with pytest.raises(DownloadError, match="switched off") as info:
        load_cifar(spec, tmp_path, download=False)
    assert_clear_message(info.value, spec.url, CIFAR100.md5, tmp_path / CIFAR100.filename)
    assert http_server.requests == []
    assert not os.listdir(tmp_path)
