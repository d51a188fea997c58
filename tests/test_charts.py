"""chart: true on the report tools: a PNG whose pixels show the data, end to end over stdio against the double.

The chart description (spec) is unit-tested as pure logic; the PNG is decoded and read pixel by pixel: a
series with twice the counts is drawn higher, and an empty result says "no data" instead of an empty frame.
"""

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from mixpanel_mcp.charts import META_KEY
from mixpanel_mcp.charts.png import PALETTE
from mixpanel_mcp.charts.spec import TOP_SERIES, _folded
from tests.conftest import error_text, stdio_client, stored_event, structured
from tests.test_chart_view import AppsHost

ARTEFACTS = Path(__file__).parent / "artefacts"  # gitignored: charts a person can look at after a run
PERIOD = {"from_date": "2026-03-01", "to_date": "2026-03-03"}


def save(name: str, png: bytes) -> None:
    ARTEFACTS.mkdir(exist_ok=True)
    (ARTEFACTS / name).write_bytes(png)


def image_of(result) -> tuple[bytes, Image.Image]:
    structured(result)
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    png = base64.b64decode(images[0].data)
    image = Image.open(io.BytesIO(png))
    image.load()  # decodes the whole file: a truncated PNG fails here
    return png, image.convert("RGB")


def rows_of(image: Image.Image, color: str, *, right: int) -> list[int]:
    """Pixel rows (top = 0) where `color` is drawn left of x=`right` (the legend sits to the right)."""
    want = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    width, height = image.size
    pixels = image.load()
    return [
        y
        for y in range(height)
        for x in range(0, min(right, width), 2)
        if all(abs(a - b) <= 12 for a, b in zip(pixels[x, y], want, strict=True))
    ]


def taps(double) -> None:
    """Country A taps twice as often as B every day; C once in all."""
    for day in ("01", "02", "03"):
        for i in range(4):
            double.events.append(stored_event("Tap", f"a{i}", f"2026-03-{day}T10:0{i}:00", country="A"))
        for i in range(2):
            double.events.append(stored_event("Tap", f"b{i}", f"2026-03-{day}T11:0{i}:00", country="B"))
    double.events.append(stored_event("Tap", "c", "2026-03-02T12:00:00", country="C"))


def test_top_series_are_kept_and_the_rest_folded_into_other():
    named = [(f"s{i}", {"d1": 100 - i, "d2": 1}) for i in range(TOP_SERIES + 3)]
    series = _folded(named, ["d1", "d2"])
    assert [s["name"] for s in series] == [f"s{i}" for i in range(TOP_SERIES)] + ["other (3)"]
    assert series[-1]["values"] == [(100 - 7) + (100 - 8) + (100 - 9), 3]


def test_dates_with_a_midnight_time_are_shown_as_days():
    from mixpanel_mcp.charts.spec import _line

    spec = _line("t", "date", "n", [("a", {"2026-11-09T00:00:00+00:00": 2, "2026-11-02T00:00:00+00:00": 1})])
    assert spec["labels"] == ["2026-11-02", "2026-11-09"] and spec["series"][0]["values"] == [1, 2]
    assert _line("t", "date", "n", [("a", {"2026-11-02 13:00:00": 1})])["labels"] == ["2026-11-02 13:00"]


@pytest.mark.asyncio
async def test_segmentation_chart_draws_the_higher_series_higher(double, env):
    taps(double)
    async with stdio_client(env, extensions=[AppsHost()]) as client:  # a host that shows the chart view
        listed = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool(
            "segmentation", {"operation": "segment", "event": "Tap", "on": 'properties["country"]', "chart": True, **PERIOD}
        )
        plain = await client.call_tool("segmentation", {"operation": "segment", "event": "Tap", **PERIOD})
    assert listed["segmentation"].input_schema["properties"]["chart"]["type"] == "boolean"
    png, image = image_of(result)
    save("segmentation.png", png)
    assert image.size == (800, 450)
    a_rows = rows_of(image, PALETTE[0], right=600)  # A ranks first: first colour
    b_rows = rows_of(image, PALETTE[1], right=600)
    assert a_rows and b_rows
    # A's line (12/day) sits above B's (6/day): smaller row numbers are higher on the image.
    assert sum(a_rows) / len(a_rows) < sum(b_rows) / len(b_rows) - 40
    spec = result.meta[META_KEY]
    assert spec["kind"] == "line" and spec["labels"] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert [s["name"] for s in spec["series"]] == ["A", "B", "C"]
    assert spec["series"][0]["values"] == [4, 4, 4]
    # Off by default: no image unless asked for.
    structured(plain)
    assert [c.type for c in plain.content] == ["text"]


