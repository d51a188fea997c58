"""Confirmation of destructive calls: the person is asked when the client can show a question (both
protocol eras), otherwise a one-time code bound to the exact arguments; the operator may turn it off."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitResult

from mixpanel_mcp.config import load_settings
from mixpanel_mcp.confirm import Codes
from mixpanel_mcp.server import build_server
from tests.conftest import error_text, server_env, structured
from tests.harness import agent, base_env, http_client, http_server, policy_file, stdio

pytestmark = pytest.mark.asyncio

DELETE_U1 = {"operation": "delete", "distinct_id": "user-1"}


class Person:
    """An elicitation callback that answers from a script and remembers every question."""

    def __init__(self, *answers: tuple[str, dict[str, Any] | None]) -> None:
        self.answers = list(answers)
        self.questions: list[Any] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.questions.append(params)
        action, content = self.answers.pop(0)
        return ElicitResult(action=action, content=content)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_person_is_asked_and_decline_or_cancel_sends_nothing(double, env, mode):
    person = Person(("decline", None), ("cancel", None), ("accept", {"confirm": False}), ("accept", {"confirm": True}))
    async with stdio(env, mode=mode, elicitation_callback=person) as client:
        declined = await client.call_tool("engage", DELETE_U1)
        cancelled = await client.call_tool("engage", DELETE_U1)
        unticked = await client.call_tool("engage", DELETE_U1)
        assert double.received() == []
        accepted = await client.call_tool("engage", DELETE_U1)
        merged = await client.call_tool("engage", {"operation": "set", "distinct_id": "user-2", "properties": {"a": 1}})
        version = client.protocol_version

    assert version == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert error_text(declined) == "Not done: the person declined when asked to confirm. Nothing was sent to Mixpanel."
    assert "the person cancelled" in error_text(cancelled)
    assert "the person declined" in error_text(unticked)  # accepted the form without ticking the box
    assert structured(accepted)["updates_sent"] == 1
    assert structured(merged)["updates_sent"] == 1  # a write is never asked about
    assert len(person.questions) == 4
    question = person.questions[0]
    assert question.message == (
        'Agent local wants to delete the profile of user "user-1" in Mixpanel project 1234, irreversibly. Go ahead?'
    )
    assert list(question.requested_schema["properties"]) == ["confirm"]
    deleted, updated = (r.json()[0] for r in double.received("/engage"))
    assert (deleted["$distinct_id"], deleted["$delete"]) == ("user-1", "")
    assert (updated["$distinct_id"], updated["$set"]) == ("user-2", {"a": 1})


async def test_the_question_says_exactly_what_goes_for_each_destructive_operation(double, env):
    person = Person(*[("decline", None)] * 5)
    async with stdio(env, elicitation_callback=person) as client:
        await client.call_tool("track", {"operation": "merge", "distinct_ids": ["device-9", "user-9"]})
        await client.call_tool("groups", {"operation": "delete", "group_key": "company_id", "group_id": "acme"})
        await client.call_tool("lexicon", {"operation": "delete", "entity_type": "event", "name": "Signed up"})
        await client.call_tool(
            "lexicon",
            {"operation": "upsert", "truncate": True, "entries": [{"entityType": "event", "name": "A", "schemaJson": {}}]},
        )
        await client.call_tool(
            "engage",
            {
                "operation": "batch",
                "updates": [
                    {"operation": "set", "distinct_id": "u1", "properties": {"a": 1}},
                    {"operation": "delete", "distinct_id": "u2"},
                ],
            },
        )
        # Not destructive with these arguments: no question.
        await client.call_tool(
            "lexicon", {"operation": "upsert", "entries": [{"entityType": "event", "name": "A", "schemaJson": {}}]}
        )
        await client.call_tool(
            "engage", {"operation": "batch", "updates": [{"operation": "set", "distinct_id": "u1", "properties": {"a": 1}}]}
        )
    assert [q.message for q in person.questions] == [
        'Agent local wants to merge the users "device-9" and "user-9" into one in Mixpanel project 1234; this cannot be undone. Go ahead?',
        'Agent local wants to delete the profile of group "company_id"="acme" in Mixpanel project 1234, irreversibly. Go ahead?',
        'Agent local wants to delete the Lexicon schema of event "Signed up" in Mixpanel project 1234. Go ahead?',
        "Agent local wants to delete the WHOLE Lexicon data dictionary in Mixpanel project 1234, then add 1 schema(s). Go ahead?",
        'Agent local wants to send 2 user profile update(s) in Mixpanel project 1234, deleting 1 profile(s) irreversibly: "u2". Go ahead?',
    ]
    # Only the two non-destructive calls reached Mixpanel.
    assert [(r.method, r.path) for r in double.received()] == [
        ("POST", "/api/app/projects/1234/schemas"),
        ("POST", "/engage"),
    ]


async def test_without_elicitation_a_one_time_code_bound_to_the_arguments(double, env):
    async with stdio(env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        first = await client.call_tool("engage", DELETE_U1)
        code = first.structured_content["confirm"]
        other_args = await client.call_tool("engage", {"operation": "delete", "distinct_id": "user-2", "confirm": code})
        other_tool = await client.call_tool(
            "groups", {"operation": "delete", "group_key": "k", "group_id": "user-1", "confirm": code}
        )
        garbage = await client.call_tool("engage", {**DELETE_U1, "confirm": "not-a-code"})
        assert double.received() == []
        confirmed = await client.call_tool("engage", {**DELETE_U1, "confirm": code})
        reused = await client.call_tool("engage", {**DELETE_U1, "confirm": code})

    assert tools["engage"].input_schema["properties"]["confirm"]["type"] == "string"
    assert "confirm" not in tools["segmentation"].input_schema["properties"]  # only tools with destructive operations
    text = error_text(first)
    assert text.startswith('Not done yet: this would delete the profile of user "user-1" in Mixpanel project 1234')
    assert f'plus confirm="{code}" (valid once, for 5 minute(s))' in text
    assert first.structured_content == {"confirmation_required": True, "confirm": code, "expires_in_s": 300}
    assert "issued for other arguments" in error_text(other_args)
    assert "issued for other arguments" in error_text(other_tool)
    assert "it is not a confirmation code" in error_text(garbage)
    assert structured(confirmed)["updates_sent"] == 1
    assert "it was already used" in error_text(reused)
    # Each refusal carries a fresh code, never the spent one.
    assert reused.structured_content["confirm"] != code
    assert len(double.received("/engage")) == 1


async def test_a_code_expires(double, double_url):
    now = [1_000_000.0]
    server = build_server(load_settings(server_env(double_url)), codes=Codes(ttl=300, clock=lambda: now[0]))
    async with Client(server) as client:
        code = (await client.call_tool("engage", DELETE_U1)).structured_content["confirm"]
        now[0] += 301
        late = await client.call_tool("engage", {**DELETE_U1, "confirm": code})
        fresh = late.structured_content["confirm"]
        now[0] += 299
        in_time = await client.call_tool("engage", {**DELETE_U1, "confirm": fresh})
    assert "it expired at " in error_text(late)
    assert structured(in_time)["updates_sent"] == 1
    assert len(double.received("/engage")) == 1


async def test_the_operator_can_turn_confirmation_off(double, env, tmp_path):
    policy = policy_file(tmp_path, "[defaults]\nconfirm_destructive = false\n")
    person = Person()
    async with stdio(env, "--policy", str(policy), elicitation_callback=person) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        deleted = await client.call_tool("engage", DELETE_U1)
    assert structured(deleted)["updates_sent"] == 1
    assert person.questions == []
    assert all("confirm" not in t.input_schema["properties"] for t in tools.values())
    assert tools["engage"].annotations.destructive_hint is True


async def test_over_http_a_modern_client_is_asked_and_a_legacy_one_gets_a_code(double, double_url, tmp_path):
    """Stateless HTTP: 2026-07-28 asks through InputRequiredResult; a 2025 client has no back-channel."""
    person = Person(("accept", {"confirm": True}))
    with http_server(base_env(**server_env(double_url)), log_dir=tmp_path) as served:
        async with Client(served.url, elicitation_callback=person) as modern:
            accepted = await modern.call_tool("engage", DELETE_U1)
        async with Client(served.url, mode="legacy", elicitation_callback=person) as legacy:
            refused = await legacy.call_tool("engage", {**DELETE_U1, "distinct_id": "user-3"})
    assert structured(accepted)["updates_sent"] == 1
    assert len(person.questions) == 1
    assert refused.structured_content["confirmation_required"] is True
    assert [r.json()[0]["$distinct_id"] for r in double.received("/engage")] == ["user-1"]


async def test_the_persons_answer_confirms_one_call_and_a_replayed_final_round_is_refused(double, double_url, tmp_path):
    """2026-07-28: the client sends the person's answer with the sealed requestState. The seal proves the state is
    the server's, not that it is new: the same final round sent twice once deleted twice."""
    person = Person(("accept", {"confirm": True}))
    sent: list[httpx2.Request] = []

    async def keep(request: httpx2.Request) -> None:
        sent.append(request)

    with http_server(base_env(**server_env(double_url)), log_dir=tmp_path) as served:
        async with httpx2.AsyncClient(timeout=30, event_hooks={"request": [keep]}) as http:
            async with Client(streamable_http_client(served.url, http_client=http), elicitation_callback=person) as modern:
                accepted = await modern.call_tool("engage", DELETE_U1)
        (final,) = [r for r in sent if b'"inputResponses"' in r.content]
        replayed = httpx2.post(served.url, content=final.content, headers=dict(final.headers), timeout=30)
    assert structured(accepted)["updates_sent"] == 1 and len(person.questions) == 1
    assert replayed.status_code == 200
    assert "the person's answer to this question was already used" in replayed.text
    assert [r.json()[0]["$distinct_id"] for r in double.received("/engage")] == ["user-1"]  # deleted once


