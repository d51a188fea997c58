"""Text hygiene shared by every layer: one cleaning of text, and one scrubber of secrets.

Cleaning comes first, so that a secret split by a zero-width character is whole again when it is scrubbed.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

# C0/C1 controls (except tab and newline), zero-width and bidi-override characters: they can hide or
# reorder text in front of the person reading an agent's transcript. Lone UTF-16 surrogates (from JSON's
# "\ud800") cannot be encoded at all: one in a reply would stop the server from sending it.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]")

MASK = "***"
MIN_SECRET_CHARS = 4  # shorter values would blank out ordinary words


def strip_controls(text: str) -> str:
    return _CONTROL.sub("", text)


MAX_ECHO_CHARS = 200


def echo(value: str, limit: int = MAX_ECHO_CHARS) -> str:
    """Input shown back to whoever sent it: on one line (so it cannot forge lines of our own), without control
    or bidi characters, clipped to `limit` characters with its full length said, and quoted."""
    text = strip_controls(value).replace("\n", " ").replace("\t", " ")
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(value):,} characters)"
    return json.dumps(text, ensure_ascii=False)


def clip(value: str, limit: int = 300) -> str:
    """Our own text that may quote input: on one line, cleaned, clipped with its full length said."""
    text = strip_controls(value).replace("\n", " ").replace("\t", " ")
    return text if len(text) <= limit else f"{text[:limit]}… ({len(value):,} characters)"


def secret_forms(secret: str) -> list[str]:
    """A secret as it could appear in text: raw, URL-encoded, JSON-escaped, and base64 (standard and URL-safe)
    at each of the three alignments, so it is found alone and inside any `user:secret` pair."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret).replace("/", "\\/")[1:-1])
    raw = secret.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        # Only the characters made of the secret's bits alone: the same whatever comes before or after.
        first = -(-offset * 8 // 6)
        last = ((offset + len(raw)) * 8 - 6) // 6
        inner = encoded[first : last + 1]
        forms.update({inner, inner.replace("+", "-").replace("/", "_")})
    return sorted((f for f in forms if len(f) >= MIN_SECRET_CHARS), key=len, reverse=True)


class Scrubber:
    """Blanks every form of the secrets it knows out of text, after cleaning the text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        new = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS} - self.secrets
        if not new:
            return
        self.secrets |= new
        forms = sorted({f for s in self.secrets for f in secret_forms(s)}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in forms))

    def text(self, text: str) -> str:
        text = strip_controls(text)
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """A copy of `value` with every string cleaned and scrubbed (dictionary keys too)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value


# The process's secrets: every configured credential, added at start-up (see server.configure_logging).
scrubber = Scrubber()


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` cleaned, without any form of the process's secrets nor of `secrets`."""
    extra = tuple(s for s in secrets if s not in scrubber.secrets)
    return scrubber.text(_scrubber_for(extra).text(text) if extra else text)


@functools.lru_cache(maxsize=32)
def _scrubber_for(secrets: tuple[str, ...]) -> Scrubber:
    return Scrubber(secrets)
