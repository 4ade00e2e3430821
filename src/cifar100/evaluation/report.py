"""report.html: one self-contained page per run — the config, the headline numbers, every
figure and the commands that reproduce it. Images are embedded as base64 data URIs and the
style is inline, so the page shows everything from a mail attachment or an offline laptop:
it never asks the network for anything (no scripts, fonts or external links to load)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable

from cifar100.fileio import atomic_write_text

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } .subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
.good { color: #1a9641; } .bad { color: #d7191c; }
"""

SPLITS = [("test", "test"), ("test_tta", "test, TTA"), ("val", "validation"), ("val_tta", "validation, TTA")]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def headline_table(metrics: dict[str, Any]) -> str:
    splits = [(label, metrics[key]) for key, label in SPLITS if metrics.get(key)]
    # Superclass accuracy exists for CIFAR-100 only: no column of dashes elsewhere.
    coarse = any(s.get("coarse_top1") is not None for _, s in splits)
    rows = []
    for label, s in splits:
        rows.append([label, f"{s['images']:,}", _percent(s["top1"]), _percent(s["top5"]),
                     "-" if s["loss"] is None else f"{s['loss']:.4f}", _percent(s["ece"])]
                    + ([_percent(s.get("coarse_top1"))] if coarse else []))
    header = ["split", "images", "top-1", "top-5", "loss", "ECE"] + (["superclass top-1"] if coarse else [])
    return _table(header, rows)


def duration(seconds: float) -> str:
    """1526.8 -> "25 min 27 s"; under a minute, in seconds."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def embedded_image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _class_tables(test: dict[str, Any], count: int = 10) -> str:
    # Best first; ties keep the dataset's class order, in the worst list too.
    per_class = [c for c in test["per_class"] if c["accuracy"] is not None]
    best_first = sorted(per_class, key=lambda c: -c["accuracy"])
    worst_first = sorted(per_class, key=lambda c: c["accuracy"])

    def rows(items):
        return [[c["class"], str(c["support"]), _percent(c["accuracy"]), _percent(c["precision"]), _percent(c["f1"])]
                for c in items]

    header = ["class", "test images", "accuracy (recall)", "precision", "F1"]
    confused = [[p["true"], p["predicted"], str(p["count"]), _percent(p["share_of_true"])] for p in test["most_confused"]]
    parts = [
        "<h2>Most confused classes (test)</h2>",
        _table(["true class", "predicted as", "images", "share of the true class"], confused) if confused
        else "<p>No test image was misclassified.</p>",
    ]
    if len(per_class) <= 2 * count:
        # Best and worst lists would overlap or be one list reversed: show every class once.
        parts += ["<h2>Classes, best first (test)</h2>", _table(header, rows(best_first))]
    else:
        parts += [
            "<h2>Best and worst classes (test)</h2>",
            f"<h3>Best {count}</h3>", _table(header, rows(best_first[:count])),
            f"<h3>Worst {count}</h3>", _table(header, rows(worst_first[:count])),
            f"<details><summary>All {len(per_class)} classes</summary>{_table(header, rows(best_first))}</details>",
        ]
    superclasses = sorted((s for s in test.get("per_superclass") or [] if s["accuracy"] is not None),
                          key=lambda s: s["accuracy"])
    if superclasses:
        # Accuracy of the superclass prediction (the fine prediction mapped to its superclass).
        parts += ["<h2>Superclasses, hardest first (test)</h2>",
                  _table(["superclass", "test images", "superclass accuracy"],
                         [[s["superclass"], str(s["support"]), _percent(s["accuracy"])] for s in superclasses])]
    return "\n".join(parts)


def render_report(
    *,
    title: str,
    metrics: dict[str, Any],
    figures: list,
    config: dict[str, Any] | None,
    evaluate_command: str,
) -> str:
    """figures: objects with title, path (a PNG) and caption, in the order to show them."""
    test = metrics["test"]
    subtitle = (f"{_e(metrics['dataset']['name'])} &middot; {_e(metrics['model'].get('arch', 'model'))} &middot; "
                f"checkpoint {_e(metrics['checkpoint'])} (epoch {_e(metrics['epoch'])}) &middot; "
                f"evaluated {_e(metrics.get('evaluated', ''))}")
    train_command = (config or {}).get("command")
    reproduce = [
        "<h2>Reproduce</h2>",
        f"<p>Train: <code>{_e(train_command)}</code></p>" if train_command
        else "<p>Train: this checkpoint came without its run folder, so the training command is unknown.</p>",
        f"<p>Evaluate again (these numbers and figures): <code>{_e(evaluate_command)}</code></p>",
    ]
    notes = []
    if metrics.get("tta"):
        notes.append(f"<p>Rows marked TTA (test-time augmentation): {_e(metrics['tta'])}. The plain rows never use it.</p>")
    if metrics.get("temperature", 1.0) != 1.0:
        notes.append(f"<p>Probabilities (loss, ECE, confidences) are calibrated: the logits are divided by "
                     f"{metrics['temperature']:.3f}, the temperature fitted on the validation split, so the "
                     f"validation loss and ECE are in-sample; the test ones are not.</p>")
    if metrics.get("train_seconds") is not None:
        notes.append(f"<p>Training took {duration(metrics['train_seconds'])}.</p>")
    figure_html = [
        f'<figure id="{_e(f.key)}"><h2>{_e(f.title)}</h2>{embedded_image(f.path, f.title)}'
        f"<figcaption>{_e(f.caption)}</figcaption></figure>"
        for f in figures
    ]
    config_text = json.dumps(config if config is not None else {"model": metrics["model"], "dataset": metrics["dataset"]},
                             indent=2)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} - cifar100 report</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="subtitle">{subtitle}</p>',
        "<h2>Headline numbers</h2>",
        headline_table(metrics),
        *notes,
        *reproduce,
        *figure_html,
        _class_tables(test),
        "<h2>Configuration</h2>",
        f"<pre>{_e(config_text)}</pre>",
        "</body></html>",
    ])


def write_report(path: str | Path, **kwargs) -> Path:
    return atomic_write_text(path, render_report(**kwargs))
