"""Contract mode: the double checks what it receives and answers against OpenAPI specs (double/contract.py).

These tests use small specs of their own, shaped like Mixpanel's (a server path per host family, `#fragment`
alternatives on one path), so they need no copy of Mixpanel's specs; the contract pass of CI runs the whole suite
against the real ones.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from mixpanel_mcp.double import DoubleState, running
from mixpanel_mcp.double.contract import Contract, Exchange, corrected, load_exceptions
from tests.conftest import stored_event

QUERY_SPEC: dict[str, Any] = {
    "openapi": "3.0.2",
    "info": {"title": "query", "version": "1"},
    "servers": [{"url": "https://{regionAndDomain}.com/api/query", "variables": {"regionAndDomain": {"default": "mixpanel"}}}],
    "paths": {
        "/events/names": {
            "get": {
                "parameters": [
                    {"in": "query", "name": "project_id", "required": True, "schema": {"type": "integer"}},
                    {"in": "query", "name": "limit", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {"description": "ok", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "integer"}}}}}
                },
            }
        }
    },
}

INGESTION_SPEC: dict[str, Any] = {
    "openapi": "3.0.2",
    "info": {"title": "ingestion", "version": "1"},
    "servers": [{"url": "https://{region}.mixpanel.com", "variables": {"region": {"default": "api"}}}],
    "paths": {
        f"/engage#{op}": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {"type": "array", "items": {"type": "object", "required": ["$distinct_id", f"${op}"]}}
                        }
                    }
                },
                "responses": {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "integer", "enum": [0, 1]}}}}},
            }
        }
        for op in ("set", "unset")
    },
}


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    (tmp_path / "query.openapi.yaml").write_text(yaml.safe_dump(QUERY_SPEC))
    (tmp_path / "ingestion.openapi.yaml").write_text(yaml.safe_dump(INGESTION_SPEC))
    return tmp_path


def exchange(method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None, status: int = 200,
             answer: bytes = b"[1]", answer_type: str = "application/json") -> Exchange:
    return Exchange(
        method=method, path=path, query=list((query or {}).items()),
        headers={"content-type": "application/json"} if body is not None else {},
        body=json.dumps(body).encode() if body is not None else b"",
        status=status, response_headers={"content-type": answer_type}, response_body=answer,
    )


def test_each_host_family_is_found_under_its_server_path(specs):
    contract = Contract(specs, {})
    assert contract.check(exchange("GET", "/api/query/events/names", query={"project_id": "1"})) is None
    # The same path outside the family's prefix is documented nowhere.
    stray = contract.check(exchange("GET", "/events/names", query={"project_id": "1"}))
    assert stray is not None and "no Mixpanel spec documents" in stray.text()
    # ... unless the double refused it too, as Mixpanel does an unknown path.
    assert contract.check(exchange("GET", "/events/names", status=404, answer=b"{}")) is None


def test_an_accepted_request_the_spec_refuses_is_a_violation_a_refused_one_is_not(specs):
    contract = Contract(specs, {})
    accepted = contract.check(exchange("GET", "/api/query/events/names", query={"limit": "1"}))
    assert accepted is not None and accepted.part == "request" and "project_id" in accepted.text()
    refused = exchange("GET", "/api/query/events/names", query={"limit": "1"}, status=400, answer=b'{"error": "project_id is required"}')
    assert contract.check(refused) is None


def test_a_wrong_answer_is_a_violation(specs):
    contract = Contract(specs, {})
    wrong = contract.check(exchange("GET", "/api/query/events/names", query={"project_id": "1"}, answer=b'["a"]'))
    assert wrong is not None and wrong.part == "response" and "'a' is not of type 'integer'" in wrong.text()
    # An error status the spec does not list passes only with Mixpanel's {"error": ...} body.
    undocumented = exchange("GET", "/api/query/events/names", query={"project_id": "1"}, status=429, answer=b"slow down",
                            answer_type="text/plain")
    assert contract.check(undocumented) is not None
    undocumented.response_body, undocumented.response_headers = b'{"error": "slow down"}', {"content-type": "application/json"}
    assert contract.check(undocumented) is None


def test_fragment_paths_are_alternatives_of_one_request(specs):
    contract = Contract(specs, {})
    set_ = exchange("POST", "/engage", body=[{"$distinct_id": "u1", "$set": {"a": 1}}], answer=b"1", answer_type="text/plain")
    unset = exchange("POST", "/engage", body=[{"$distinct_id": "u1", "$unset": ["a"]}], answer=b"1", answer_type="text/plain")
    neither = exchange("POST", "/engage", body=[{"$distinct_id": "u1", "$add": {"a": 1}}], answer=b"1", answer_type="text/plain")
    assert contract.check(set_) is None and contract.check(unset) is None
    violation = contract.check(neither)
    assert violation is not None and "'$set' is a required property" in violation.text() and "'$unset'" in violation.text()
    # text/plain `1` is read as the integer Mixpanel documents; anything else is not.
    set_.response_body = b"ok"
    assert contract.check(set_) is not None


def test_a_correction_changes_the_spec_and_one_that_fits_nothing_fails_loudly():
    spec = json.loads(json.dumps(QUERY_SPEC))
    fix = {"spec": "q", "at": ["paths", "*", "*", "parameters", {"name": "project_id"}, "required"], "value": False}
    assert corrected("q", spec, [fix])["paths"]["/events/names"]["get"]["parameters"][0]["required"] is False
    with pytest.raises(ValueError, match="matches nothing"):
        corrected("q", spec, [{**fix, "at": ["paths", "/nowhere", "get", "required"]}])
    with pytest.raises(ValueError, match="matches nothing"):
        corrected("q", spec, [{"spec": "q", "at": ["paths", "/events/names", "get", "nothing"], "remove": True}])


def test_the_exception_list_names_a_source_for_each_entry():
    exceptions = load_exceptions()
    assert exceptions["correction"], "the list is read"
    for entry in exceptions["correction"]:
        assert entry["spec"].endswith(".openapi.yaml") and entry["why"] and entry["source"], entry
    assert exceptions["undocumented_errors"]["source"]


def test_the_double_answers_a_violation_with_a_500_and_records_it(specs, tmp_path, monkeypatch):
    # Where a double in another process reports (tests/conftest.py fails the running test on a new line);
    # this test's own log, so its deliberate violation fails nothing else.
    log = tmp_path / "violations.jsonl"
    monkeypatch.setenv("MIXPANEL_CONTRACT_LOG", str(log))
    state = DoubleState()
    state.events.append(stored_event("Signed up", "u1", dt.datetime.now(dt.UTC).isoformat()))
    with running(state, contract=Contract(specs, {})) as url:
        # The double answers /api/query/events/names with the events' names: strings, where this spec wants integers.
        answer = httpx2.get(f"{url}/api/query/events/names", params={"project_id": 1234, "type": "general", "limit": 1},
                            auth=(state.project.sa_username, state.project.sa_secret))
    assert answer.status_code == 500
    assert answer.json()["error"].startswith("contract violation: response of GET /api/query/events/names (status 200)")
    assert state.violations == [answer.json()["error"]]
    assert [json.loads(line)["violation"] for line in log.read_text().splitlines()] == state.violations
