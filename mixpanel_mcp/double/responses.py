"""The double's JSON answers.

Stored data may hold a lone UTF-16 surrogate (JSON's "\\ud800" is valid input to /track): such text cannot be
written as UTF-8, so the answer escapes it as JSON does (`\\ud800`), which is what a client of Mixpanel must then
cope with. Everything else is sent as UTF-8, unescaped, like starlette's own JSONResponse.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSONResponse


class JSONResponse(_StarletteJSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
