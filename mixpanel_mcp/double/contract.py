"""Contract mode: hold the double to Mixpanel's own OpenAPI specs.

With `MIXPANEL_OPENAPI_DIR` naming a folder of Mixpanel's specs (`*.openapi.yaml`), the double checks every
request it accepts and every answer it gives against them (with `openapi-core`, the `contract` extra). A
mismatch is a contract violation: the answer becomes a 500 whose body says so, the violation is kept in the
double's state, and, when `MIXPANEL_CONTRACT_LOG` names a file, appended there as one JSON line (so a double
running in another process, e.g. the sandbox's, reports to the test that started it).

What is checked:
- the request, when the double accepted it (answered 2xx): an answer of 4xx means the double refused it as
  Mixpanel would, and only the answer is then checked;
- the answer, always, unless a test injected it (`DoubleState.fail`).

Where Mixpanel's spec itself is wrong (its docs or the live API say otherwise), `contract_exceptions.toml`
beside this module corrects the spec before use; each correction names its source.

Each spec serves one host family; its server URL's path (`/api/query`, `/api/2.0`, `/api/app`, or none) is
where the double serves it. Several operations documented on one path (`/engage#profile-set`,
`/engage#profile-unset`, ...) are alternatives: a request passes when it matches one of them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger("mixpanel_mcp.double.contract")

EXCEPTIONS = Path(__file__).with_name("contract_exceptions.toml")
HOST = "http://double.invalid"


@dataclass
class Violation:
    method: str
    path: str
    status: int
    part: str  # "request" or "response"
    problems: list[str]

    def text(self) -> str:
        listed = "; ".join(self.problems)
        return f"contract violation: {self.part} of {self.method} {self.path} (status {self.status}): {listed}"


@dataclass
class Exchange:
    """One request and the double's answer, as the contract sees them."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""


def load_exceptions(path: Path = EXCEPTIONS) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def corrected(name: str, spec: dict[str, Any], corrections: list[dict[str, Any]]) -> dict[str, Any]:
    """The spec with this file's corrections applied: each sets (or, with `remove`, deletes) the nodes `at`.

    A step of `at` is a key, a list index, "*" (every child) or a table such as {name = "project_id"} (the list
    items with those fields). A correction that matches nothing fails loudly instead of silently correcting
    nothing."""
    for item in corrections:
        if item["spec"] != name:
            continue
        *steps, last = item["at"]
        parents: list[Any] = [spec]
        for step in steps:
            parents = [child for parent in parents for child in _children(parent, step)]
        if item.get("remove"):
            parents = [p for p in parents if isinstance(p, dict) and last in p]
        if not parents:
            raise ValueError(f"contract exception for {name} at {item['at']}: matches nothing in the spec")
        for parent in parents:
            if item.get("remove"):
                del parent[last]
            else:
                parent[last] = copy.deepcopy(item["value"])
    return spec


def _children(node: Any, step: Any) -> list[Any]:
    values = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
    if step == "*":
        return values
    if isinstance(step, dict):
        return [v for v in values if isinstance(v, dict) and all(v.get(k) == want for k, want in step.items())]
    try:
        return [node[step]]
    except (KeyError, IndexError, TypeError):
        return []


def _error_body(body: bytes, content_type: str, text_allowed: bool) -> bool:
    """The shape Mixpanel's undocumented error answers share (contract_exceptions.toml, [undocumented_errors])."""
    if text_allowed and content_type.startswith("text/plain") and body.strip():
        return True
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("error"), str)


