"""--device and --precision are decided from what the machine reports, the same way in every
command; the choices are checked here without the hardware."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifar100.devices import choose_precision, resolve_device
from cifar100.errors import ConfigError
from cifar100.training.runtime import compile_or_eager


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(cuda, mps, expected):
    assert resolve_device("auto", cuda=cuda, mps=mps).type == expected


def test_asking_for_a_device_the_machine_lacks_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda", cuda=False, mps=False)
    with pytest.raises(ConfigError, match="no Apple GPU"):
        resolve_device("mps", cuda=False, mps=False)
    with pytest.raises(ConfigError, match="must be one of auto, cpu, cuda, mps"):
        resolve_device("tpu")
    assert resolve_device("cuda:1", cuda=True).index == 1


@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "16"), ((6, 0), "16")])
def test_auto_precision_is_bf16_only_where_the_gpu_has_it(capability, expected):
    precision = choose_precision(torch.device("cuda"), "auto", capability=capability)
    assert precision.name == expected
    assert precision.needs_grad_scaler == (expected == "16")
    assert precision.autocast_dtype == {"bf16": torch.bfloat16, "16": torch.float16}[expected]


def test_cpu_and_mps_train_in_fp32_and_refuse_half_precision():
    for kind in ("cpu", "mps"):
        precision = choose_precision(torch.device(kind), "auto")
        assert precision.name == "32" and precision.autocast_dtype is None and not precision.needs_grad_scaler
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        choose_precision(torch.device("cpu"), "bf16")
    assert choose_precision(torch.device("cuda"), "32", capability=(9, 0)).name == "32"  # asked for: kept


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(capsys):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here\nsecond line of a long trace")

    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model, compiled = compile_or_eager(net, torch.randn(5, 4), backend=broken_backend)
    assert model is net and not compiled and net.training
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torch.compile failed (" in err and "no C++ compiler here" in err
    assert "training without it" in err and "second line" not in err
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the trial changed nothing


def test_a_working_compiler_is_used():
    net = nn.Linear(4, 3)
    model, compiled = compile_or_eager(net, torch.randn(2, 4), backend="eager")
    assert compiled and model is not net
    assert torch.allclose(model(torch.ones(1, 4)), net(torch.ones(1, 4)))
