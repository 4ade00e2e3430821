"""The benchmark scripts, run as a user runs them (`python benchmarks/NAME.py ...`, a real
process) on problems small enough for seconds: each must finish and print a table whose numbers
hang together. Their timings are not asserted (the README's numbers come from full runs); what
is checked is that the scripts still work, so that a GPU session, when one is lent, spends its
minutes measuring rather than debugging."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Keeps the synthetic 4-class set (600 training images) from vanishing into the presets'
# 5,000-image validation split.
TINY = ["--set", "val_size=50"]


def benchmark(script: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def ok(script: str, *args) -> str:
    result = benchmark(script, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def table(stdout: str) -> list[dict[str, str]]:
    """The rows of the table `common.print_table` printed (columns are 2+ spaces apart)."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+(  -+)*\s*", line))
    header = re.split(r"\s{2,}", lines[rule - 1].strip())
    rows = []
    for line in lines[rule + 1:]:
        if not line.strip() or line.startswith("#"):
            break
        rows.append(dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)))
    return rows


def number(text: str) -> float:
    """The leading number of a cell: '1,234 (1,100-1,300)' -> 1234, '0.52s' -> 0.52, '1.41x' -> 1.41."""
    return float(re.match(r"[\d,.]+", text).group().replace(",", ""))


def test_train_throughput_sets_each_preset_against_the_measured_matmul_rate():
    rows = table(ok("train_throughput.py", "--presets", "smoke,cpu", "--steps", "2", "--rounds", "2"))
    assert [r["preset"] for r in rows] == ["smoke", "cpu"]
    for r in rows:
        fwd_mflops, images_per_s = number(r["MFLOPs/img (fwd)"]), number(r["train img/s"])
        assert fwd_mflops > 0 and images_per_s > 0 and number(r["matmul GFLOP/s"]) > 0
        # Training counts three forward passes per image; achieved and the ratio follow from
        # the other columns (medians of 2 epochs each, so only to within their spread).
        assert number(r["achieved GFLOP/s"]) == pytest.approx(3 * fwd_mflops * images_per_s / 1e3, rel=0.5)
        assert number(r["limit / achieved"]) == pytest.approx(
            number(r["matmul GFLOP/s"]) / number(r["achieved GFLOP/s"]), rel=0.5)
        assert re.fullmatch(r"[\d.]+x \([\d.]+-[\d.]+\)", r["limit / achieved"])  # median (range) of 2 epochs
    smoke, cpu = rows
    assert number(cpu["MFLOPs/img (fwd)"]) > 5 * number(smoke["MFLOPs/img (fwd)"])


def test_time_to_accuracy_trains_each_preset_and_gives_the_ratio(synthetic_folder, tmp_path):
    out = ok("time_to_accuracy.py", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
             "--presets", "smoke,keras-seed", "--seeds", "0,1", "--target", "0.5", "--set", "epochs=2",
             "--device", "cpu", *TINY)
    assert "with --set epochs=2 --set val_size=50" in out  # the table says what it measured
    rows = {r["preset"]: r for r in table(out)}
    assert set(rows) == {"smoke", "keras-seed"}
    for r in rows.values():
        assert r["epochs"] == "2/2"
        reached, runs = map(int, r["reached 50%"].split("/"))
        assert runs == 2 and (r["time to target (median, min-max)"] == "-") == (reached == 0)
    # The 4-class synthetic task is learnt in two epochs by both models...
    assert rows["smoke"]["reached 50%"] == "2/2" and number(rows["smoke"]["final acc"]) >= 50
    # ...and the headline line compares them whichever way it went.
    assert re.search(r"^# keras-seed (needs [\d.]+x the time of smoke|did not reach 50%)", out, re.M)


def test_time_to_accuracy_reads_finished_run_folders(smoke_run, tmp_path):
    rows = table(ok("time_to_accuracy.py", "--from-runs", smoke_run, "--target", "0.1"))
    assert len(rows) == 1 and rows[0]["preset"] == "smoke" and rows[0]["epochs"] == "3"
    assert rows[0]["reached 10%"] == "1/1"
    not_a_run = benchmark("time_to_accuracy.py", "--from-runs", tmp_path, "--target", "0.1")
    assert not_a_run.returncode != 0 and "is not a run folder: it has no history.csv" in not_a_run.stderr
    assert "Traceback" not in not_a_run.stderr


