"""Export throughput and memory: N events streamed to a file through our code path, against two baselines.

    python bench/export.py [--events 1000000]

A generated NDJSON export (Mixpanel-shaped lines) is served by a minimal HTTP server in its own process
(sendfile: the server is never the bottleneck). Each variant then runs in a fresh Python process, which
reports its own wall time and peak RSS (getrusage), so the figures are comparable:
- ours (ndjson), ours (csv): `export_events_to_file` through MixpanelClient (limiter, retries, streaming);
- naive: read the whole body, split it, json.loads every line into a list, then write the list out;
- stdlib loop: stream the body line by line (httpx's text lines) and json.loads each line.
Then, in this process and without the network, parsing alone: json.loads vs our line parser on the same lines.
Targets: our peak RSS <= 0.1x the naive one; our parsing >= 2.5x the stdlib json loop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMES = ["Viewed page", "Signed up", "Added to cart", "Purchased", "Searched", "Logged in", "Shared", "Upgraded"]


def generate(path: Path, count: int) -> None:
    """`count` events like Mixpanel's export: one JSON object a line, ~330 bytes each."""
    rng = random.Random(7)
    start = 1767225600  # 2026-01-01T00:00:00Z
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            at = start + i * 86400 * 28 // count
            properties = {
                "time": at,
                "distinct_id": f"user-{rng.randrange(count // 10 + 1)}",
                "$insert_id": f"{i:012x}-{rng.getrandbits(48):012x}",
                "mp_processing_time_ms": at * 1000 + 1500,
                "$browser": rng.choice(["Chrome", "Safari", "Firefox"]),
                "$city": rng.choice(["Paris", "Berlin", "New York", "São Paulo"]),
                "mp_country_code": rng.choice(["FR", "DE", "US", "BR"]),
                "plan": rng.choice(["free", "pro", "team"]),
                "amount": round(rng.random() * 100, 2),
                "items": rng.randrange(10),
                "$os": rng.choice(["Mac OS X", "Windows", "iOS", "Android"]),
            }
            f.write(json.dumps({"event": rng.choice(NAMES), "properties": properties}, separators=(",", ":")) + "\n")


# -- the server (its own process) --------------------------------------------------------------


