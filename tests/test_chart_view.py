"""The MCP Apps chart view in a real headless Chromium.

A test page plays the host's side of the extension's postMessage protocol: it loads the `ui://` resource read
from the server into a sandboxed iframe, answers `ui/initialize`, and after `ui/notifications/initialized` hands
the view a real tool result from the server (run against the double). The test then checks what was drawn and
saves a screenshot under tests/artefacts/.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
from mcp.client.extension import ClientExtension
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from mixpanel_mcp.charts import META_KEY, VIEW_MIME, VIEW_URI
from tests.conftest import stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

ARTEFACTS = Path(__file__).parent / "artefacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

class AppsHost(ClientExtension):
    """A client that says it shows MCP Apps views, as a host with the extension does at initialize."""

    identifier = EXTENSION_ID

    def settings(self) -> dict:
        return {"mimeTypes": [APP_MIME_TYPE]}


# The host: a sandboxed iframe (scripts only, opaque origin, as hosts run views) and the host's half of
# JSON-RPC over postMessage. Every message from the view is kept in window.received for the test to read.
HOST_PAGE = """<!doctype html><html><body style="margin:0">
<iframe id="view" sandbox="allow-scripts" style="width:820px;height:520px;border:0"></iframe>
<script>
window.received = [];
const frame = document.getElementById("view");
window.addEventListener("message", (event) => {
  if (event.source !== frame.contentWindow) return;
  const msg = event.data;
  window.received.push(msg);
  const reply = (m) => frame.contentWindow.postMessage(Object.assign({jsonrpc: "2.0"}, m), "*");
  if (msg.method === "ui/initialize") {
    reply({id: msg.id, result: {protocolVersion: msg.params.protocolVersion, hostInfo: {name: "test-host", version: "1"},
                                hostCapabilities: {}, hostContext: {theme: "light"}}});
  } else if (msg.method === "ui/notifications/initialized") {
    reply({method: "ui/notifications/tool-result", params: window.toolResult});
  }
});
window.start = (html, result) => { window.toolResult = result; frame.srcdoc = html; };
</script></body></html>"""


def browser_or_skip():
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None
    reason = None
    if CHROMIUM is None:
        reason = "chromium is not installed (apt-get install chromium)"
    elif async_playwright is None:
        reason = "playwright is not installed (pip install playwright; the browser is the system's chromium)"
    if reason:
        if os.environ.get("MIXPANEL_MCP_REQUIRE_SERVICES") == "1":
            pytest.fail(f"MIXPANEL_MCP_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return async_playwright


async def test_view_draws_a_real_result_with_hover_toggle_and_bar_switch(double, env):
    async_playwright = browser_or_skip()
    for day in ("01", "02", "03", "04"):
        for i in range(3):
            double.events.append(stored_event("Open", f"a{i}", f"2026-04-{day}T10:0{i}:00", os="ios"))
        double.events.append(stored_event("Open", "b", f"2026-04-{day}T11:00:00", os="android"))
    async with stdio_client(env, extensions=[AppsHost()]) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        read = await client.read_resource(VIEW_URI)
        result = await client.call_tool(
            "segmentation",
            {"operation": "segment", "event": "Open", "on": 'properties["os"]', "from_date": "2026-04-01", "to_date": "2026-04-04"},
        )
    structured(result)
    assert tools["segmentation"].meta == {"ui": {"resourceUri": VIEW_URI}}
    (content,) = read.contents
    assert content.mime_type == VIEW_MIME
    html = content.text
    assert len(html.encode()) < 60_000
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # nothing fetched
    payload = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec = payload["_meta"][META_KEY]
    assert [s["name"] for s in spec["series"]] == ["ios", "android"]

    ARTEFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 840, "height": 540})
            await page.set_content(HOST_PAGE)
            await page.evaluate("([html, result]) => window.start(html, result)", [html, payload])
            frame = page.frame_locator("#view")
            await frame.locator("svg path.line").nth(1).wait_for(state="attached", timeout=15_000)  # a flat line has no height

            # One path per series, one point per date in each.
            assert await frame.locator("svg path.line").count() == 2
            for i, series in enumerate(spec["series"]):
                points = frame.locator(f'g.series[data-series="{i}"] circle.pt')
                assert await points.count() == len(spec["labels"]) == 4
            # A tooltip with the value on hover: ios on the third date had 3 opens.
            await frame.locator('g.series[data-series="0"] circle.pt').nth(2).hover()
            tip = frame.locator("#tip")
            await tip.wait_for(state="visible", timeout=5_000)
            assert await tip.text_content() == "ios · 2026-04-03: 3"
            await page.screenshot(path=str(ARTEFACTS / "view.png"))

            # Toggle a series off and on; switch to bars (one bar per point).
            await frame.locator('button.key[data-series="1"]').click()
            assert await frame.locator("svg path.line").count() == 1
            await frame.locator('button.key[data-series="1"]').click()
            await frame.locator('button.mode[data-mode="bar"]').click()
            assert await frame.locator("svg rect.pt").count() == 8
            assert await frame.locator("svg path.line").count() == 0
            await page.screenshot(path=str(ARTEFACTS / "view-bars.png"))

            received = await page.evaluate("window.received")
        finally:
            await browser.close()
    methods = [m.get("method") for m in received]
    assert methods[:2] == ["ui/initialize", "ui/notifications/initialized"]
    init = received[0]
    assert init["jsonrpc"] == "2.0" and init["id"] is not None
    assert set(init["params"]) == {"protocolVersion", "appInfo", "appCapabilities"}
    assert "ui/notifications/size-changed" in methods
    json.dumps(received)  # plain JSON-RPC messages only
