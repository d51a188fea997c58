"""Text hygiene shared by every layer."""

import re

# C0/C1 controls (except tab and newline), zero-width and bidi-override characters: they can hide or
# reorder text in front of the person reading an agent's transcript.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def strip_controls(text: str) -> str:
    return _CONTROL.sub("", text)
