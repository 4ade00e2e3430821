"""`cifar100 data import` and adopting an extracted folder: a copy the user already has is
checked against the official md5s and installed exactly as a download would be, or refused
with a specific message and nothing left behind."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cifar100.data.cifar_archives import CIFAR100, MARKER, MIRROR_ENV, import_cifar, load_cifar
from cifar100.errors import DatasetError
from data_fixtures import SHARED_DATA, cifar100_members, mini_cifar100_batches, official_meta_bytes, write_tar
from test_data_cli import assert_one_line_error, cifar100_cli

SHARED_CIFAR100 = SHARED_DATA / "cifar-100-python.tar.xz"


@pytest.fixture(scope="module")
def mini_members(shared_data) -> dict[str, bytes]:
    train, test = mini_cifar100_batches()
    return cifar100_members(train, test, official_meta_bytes())


@pytest.fixture(scope="module")
def mini_spec(mini_members):
    """CIFAR-100's registry entry with the mini copy's member md5s standing in for the official ones."""
    return replace(CIFAR100, member_md5s={name: hashlib.md5(data).hexdigest() for name, data in mini_members.items()})


def cache_is_empty(data_dir: Path) -> bool:
    return not data_dir.exists() or list(data_dir.iterdir()) == []


@pytest.mark.skipif(not SHARED_CIFAR100.is_file(), reason=f"needs the real CIFAR-100 at {SHARED_CIFAR100}")
def test_import_of_real_cifar100_then_every_command_uses_it_offline(tmp_path):
    data_dir = tmp_path / "cache"
    result = cifar100_cli("data", "import", SHARED_CIFAR100, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    for name, md5 in CIFAR100.member_md5s.items():
        assert f"cifar-100-python/{name}  md5 {md5}  ok" in result.stdout
    assert "50,000 train and 10,000 test images, 100 classes in 20 superclasses" in result.stdout
    folder = data_dir / CIFAR100.folder
    assert sorted(p.name for p in folder.iterdir()) == sorted([MARKER, "meta", "test", "train"])
    assert json.loads((folder / MARKER).read_text())["member_md5s"] == CIFAR100.member_md5s

    # The folder as torchvision or Keras leave it (no marker): verified, then used, no download.
    (folder / MARKER).unlink()
    stats = cifar100_cli("data", "stats", "--data-dir", data_dir, "--no-download", "--val-size", "5000")
    assert stats.returncode == 0, stats.stderr
    assert "cifar100: 100 classes in 20 superclasses; train 45,000, val 5,000, test 10,000 images" in stats.stdout
    assert (folder / MARKER).is_file()


@pytest.mark.parametrize("compression, suffix", [("gz", ".tar.gz"), ("xz", ".tar.xz"), ("bz2", ".tar.bz2"), ("", ".tar")])
def test_import_accepts_any_tar_of_the_official_folder(tmp_path, mini_members, mini_spec, compression, suffix):
    archive = write_tar(tmp_path / f"copy{suffix}", "cifar-100-python", mini_members, compression)
    result = import_cifar(mini_spec, archive, tmp_path / "cache")
    assert (len(result.dataset.train), len(result.dataset.test), result.dataset.num_classes) == (1117, 916, 100)
    assert result.member_md5s == mini_spec.member_md5s and not result.replaced
    # Installed as a download installs it: later loads read the cache, offline.
    again = load_cifar(replace(mini_spec, url="http://127.0.0.1:9/none"), tmp_path / "cache", download=False)
    assert np.array_equal(again.train.images, result.dataset.train.images)


def test_import_of_an_extracted_folder_or_its_parent_and_replacing_a_copy(tmp_path, mini_members, mini_spec):
    parent = tmp_path / "keras-cache"
    (parent / "cifar-100-python").mkdir(parents=True)
    for name, data in mini_members.items():
        (parent / "cifar-100-python" / name).write_bytes(data)
    first = import_cifar(mini_spec, parent / "cifar-100-python", tmp_path / "cache")
    second = import_cifar(mini_spec, parent, tmp_path / "cache")
    assert not first.replaced and second.replaced
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["cifar-100-python"]  # no staging left
    assert np.array_equal(first.dataset.test.labels, second.dataset.test.labels)


def test_a_folder_without_the_marker_is_verified_before_it_is_used(tmp_path, mini_members, mini_spec):
    folder = tmp_path / "cache" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, data in mini_members.items():
        (folder / name).write_bytes(data)
    (folder / "test").write_bytes(mini_members["test"][:-10])
    with pytest.raises(DatasetError, match=r"cifar-100-python/test has md5 [0-9a-f]{32}, expected " + mini_spec.member_md5s["test"]):
        load_cifar(mini_spec, tmp_path / "cache", download=False)
    assert not (folder / MARKER).exists() and (folder / "train").is_file()  # refused, not deleted
    (folder / "test").write_bytes(mini_members["test"])
    assert len(load_cifar(mini_spec, tmp_path / "cache", download=False).test) == 916
    assert (folder / MARKER).is_file()


# --- refusals, through the real CLI, against the official md5s --------------------------------


def test_a_member_with_the_wrong_md5_is_named_with_both_checksums(tmp_path, mini_members):
    archive = write_tar(tmp_path / "cifar-100-python.tar.xz", "cifar-100-python", mini_members, "xz")
    data_dir = tmp_path / "cache"
    result = cifar100_cli("data", "import", archive, "--data-dir", data_dir)
    assert_one_line_error(result, "cifar-100-python/train has md5 " + hashlib.md5(mini_members["train"]).hexdigest(),
                          "expected " + CIFAR100.member_md5s["train"])
    assert cache_is_empty(data_dir)


def test_a_cifar10_archive_given_as_cifar100_is_named(tmp_path, mini_cifar10_archive):
    data_dir = tmp_path / "cache"
    result = cifar100_cli("data", "import", mini_cifar10_archive, "--data-dir", data_dir)
    assert_one_line_error(result, "holds cifar10 (cifar-10-batches-py/), not cifar100", "--dataset cifar10")
    assert cache_is_empty(data_dir)


def test_a_missing_member_is_named(tmp_path, mini_members):
    archive = write_tar(tmp_path / "partial.tar.gz", "cifar-100-python", {k: v for k, v in mini_members.items() if k != "test"})
    result = cifar100_cli("data", "import", archive, "--data-dir", tmp_path / "cache")
    assert_one_line_error(result, "does not contain cifar-100-python/test")
    assert cache_is_empty(tmp_path / "cache")


def test_a_truncated_archive_and_a_file_that_is_no_archive(tmp_path, mini_members):
    whole = write_tar(tmp_path / "whole.tar.gz", "cifar-100-python", mini_members)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = cifar100_cli("data", "import", truncated, "--data-dir", tmp_path / "cache")
    assert_one_line_error(result, str(truncated), "truncated or damaged")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not a tar archive at all" * 100)
    result = cifar100_cli("data", "import", photo, "--data-dir", tmp_path / "cache")
    assert_one_line_error(result, f"{photo} is not a tar archive")
    assert cache_is_empty(tmp_path / "cache")


def test_a_path_that_does_not_exist_and_a_folder_that_is_not_cifar(tmp_path):
    result = cifar100_cli("data", "import", tmp_path / "nowhere.tar.gz", "--data-dir", tmp_path / "cache")
    assert_one_line_error(result, f"{tmp_path / 'nowhere.tar.gz'} does not exist")
    (tmp_path / "photos").mkdir()
    result = cifar100_cli("data", "import", tmp_path / "photos", "--data-dir", tmp_path / "cache")
    assert_one_line_error(result, "is not a cifar100 folder", "it has no train, test, meta")
    assert cache_is_empty(tmp_path / "cache")


def test_a_failed_import_keeps_the_copy_already_installed(tmp_path, mini_members, mini_spec):
    good = write_tar(tmp_path / "good.tar", "cifar-100-python", mini_members, "")
    import_cifar(mini_spec, good, tmp_path / "cache")
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache" / "cifar-100-python").iterdir()}
    bad = write_tar(tmp_path / "bad.tar", "cifar-100-python", {**mini_members, "meta": b"not the meta"}, "")
    with pytest.raises(DatasetError, match="cifar-100-python/meta has md5"):
        import_cifar(mini_spec, bad, tmp_path / "cache")
    assert {p.name: p.read_bytes() for p in (tmp_path / "cache" / "cifar-100-python").iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["cifar-100-python"]


def test_the_offline_message_names_the_import(tmp_path, closed_port_url):
    result = cifar100_cli("data", "download", "--data-dir", tmp_path, env_extra={MIRROR_ENV: closed_port_url})
    assert_one_line_error(result, "cifar100 data import PATH --dataset cifar100", "--dataset PATH")
