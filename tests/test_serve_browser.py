"""`cifar100 serve` as a user runs it: the real command in its own process on a free port of
127.0.0.1, spoken to over HTTP, and its page driven in a real headless Chromium (Playwright):
pick a photo, see it, its 32x32 view and five bars."""

from __future__ import annotations

import base64
import io
import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from run_fixtures import serve_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server(smoke_run):
    with serve_process(smoke_run) as started:
        yield started


@pytest.fixture(scope="module")
def photo(cifar10_small_folder, tmp_path_factory) -> Path:
    """A real photo as a user has it: large, not square, JPEG."""
    source = sorted((cifar10_small_folder / "test" / "ship").glob("*.jpg"))[0]
    path = tmp_path_factory.mktemp("upload") / "harbour.jpg"
    Image.open(source).convert("RGB").resize((800, 600), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def non_loopback_ipv4() -> str | None:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except socket.gaierror:
        return None
    addresses = {info[4][0] for info in infos} - {"127.0.0.1"}
    return min(addresses) if addresses else None


def test_the_real_server_process_answers_over_http(server, photo):
    base, log, _ = server
    assert base.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/health").json()["status"] == "ok"
        response = http.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert response.status_code == 200
        assert len(response.json()["top_k"]) == 5 and response.json()["original_size"] == [800, 600]
        bad = http.post("/predict", files={"file": ("notes.jpg", b"shopping list: milk", "image/jpeg")})
        assert bad.status_code == 400 and "not an image" in bad.json()["detail"]
        assert http.get("/health").status_code == 200  # still up
    # Bound to 127.0.0.1 alone, not to every interface: another loopback address (all of
    # 127/8 reaches this machine on Linux) and the machine's own address, if any, refuse.
    port = int(base.rsplit(":", 1)[1])
    for other in filter(None, ["127.0.0.2", non_loopback_ipv4()]):
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2).close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_many_concurrent_requests_all_succeed_with_bounded_memory(server, photo):
    """400 requests from 16 clients at once, a quarter of them abusive (oversized, truncated,
    not an image): every good one answers 200, every bad one a 4xx, within a time bound, and
    the server's memory settles instead of growing with the request count."""
    from concurrent.futures import ThreadPoolExecutor

    base, _, proc = server
    good = photo.read_bytes()
    bad = {
        "truncated": good[: len(good) // 3],
        "not an image": b"%PDF-1.4 not a picture" * 50,
        "oversized": bytes(11 << 20),  # over the default 10 MiB limit
    }

    def one(i: int) -> tuple[str, bool, int]:
        kind = ["good", "good", "good", *bad][i % 6]
        with httpx.Client(base_url=base, timeout=60) as http:
            response = http.post("/predict", files={"file": ("upload.jpg", bad.get(kind, good), "image/jpeg")})
        code = response.status_code
        return kind, code == 200 if kind == "good" else 400 <= code < 500, code

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(48)))  # warm-up: first-request allocations
        before = rss_mib(proc.pid)
        started = time.monotonic()
        results = list(pool.map(one, range(400)))
        elapsed = time.monotonic() - started
    after = rss_mib(proc.pid)
    wrong = [r for r in results if not r[1]]
    assert not wrong, wrong[:5]
    assert elapsed < 120
    assert after - before < 150, f"server memory grew from {before:.0f} to {after:.0f} MiB"
    assert proc.poll() is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
def test_the_page_in_a_real_browser_shows_the_photo_the_32x32_view_and_five_bars(server, photo, tmp_path):
    # Locator expectations, not wait_for_function: the page's CSP forbids the eval that
    # string predicates need, and the test must not loosen the CSP it runs under.
    from playwright.sync_api import expect, sync_playwright

    base, _, _ = server
    expected = httpx.post(f"{base}/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    requests, problems = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(base + "/")
            expect(page.locator("#model-info")).to_contain_text("classes")
            # The classes the model knows, in a list that starts folded.
            classes = httpx.get(f"{base}/classes").json()["classes"]
            expect(page.locator("#class-list li")).to_have_count(len(classes))
            expect(page.locator("#classes summary")).to_have_text(f"The {len(classes)} classes it knows")
            assert not page.locator("#classes").evaluate("e => e.open")
            assert page.locator("#class-list li").first.text_content() == classes[0].replace("_", " ")
            # One way to pick a file: the "pick a file" link; the browser's own button is not drawn.
            expect(page.locator("label.pick")).to_be_visible()
            box = page.locator("#file-input").bounding_box()
            assert box is None or (box["width"] <= 1 and box["height"] <= 1)

            page.set_input_files("#file-input", str(photo))
            expect(page.locator("#bars .bar")).to_have_count(5, timeout=30_000)
            expect(page.locator("#model-input")).to_have_js_property("naturalWidth", 32)
            expect(page.locator("#original")).to_have_js_property("naturalWidth", 800)
            labels = page.locator("#bars .bar-label").all_text_contents()
            assert labels == [entry["class"] for entry in expected["top_k"]]
            widths = page.eval_on_selector_all("#bars .bar-fill", "els => els.map(e => e.getBoundingClientRect().width)")
            assert widths == sorted(widths, reverse=True) and widths[0] > 0
            shown = page.eval_on_selector("#model-input", "e => [e.getBoundingClientRect().width, getComputedStyle(e).imageRendering]")
            assert shown == [160, "pixelated"]
            assert page.locator("#result").is_visible()
            screenshot = tmp_path / "page.png"
            page.screenshot(path=str(screenshot), full_page=True)

            # A file that is not an image: the server's reason appears on the page.
            notes = tmp_path / "notes.jpg"
            notes.write_text("not a photo")
            page.set_input_files("#file-input", str(notes))
            expect(page.locator("#status")).to_have_class(re.compile(r"\berror\b"))
            assert "not an image" in page.locator("#status").text_content()

            # Dropping a photo on the drop zone works like picking one.
            dropped = page.evaluate_handle(
                """(b64) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const transfer = new DataTransfer();
                    transfer.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
                    return transfer;
                }""",
                base64.b64encode(photo.read_bytes()).decode("ascii"),
            )
            page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
            expect(page.locator("#status")).to_contain_text("dropped.jpg: JPEG, 800x600")
            expect(page.locator("#status")).not_to_have_class(re.compile(r"\berror\b"))
            assert page.locator("#bars .bar-label").all_text_contents() == labels
        finally:
            browser.close()

    with Image.open(screenshot) as shot:
        assert shot.format == "PNG" and shot.size[0] == 1100 and shot.size[1] >= 800
    # Everything the page loaded came from the app (or is the photo itself, as blob:/data:).
    assert all(url.startswith((base, "blob:", "data:")) for url in requests), requests
    # The server's 400 for the bad file shows up as a failed-resource console error; nothing else may.
    assert all("400" in text for text in problems), problems


def test_a_full_server_answers_503_with_retry_after_and_stays_up(smoke_run, tmp_path):
    """One slot and no queue: of eight large photos sent at once, the server classifies some
    and answers the rest 503 with Retry-After (never a 5xx or a dropped connection), and
    is idle and well afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    large = buffer.getvalue()
    with serve_process(smoke_run, "--slots", "1", "--queue", "0") as (base, _, proc):
        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as http:
                return http.post("/predict", files={"file": ("big.png", large, "image/png")})

        responses = []
        with ThreadPoolExecutor(8) as pool:
            for _ in range(3):
                responses += list(pool.map(one, range(8)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "the server is busy" in busy.json()["detail"]
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.post("/predict", files={"file": ("big.png", large, "image/png")}).status_code == 200
        assert proc.poll() is None
