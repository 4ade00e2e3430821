"""report.html: one self-contained page. Opened in headless Chromium with every network request
blocked, it shows every figure of metrics.json (each <img> decoded, at the PNG's own size) and
the headline numbers; text from the run (class names, the command) is escaped, never markup."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cifar100.evaluation.evaluate import Figure, evaluate_run
from cifar100.evaluation.report import render_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def open_offline(page_path: Path) -> dict:
    """Load a page from disk in headless Chromium with every non-file request aborted. Returns
    the <img> elements' state, the page text, and every request the page tried to make."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():  # CI installs it (.ci/run); a user's machine may not have it
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    attempted: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: attempted.append(request.url))

            def only_local(route):
                if route.request.url.startswith(("file:", "data:")):
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", only_local)
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({alt: e.alt, width: e.naturalWidth, height: e.naturalHeight, src: e.src.slice(0, 22)}))"
            )
            text = page.inner_text("body")
        finally:
            browser.close()
    return {"images": images, "text": text, "requests": attempted}


@pytest.fixture(scope="module")
def evaluated_smoke_run(tmp_path_factory, smoke_run) -> tuple[Path, dict]:
    """A copy of the engine's smoke run (real CIFAR-10 images), evaluated with TTA."""
    run = tmp_path_factory.mktemp("report") / "smoke"
    shutil.copytree(smoke_run, run)
    return run, evaluate_run(run, tta=True, quiet=True)


def test_report_shows_every_figure_offline(evaluated_smoke_run):
    run, metrics = evaluated_smoke_run
    page = open_offline(run / "report.html")
    # Nothing but the file itself was ever requested: the page needs no network.
    assert [url for url in page["requests"] if not url.startswith(("file:", "data:"))] == []
    figures = metrics["figures"]
    assert len(page["images"]) == len(figures) >= 8
    for image, (key, relative) in zip(page["images"], figures.items()):
        with Image.open(run / relative) as png:
            assert (image["width"], image["height"]) == png.size, key
        assert image["src"] == "data:image/png;base64,"
    text = page["text"]
    assert f"{100 * metrics['test']['top1']:.2f}%" in text
    assert f"{100 * metrics['test_tta']['top1']:.2f}%" in text and "test, TTA" in text
    config = json.loads((run / "config.json").read_text())
    assert config["command"] in text  # how to reproduce the run
    assert f"cifar100 evaluate {run} --tta" in text
    assert "Where the images of each true class went (test, " in text
    for title in ("Training history", "Confusion matrix", "Per-class accuracy", "Reliability diagram",
                  "Prediction gallery", "Most confident mistakes", "Grad-CAM", "Class distribution"):
        assert title in text


