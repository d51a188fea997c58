"""Fail when a baseline lists a scenario that passed: the conformance runner accepts such a baseline silently,
so a scenario that was fixed could later break again unnoticed.

    python tests/conformance/stale_entries.py RESULTS_DIR BASELINE_YML

RESULTS_DIR is the runner's `-o` folder: one `server-<scenario>-<timestamp>/checks.json` per scenario run. A
scenario counts as failing when any of its checks is a FAILURE or a WARNING: checked against a baseline, the
runner counts a WARNING as a failure too (its summary line shows such a scenario as passed).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def stale(results: Path, baseline: Path) -> tuple[list[str], list[str]]:
    """(listed scenarios that passed, listed scenarios that did not run)."""
    listed = re.findall(r"^\s*-\s*([\w-]+)", baseline.read_text(), re.MULTILINE)
    ran: set[str] = set()
    failing: set[str] = set()
    for checks in results.glob("server-*/checks.json"):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks.parent.name)
        ran.add(scenario)
        if any(check.get("status") in ("FAILURE", "WARNING") for check in json.loads(checks.read_text())):
            failing.add(scenario)
    return [s for s in listed if s in ran and s not in failing], [s for s in listed if s not in ran]


def main(argv: list[str]) -> int:
    results, baseline = Path(argv[0]), Path(argv[1])
    passed, missing = stale(results, baseline)
    for scenario in passed:
        print(f"{baseline}: {scenario} passes now: remove it from the baseline", file=sys.stderr)
    for scenario in missing:
        print(f"{baseline}: {scenario} did not run (renamed or dropped by the suite?): remove it", file=sys.stderr)
    return 1 if passed or missing else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