def serve(path: str, port: int) -> None:
    size = os.path.getsize(path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(path, "rb") as f:
                self.wfile.flush()
                self.connection.sendfile(f)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# -- the variants (each in a fresh process) ------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def ours(url: str, out: str) -> dict:
    from mixpanel_mcp.client import MixpanelClient
    from mixpanel_mcp.client.export import export_events_to_file
    from mixpanel_mcp.config import load_settings

    settings = load_settings({"MIXPANEL_API_SECRET": "bench", "MIXPANEL_EXPORT_URL": url, "MIXPANEL_TIMEOUT": "600"})
    async with MixpanelClient(settings) as client:
        read = await export_events_to_file(client, path=out, from_date="2026-01-01", to_date="2026-01-28")
    return {"events": read.summary.count, "bytes": read.summary.bytes, "skipped": read.summary.skipped_lines}


async def naive(url: str, out: str) -> dict:
    import httpx2

    async with httpx2.AsyncClient(timeout=600) as http:
        response = await http.get(url + "/export")
        body = response.content
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    with open(out, "w", encoding="utf-8") as f:
        for event in events:
            f.write(json.dumps(event, separators=(",", ":")) + "\n")
    return {"events": len(events), "bytes": len(body), "skipped": 0}


async def stdlib_loop(url: str, out: str) -> dict:
    import httpx2

    count = size = 0
    async with httpx2.AsyncClient(timeout=600) as http, http.stream("GET", url + "/export") as response:
        with open(out, "w", encoding="utf-8") as f:
            async for line in response.aiter_lines():
                size += len(line) + 1
                if not line.strip():
                    continue
                json.loads(line)
                f.write(line + "\n")
                count += 1
    return {"events": count, "bytes": size, "skipped": 0}


def run_variant(name: str, url: str, out: str) -> None:
    import anyio

    baseline = peak_rss_mb()
    fn = {"ours": ours, "naive": naive, "stdlib": stdlib_loop}[name]
    started = time.perf_counter()
    result = anyio.run(fn, url, out)
    elapsed = time.perf_counter() - started
    print(json.dumps({**result, "seconds": elapsed, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": baseline}))


# -- parsing alone, in this process --------------------------------------------------------------


def parse_only(path: Path, lines: int) -> dict[str, float | str]:
    """Events/s over the first `lines` lines held in memory (best of 5, no network, no file):
    - stdlib: json.loads on each line, nothing else (the standard-library line loop);
    - parse: the parser our code path uses, with its check that a line is an event;
    - take: our whole per-chunk step (parse, check, counts by name, distinct users, time span)."""
    from mixpanel_mcp.client import export as ours_module

    with path.open("rb") as f:
        raw = [next(f).rstrip(b"\n") for _ in range(lines)]
    text = [line.decode() for line in raw]

    def best(fn, items) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            fn(items)
            times.append(time.perf_counter() - started)
        return len(items) / min(times)

    def stdlib(items: list[str]) -> None:
        for line in items:
            json.loads(line)

    def parse(items: list[bytes]) -> None:
        loads = ours_module.loads
        for line in items:
            record = loads(line)
            if record.__class__ is not dict or record.get("event").__class__ is not str:
                raise AssertionError(line)

    def take(items: list[bytes]) -> None:
        summary = ours_module.ExportSummary()
        for start in range(0, len(items), 200):  # as the stream hands them over: ~64 KB chunks of lines
            summary.take(items[start : start + 200], sys.maxsize, None)

    parser = "orjson" if ours_module.loads is not json.loads else "json (orjson missing)"
    return {"stdlib": best(stdlib, text), "parse": best(parse, raw), "take": best(take, raw), "parser": parser}


# -- the driver ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--serve", nargs=2, metavar=("FILE", "PORT"), help=argparse.SUPPRESS)
    p.add_argument("--variant", nargs=3, metavar=("NAME", "URL", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    if args.variant:
        run_variant(*args.variant)
        return

    with tempfile.TemporaryDirectory(prefix="mixpanel-export-bench-") as tmp:
        work = Path(tmp)
        source = work / "export.ndjson"
        started = time.perf_counter()
        generate(source, args.events)
        megabytes = source.stat().st_size / 1e6
        print(f"{args.events:,} events, {megabytes:,.1f} MB of NDJSON (generated in {time.perf_counter() - started:.1f} s)")
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(source), str(port)])
        try:
            url = f"http://127.0.0.1:{port}/api/2.0"
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            rows = []
            for label, name, suffix in [
                ("ours, to .ndjson", "ours", ".ndjson"),
                ("ours, to .csv", "ours", ".csv"),
                ("stdlib json line loop", "stdlib", ".ndjson"),
                ("naive read-all-then-parse", "naive", ".ndjson"),
            ]:
                out = work / f"{name}{suffix}"
                done = subprocess.run(
                    [sys.executable, __file__, "--variant", name, url, str(out)], capture_output=True, text=True, check=False
                )
                if done.returncode != 0:
                    print(f"{label}: failed\n{done.stderr}")
                    continue
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                lines = sum(1 for _ in out.open("rb"))
                check = ""
                if name == "ours" and suffix == ".ndjson":
                    check = "identical to the source" if sha256(out) == sha256(source) else "DIFFERS from the source"
                elif suffix == ".csv":
                    check = f"{lines - 1:,} rows + header"
                rows.append((label, figures, lines, check))
                out.unlink()
        finally:
            server.terminate()
            server.wait()

        print(f"\n{'variant':<28}{'events':>11}{'events/s':>12}{'MB/s':>8}{'peak RSS':>11}  file")
        for label, f, lines, check in rows:
            rate = f["events"] / f["seconds"]
            print(
                f"{label:<28}{f['events']:>11,}{rate:>12,.0f}{f['bytes'] / 1e6 / f['seconds']:>8.1f}"
                f"{f['peak_rss_mb']:>8.0f} MB  {lines:,} lines{', ' + check if check else ''}"
            )
        by = {label: f for label, f, _, _ in rows}
        # The memory bound is asserted here, in the benchmark, not in a timed unit test.
        failures = [f"{label}: {check}" for label, _, _, check in rows if "DIFFERS" in check]
        mine, naive_f, loop = by.get("ours, to .ndjson"), by.get("naive read-all-then-parse"), by.get("stdlib json line loop")
        if mine and naive_f:
            ratio = mine["peak_rss_mb"] / naive_f["peak_rss_mb"]
            print(f"\npeak RSS, ours / naive: {ratio:.3f}x (target <= 0.1x) -> {'met' if ratio <= 0.1 else 'NOT met'}")
            if ratio > 0.1:
                failures.append(f"peak RSS is {ratio:.3f}x the naive baseline (bound: 0.1x)")
            print(f"  (the child interpreter held {mine['rss_before_mb']:.0f} MB before importing anything of ours)")
        if mine and loop:
            speed = (mine["events"] / mine["seconds"]) / (loop["events"] / loop["seconds"])
            print(f"end-to-end events/s, ours / stdlib loop: {speed:.2f}x")
        rates = parse_only(source, min(args.events, 200_000))
        base = rates["stdlib"]
        ratio = rates["parse"] / base
        print(f"\nparsing alone, in memory ({min(args.events, 200_000):,} lines, best of 5):")
        print(f"  stdlib json.loads loop                 {base:>12,.0f} events/s")
        print(
            f"  ours: {rates['parser']} + event check        {rates['parse']:>12,.0f} events/s = {ratio:.2f}x "
            f"(target >= 2.5x) -> {'met' if ratio >= 2.5 else 'NOT met'}"
        )
        print(f"  ours: the whole per-event step (+summary){rates['take']:>10,.0f} events/s = {rates['take'] / base:.2f}x")
        if "ours, to .ndjson" not in by:
            failures.append("our export to .ndjson did not run")
        if failures:
            raise SystemExit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