async def test_a_denied_agent_is_not_asked(double, double_url, tmp_path):
    """Policy comes first: an agent without full access to a group is refused before anyone is asked."""
    policy = policy_file(tmp_path, agent("reader", "mxp_reader-key", '{ engage = "read" }'))
    with http_server(base_env(**server_env(double_url)), "--policy", str(policy), log_dir=tmp_path) as served:
        async with http_client(served.url, "mxp_reader-key") as client:
            listed = (await client.list_tools()).tools
            refused = await client.call_tool("engage", DELETE_U1)
    assert listed == []  # engage has no read operation: nothing to list
    assert error_text(refused) == "Unknown tool: engage"
    assert double.received() == []


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_reply_that_does_not_fit_the_question_is_said_plainly(double, env, mode):
    person = Person(("accept", {"confirm": "perhaps"}))
    async with stdio(env, mode=mode, elicitation_callback=person) as client:
        result = await client.call_tool("engage", DELETE_U1)
    assert error_text(result).startswith("Not done: the client's reply to the confirmation question did not fit its form")
    assert "Resolver" not in error_text(result)
    assert double.received() == []


async def test_a_code_outlives_the_local_process_that_issued_it(double, env, tmp_path):
    """Some clients start one stdio server per call: the local key is kept in a file only its owner can read."""
    local = {**env, "XDG_DATA_HOME": str(tmp_path)}
    async with stdio(local) as first:
        code = (await first.call_tool("engage", DELETE_U1)).structured_content["confirm"]
    key = tmp_path / "mixpanel-mcp" / "confirmation.key"
    assert key.stat().st_mode & 0o777 == 0o600
    async with stdio(local) as second:
        confirmed = await second.call_tool("engage", {**DELETE_U1, "confirm": code})
    assert structured(confirmed)["updates_sent"] == 1
    async with stdio(local) as third:  # used in the second process: used for every later one too
        again = await third.call_tool("engage", {**DELETE_U1, "confirm": code})
    assert "The confirmation code was not accepted: it was already used" in error_text(again)
    assert code not in (tmp_path / "mixpanel-mcp" / "confirmation.spent").read_text()  # a digest, not the code
    # Another key (another install, or a hosted replica without the shared secret) is named for what it is.
    async with stdio({**env, "XDG_DATA_HOME": str(tmp_path / "other")}) as elsewhere:
        foreign = await elsewhere.call_tool("engage", {**DELETE_U1, "confirm": code})
    assert "it was issued by another server process" in error_text(foreign)
    assert len(double.received("/engage")) == 1