def _variants(spec: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """One spec per set of non-colliding paths: `/engage#a` and `/engage#b` land in different variants."""
    buckets: list[dict[str, Any]] = []
    for key, item in spec.get("paths", {}).items():
        base = key.split("#", 1)[0]
        for bucket in buckets:
            if base not in bucket:
                bucket[base] = item
                break
        else:
            buckets.append({base: item})
    out = []
    for paths in buckets:
        variant = {k: v for k, v in spec.items() if k != "paths"}
        variant["paths"] = paths
        variant["servers"] = [{"url": HOST + prefix}]
        out.append(variant)
    return out


def _prefix(spec: dict[str, Any]) -> str:
    url = (spec.get("servers") or [{"url": ""}])[0]["url"]
    return urlparse(url.replace("{", "").replace("}", "")).path.rstrip("/")


class Contract:
    """Mixpanel's specs, loaded once, and the check of one exchange against them."""

    def __init__(self, folder: Path, exceptions: dict[str, Any] | None = None) -> None:
        import yaml
        from openapi_core import Config, OpenAPI  # the `contract` extra

        exceptions = load_exceptions() if exceptions is None else exceptions
        corrections = exceptions.get("correction", [])
        self.text_errors = set(exceptions.get("undocumented_errors", {}).get("text_bodies", []))
        config = Config(
            spec_validator_cls=None,
            extra_media_type_deserializers={"application/x-ndjson": _ndjson, "text/plain": _plain, "text/csv": _text},
        )
        self.apis: list[tuple[str, str, Any]] = []  # (prefix, file name, OpenAPI)
        self.last_accepted: dict[tuple[str, str], Any] = {}
        files = sorted(folder.glob("*.openapi.yaml"))
        if not files:
            raise FileNotFoundError(f"MIXPANEL_OPENAPI_DIR={folder}: no *.openapi.yaml there")
        for file in files:
            spec = corrected(file.name, yaml.safe_load(file.read_text()), corrections)
            prefix = _prefix(spec)
            for variant in _variants(spec, prefix):
                self.apis.append((prefix, file.name, OpenAPI.from_dict(variant, config=config)))

    def check(self, exchange: Exchange) -> Violation | None:
        from openapi_core.templating.paths.exceptions import PathError
        from openapi_core.templating.responses.exceptions import ResponseNotFound
        from openapi_core.validation.response.exceptions import MissingData

        request = _Request(exchange)
        found: list[tuple[str, Any, list[str]]] = []
        key = (exchange.method, exchange.path)
        # The operation that accepted this method and path last time is tried first: validating a large batch
        # against every alternative (/import is documented twice) would cost the double seconds.
        ordered = sorted(self.apis, key=lambda entry: entry[2] is not self.last_accepted.get(key))
        for prefix, name, api in ordered:
            if not exchange.path.startswith(prefix + "/"):
                continue
            try:
                api.validate_request(request)
            except PathError:
                continue
            except Exception as exc:  # a validation error: this documented operation does not accept it
                found.append((name, api, [f"{name}: {_describe(exc)}"]))
                continue
            found.append((name, api, []))
            self.last_accepted[key] = api
            break
        if not found:
            if exchange.status == 404:
                return None  # Mixpanel answers an unknown path with a 404 too
            return Violation(exchange.method, exchange.path, exchange.status, "request",
                             ["no Mixpanel spec documents this method and path"])
        accepted = [(name, api) for name, api, problems in found if not problems]
        if not accepted and 200 <= exchange.status < 300:
            problems = [p for _, _, ps in found for p in ps]
            return Violation(exchange.method, exchange.path, exchange.status, "request", problems)
        candidates = accepted or [(name, api) for name, api, _ in found]
        response = _Response(exchange)
        problems = []
        for name, api in candidates:
            try:
                api.validate_response(request, response)
            except MissingData:
                # openapi-core reads an empty body as none at all; an empty text (an export of a range
                # with no events) is still a text.
                if exchange.response_headers.get("content-type", "").startswith("text/plain"):
                    return None
                problems.append(f"{name}: the answer has no body")
                continue
            except ResponseNotFound as exc:
                content_type = exchange.response_headers.get("content-type", "")
                if exchange.status >= 400 and _error_body(exchange.response_body, content_type, name in self.text_errors):
                    return None
                problems.append(f"{name}: {_describe(exc)}; an undocumented error status needs a JSON {{'error': ...}} body")
                continue
            except Exception as exc:
                problems.append(f"{name}: {_describe(exc)}")
                continue
            return None
        return Violation(exchange.method, exchange.path, exchange.status, "response", problems)


def _describe(exc: Exception) -> str:
    causes = []
    seen: BaseException | None = exc
    while seen is not None:
        details = getattr(seen, "schema_errors", None)
        if details:
            causes.extend(f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"[:300] for e in details[:3])
            break
        causes.append(str(seen)[:300])
        seen = seen.__cause__
    return " <- ".join(dict.fromkeys(causes))


def _ndjson(body: bytes | str, **_parameters: str) -> list[Any]:
    text = body.decode() if isinstance(body, bytes) else body
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _text(body: bytes | str, **_parameters: str) -> str:
    """A text body (a lookup table's CSV) is the string its schema describes, not bytes."""
    return body.decode() if isinstance(body, bytes) else body


def _plain(body: bytes | str, **_parameters: str) -> Any:
    """text/plain as Mixpanel documents it: the bare integers `1`/`0` of ingestion answers are integers."""
    text = body.decode() if isinstance(body, bytes) else body
    return int(text) if text.strip().lstrip("-").isdigit() else text


class _Request:
    def __init__(self, exchange: Exchange) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = HOST
        self.path = exchange.path
        self.method = exchange.method.lower()
        self.body = exchange.body or None
        self.content_type = exchange.headers.get("content-type", "")
        self.parameters = RequestParameters(query=ImmutableMultiDict(exchange.query),
                                            header=Headers(list(exchange.headers.items())))
        self.full_url_pattern = HOST + exchange.path


class _Response:
    def __init__(self, exchange: Exchange) -> None:
        from werkzeug.datastructures import Headers

        self.status_code = exchange.status
        self.data = exchange.response_body
        self.content_type = exchange.response_headers.get("content-type", "")
        self.headers = Headers(list(exchange.response_headers.items()))


@cache
def _contract(folder: str) -> Contract:
    return Contract(Path(folder))


_log_lock = threading.Lock()


def contract_from_env() -> Contract | None:
    """The contract named by MIXPANEL_OPENAPI_DIR (loaded once per process), or None when unset."""
    folder = os.environ.get("MIXPANEL_OPENAPI_DIR")
    return _contract(str(Path(folder).resolve())) if folder else None


def report(violation: Violation) -> None:
    """Say it on stderr, and append it to MIXPANEL_CONTRACT_LOG when set."""
    logger.error("%s", violation.text())
    log = os.environ.get("MIXPANEL_CONTRACT_LOG")
    if log:
        with _log_lock, open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"violation": violation.text()}) + "\n")