@pytest.mark.asyncio
async def test_empty_result_says_no_data(double, env):
    async with stdio_client(env) as client:
        result = await client.call_tool("segmentation", {"operation": "segment", "event": "Never sent", "chart": True, **PERIOD})
    png, image = image_of(result)
    save("empty.png", png)
    assert image.size == (800, 450)
    assert not rows_of(image, PALETTE[0], right=800)  # no series, no frame
    dark = rows_of(image, "#555555", right=800)  # the "no data" text, centred (the title is above y=40)
    assert len([y for y in dark if 180 < y < 270]) > 50
    assert not [y for y in dark if 40 < y < 180 or y > 270]


@pytest.mark.asyncio
async def test_funnel_bars_retention_heat_and_event_counts(double, env):
    taps(double)
    double.funnels.append({"funnel_id": 77, "name": "Taps", "steps": ["Tap", "Tap"]})
    async with stdio_client(env) as client:
        funnel = await client.call_tool("funnels", {"operation": "query", "funnel_id": 77, "chart": True, **PERIOD})
        retention = await client.call_tool(
            "retention", {"operation": "query", "born_event": "Tap", "event": "Tap", "chart": True, **PERIOD}
        )
        frequency = await client.call_tool(
            "retention", {"operation": "frequency", "unit": "week", "addiction_unit": "day", "event": "Tap", "chart": True, **PERIOD}
        )
        counts = await client.call_tool("events", {"operation": "counts", "event": ["Tap"], "chart": True, **PERIOD})
        wrong = await client.call_tool("segmentation", {"operation": "sum", "event": "Tap", "on": "x", "chart": True, **PERIOD})
    for name, result in (("funnel.png", funnel), ("retention.png", retention), ("frequency.png", frequency), ("counts.png", counts)):
        png, image = image_of(result)
        save(name, png)
        assert image.size == (800, 450)
        assert not (result.meta or {}).get(META_KEY)  # a client without MCP Apps gets nothing for the view
    # Bar heights follow the step counts: measured from the common baseline (the bars' lowest row).
    counts_by_step = [s["count"] for s in structured(funnel)["steps"]]
    assert counts_by_step[0] > counts_by_step[1] > 0
    _, image = image_of(funnel)
    first, second = (rows_of(image.crop((x, 0, x + 200, 450)), PALETTE[0], right=200) for x in (110, 505))
    base = max(first)
    assert max(second) == base
    ratio = (base - min(second)) / (base - min(first))
    assert abs(ratio - counts_by_step[1] / counts_by_step[0]) < 0.05
    assert error_text(wrong).startswith("Invalid arguments for segmentation: chart")
    assert "segment only" in error_text(wrong)


def test_starting_the_server_does_not_import_the_renderer():
    """matplotlib costs ~0.5 s to import: only a call with chart=true may pay it."""
    import subprocess
    import sys

    code = (
        "import sys; from mixpanel_mcp import cli, server, discovery, adapter, sandbox; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"


@pytest.mark.asyncio
async def test_the_sandbox_draws_charts_with_no_credentials(tmp_path):
    """A new user's first minute: `--sandbox`, no Mixpanel account, and a chart of the seeded project."""
    import datetime as dt

    from tests.test_sandbox import FUNNEL_PURCHASE, sandbox_client

    today = dt.datetime.now(dt.UTC).date()
    span = {"from_date": str(today - dt.timedelta(days=27)), "to_date": str(today)}
    async with sandbox_client(tmp_path / "sandbox") as client:
        by_country = await client.call_tool(
            "segmentation", {"operation": "segment", "event": "Viewed page", "on": 'properties["country"]', "chart": True, **span}
        )
        funnel = await client.call_tool("funnels", {"operation": "query", "funnel_id": FUNNEL_PURCHASE, "chart": True, **span})
        report = await client.call_tool("insights", {"bookmark_id": 3001, "chart": True})
    for name, result in (("sandbox-segmentation.png", by_country), ("sandbox-funnel.png", funnel), ("sandbox-insights.png", report)):
        png, image = image_of(result)
        save(name, png)
        assert image.size == (800, 450)
        assert rows_of(image, PALETTE[0], right=600), f"{name}: the first series is not drawn"
