"""`python -m mixpanel_mcp.double --port P`: serve the Mixpanel double on 127.0.0.1 until stopped.

For scripts (CI's conformance run) that need a Mixpanel to point the real server at. The double accepts
the test suite's credentials (see `Project`); everything it receives is kept in memory.
"""

from __future__ import annotations

import argparse

import uvicorn

from mixpanel_mcp.double.app import build_app, free_port
from mixpanel_mcp.double.state import DoubleState


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m mixpanel_mcp.double", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)")
    args = p.parse_args()
    port = args.port or free_port()
    print(f"http://127.0.0.1:{port}", flush=True)
    uvicorn.run(build_app(DoubleState()), host="127.0.0.1", port=port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
