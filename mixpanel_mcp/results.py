"""Results that fit a context window: control characters stripped, size bounded, trimming announced.

Everything Mixpanel returns is untrusted (anyone with the public project token can write event names and
property values), so it is returned as data, never spliced into instructions, and cleaned of control
characters that could hide text from a person reading the transcript.
"""

from __future__ import annotations

import json
from typing import Any

from mixpanel_mcp.text import strip_controls

# ~25k tokens at ~4 characters a token, with room for the summary.
MAX_RESULT_CHARS = 90_000

def clean(value: Any) -> Any:
    """A copy of `value` with control and bidi characters removed from every string (keys too)."""
    if isinstance(value, str):
        return strip_controls(value)
    if isinstance(value, dict):
        return {clean(k) if isinstance(k, str) else k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def bound(data: dict[str, Any], narrow_hint: str, limit: int = MAX_RESULT_CHARS) -> tuple[dict[str, Any], int]:
    """Trim the longest lists and objects in `data` until it fits `limit` characters.

    Returns the trimmed data and how many items were cut; when anything was cut, `data["truncated"]`
    says where and how to get the rest.
    """
    if size(data) <= limit:
        return data, 0
    cap = 1000
    while cap >= 1:
        cut: dict[str, int] = {}
        trimmed = _cap(data, cap, "", cut)
        note = {
            "omitted": cut,
            "note": f"{sum(cut.values())} more items not shown; {narrow_hint}.",
        }
        _count_what_is_shown(data, trimmed)
        trimmed = {"truncated": note, **trimmed}  # first: a reader of the JSON meets it before the lists
        if size(trimmed) <= limit:
            return trimmed, sum(cut.values())
        cap //= 2
    return {"truncated": {"note": f"The answer was too large to show; {narrow_hint}."}}, 1


def _count_what_is_shown(data: dict[str, Any], trimmed: dict[str, Any]) -> None:
    """`returned` counts what the answer holds: when its one list was cut, the count follows (and `read` keeps
    how many were read)."""
    cut = _cut_lists(data, trimmed)
    if len(cut) == 1 and isinstance(data.get("returned"), int):
        ((_, (shown, total)),) = cut.items()
        if data["returned"] == total:
            trimmed["returned"], trimmed["read"] = shown, total


def _cut_lists(data: dict[str, Any], trimmed: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {
        key: (len(trimmed[key]), len(value))
        for key, value in data.items()
        if isinstance(value, list) and isinstance(trimmed.get(key), list) and len(trimmed[key]) < len(value)
    }


def trimmed_headline(data: dict[str, Any], trimmed: dict[str, Any], narrow_hint: str) -> str:
    """The first sentence of a trimmed answer: what it holds, before anything that counts what was read."""
    shown = [f"{kept:,} of the {total:,} {key}" for key, (kept, total) in _cut_lists(data, trimmed).items()]
    if not shown:
        return f"Trimmed to fit the context window: parts are not shown (see truncated); {narrow_hint}."
    return f"Trimmed to fit the context window: this answer shows {', '.join(shown)}; {narrow_hint}."


def _cap(value: Any, cap: int, path: str, cut: dict[str, int]) -> Any:
    if isinstance(value, list):
        if len(value) > cap:
            cut[path or "$"] = len(value) - cap
        return [_cap(v, cap, f"{path}[{i}]", cut) for i, v in enumerate(value[:cap])]
    if isinstance(value, dict):
        items = list(value.items())
        if len(items) > cap:
            cut[path or "$"] = len(items) - cap
        return {k: _cap(v, cap, f"{path}.{k}" if path else str(k), cut) for k, v in items[:cap]}
    if isinstance(value, str) and len(value) > 2000:
        return value[:2000] + "…"
    return value


def render(summary: str, data: dict[str, Any]) -> str:
    """The text block: the summary, then the data as compact JSON (for clients that only read text)."""
    return summary + "\n" + json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
