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

from cifar100.evaluate import Figure, evaluate_run
from cifar100.report import render_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def open_offline(page_path: Path) -> dict:
    """Load a page from disk in headless Chromium with every non-file request aborted. Returns
    the <img> elements' state, the page text, and every request the page tried to make."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), "headless Chromium is needed: apt-get install -y chromium"
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
    from cifar100 import plots

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