def test_accuracy_vs_time_tables_and_draws_finished_runs(smoke_run, tmp_path):
    import json

    from PIL import Image

    figure = tmp_path / "accuracy_vs_time.png"
    rows = table(ok("accuracy_vs_time.py", smoke_run, smoke_run, "--out", figure))
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert [(r["preset"], r["runs"]) for r in rows] == [("smoke", "2")]
    assert rows[0]["test top-1"] == f"{100 * metrics['test']['top1']:.2f}% ± 0.00"  # the same run twice
    with Image.open(figure) as img:
        assert img.size == (900, 550)
    not_a_run = benchmark("accuracy_vs_time.py", tmp_path)
    assert not_a_run.returncode == 2 and "is not a run folder" in not_a_run.stderr


def test_inference_times_pytorch_and_onnxruntime_on_a_trained_run(smoke_run):
    out = ok("inference.py", smoke_run, "--seconds", "0.2", "--batch-size", "32")
    assert "ONNX top-1 agreement with PyTorch: 100%" in out
    rows = table(out)
    assert [r["runtime"].split()[0] for r in rows] == ["PyTorch", "onnxruntime"]
    for r in rows:
        assert number(r["images/s (batch 32)"]) > 0
        assert 0 < number(r["1-image latency p50"]) <= number(r["p95"])


def test_tricks_switches_one_trick_per_row(synthetic_folder, tmp_path):
    out = ok("tricks.py", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache", "--preset", "smoke",
             "--train-images", "300", "--epochs", "2", "--seeds", "0", "--only", "0,6", "--device", "cpu", *TINY)
    rows = table(out)
    assert [r["variant"] for r in rows] == ["all tricks (smoke preset)", "no translation"]
    assert all(r["seeds"] == "1" and 0 <= number(r["test acc"]) <= 100 for r in rows)
    assert "300 training images of" in out and "2 epochs" in out


def test_gpu_speedrun_procedure_runs_on_the_cpu_when_asked(synthetic_folder, tmp_path):
    out = ok("gpu_speedrun.py", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
             "--preset", "smoke", "--seeds", "0", "--device", "cpu", *TINY)
    assert re.search(r"^seed 0: test [\d.]+% in [\d.]+s$", out, re.M)
    assert re.search(r"^test accuracy \(no TTA\), 1 seeds: [\d.]+% ± 0.00$", out, re.M)
    assert re.search(r"^training time \(data on device, after warm-up\): median [\d.]+s", out, re.M)
    # The whole `cifar100 train` command, with the same --set, ran as a user would run it.
    assert re.search(r"^whole command `cifar100 train --preset smoke`: [\d.]+s$", out, re.M)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_speedrun_without_a_gpu_says_so():
    result = benchmark("gpu_speedrun.py")
    assert result.returncode != 0 and "needs a CUDA GPU" in result.stderr and "--device cpu" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_setting_is_refused_before_anything_trains(synthetic_folder, tmp_path):
    result = benchmark("time_to_accuracy.py", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
                       "--presets", "smoke", "--set", "epoch=2")
    assert result.returncode != 0 and "unknown setting 'epoch'" in result.stderr


def test_serve_load_answers_every_request_200_or_503_on_a_tiny_scale(smoke_run):
    out = ok("serve_load.py", smoke_run, "--small", "24", "--large", "4", "--large-size", "1600x1200",
             "--clients", "4", "--settle", "0.5")
    rows = table(out)
    assert [r["phase"][:3] for r in rows] == ["(a)", "(b)"]
    for r in rows:
        sent = int(r["requests"].split("/")[0])
        assert (r["5xx"], r["dropped"], r["other 4xx"]) == ("0", "0", "0"), r
        assert int(r["200"]) + int(r["503"]) == sent and int(r["200"]) > 0, r
        assert number(r["peak"]) >= number(r["RSS before"]) > 0


def test_finetune_compares_scratch_and_fine_tuned_runs(synthetic_run, synthetic_folder, tmp_path):
    import tarfile

    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(synthetic_folder / split, arcname=split)
    out = ok("finetune.py", "--init-from", synthetic_run, "--archive", archive, "--per-class", 40, "--seeds", 0,
             "--preset", "smoke", "--work", tmp_path / "work")
    rows = [line for line in out.splitlines() if line.startswith("| ") and "%" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| from scratch", f"| fine-tuned from {synthetic_run}"]
    # 40 training images per class went into the folder (smoke holds out 100 for validation).
    assert len(list((tmp_path / "work" / "cifar10-40-per-class" / "train").rglob("*.png"))) == 4 * 40
    assert (tmp_path / "work" / "finetune-s0" / "config.json").is_file()
