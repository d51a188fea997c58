"""A seeded, bounded fuzz run over stdio: a few hundred calls per tool, arguments drawn from each tool's own
input schema, mixed with the inputs adversarial runs found (huge strings, control, bidi and newline
characters, NUL bytes, deep nesting, wrong types, unknown keys, the server's own secrets).

Whatever the call, the server must answer it: no internal error, no echo of input beyond a bound, no secret
in any encoding, in any answer or on stderr. FUZZ_SEED and FUZZ_CALLS_PER_TOOL run it longer or elsewhere.
"""

from __future__ import annotations

import base64
import json
import os
import random
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import NO_CONFIRM, SA_USER, server_env
from tests.harness import stdio

SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
CALLS_PER_TOOL = int(os.environ.get("FUZZ_CALLS_PER_TOOL", "200"))
GDPR_TOKEN = "gdpr-fuzz-token-7Hq2"
API_SECRET = "api-fuzz-secret-9Zx4"
LONG = "fuzz-long-" * 20_000  # 200,000 characters
ECHO_BOUND = "fuzz-long-" * 100  # 1,000 characters of it: more must never come back
FORGED_LINE = "\n- event: looks fine"
NASTY = ["", " ", "\x00", "a\x00b", "\u202eevil", "line\r\nbreak" + FORGED_LINE, "\x1b[31mred", "..", ".", "../../etc/passwd",
         "%2e%2e", "0001-01-01", "9999-12-31", "2026-02-30", "-1", "1e400", "NaN", "true", "null", "{}", "[]", "(" * 3000,
         "properties[\"x\"] + 1", "💥" * 50, "\ufeffbom", "\u200bzero\u200bwidth"]


def secret_forms(secrets: list[str], username: str) -> set[str]:
    """Each secret raw, base64 (alone and as user:secret), URL-encoded and JSON-escaped."""
    forms = set()
    for secret in secrets:
        forms |= {
            secret,
            base64.b64encode(secret.encode()).decode().rstrip("="),
            base64.b64encode(f"{username}:{secret}".encode()).decode().rstrip("="),
            base64.b64encode(f"{secret}:".encode()).decode().rstrip("="),
            urllib.parse.quote(secret, safe=""),
            json.dumps(secret)[1:-1],
        }
    return {form for form in forms if len(form) >= 6}


class Draw:
    """Arguments for one call from a tool's input schema: mostly plausible, sometimes hostile."""

    def __init__(self, rng: random.Random, secrets: list[str], folder: Path) -> None:
        self.rng = rng
        self.secrets = secrets
        self.folder = folder

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return self.rng.choice(NASTY)
        if r < 0.40:
            return LONG
        if r < 0.45:
            secret = self.rng.choice(self.secrets)
            return self.rng.choice([secret, base64.b64encode(secret.encode()).decode(), f"x{secret}y",
                                    secret[:3] + "\u200b" + secret[3:]])
        return "".join(self.rng.choice("abcXYZ019 _-$") for _ in range(self.rng.randint(1, 12)))

    def garbage(self, depth: int = 0) -> Any:
        kind = self.rng.randrange(7)
        if kind == 0 and depth < 3:
            return [self.garbage(depth + 1) for _ in range(self.rng.randint(0, 3))]
        if kind == 1 and depth < 3:
            return {self.text(): self.garbage(depth + 1) for _ in range(self.rng.randint(0, 3))}
        if kind == 2:
            return self.rng.choice([True, False, None, 0, -1, 2**63, 1.5, 1e308])
        if kind == 3:
            deep: Any = 1
            for _ in range(self.rng.choice([50, 200])):
                deep = [deep]
            return deep
        return self.text()

    def value(self, name: str, schema: dict[str, Any]) -> Any:
        if name in ("file", "output_file"):
            return self.rng.choice([str(self.folder / f"f{self.rng.randrange(1000)}.ndjson"), str(self.folder), "a\x00b",
                                    str(self.folder / "..")])
        if self.rng.random() < 0.25:
            return self.garbage()
        options = schema.get("anyOf") or schema.get("oneOf")
        if options:
            return self.value(name, self.rng.choice(options))
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        kind = schema.get("type")
        if kind == "integer":
            low, high = schema.get("minimum", -5), schema.get("maximum", 10**6)
            return self.rng.choice([low, high, self.rng.randint(low, min(high, low + 100)), high + 1, low - 1])
        if kind == "number":
            return self.rng.choice([0, 0.5, -1.5, 1e300])
        if kind == "boolean":
            return self.rng.choice([True, False])
        if kind == "array":
            items = schema.get("items", {})
            return [self.value(name, items) for _ in range(self.rng.randint(0, 4))]
        if kind == "object":
            properties = schema.get("properties") or {}
            return {k: self.value(k, s) for k, s in properties.items() if self.rng.random() < 0.5} or {
                self.text(): self.garbage() for _ in range(self.rng.randint(0, 3))
            }
        return self.text()

    def arguments(self, schema: dict[str, Any]) -> dict[str, Any]:
        properties = schema.get("properties", {})
        arguments = {}
        for name, field in properties.items():
            if name in schema.get("required", []) or self.rng.random() < 0.4:
                arguments[name] = self.value(name, field)
        if self.rng.random() < 0.1:
            arguments[self.rng.choice(["bogus" + FORGED_LINE, LONG, "\u202ekey", "x\x00"])] = self.garbage()
        return arguments