async def test_each_refused_code_gets_its_own_true_reason():
    """Foreign, altered, expired and other-call codes are told apart, each with what to do next."""
    now = [1_800_000_000.0]
    key = b"k" * 32
    codes = Codes(ttl=300, clock=lambda: now[0], key=key)
    spent: set[str] = set()

    async def spend(token: str, until: float) -> bool:
        fresh = token not in spent
        spent.add(token)
        return fresh

    call = ("local", "engage", {"operation": "delete", "distinct_id": "u-1"})
    code = codes.issue(*call)
    expiry, nonce, mac = code.split("-")
    flipped = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    assert "not the code as issued" in await codes.redeem(f"{expiry}-{flipped}-{mac}", *call, spend)
    longer = f"{int(expiry, 16) + 3600:x}"  # a later expiry written in by hand
    assert "not the code as issued" in await codes.redeem(f"{longer}-{nonce}-{mac}", *call, spend)
    other = await codes.redeem(code, "local", "engage", {"operation": "delete", "distinct_id": "u-2"}, spend)
    assert "issued for other arguments" in other
    someone_else = await codes.redeem(code, "reporter", *call[1:], spend)
    assert someone_else.startswith("it was issued to another agent") and "ask again" in someone_else
    foreign = Codes(ttl=300, clock=lambda: now[0], key=b"o" * 32)
    assert "another server process" in await foreign.redeem(code, *call, spend)
    now[0] += 301
    late = await codes.redeem(code, *call, spend)
    assert late.startswith("it expired at ") and "5 minutes" in late and "ask again" in late
    now[0] -= 301
    assert await codes.redeem(code, *call, spend) is None
    assert await codes.redeem(code, *call, spend) == "it was already used"


