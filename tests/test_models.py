"""The model registry and the FLOP count `cifar100 presets` prints, checked against counts made
by hand for small models."""

from __future__ import annotations

import pytest
import torch

from cifar100.errors import ConfigError
from cifar100.training.models import count_parameters, create_model, forward_flops


def conv_macs(size: int, cin: int, cout: int, k: int = 3) -> int:
    return size * size * cout * cin * k * k


def test_stagenet_flops_count_every_conv_at_its_resolution_and_the_head():
    net = create_model("stagenet", num_classes=10, widths=[8, 16, 32], convs_per_stage=[1, 2, 1], whiten=False)
    # Each stage's first conv runs before its 2x2 pool, the rest after it: 32 -> 16 -> 8 -> 4.
    macs = conv_macs(32, 3, 8) + conv_macs(16, 8, 16) + conv_macs(8, 16, 16) + conv_macs(8, 16, 32) + 32 * 10
    assert forward_flops(net) == 2 * macs
    # Progressive resizing's 24x24 crops: 24 -> 12 -> 6 -> 3.
    macs24 = conv_macs(24, 3, 8) + conv_macs(12, 8, 16) + conv_macs(6, 16, 16) + conv_macs(6, 16, 32) + 32 * 10
    assert forward_flops(net, image_size=24) == 2 * macs24


def test_patch_whitening_adds_its_2x2_conv_and_shrinks_the_maps():
    net = create_model("stagenet", num_classes=10, widths=[8, 16], convs_per_stage=1, whiten=True)
    # A valid 2x2 conv to 24 channels: 31x31, then the stages at 31 -> 15.
    macs = conv_macs(31, 3, 24, k=2) + conv_macs(31, 24, 8) + conv_macs(15, 8, 16) + 16 * 10
    assert forward_flops(net) == 2 * macs


def test_keras_seed_flops_and_parameters():
    net = create_model("keras_seed", num_classes=10, widths=[4, 8], dense=16)
    macs = (conv_macs(32, 3, 4) + conv_macs(32, 4, 4) + conv_macs(16, 4, 8) + conv_macs(16, 8, 8)
            + 8 * 16 + 16 * 10)
    assert forward_flops(net) == 2 * macs
    convs = (3 * 9 + 1) * 4 + (4 * 9 + 1) * 4 + (4 * 9 + 1) * 8 + (8 * 9 + 1) * 8
    batchnorms = 2 * (4 + 4 + 8 + 8 + 16)
    assert count_parameters(net) == convs + batchnorms + (8 + 1) * 16 + (16 + 1) * 10


def test_counting_leaves_the_model_as_it_was():
    net = create_model("stagenet", num_classes=10, widths=[8, 16], convs_per_stage=1, whiten=False).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    forward_flops(net)
    assert net.training and not any(m._forward_hooks for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN statistics untouched


def test_an_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("resnet9000")
