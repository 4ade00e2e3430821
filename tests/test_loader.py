"""The on-device loader: what a batch holds after normalisation and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifar100.data.types import Split
from cifar100.data.loader import Augment, DeviceLoader

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def make_split(n: int = 64, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))


def denormalise(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255


def test_plain_batches_are_the_images_normalised_in_order():
    split = make_split()
    loader = DeviceLoader(split, 16, torch.device("cpu"), MEAN, STD)
    batches = list(loader.epoch())
    assert len(batches) == len(loader) == 4
    x = torch.cat([b.inputs for b in batches])
    expected = torch.from_numpy(split.images).permute(0, 3, 1, 2).float()
    assert torch.allclose(denormalise(x), expected, atol=1e-3)
    assert torch.equal(torch.cat([b.labels for b in batches]), torch.from_numpy(split.labels))


def test_translation_crops_are_shifted_windows_of_the_reflect_padded_image():
    split = make_split(8)
    loader = DeviceLoader(split, 8, torch.device("cpu"), MEAN, STD, Augment(translate=2), shuffle=True)
    batch = next(loader.epoch(0))
    originals = torch.from_numpy(split.images).permute(0, 3, 1, 2).float()
    padded = torch.nn.functional.pad(originals, (2, 2, 2, 2), mode="reflect")
    got = denormalise(batch.inputs)
    for img, label in zip(got, batch.labels):
        # Every output is one of the 25 windows of some padded image of the same label.
        candidates = [i for i in range(8) if split.labels[i] == label]
        assert any(
            torch.allclose(img, padded[i, :, dy:dy + 32, dx:dx + 32], atol=1e-3)
            for i in candidates for dy in range(5) for dx in range(5)
        )


def test_alternating_flips_show_every_image_both_ways_over_two_epochs():
    split = make_split(32)
    loader = DeviceLoader(split, 32, torch.device("cpu"), MEAN, STD, Augment(flip="alternating"))
    plain = DeviceLoader(split, 32, torch.device("cpu"), MEAN, STD)
    base = next(plain.epoch()).inputs
    first, second = next(loader.epoch(0)).inputs, next(loader.epoch(1)).inputs
    flipped_first = torch.tensor([not torch.equal(a, b) for a, b in zip(first, base)])
    flipped_second = torch.tensor([not torch.equal(a, b) for a, b in zip(second, base)])
    assert torch.equal(flipped_first, ~flipped_second)
    assert 0 < flipped_first.sum() < 32
    for a, b, f in zip(first, base, flipped_first):
        assert torch.equal(a, b.flip(2)) if f else torch.equal(a, b)


def test_epochs_are_reproducible_and_differ_from_each_other():
    split = make_split()
    aug = Augment(translate=2, flip="random", cutout=8)
    a = DeviceLoader(split, 16, torch.device("cpu"), MEAN, STD, aug, shuffle=True, seed=3)
    b = DeviceLoader(split, 16, torch.device("cpu"), MEAN, STD, aug, shuffle=True, seed=3)
    assert all(torch.equal(x.inputs, y.inputs) for x, y in zip(a.epoch(5), b.epoch(5)))
    assert not torch.equal(next(a.epoch(5)).inputs, next(a.epoch(6)).inputs)


def test_cutout_zeroes_a_square_in_normalised_space():
    split = make_split(16)
    loader = DeviceLoader(split, 16, torch.device("cpu"), MEAN, STD, Augment(cutout=8))
    x = next(loader.epoch(0)).inputs
    zero_pixels = (x == 0).all(dim=1).sum(dim=(1, 2))
    assert (zero_pixels >= 16).all() and (zero_pixels <= 64).all()  # a clipped or whole 8x8 square


def test_progressive_size_gives_smaller_crops():
    loader = DeviceLoader(make_split(), 16, torch.device("cpu"), MEAN, STD, Augment(translate=2), shuffle=True)
    assert next(loader.epoch(0, size=24)).inputs.shape == (16, 3, 24, 24)
    assert next(loader.epoch(0)).inputs.shape == (16, 3, 32, 32)


def test_ranks_take_disjoint_shards_of_the_same_permutation():
    split = make_split(64)
    split.labels[:] = np.arange(64)  # labels identify images
    shards = [
        torch.cat([b.labels for b in DeviceLoader(split, 8, torch.device("cpu"), MEAN, STD, shuffle=True,
                                                  seed=1, rank=r, world_size=2).epoch(0)])
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 32
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())


def test_mixup_pairs_images_with_partners_and_weights():
    split = make_split(16)
    loader = DeviceLoader(split, 16, torch.device("cpu"), MEAN, STD, Augment(mixup_alpha=0.4), shuffle=True)
    batch = next(loader.epoch(0))
    assert batch.mix_labels is not None and 0 <= batch.mix_weight <= 1


def test_cutmix_pastes_one_box_of_the_partner_and_weights_labels_by_area():
    # Image k is flat grey 10k+5 with label k, so every pixel says which image it came from.
    n = 16
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 10 + 5, 32 * 32 * 3).reshape(n, 32, 32, 3)
    split = Split(images, np.arange(n, dtype=np.int64))
    loader = DeviceLoader(split, n, torch.device("cpu"), MEAN, STD, Augment(cutmix_alpha=1.0), shuffle=True)
    for epoch in range(4):
        batch = next(loader.epoch(epoch))
        assert batch.mix_labels is not None and 0 <= batch.mix_weight <= 1
        values = denormalise(batch.inputs).round()[:, 0]  # (B, H, W); the channels are equal
        own = values == (batch.labels * 10 + 5).view(-1, 1, 1).float()
        theirs = values == (batch.mix_labels * 10 + 5).view(-1, 1, 1).float()
        assert (own | theirs).all(), "every pixel is the image's own or its partner's"
        mixed = batch.labels != batch.mix_labels  # a partner other than itself
        pasted = ~own[mixed]
        if not len(pasted):
            continue
        assert (pasted == pasted[0]).all(), "one box, the same for the whole batch"
        rows, cols = pasted[0].any(1).nonzero().flatten(), pasted[0].any(0).nonzero().flatten()
        if len(rows):
            box = pasted[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all() and box.sum() == pasted[0].sum(), "the pasted region is a rectangle"
        # The label weight is the share of the image kept, exactly.
        assert pasted[0].float().mean().item() == pytest.approx(1 - batch.mix_weight, abs=1e-6)
