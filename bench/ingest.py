"""Bulk ingestion throughput: our /import pipeline against the official SDKs, through one slow local sink.

    pip install mixpanel mixpanel-utils      # the baselines (bench only: not dependencies of the server)
    python bench/ingest.py                   # 200,000 events, 100 ms per request
    python bench/ingest.py --events 50000 --latency 0.05 --sdk-events 2000

The sink is a separate process (so it does not compete for this one's interpreter): it answers every
request after `--latency` seconds, un-gzips, parses and counts events, and keeps the distinct
(event, distinct_id, time, $insert_id) keys so a run can show nothing was lost or doubled.

Measured, one after the other, each from plain event dicts to the last answer:
  ours, paced      MixpanelClient + client/events.py as the `track` tool runs it: rules checked, $insert_id
                   derived, 2,000 per gzip request, 8 in flight, paced under Mixpanel's ~30k events/s ceiling
  ours, unpaced    the same with the pacer off: the client's capacity (what a faster ceiling would allow)
  mixpanel-utils   MixpanelUtils.import_events (2,000 per request, cpu_count*2 threads, no gzip)
  mixpanel SDK     Mixpanel.import_data through BufferedConsumer (50 per request, one at a time); it is
                   slow, so it sends `--sdk-events` events (default 5,000) and its rate is what is compared
A baseline that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import warnings
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixpanel_mcp.double.app import read_body  # noqa: E402

# -- the sink (runs in its own process) -------------------------------------------------------------


def sink_app(latency: float) -> Any:
    try:  # parse faster when orjson is around: the sink should not be the bottleneck
        from orjson import loads
    except ImportError:
        loads = json.loads
    seen: set[tuple[Any, ...]] = set()
    totals = {"events": 0, "requests": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        if path == "/stats":
            answer: Any = {**totals, "distinct": len(seen)}
        elif path == "/reset":
            seen.clear()
            totals.update(events=0, requests=0)
            answer = {"ok": True}
        else:
            await asyncio.sleep(latency)
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if "x-www-form-urlencoded" in headers.get("content-type", ""):
                body = parse_qs(body.decode())["data"][0].encode()
            events = loads(body)
            events = events if isinstance(events, list) else [events]
            for e in events:
                p = e["properties"]
                seen.add((e["event"], str(p.get("distinct_id")), p.get("time"), p.get("$insert_id")))
            totals["events"] += len(events)
            totals["requests"] += 1
            answer = {"code": 200, "num_records_imported": len(events), "status": 1, "error": None}
        payload = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    return app


def serve_sink(port: int, latency: float) -> None:
    import uvicorn

    uvicorn.run(sink_app(latency), host="127.0.0.1", port=port, log_level="warning", lifespan="off", backlog=4096)


class Sink:
    def __init__(self, latency: float) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-sink", str(self.port), "--latency", str(latency)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the sink did not start") from None
                time.sleep(0.05)

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    def reset(self) -> None:
        self._get("/reset")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# -- the contenders ---------------------------------------------------------------------------------

BASE_TIME = int(time.time()) - 30 * 86400  # a month ago: /import territory


def make_events(n: int) -> list[dict[str, Any]]:
    pages = ["/", "/pricing", "/docs", "/blog", "/signup"]
    return [
        {
            "event": "Viewed page" if i % 4 else "Signed up",
            "properties": {
                "distinct_id": f"user-{i % 20000}",
                "time": BASE_TIME + i // 10,
                "page": pages[i % 5],
                "browser": "Firefox" if i % 3 else "Chrome",
                "plan": "pro",
                "amount": (i % 100) * 1.5,
                "utm_source": "newsletter",
            },
        }
        for i in range(n)
    ]


async def ours(events: list[dict[str, Any]], sink: str, pace: bool) -> dict[str, Any]:
    from mixpanel_mcp.client import CallStats, MixpanelClient, call_stats
    from mixpanel_mcp.client import events as ingest
    from mixpanel_mcp.config import load_settings

    settings = load_settings({
        "MIXPANEL_PROJECT_TOKEN": "bench-token",
        "MIXPANEL_PROJECT_ID": "1",
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "bench",
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": "bench-secret",
        "MIXPANEL_INGESTION_URL": sink,
    })
    stats = CallStats()
    call_stats.set(stats)
    async with MixpanelClient(settings) as client:
        started = time.perf_counter()
        preparer = ingest.preparer_for(client, "import")
        found = ingest.survey(((i, None, e) for i, e in enumerate(events)), preparer, keep=True)
        assert found.items is not None and not found.invalid_indexes
        outcome = await ingest.send_events(client, "import", found.items, universe=found.universe(), pace=pace)
        seconds = time.perf_counter() - started
    stored = outcome.count(ingest.batching.Status.STORED)
    return {"events": stored, "seconds": seconds, "send_seconds": outcome.seconds, "requests": outcome.requests}


def sdk(events: list[dict[str, Any]], sink: str) -> dict[str, Any]:
    from mixpanel import BufferedConsumer, Mixpanel

    consumer = BufferedConsumer(import_url=f"{sink}/import", events_url=f"{sink}/track")
    mp = Mixpanel("bench-token", consumer=consumer)
    started = time.perf_counter()
    for e in events:
        p = dict(e["properties"])
        mp.import_data("bench-token", p.pop("distinct_id"), e["event"], p.pop("time"), p, api_secret="bench-secret")
    consumer.flush()
    return {"events": len(events), "seconds": time.perf_counter() - started}


def mixpanel_utils(events: list[dict[str, Any]], sink: str) -> dict[str, Any]:
    from mixpanel_utils import MixpanelUtils

    mu = MixpanelUtils("bench-secret", token="bench-token")
    mu.import_api = sink
    started = time.perf_counter()
    mu.import_events(events, timezone_offset=0)
    return {"events": len(events), "seconds": time.perf_counter() - started}


def installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000, help="events per contender (default 200,000)")
    p.add_argument("--latency", type=float, default=0.1, help="seconds the sink waits per request (default 0.1)")
    p.add_argument("--sdk-events", type=int, default=5000, help="events for the slow official SDK (default 5,000)")
    p.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink, args.latency)
        return

    warnings.filterwarnings("ignore")
    logging.getLogger("mixpanel").setLevel(logging.ERROR)  # it warns about api_key/api_secret on every import
    logging.getLogger("mixpanel_utils").setLevel(logging.ERROR)
    events = make_events(args.events)
    size = sum(len(json.dumps(e)) for e in events[:1000]) / 1000
    print(f"{args.events:,} events of ~{size:.0f} bytes; sink latency {args.latency * 1000:.0f} ms per request; "
          f"{os.cpu_count()} CPU(s)\n")
    sink = Sink(args.latency)
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        contenders: list[tuple[str, Any]] = [
            ("ours, paced (default)", lambda: asyncio.run(ours(events, sink.url, pace=True))),
            ("ours, unpaced (capacity)", lambda: asyncio.run(ours(events, sink.url, pace=False))),
        ]
        if installed("mixpanel_utils"):
            contenders.append(("mixpanel-utils import_events", lambda: mixpanel_utils(events, sink.url)))
        else:
            print("mixpanel-utils not installed: skipped (pip install mixpanel-utils)")
        if installed("mixpanel"):
            contenders.append((f"mixpanel SDK BufferedConsumer ({min(args.sdk_events, args.events):,} events)",
                               lambda: sdk(events[: args.sdk_events], sink.url)))
        else:
            print("mixpanel (the official SDK) not installed: skipped (pip install mixpanel)")
        for name, run in contenders:
            sink.reset()
            result = run()
            arrived = sink.stats()
            result.update(arrived=arrived["events"], distinct=arrived["distinct"], sink_requests=arrived["requests"])
            rows.append((name, result))
            print(f"  done: {name}", file=sys.stderr)
    finally:
        sink.close()

    print(f"{'contender':<48}{'events':>9}{'seconds':>9}{'events/s':>11}{'requests':>10}{'distinct':>10}")
    for name, r in rows:
        rate = r["events"] / r["seconds"]
        r["rate"] = rate
        print(f"{name:<48}{r['events']:>9,}{r['seconds']:>9.2f}{rate:>11,.0f}{r['sink_requests']:>10,}{r['distinct']:>10,}")
    rates = dict((name, r["rate"]) for name, r in rows)
    capacity = rates.get("ours, unpaced (capacity)")
    paced = rates.get("ours, paced (default)")
    baseline = next((rate for name, rate in rates.items() if name.startswith("mixpanel SDK")), None)
    utils = rates.get("mixpanel-utils import_events")
    print()
    if capacity and baseline:
        print(f"ours (capacity) / SDK BufferedConsumer: {capacity / baseline:,.0f}x   (target: at least 100x)")
    if paced and baseline:
        print(f"ours (paced) / SDK BufferedConsumer:    {paced / baseline:,.0f}x")
    if capacity and utils:
        print(f"ours (capacity) / mixpanel-utils:        {capacity / utils:.2f}x")
    if capacity:
        print(f"headroom over Mixpanel's ~30,000 events/s ceiling: {capacity / 30_000:.1f}x")
    for name, r in rows:
        if "send_seconds" in r:
            print(f"{name}: checking + encoding {r['seconds'] - r['send_seconds']:.2f} s, then sending at "
                  f"{r['events'] / r['send_seconds']:,.0f} events/s")
    print("(the pacer allows 30,000 events/s after a 1 s burst: at most 30,000 x (t + 1) events in any t seconds, "
          "well under Mixpanel's limit counted over a rolling minute)")
    for name, r in rows:
        if r["arrived"] != r["events"] or r["distinct"] != r["events"]:
            print(f"WARNING {name}: sent {r['events']:,}, sink received {r['arrived']:,} ({r['distinct']:,} distinct)")


if __name__ == "__main__":
    main()