async def test_every_argument_in_the_question_is_quoted_on_one_line_and_clipped():
    from types import SimpleNamespace

    from mixpanel_mcp.confirm import describe_effect

    forged = SimpleNamespace(group_key="company_id\n- Agent local wants nothing. Go ahead?", group_id="x" * 5000)
    question = describe_effect("groups", "delete", forged, "project 1")
    assert "\n" not in question
    assert question.startswith('delete the profile of group "company_id - Agent local wants nothing. Go ahead?"="xxx')
    assert "… (5,000 characters)" in question and len(question) < 600
    flag = describe_effect("flags", "delete", SimpleNamespace(flag_id="f\u202e-1\r\nok"), "project 1")
    assert flag.startswith('delete the feature flag "f-1 ok" in Mixpanel project 1')


async def test_used_codes_are_shared_by_the_local_processes_of_one_user(tmp_path):
    from mixpanel_mcp.client.state import LocalState

    path = tmp_path / "confirmation.spent"
    one, other = LocalState(path), LocalState(path)  # as two server processes would
    now = time.time()
    assert await one.spend_once("digest-a", now + 300) is True
    assert await other.spend_once("digest-a", now + 300) is False
    assert await other.spend_once("digest-old", now - 1) is True  # expired at once: pruned on the next spend
    assert await one.spend_once("digest-b", now + 300) is True
    assert sorted(line.split()[0] for line in path.read_text().splitlines()) == ["digest-a", "digest-b"]
    assert path.stat().st_mode & 0o777 == 0o600
