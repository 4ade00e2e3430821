"""`cifar100 compare`: a finished run (the engine's smoke run) beside an interrupted,
unevaluated copy of it: one figure of both histories, a table with each run's own numbers,
and named errors for folders that are not runs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cifar100.evaluation import plots
from cifar100.cli.main import main
from run_fixtures import run_cli


def history_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def interrupted_copy(tmp_path, smoke_run) -> Path:
    """The smoke run as if stopped after epoch 2 and never evaluated."""
    run = tmp_path / "interrupted"
    shutil.copytree(smoke_run, run)
    lines = (run / "history.csv").read_text().splitlines(keepends=True)
    (run / "history.csv").write_text("".join(lines[:3]))
    (run / "metrics.json").unlink()
    config = json.loads((run / "config.json").read_text())
    config["name"] = "interrupted"
    (run / "config.json").write_text(json.dumps(config))
    return run


def table_row(stdout: str, name: str) -> list[str]:
    """The cells of the run's row (the table's header and rule come first)."""
    rows = stdout.splitlines()[2:]
    return next(line for line in rows if line.split()[0] == name).split()


def compare_in_process(capsys, *args) -> tuple[int, str, str]:
    """The CLI's own entry point, in this process (a subprocess per error case costs seconds)."""
    code = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_a_finished_and_an_interrupted_run(tmp_path, smoke_run, interrupted_copy):
    figure = tmp_path / "figures" / "compare.png"
    result = run_cli("compare", smoke_run, interrupted_copy, "--out", figure)
    assert result.returncode == 0, result.stderr
    with Image.open(figure) as image:
        assert image.size == (round(plots.HISTORY_SIZE[0] * plots.DPI), round(plots.HISTORY_SIZE[1] * plots.DPI))

    metrics = json.loads((smoke_run / "metrics.json").read_text())
    config = json.loads((smoke_run / "config.json").read_text())
    finished = table_row(result.stdout, config["name"])
    best_val = max(float(r["val_acc"]) for r in history_rows(smoke_run))
    assert finished[1:3] == ["smoke", config["model"]["arch"]]
    assert finished[4] == "3/3" and finished[5] == f"{100 * best_val:.2f}%"
    assert finished[6] == f"{100 * metrics['test']['top1']:.2f}%"

    interrupted = table_row(result.stdout, "interrupted")
    best_val = max(float(r["val_acc"]) for r in history_rows(smoke_run)[:2])
    assert interrupted[4] == "2/3" and interrupted[5] == f"{100 * best_val:.2f}%"
    assert interrupted[6] == "-"  # never evaluated: no test number is made up
    assert "TTA top-1" not in result.stdout  # neither run was evaluated with TTA


def test_runs_with_the_same_name_are_told_apart(tmp_path, smoke_run, capsys):
    copy = tmp_path / "elsewhere" / smoke_run.name
    shutil.copytree(smoke_run, copy)
    code, out, err = compare_in_process(capsys, smoke_run, copy, "--out", tmp_path / "c.png")
    assert code == 0, err
    assert table_row(out, str(smoke_run)) and table_row(out, str(copy))


def test_compare_refuses_what_is_not_a_run(tmp_path, smoke_run, capsys):
    out_png = tmp_path / "c.png"
    code, _, err = compare_in_process(capsys, smoke_run, tmp_path / "missing", "--out", out_png)
    assert code == 2 and "missing is not a run folder (no such directory)" in err

    (tmp_path / "photos").mkdir()
    code, _, err = compare_in_process(capsys, tmp_path / "photos", "--out", out_png)
    assert code == 2 and "neither config.json nor history.csv" in err

    broken = tmp_path / "broken"
    shutil.copytree(smoke_run, broken)
    (broken / "history.csv").write_text("epoch,train_loss\n1,abc\n")
    code, _, err = compare_in_process(capsys, broken, "--out", out_png)
    assert code == 2 and "history.csv" in err

    (broken / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
    code, _, err = compare_in_process(capsys, broken, "--out", out_png)
    assert code == 2 and "lacks the columns lr, seconds, train_acc, val_acc, val_loss" in err

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(smoke_run / "config.json", fresh / "config.json")
    code, _, err = compare_in_process(capsys, fresh, "--out", out_png)
    assert code == 2 and "none of these runs has finished an epoch" in err
    assert not out_png.exists()

    # The real entry point reports the same way.
    result = run_cli("compare", tmp_path / "photos")
    assert result.returncode == 2 and "cifar100: error:" in result.stderr and "not a run folder" in result.stderr
