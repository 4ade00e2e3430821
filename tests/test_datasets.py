"""CIFAR archives in the official pickle formats, load_dataset, and the validation split."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    CIFAR10_CLASSES,
    CIFAR100_PARTIAL,
    cifar100_batch,
    mini_cifar100_batches,
    official_meta_bytes,
    py2_pickle_bytes,
    spec_for,
    write_cifar100_archive,
    write_tar,
)

from cifar100.data.cifar_archives import (
    CIFAR10,
    CIFAR100,
    MARKER,
    load_cifar,
    read_pickle,
)
from cifar100.data.sources import DATA_DIR_ENV, default_data_dir, load_dataset
from cifar100.data.types import (
    DEFAULT_VAL_SIZE,
    Dataset,
    Split,
    channel_mean_std,
    split_count,
    split_train_val,
    training_splits,
)
from cifar100.errors import ConfigError, DatasetError
from cifar100.training.presets import TrainConfig, get_preset

# --- the format ---------------------------------------------------------------------------


def test_our_pickler_writes_the_official_meta_byte_for_byte():
    meta = pickle.loads(official_meta_bytes(), encoding="bytes")
    assert hashlib.md5(py2_pickle_bytes(meta)).hexdigest() == CIFAR100.member_md5s["meta"]


def test_test_pickles_read_like_the_official_ones(mini_cifar100_dir):
    # Byte keys with encoding="bytes", str keys with encoding="latin1": Python 2 strings.
    train = (mini_cifar100_dir / CIFAR100.folder / "train").read_bytes()
    as_bytes = pickle.loads(train, encoding="bytes")
    assert list(as_bytes) == [b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"]
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (1117, 3072)
    assert isinstance(as_bytes[b"filenames"][0], bytes)
    assert set(pickle.loads(train, encoding="latin1")) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
    assert b"numpy.core.multiarray\n_reconstruct" in train


# --- mini CIFAR-100 from real images --------------------------------------------------------


@pytest.fixture(scope="module")
def mini(mini_cifar100_dir):
    return load_dataset("cifar100", mini_cifar100_dir, download=False)


def test_mini_cifar100_has_the_official_names_and_labels(mini):
    meta = pickle.loads(official_meta_bytes(), encoding="latin1")
    assert mini.name == mini.spec == "cifar100"
    assert mini.classes == meta["fine_label_names"] and len(mini.classes) == 100
    assert mini.coarse_classes == meta["coarse_label_names"] and len(mini.coarse_classes) == 20
    labels = np.load(CIFAR100_PARTIAL / "labels.npz")
    assert np.array_equal(mini.train.labels, labels["train_fine"][:1117])
    assert np.array_equal(mini.test.coarse_labels, labels["test_coarse"][:916])
    assert mini.train.labels.dtype == np.int64 and mini.train.coarse_labels.dtype == np.int64


def test_fine_to_coarse_mapping(mini):
    coarse_of = {mini.classes[f]: mini.coarse_classes[c] for f, c in enumerate(mini.fine_to_coarse)}
    assert coarse_of["apple"] == "fruit_and_vegetables"
    assert coarse_of["aquarium_fish"] == "fish"
    assert coarse_of["maple_tree"] == "trees"
    assert coarse_of["bicycle"] == "vehicles_1"
    assert coarse_of["lawn_mower"] == "vehicles_2"
    assert all(list(coarse_of.values()).count(c) == 5 for c in mini.coarse_classes)  # 5 per superclass
    # Test labels obey the same mapping.
    assert np.array_equal(np.asarray(mini.fine_to_coarse)[mini.test.labels], mini.test.coarse_labels)


def test_images_are_rgb_nhwc_from_channel_planar_rows(mini):
    rows = np.load(CIFAR100_PARTIAL / "images.npz")["test_data"]
    assert mini.test.images.shape == (916, 32, 32, 3) and mini.test.images.dtype == np.uint8
    red, green, blue = rows[5, :1024], rows[5, 1024:2048], rows[5, 2048:]
    assert np.array_equal(mini.test.images[5, :, :, 0].ravel(), red)
    assert np.array_equal(mini.test.images[5, :, :, 1].ravel(), green)
    assert np.array_equal(mini.test.images[5, :, :, 2].ravel(), blue)


def test_extracted_once_and_atomically(mini_cifar100_dir):
    folder = mini_cifar100_dir / CIFAR100.folder
    assert sorted(p.name for p in folder.iterdir()) == sorted([MARKER, "meta", "test", "train"])
    assert not [p for p in mini_cifar100_dir.iterdir() if p.name.startswith(".")]  # no staging left


def test_cifar10_format(tmp_path, mini_cifar10_archive, mini_cifar10_spec, mini_cifar10_images):
    (tmp_path / CIFAR10.filename).write_bytes(mini_cifar10_archive.read_bytes())
    dataset = load_cifar(mini_cifar10_spec, tmp_path, download=False)
    images, labels, test_images, test_labels = mini_cifar10_images
    assert dataset.name == "cifar10" and dataset.classes == CIFAR10_CLASSES
    assert dataset.coarse_classes is None and dataset.train.coarse_labels is None
    assert np.array_equal(dataset.train.images, images) and np.array_equal(dataset.train.labels, labels)
    assert np.array_equal(dataset.test.images, test_images) and np.array_equal(dataset.test.labels, test_labels)
    assert sorted(p.name for p in (tmp_path / CIFAR10.folder).iterdir()) == sorted(
        [MARKER, "batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]
    )


# --- bad archives: a named error, and nothing half-done left in the cache ---------------------


def broken_archive(tmp_path: Path, **overrides: bytes) -> tuple[Path, object]:
    train, test = mini_cifar100_batches()
    data_dir = tmp_path / "data"
    archive = write_cifar100_archive(data_dir / CIFAR100.filename, train, test, official_meta_bytes(), overrides)
    return data_dir, spec_for(CIFAR100, archive)


def assert_cache_untouched(data_dir: Path) -> None:
    assert [p.name for p in data_dir.iterdir()] == [CIFAR100.filename]


def test_truncated_pickle(tmp_path):
    train, _ = mini_cifar100_batches()
    data_dir, spec = broken_archive(tmp_path, train=py2_pickle_bytes(train)[:50_000])
    for _ in range(2):  # the same clear error every time: no half state in between
        with pytest.raises(DatasetError, match=r"train is truncated or corrupt"):
            load_cifar(spec, data_dir, download=False)
        assert_cache_untouched(data_dir)


def test_mismatched_lengths(tmp_path):
    train, _ = mini_cifar100_batches()
    short = {**train, b"fine_labels": train[b"fine_labels"][:-1]}
    data_dir, spec = broken_archive(tmp_path, train=py2_pickle_bytes(short))
    with pytest.raises(DatasetError, match=r"1117 images but 1116 'fine_labels'"):
        load_cifar(spec, data_dir, download=False)
    assert_cache_untouched(data_dir)


def test_label_out_of_range(tmp_path):
    _, test = mini_cifar100_batches()
    bad = {**test, b"coarse_labels": [25] + test[b"coarse_labels"][1:]}
    data_dir, spec = broken_archive(tmp_path, test=py2_pickle_bytes(bad))
    with pytest.raises(DatasetError, match=r"'coarse_labels' go from 0 to 25, outside 0..19"):
        load_cifar(spec, data_dir, download=False)


def test_wrong_image_rows(tmp_path):
    rows = np.zeros((3, 1024), dtype=np.uint8)
    batch = cifar100_batch(rows, [0, 1, 2], [0, 1, 2], [b"a", b"b", b"c"], "testing batch 1 of 1")
    data_dir, spec = broken_archive(tmp_path, test=py2_pickle_bytes(batch))
    with pytest.raises(DatasetError, match=r"uint8 rows of 3072"):
        load_cifar(spec, data_dir, download=False)


def test_member_checksum_mismatch(tmp_path):
    data_dir, spec = broken_archive(tmp_path)
    spec = type(spec)(**{**spec.__dict__, "member_md5s": {"train": "0" * 32}})
    with pytest.raises(DatasetError, match=r"cifar-100-python/train has md5 .* expected 0{32}"):
        load_cifar(spec, data_dir, download=False)
    assert_cache_untouched(data_dir)


def test_missing_member(tmp_path):
    train, test = mini_cifar100_batches()
    data_dir = tmp_path / "data"
    archive = write_tar(data_dir / CIFAR100.filename, "cifar-100-python", {"meta": official_meta_bytes(), "train": py2_pickle_bytes(train)})
    with pytest.raises(DatasetError, match=r"does not contain cifar-100-python/test"):
        load_cifar(spec_for(CIFAR100, archive), data_dir, download=False)
    assert_cache_untouched(data_dir)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({b"data": RunsCode()}, protocol=2))
    with pytest.raises(DatasetError, match=r"refusing"):
        read_pickle(path)
    assert not (tmp_path / "pwned").exists()


def test_incomplete_extraction_without_marker_is_redone(tmp_path, mini_cifar100_archive, mini_cifar100_spec):
    (tmp_path / CIFAR100.filename).write_bytes(mini_cifar100_archive.read_bytes())
    leftover = tmp_path / CIFAR100.folder
    leftover.mkdir()
    (leftover / "train").write_bytes(b"half a pickle")  # as if a copy by hand stopped midway
    dataset = load_cifar(mini_cifar100_spec, tmp_path, download=False)
    assert len(dataset.train) == 1117 and (leftover / MARKER).is_file()


# --- load_dataset and the data dir --------------------------------------------------------------


def test_unknown_dataset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'.*cifar100, cifar10"):
        load_dataset("imagenet", tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"unknown dataset"):
        load_dataset(str(tmp_path / "notes.txt"), tmp_path)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "somewhere"))
    assert default_data_dir() == tmp_path / "somewhere"
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".cache" / "cifar100"


def test_data_dir_from_environment_is_used(monkeypatch, mini_cifar100_dir):
    monkeypatch.setenv(DATA_DIR_ENV, str(mini_cifar100_dir))
    assert len(load_dataset("cifar100", download=False).test) == 916


def test_channel_mean_std_matches_float_computation():
    images = np.random.default_rng(3).integers(0, 256, (700, 32, 32, 3), dtype=np.uint8)
    mean, std = channel_mean_std(images, chunk=300)
    as_float = images.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, as_float.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, as_float.std(axis=0), rtol=1e-9)


# --- the validation split -------------------------------------------------------------------------


def cifar100_sized_split() -> Split:
    # CIFAR-100's label layout (500 per class, shuffled); 1x1 images keep it small.
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(100), 500))
    images = np.arange(len(labels), dtype=np.int64).reshape(-1, 1, 1, 1).repeat(3, axis=3)
    return Split(images, labels, labels // 5)


def test_validation_split_is_stratified_and_disjoint():
    train = cifar100_sized_split()
    rest, val = split_train_val(train, 5000, seed=0)
    assert (len(rest), len(val)) == (45_000, 5000)
    assert np.all(np.bincount(val.labels, minlength=100) == 50)
    assert np.all(np.bincount(rest.labels, minlength=100) == 450)
    ids_rest, ids_val = rest.images[:, 0, 0, 0], val.images[:, 0, 0, 0]
    assert not set(ids_rest) & set(ids_val) and len(set(ids_rest) | set(ids_val)) == 50_000
    # Images keep their own labels and superclasses.
    assert np.array_equal(train.labels[ids_val], val.labels)
    assert np.array_equal(val.coarse_labels, val.labels // 5)


def test_validation_split_is_seeded():
    train = cifar100_sized_split()
    first = split_train_val(train, 5000, seed=0)[1].images[:, 0, 0, 0]
    again = split_train_val(train, 5000, seed=0)[1].images[:, 0, 0, 0]
    other = split_train_val(train, 5000, seed=1)[1].images[:, 0, 0, 0]
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_validation_split_of_uneven_classes(mini):
    rest, val = split_train_val(mini.train, 100, seed=0)
    assert len(val) == 100 and len(rest) == 1017
    counts = np.bincount(mini.train.labels, minlength=100)
    share = counts * 100 / len(mini.train)
    taken = np.bincount(val.labels, minlength=100)
    assert np.all(taken >= np.floor(share)) and np.all(taken <= np.ceil(share))


def test_validation_split_edges():
    train = cifar100_sized_split()
    rest, val = split_train_val(train, 0)
    assert len(rest) == 50_000 and len(val) == 0 and val.coarse_labels is not None
    with pytest.raises(ConfigError, match=r"must be smaller than the training set"):
        split_train_val(train, 50_000)


# The validation images split_train_val(cifar100_sized_split(), 5000, seed) took while val_size
# was a count only (5000 was the default): sha256 of their indices as little-endian int64.
COUNT_ONLY_SPLIT_SHA256 = {
    0: "edaaabb9cd18724abbefa8badddee3304f034a1f782b14beb90a55464b58836e",
    3: "3aab3230b3cd652de7a20342521675b5989d8678f62286afabdf1f7ea2ec4ae9",
}


@pytest.mark.parametrize("seed", sorted(COUNT_ONLY_SPLIT_SHA256))
def test_default_fraction_is_the_old_5000_image_split(seed):
    """val_size's default, 0.1, takes from CIFAR-100's 50,000 training images exactly the 5,000
    the old default count 5000 took: runs from before and after compare on one split."""
    assert TrainConfig().val_size == 0.1 and get_preset("smoke").val_size == 100
    train = cifar100_sized_split()
    by_fraction = split_train_val(train, TrainConfig().val_size, seed)[1].images[:, 0, 0, 0]
    by_count = split_train_val(train, 5000, seed)[1].images[:, 0, 0, 0]
    assert np.array_equal(by_fraction, by_count) and len(by_fraction) == 5000
    digest = hashlib.sha256(np.ascontiguousarray(by_fraction, dtype="<i8").tobytes()).hexdigest()
    assert digest == COUNT_ONLY_SPLIT_SHA256[seed]


@pytest.mark.parametrize(
    "size, n, count",
    [(0.1, 50_000, 5000), (5000, 50_000, 5000), (5000.0, 50_000, 5000), (0, 10, 0), (0.2, 24, 5), (0.25, 2, 1),
     (0.01, 30, 1), (0.5, 3, 2), (9, 30, 9)],
)
def test_split_count_takes_a_fraction_or_a_count(size, n, count):
    assert split_count(size, n, "validation size") == count


@pytest.mark.parametrize(
    "size, message",
    [(-1, "validation size must be >= 0, got -1"), (float("nan"), "validation size must be >= 0, got nan"),
     (float("inf"), "validation size must be >= 0, got inf"),
     (2.5, r"validation size 2.5 is neither a fraction below 1 \(0.1\) nor a whole count \(5000\)"),
     (30, r"validation size 30 must be smaller than the training set \(30 images\)"),
     (0.99, r"validation size 0.99 \(30 images\) must be smaller than the training set \(30 images\)")],
)
def test_split_count_refuses_what_is_no_size(size, message):
    with pytest.raises(ConfigError, match=message):
        split_count(size, 30, "validation size")


def test_sizes_from_the_command_line_and_presets():
    smoke = get_preset("smoke")
    assert smoke.with_overrides(val_size="0.1").val_size == 0.1  # a preset's count does not make it an int
    assert smoke.with_overrides(val_size="500", test_size="40").validate().test_size == 40
    with pytest.raises(ConfigError, match=r"validation size 12.5 is neither"):
        smoke.with_overrides(val_size=12.5).validate()
    with pytest.raises(ConfigError, match=r"test size must be a fraction in \(0, 1\)"):
        smoke.with_overrides(test_size=0).validate()


def test_a_dataset_s_own_validation_split_is_used_as_it_is():
    train = cifar100_sized_split()
    own = train.subset(np.arange(10))
    dataset = Dataset("folder", [str(i) for i in range(100)], train, train.subset(np.arange(5)), val=own)
    kept, val = training_splits(dataset, 0.1, 0)
    assert kept is train and val is own and dataset.val_from == "folder"
    dataset.val = None
    _, val = training_splits(dataset, 0.1, 3)
    assert dataset.val_from == "train"
    assert np.array_equal(val.images, split_train_val(train, 5000, 3)[1].images)


def test_a_val_size_the_val_folder_leaves_unused_is_told():
    split = Split(np.zeros((6, 32, 32, 3), np.uint8), np.arange(6) % 2)
    dataset = Dataset("pets", ["cat", "dog"], split, split, val=split.subset(np.arange(2)))
    told: list[str] = []
    training_splits(dataset, DEFAULT_VAL_SIZE, 0, warn=told.append)  # the default: nothing to tell
    assert told == []
    training_splits(dataset, 100, 0, warn=told.append)
    assert told == [("val_size 100 is not used: the dataset 'pets' has its own val/ (or validation/) folder, "
                     "which is the validation split")]
    dataset.val = None  # carved: val_size is used
    training_splits(dataset, 0.5, 0, warn=told.append)
    assert len(told) == 1
