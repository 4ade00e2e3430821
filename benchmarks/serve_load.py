"""`cifar100 serve` under load, on the loopback interface only: the real server in its own
process, many clients at once, bounded in requests and in time. Two phases:

  (a) small photos: `--small` uploads of a 640x480 JPEG;
  (b) large photos: `--large` uploads of a `--large-size` PNG (27 megapixels by default, about
      5 MB, within the server's default limits of 10 MiB and 50 megapixels).

For each: requests answered 200, 503 (busy: the client may retry), other 4xx, 5xx and
dropped connections; throughput; latency percentiles of the 200s; and the server's peak RSS
during the phase and its settled RSS a few seconds after it.

    python benchmarks/serve_load.py runs/<name>
    python benchmarks/serve_load.py runs/<name> --small 40 --large 4 --large-size 2000x1500 --clients 4
"""

from __future__ import annotations

import argparse
import io
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, run_main  # noqa: E402

from cifar100.errors import ConfigError  # noqa: E402


def photo_bytes(width: int, height: int, fmt: str, seed: int = 0) -> bytes:
    """A photo-like image: smooth colour gradients with a coarse grain (noise in 16x16-pixel
    blocks), so it compresses about as a photo does (a 27-megapixel PNG of about 5 MB) rather
    than as flat colour or as pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [127 + 100 * np.sin(x / (width / (3 + c)) + y / (height / (2 + c)) + c) for c in range(3)]
    grain = rng.normal(0, 4, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    image = np.stack(channels, axis=-1) + np.repeat(np.repeat(grain, 16, axis=0), 16, axis=1)[:height, :width]
    out = io.BytesIO()
    Image.fromarray(image.clip(0, 255).astype(np.uint8), "RGB").save(
        out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 6}))
    return out.getvalue()


class Server:
    """`cifar100 serve RUN --port 0` on 127.0.0.1, with a thread sampling its RSS."""

    def __init__(self, run: Path, extra: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "cifar100", "serve", str(run), "--port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        deadline, log = time.monotonic() + 120, []
        self.base = None
        while self.base is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise ConfigError("cifar100 serve did not start within 120 s:\n" + "".join(log)) from None
            log.append(line)
            found = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", line)
            if found:
                self.base = found.group(1)
            elif self.proc.poll() is not None:
                raise ConfigError("cifar100 serve exited:\n" + "".join(log))
        self.peak = 0.0
        self._sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        while self._sampling and self.proc.poll() is None:
            self.peak = max(self.peak, self.rss_mib())
            time.sleep(0.02)

    def stop(self) -> None:
        self._sampling = False
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def phase(server: Server, name: str, body: bytes, content_type: str, requests: int, clients: int,
          time_limit: float, settle_s: float) -> dict:
    import httpx

    started = time.monotonic()
    stop_at = started + time_limit
    local = threading.local()

    def one(_: int) -> tuple[str, float]:
        if time.monotonic() > stop_at:
            return "not sent", 0.0
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=server.base, timeout=120)
        t0 = time.monotonic()
        try:
            code = local.client.post("/predict", files={"file": ("photo", body, content_type)}).status_code
        except httpx.HTTPError as exc:
            return f"dropped ({type(exc).__name__})", time.monotonic() - t0
        return str(code), time.monotonic() - t0

    server.peak = server.rss_mib()
    before = server.peak
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    elapsed = time.monotonic() - started
    peak = server.peak
    time.sleep(settle_s)
    settled = server.rss_mib()
    codes = [c for c, _ in results]
    ok = sorted(t for c, t in results if c == "200")

    def pct(q: float) -> str:
        return f"{1000 * ok[min(len(ok) - 1, int(q * len(ok)))]:.0f} ms" if ok else "-"

    sent = [c for c in codes if c != "not sent"]
    return {
        "phase": name, "requests": f"{len(sent)}/{requests}", "clients": clients,
        "200": codes.count("200"), "503": codes.count("503"),
        "other 4xx": sum(c.isdigit() and c.startswith("4") for c in codes),
        "5xx": sum(c.isdigit() and c.startswith("5") and c != "503" for c in codes),
        "dropped": sum(c.startswith("dropped") for c in codes),
        "req/s": f"{len(sent) / elapsed:.1f}",
        "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
        "RSS before": f"{before:.0f} MiB", "peak": f"{peak:.0f} MiB", "settled": f"{settled:.0f} MiB",
        "_median": statistics.median(ok) if ok else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder or checkpoint to serve")
    parser.add_argument("--small", type=int, default=500, help="requests of phase (a)")
    parser.add_argument("--large", type=int, default=32, help="requests of phase (b)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--large-size", default="6000x4500", help="WIDTHxHEIGHT of the large PNG")
    parser.add_argument("--time-limit", type=float, default=300, help="seconds per phase; later requests are not sent")
    parser.add_argument("--settle", type=float, default=5, help="seconds to wait before reading the settled RSS")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to cifar100 serve (e.g. --server-arg=--slots=1)")
    args = parser.parse_args()
    match = re.fullmatch(r"(\d+)x(\d+)", args.large_size)
    if not match:
        raise ConfigError(f"--large-size must be WIDTHxHEIGHT, got {args.large_size!r}")
    if min(args.small, args.large, args.clients) < 1:
        raise ConfigError("--small, --large and --clients must be at least 1")
    small = photo_bytes(640, 480, "JPEG")
    large = photo_bytes(int(match.group(1)), int(match.group(2)), "PNG", seed=1)
    server = Server(args.run, args.server_arg)
    try:
        rows = [
            phase(server, "(a) small JPEG 640x480", small, "image/jpeg", args.small, args.clients, args.time_limit, args.settle),
            phase(server, f"(b) large PNG {args.large_size}, {len(large) / 2**20:.1f} MiB", large, "image/png",
                  args.large, args.clients, args.time_limit, args.settle),
        ]
    finally:
        server.stop()
    columns = [c for c in rows[0] if not c.startswith("_")]
    print(f"# serve_load: cifar100 serve {args.run} {' '.join(args.server_arg)} on {server.base}")
    print_table(rows, columns)


if __name__ == "__main__":
    run_main(main)
