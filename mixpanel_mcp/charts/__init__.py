"""Charts of report results: a PNG for any host, and an interactive view for hosts with MCP Apps.

`spec.py` turns a report's data into a small chart description (pure Python, cheap); `png.py` draws it
with matplotlib, imported only when a call asks for `chart: true`, so the server's start-up never pays for
it; `view.html` is the MCP Apps view that draws the same description in the chat.
"""

from __future__ import annotations

import functools
from importlib import resources

from mixpanel_mcp.charts.spec import CHARTED, META_KEY, VIEW_MIME, VIEW_URI, chart_spec, charted


@functools.cache
def view_html() -> str:
    """The MCP Apps view (one self-contained file: no network, no third-party code)."""
    return resources.files(__package__).joinpath("view.html").read_text(encoding="utf-8")


__all__ = ["CHARTED", "META_KEY", "VIEW_MIME", "VIEW_URI", "chart_spec", "charted", "view_html"]