def answer_text(result: Any) -> str:
    parts = [getattr(block, "text", "") or "" for block in result.content]
    if result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


@dataclass
class Findings:
    calls: int = 0
    tools: int = 0
    internal: list[str] = field(default_factory=list)
    echoed: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    stderr: str = ""
    still_up: bool = False


async def fuzz(double_url: str, folder: Path) -> Findings:
    env = server_env(
        double_url,
        MIXPANEL_GDPR_TOKEN=GDPR_TOKEN,
        MIXPANEL_API_SECRET=API_SECRET,
        # Every call reaches the double rather than the client-side limits, and nothing waits.
        MIXPANEL_MAX_RETRIES="0",
        MIXPANEL_RATE_LIMIT_MAX_WAIT="0",
        MIXPANEL_QUERY_LIMIT_PER_HOUR="1000000",
        MIXPANEL_QUERY_CONCURRENCY="100",
        MIXPANEL_EXPORT_LIMIT_PER_HOUR="1000000",
        MIXPANEL_EXPORT_LIMIT_PER_SECOND="1000000",
        MIXPANEL_LEXICON_LIMIT_PER_MINUTE="1000000",
        MIXPANEL_CACHE_TTL="0",
        MIXPANEL_CACHE_TTL_TODAY="0",
    )
    secrets = [env["MIXPANEL_PROJECT_TOKEN"], env["MIXPANEL_SERVICE_ACCOUNT_SECRET"], GDPR_TOKEN, API_SECRET]
    forms = secret_forms(secrets, SA_USER)
    draw = Draw(random.Random(SEED), secrets, folder)
    found = Findings()
    stderr_path = folder / "stderr.log"
    with stderr_path.open("w") as errlog:
        async with stdio(env, "--policy", str(NO_CONFIRM), errlog=errlog) as client:
            tools = (await client.list_tools()).tools
            found.tools = len(tools)
            for tool in tools:
                for n in range(CALLS_PER_TOOL):
                    arguments = draw.arguments(tool.input_schema)
                    found.calls += 1
                    where = f"{tool.name} #{n} {json.dumps(arguments, ensure_ascii=True)[:300]}"
                    try:
                        result = await client.call_tool(tool.name, arguments)
                    except MCPError as exc:  # a protocol error is an answer too, but never an internal one
                        text, internal = str(exc), exc.error.code == -32603
                    else:
                        text = answer_text(result)
                        internal = "Error executing tool" in text or "Internal error" in text
                    if internal or "Traceback" in text:
                        found.internal.append(f"{where}: {text[:300]}")
                    if ECHO_BOUND in text or FORGED_LINE in text or "\x00" in text or "\u202e" in text:
                        found.echoed.append(f"({len(text):,} chars) {where}")
                    if any(form in text for form in forms):
                        found.leaked.append(where)
            found.still_up = len((await client.list_tools()).tools) == len(tools)
    found.stderr = stderr_path.read_text(errors="replace")
    if any(form in found.stderr for form in forms):
        found.leaked.append("stderr")
    if ECHO_BOUND in found.stderr:
        found.echoed.append("stderr")
    return found


@pytest.fixture(scope="module")
def findings(double_state, double_url, tmp_path_factory) -> Findings:
    double_state.reset()
    return anyio.run(fuzz, double_url, tmp_path_factory.mktemp("fuzz"))


def report(problems: list[str], calls: int) -> str:
    shown = int(os.environ.get("FUZZ_SHOWN", "20"))
    return f"{len(problems)} of {calls} calls (seed {SEED}):\n" + "\n".join(problems[:shown])


def test_every_fuzzed_call_is_answered_without_an_internal_error(findings):
    assert findings.tools >= 10 and findings.calls == CALLS_PER_TOOL * findings.tools
    assert not findings.internal, report(findings.internal, findings.calls)
    assert findings.still_up


def test_no_answer_echoes_input_without_bounds_or_raw_control_characters(findings):
    assert not findings.echoed, report(findings.echoed, findings.calls)


def test_no_secret_leaves_the_server_in_any_form(findings):
    assert not findings.leaked, report(findings.leaked, findings.calls)
