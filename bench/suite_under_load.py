"""Whether the test suite passes every time on a busy machine, and how long it takes: the baseline is one run
on the machine as it is, then --runs runs in a row while a CPU-heavy process (one busy loop per core, or
--hogs) competes for every core.

    python bench/suite_under_load.py [--runs 5] [--hogs N] [-- PYTEST ARGS]

Each run is the README's test command (`python -m pytest`) with MIXPANEL_MCP_REQUIRE_SERVICES=1, so a missing
redis-server or Chromium fails the run instead of skipping tests. The script stops at the first failing run
and exits 1; its output is the table of runs (wall time, result) and the failing run's summary.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _busy() -> None:
    while True:
        pass


def _suite(pytest_args: list[str]) -> tuple[float, int, str]:
    env = {**os.environ, "MIXPANEL_MCP_REQUIRE_SERVICES": "1"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    lines = done.stdout.strip().splitlines()
    return time.monotonic() - started, done.returncode, lines[-1] if lines else done.stderr[-500:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs under load (default 5)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1, help="busy processes (default: one per core)")
    args, pytest_args = parser.parse_known_args()
    pytest_args = [a for a in pytest_args if a != "--"]

    print(f"{'run':<22}{'wall time':>12}  result", flush=True)
    seconds, status, summary = _suite(pytest_args)
    print(f"{'baseline (no load)':<22}{seconds:>10.0f} s  {summary}", flush=True)
    if status != 0:
        return 1
    baseline = seconds
    hogs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    worst = 0.0
    try:
        for run in range(1, args.runs + 1):
            seconds, status, summary = _suite(pytest_args)
            worst = max(worst, seconds)
            print(f"{f'{run} under {args.hogs} hog(s)':<22}{seconds:>10.0f} s  {summary}", flush=True)
            if status != 0:
                return 1
    finally:
        for hog in hogs:
            hog.terminate()
    print(f"all {args.runs} runs under load green; slowest {worst:.0f} s = {worst / baseline:.2f}x the baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