def test_report_embeds_the_exact_png_bytes(evaluated_smoke_run):
    run, metrics = evaluated_smoke_run
    html = (run / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [base64.b64decode(data) for data in embedded] == [(run / p).read_bytes() for p in metrics["figures"].values()]
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_text_from_the_run_is_escaped(tmp_path):
    """Class names and commands come from user folders and flags: they must render as text."""
    from cifar100.evaluation import plots

    figure = Figure("history", "Training <history>", tmp_path / "h.png", "caption & <b>more</b>")
    plots.plot_reliability_diagram([0, 0.5, 1], [0.3, 0.8], [0.2, 0.9], [1, 1], 0.1, figure.path)
    split = {"split": "test", "tta": False, "images": 2, "top1": 0.5, "top5": None, "loss": 1.0, "ece": 0.1,
             "per_class": [{"class": "<script>alert(1)</script>", "support": 1, "accuracy": 1.0, "precision": 0.5,
                            "recall": 1.0, "f1": 0.667}],
             "most_confused": [{"true": "a&b", "predicted": "<i>", "count": 1, "share_of_true": 1.0}]}
    metrics = {"checkpoint": "checkpoints/best.pt", "epoch": 1, "dataset": {"name": "<img src=x>"},
               "model": {"arch": "stagenet"}, "test": split}
    html = render_report(title="run <1>", metrics=metrics, figures=[figure], config={"command": "cifar100 train --name '<x>'"},
                         evaluate_command="cifar100 evaluate 'runs/<1>'")
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x>" not in html and "&lt;img src=x&gt;" in html
    assert "a&amp;b" in html and "&lt;i&gt;" in html and "run &lt;1&gt;" in html
    assert "caption &amp; &lt;b&gt;more&lt;/b&gt;" in html
    assert "cifar100 train --name &#x27;&lt;x&gt;&#x27;" in html
    page_path = tmp_path / "report.html"
    page_path.write_text(html)
    page = open_offline(page_path)
    assert len(page["images"]) == 1 and page["images"][0]["width"] == 700
    assert "<script>alert(1)</script>" in page["text"]  # shown as text, not run


def fake_metrics(classes: int, coarse: bool, train_seconds: float = 1526.8) -> dict:
    """metrics.json of a `classes`-way model: class i has accuracy 1 - i / (classes + 5)."""
    per_class = [{"class": f"class{i:03d}", "support": 100, "accuracy": 1 - i / (classes + 5), "precision": 0.5,
                  "recall": 0.5, "f1": 0.5} for i in range(classes)]
    split = {"split": "test", "tta": False, "images": 100 * classes, "top1": 0.7, "top5": 0.9, "loss": 1.1,
             "ece": 0.04, "coarse_top1": 0.8 if coarse else None, "per_class": per_class,
             "most_confused": [{"true": "class001", "predicted": "class002", "count": 9, "share_of_true": 0.09}]}
    if coarse:
        split["per_superclass"] = [{"superclass": f"super{j}", "support": 500, "accuracy": 0.5 + j / 40} for j in range(20)]
    return {"checkpoint": "checkpoints/best.pt", "epoch": 17, "dataset": {"name": "cifar"}, "model": {"arch": "stagenet"},
            "test": split, "train_seconds": train_seconds}


def table_after(html: str, heading: str) -> str:
    start = html.index(heading)
    return html[start:html.index("</table>", start)]


def test_a_10_class_report_has_no_superclass_column_and_lists_each_class_once():
    html = render_report(title="ten", metrics=fake_metrics(10, coarse=False), figures=[], config=None,
                         evaluate_command="cifar100 evaluate run")
    headline = table_after(html, "Headline numbers")
    assert "superclass" not in headline and "<th>ECE</th>" in headline
    assert "Best 10" not in html and "Worst 10" not in html and "All 10 classes" not in html
    listed = table_after(html, "Classes, best first (test)")
    assert [f"class{i:03d}" in listed for i in range(10)] == [True] * 10
    assert listed.index("class000") < listed.index("class009")
    assert "Superclasses" not in html
    assert "Training took 25 min 27 s." in html


def test_a_100_class_report_shows_superclasses_and_distinct_best_and_worst_tables():
    html = render_report(title="hundred", metrics=fake_metrics(100, coarse=True, train_seconds=42.25), figures=[],
                         config=None, evaluate_command="cifar100 evaluate run")
    headline = table_after(html, "Headline numbers")
    assert "<th>superclass top-1</th>" in headline and "80.00%" in headline and "10,000" in headline
    best, worst = table_after(html, "Best 10</h3>"), table_after(html, "Worst 10</h3>")
    assert "class000" in best and "class009" in best and "class090" not in best
    assert "class099" in worst and "class090" in worst and "class000" not in worst
    assert "All 100 classes" in html
    hardest = table_after(html, "Superclasses, hardest first (test)")
    assert hardest.index("super0<") < hardest.index("super19<")
    assert "Training took 42.2 s." in html or "Training took 42.3 s." in html


def test_per_class_colours_call_a_class_worst_only_below_the_mean():
    from cifar100.evaluation.plots import FAILED_COLOR, PASSED_COLOR, per_class_colors

    # Ten classes, one far below the rest (the mean is 90.5%): of the five lowest, only it is
    # below the mean, so it alone is red; the five best are all above it, so green.
    accuracies = [0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.5]
    colors = per_class_colors(accuracies, named=5)
    assert colors[:5] == [PASSED_COLOR] * 5
    assert colors[5:9] == ["tab:blue"] * 4 and colors[9] == FAILED_COLOR
    # A hundred evenly spread classes: the five best green, the five worst red.
    spread = [1 - i / 100 for i in range(100)]
    colors = per_class_colors(spread, named=5)
    assert colors.count(PASSED_COLOR) == 5 and colors.count(FAILED_COLOR) == 5 and colors[-1] == FAILED_COLOR


def test_confusion_cells_are_blank_only_where_no_image_went():
    from cifar100.evaluation.plots import confusion_cell_label

    assert confusion_cell_label(0, 0.0) == ""
    assert confusion_cell_label(1, 0.001) == "<1"
    assert confusion_cell_label(45, 0.45) == "45"
