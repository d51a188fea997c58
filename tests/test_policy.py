"""The access policy: classification of every operation, levels per group, read-only, narrowing that
cannot widen, and agents on separate projects that never see each other's data."""

from __future__ import annotations

import time

import pytest

from mixpanel_mcp.double import DoubleState, Project, running
from mixpanel_mcp.policy import GROUPS, Grant, Level, PolicyError, hash_key, parse_policy, parse_toolsets
from mixpanel_mcp.tools import ALL_GROUPS
from mixpanel_mcp.tools._base import Access
from mixpanel_mcp.tools.engage import group as engage
from mixpanel_mcp.tools.lexicon import group as lexicon
from tests.conftest import SA_SECRET, SA_USER, TOKEN, error_text, server_env, stored_event, structured
from tests.harness import agent, base_env, http_client, http_server, operations, policy_file, post, rpc, stdio, tools_of

WRITES = ("/track", "/import", "/engage", "/groups")


def writes(double: DoubleState) -> list[str]:
    """Every request that could change data: ingestion, and any non-GET (Lexicon upserts and deletes)."""
    return [r.path for r in double.received() if r.path in WRITES or r.method != "GET"]


# -- classification -------------------------------------------------------------------------------


def test_every_operation_is_classified_and_exactly_these_are_destructive():
    destructive = {
        (g.name, op.name) for g in ALL_GROUPS for op in g.operations.values() if op.access is Access.DESTRUCTIVE
    }
    # merge, profile and group delete (and the batches that may contain one), Lexicon delete and upsert
    # (destructive only with truncate, see below).
    assert destructive == {
        ("track", "merge"),
        ("engage", "delete"),
        ("engage", "batch"),
        ("groups", "delete"),
        ("groups", "batch"),
        ("lexicon", "upsert"),
        ("lexicon", "delete"),
        ("annotations", "delete"),
        ("flags", "delete"),
        ("experiments", "decide"),
        ("experiments", "conclude"),
        ("experiments", "delete"),
        ("lookup_tables", "replace"),
        ("gdpr", "delete_data"),
    }
    reads = {g.name for g in ALL_GROUPS if all(op.access is Access.READ for op in g.operations.values())}
    assert reads == {"events", "segmentation", "funnels", "retention", "insights", "jql", "export"}


def test_upsert_is_destructive_only_with_truncate_and_a_batch_only_with_a_delete():
    upsert = lexicon.operations["upsert"]
    model = upsert.args
    entries = [{"entityType": "event", "name": "A", "schemaJson": {}}]
    assert upsert.access_for(model.model_validate({"entries": entries})) is Access.WRITE
    assert upsert.access_for(model.model_validate({"entries": entries, "truncate": True})) is Access.DESTRUCTIVE
    assert upsert.access_for(model.model_validate({"entity_type": "event", "name": "A", "schema": {}})) is Access.WRITE

    batch = engage.operations["batch"]
    setting = {"updates": [{"operation": "set", "distinct_id": "u1", "properties": {"a": 1}}]}
    deleting = {"updates": [*setting["updates"], {"operation": "delete", "distinct_id": "u2"}]}
    assert batch.access_for(batch.args.model_validate(setting)) is Access.WRITE
    assert batch.access_for(batch.args.model_validate(deleting)) is Access.DESTRUCTIVE
    # The registered class is the most an operation can do: what annotations and read-only use.
    assert upsert.access is batch.access is Access.DESTRUCTIVE


# -- the policy file ------------------------------------------------------------------------------


def test_levels_default_to_off_and_a_wildcard_is_overridden_by_a_group():
    policy = parse_policy(
        {
            "agents": {
                "a": {"key_sha256": hash_key("ka"), "access": {"*": "read", "track": "full", "jql": "off"}},
                "b": {"key_sha256": hash_key("kb"), "access": {"segmentation": "read"}},
            }
        },
        {},
    )
    a, b = (x.grant for x in policy.agents)
    assert a.level("track") is Level.FULL and a.level("jql") is Level.OFF and a.level("lexicon") is Level.READ
    assert b.level("segmentation") is Level.READ
    assert [g for g in GROUPS if b.level(g) is not Level.OFF] == ["segmentation"]
    assert policy.local.levels == {g: Level.FULL for g in GROUPS}  # no [local]: local use is unrestricted
    assert policy.local.confirm_destructive is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"agents": {"a": {"key": "plain", "access": {}}}}, "never stored in clear"),
        ({"agents": {"a": {"key_sha256": "abc", "access": {}}}}, "64-character hex SHA-256"),
        ({"agents": {"a": {"key_sha256": hash_key("k"), "access": {"funnel": "read"}}}}, "'funnel' is not a tool group"),
        ({"agents": {"a": {"key_sha256": hash_key("k"), "access": {"funnels": "write"}}}}, 'use "off", "read" or "full"'),
        ({"agents": {"a": {"key_sha256": hash_key("k"), "access": {}, "project": "nope"}}}, "project = 'nope'"),
        (
            {"agents": {"a": {"key_sha256": hash_key("k")}, "b": {"key_sha256": hash_key("k")}}},
            "same key_sha256 as [agents.a]",
        ),
        ({"agents": {"local": {"key_sha256": hash_key("k")}}}, "not a usable agent name"),
        ({"defaults": {"confirm_destuctive": False}}, "unknown key(s) confirm_destuctive"),
        ({"projects": {"p": {"MIXPANEL_PROJECT_TOKEN": "tok-123-value"}}}, "must name the environment variable"),
        ({"projects": {"p": {"MIXPANEL_PROJECT_TOKEN": "P_TOKEN"}}}, "refers to the environment variable P_TOKEN"),
        ({"projects": {"p": {"MIXPANEL_TOKEN": "P_TOKEN"}}}, "MIXPANEL_TOKEN is not a setting"),
        ({"defaults": {"max_calls_in_flight": 0}}, "max_calls_in_flight must be a whole number"),
    ],
)
def test_a_bad_policy_is_refused_naming_what_to_fix(data, message):
    with pytest.raises(PolicyError) as info:
        parse_policy(data, {})
    assert message in str(info.value)


def test_keys_are_matched_by_hash_and_revoked_or_unknown_keys_match_nothing():
    policy = parse_policy(
        {
            "agents": {
                "live": {"key_sha256": hash_key("mxp_live"), "access": {"funnels": "read"}},
                "gone": {"key_sha256": hash_key("mxp_gone"), "access": {"*": "full"}, "revoked": True},
            }
        },
        {},
    )
    assert policy.authenticate("mxp_live").agent == "live"
    assert policy.authenticate("mxp_gone") is None
    assert policy.authenticate("mxp_other") is None
    assert policy.authenticate("") is None and policy.authenticate(None) is None
    assert "mxp_live" not in repr(policy)  # only the hash is held


def test_narrowing_never_widens():
    grant = Grant("a", {"segmentation": Level.READ, "track": Level.FULL, "lexicon": Level.OFF})
    wider = grant.narrowed(toolsets={"segmentation", "track", "lexicon", "funnels"})
    assert dict(wider.levels) == dict(grant.levels)
    fewer = grant.narrowed(toolsets={"track"}, read_only=True)
    assert dict(fewer.levels) == {"segmentation": Level.OFF, "track": Level.READ, "lexicon": Level.OFF}
    assert parse_toolsets("Track, nope ,segmentation", strict=False) == {"track", "segmentation"}
    with pytest.raises(PolicyError, match="unknown toolset"):
        parse_toolsets("track,nope", strict=True)


# -- levels, read-only and toolsets on the running server ---------------------------------------


@pytest.mark.asyncio
async def test_each_level_per_group_decides_what_is_listed_and_callable(double, env, tmp_path):
    policy = policy_file(
        tmp_path,
        '[local]\naccess = { "*" = "off", segmentation = "read", lexicon = "read", engage = "full" }\n',
    )
    async with stdio(env, "--policy", str(policy)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        delete = await client.call_tool("lexicon", {"operation": "delete", "all": True})
        upsert = await client.call_tool("lexicon", {"operation": "upsert", "entity_type": "event", "name": "a", "schema": {}})
        funnels = await client.call_tool("funnels", {"operation": "list"})
        assert double.received() == []
        listed = await client.call_tool("lexicon", {"operation": "list"})
        profile = await client.call_tool("engage", {"operation": "set", "distinct_id": "u1", "properties": {"a": 1}})

    assert list(tools) == ["engage", "segmentation", "lexicon"]  # off: not listed
    assert operations(tools["lexicon"]) == ["list"]  # read: only read operations
    assert tools["lexicon"].annotations.read_only_hint is True
    assert "delete" in operations(tools["engage"])  # full: everything
    assert "Not allowed: this agent has 'read' access to lexicon, and delete is a destructive operation" in error_text(delete)
    # an upsert is destructive only with truncate: true, and is not called one without it
    assert "Not allowed: this agent has 'read' access to lexicon, and upsert is a write operation" in error_text(upsert)
    assert error_text(funnels) == "Unknown tool: funnels"
    assert structured(listed)["count"] == 0
    assert structured(profile)["updates_sent"] == 1
    assert [(r.method, r.path) for r in double.received()] == [("GET", "/api/app/projects/1234/schemas"), ("POST", "/engage")]


@pytest.mark.asyncio
async def test_read_only_lists_no_write_tool_refuses_writes_by_name_and_sends_none(double, env):
    double.events.append(stored_event("Signed up", "u1", time.time()))
    async with stdio(env, "--read-only") as client:
        tools = (await client.list_tools()).tools
        attempts = [
            await client.call_tool("track", {"operation": "track", "events": [{"event": "x", "properties": {"distinct_id": "u"}}]}),
            await client.call_tool("engage", {"operation": "set", "distinct_id": "u1", "properties": {"plan": "pro"}}),
            await client.call_tool("lexicon", {"operation": "delete", "all": True}),
            await client.call_tool(
                "lexicon", {"operation": "upsert", "entity_type": "event", "name": "A", "schema": {"description": "d"}}
            ),
        ]
        names = await client.call_tool("events", {"operation": "names"})
    assert tools and all(t.annotations.read_only_hint for t in tools)
    assert {t.name for t in tools} == {
        "events", "segmentation", "funnels", "retention", "insights", "jql", "export", "lexicon", "annotations", "flags",
        "lookup_tables",
    }
    assert operations(next(t for t in tools if t.name == "lexicon")) == ["list"]
    assert all("confirm" not in t.input_schema["properties"] for t in tools)
    texts = [error_text(a) for a in attempts]
    assert texts[:2] == ["Unknown tool: track", "Unknown tool: engage"]
    assert all(t.startswith("Not allowed: this agent has 'read' access to lexicon") for t in texts[2:])
    assert writes(double) == []
    assert structured(names)["names"] == ["Signed up"]


@pytest.mark.asyncio
async def test_toolsets_flag_lists_only_those_groups(double, env):
    async with stdio(env, "--toolsets", "segmentation,track", "--read-only") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert list(tools) == ["segmentation"]  # track is a write group: --read-only removes it


def test_an_unknown_toolset_is_a_start_up_error(env):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp", "--toolsets", "segmentation,funnel"],
        env=base_env(**env),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "unknown toolset(s) funnel: choose from track,engage" in done.stderr.decode().replace(", ", ",")


# -- headers narrow, never widen -------------------------------------------------------------------


def test_headers_can_narrow_a_grant_but_never_widen_it(double, double_url, tmp_path):
    key = "mxp_narrowing-test-key"
    policy = policy_file(tmp_path, agent("analyst", key, '{ segmentation = "read", engage = "full" }'))
    env = base_env(**server_env(double_url))
    listing = rpc("tools/list", {})
    with http_server(env, "--policy", str(policy), log_dir=tmp_path) as served:
        plain = tools_of(post(served.url, listing, key=key))
        widened = tools_of(
            post(served.url, listing, key=key, X_MCP_Toolsets="segmentation,engage,track,lexicon", X_MCP_Readonly="false")
        )
        ungranted = tools_of(post(served.url, listing, key=key, X_MCP_Toolsets="track,lexicon"))
        narrowed = tools_of(post(served.url, listing, key=key, X_MCP_Toolsets="segmentation,engage", X_MCP_Readonly="1"))
        call = post(
            served.url,
            rpc("tools/call", {"name": "engage", "arguments": {"operation": "set", "distinct_id": "u", "properties": {"a": 1}}}),
            key=key,
            X_MCP_Readonly="true",
        )
    assert list(plain) == ["engage", "segmentation"]
    assert widened == plain  # asking for more than the grant changes nothing
    assert ungranted == {}
    assert list(narrowed) == ["segmentation"]  # engage is a write group
    result = answer_result(call)
    assert result["isError"] is True and result["content"][0]["text"] == "Unknown tool: engage"
    assert double.received() == []


def test_an_operator_read_only_flag_cannot_be_lifted_by_a_header(double, double_url, tmp_path):
    env = base_env(**server_env(double_url))
    with http_server(env, "--read-only", log_dir=tmp_path) as served:
        tools = tools_of(post(served.url, rpc("tools/list", {}), X_MCP_Readonly="false", X_MCP_Toolsets="track,engage"))
        call = post(
            served.url,
            rpc("tools/call", {"name": "engage", "arguments": {"operation": "set", "distinct_id": "u", "properties": {"a": 1}}}),
            X_MCP_Readonly="false",
        )
    assert tools == {}  # the header narrowed to two groups, both of which read-only removes
    assert answer_result(call)["content"][0]["text"] == "Unknown tool: engage"
    assert writes(double) == []


def test_repeated_narrowing_headers_narrow_by_every_copy(double, double_url, tmp_path):
    import json

    import httpx2

    from tests.harness import LEGACY

    key = "mxp_repeated-header-key"
    policy = policy_file(tmp_path, agent("analyst", key, '{ segmentation = "read", engage = "full", track = "full" }'))
    env = base_env(**server_env(double_url))

    def listed(url, *extra):
        headers = [
            ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"),
            ("MCP-Protocol-Version", LEGACY),
            ("Authorization", f"Bearer {key}"),
            *extra,
        ]
        return tools_of(httpx2.post(url, content=json.dumps(rpc("tools/list", {})).encode(), headers=headers, timeout=30))

    with http_server(env, "--policy", str(policy), log_dir=tmp_path) as served:
        readonly = listed(served.url, ("X-MCP-Readonly", "false"), ("X-MCP-Readonly", "true"))
        toolsets = listed(served.url, ("X-MCP-Toolsets", "segmentation,engage"), ("X-MCP-Toolsets", "engage,track"))
    assert list(readonly) == ["segmentation"]  # a later "true" still takes the write groups away
    assert list(toolsets) == ["engage"]  # only the groups every copy names


def answer_result(response):
    from tests.harness import answer

    assert response.status_code == 200, response.text
    return answer(response)["result"]


# -- two agents, two projects -----------------------------------------------------------------------

BETA = Project(project_id=5678, token="beta-token", sa_username="beta.x1.mp-service-account", sa_secret="beta-secret", api_secret="beta-api")


@pytest.mark.asyncio
async def test_two_agents_on_two_projects_never_see_each_others_data(double, double_url, tmp_path):
    beta_double = DoubleState(BETA)
    now = time.time()
    double.events.extend(stored_event("Alpha only", "a1", now) for _ in range(3))
    beta_double.events.extend(stored_event("Beta only", "b1", now) for _ in range(2))
    with running(beta_double) as beta_url:
        env = base_env(
            **server_env(double_url),
            BETA_TOKEN=BETA.token,
            BETA_PROJECT_ID=str(BETA.project_id),
            BETA_SA_USER=BETA.sa_username,
            BETA_SA_SECRET=BETA.sa_secret,
            BETA_URL=beta_url,
            BETA_QUERY_URL=f"{beta_url}/api",
        )
        policy = policy_file(
            tmp_path,
            agent("alpha", "mxp_alpha-key", '{ events = "read", engage = "full" }')
            + agent("beta", "mxp_beta-key", '{ events = "read", engage = "full" }', 'project = "beta"')
            + """
[projects.beta]
MIXPANEL_PROJECT_TOKEN = "BETA_TOKEN"
MIXPANEL_PROJECT_ID = "BETA_PROJECT_ID"
MIXPANEL_SERVICE_ACCOUNT_USERNAME = "BETA_SA_USER"
MIXPANEL_SERVICE_ACCOUNT_SECRET = "BETA_SA_SECRET"
MIXPANEL_INGESTION_URL = "BETA_URL"
MIXPANEL_QUERY_URL = "BETA_QUERY_URL"
""",
        )
        with http_server(env, "--policy", str(policy), log_dir=tmp_path) as served:
            async with http_client(served.url, "mxp_alpha-key") as alpha, http_client(served.url, "mxp_beta-key") as beta:
                alpha_names = structured(await alpha.call_tool("events", {"operation": "names"}))
                beta_names = structured(await beta.call_tool("events", {"operation": "names"}))
                await alpha.call_tool("engage", {"operation": "set", "distinct_id": "a1", "properties": {"who": "alpha"}})
                await beta.call_tool("engage", {"operation": "set", "distinct_id": "b1", "properties": {"who": "beta"}})
                # Interleaved, concurrently: still no mixing.
                import anyio

                seen: dict[str, list[str]] = {"alpha": [], "beta": []}

                async def ask(name, client):
                    seen[name].extend(structured(await client.call_tool("events", {"operation": "names"}))["names"])

                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(ask, "alpha", alpha)
                        tg.start_soon(ask, "beta", beta)

    assert alpha_names["names"] == ["Alpha only"]
    assert beta_names["names"] == ["Beta only"]
    assert set(seen["alpha"]) == {"Alpha only"} and set(seen["beta"]) == {"Beta only"}
    assert double.profiles == {"a1": {"who": "alpha"}}
    assert beta_double.profiles == {"b1": {"who": "beta"}}
    # Each double saw only its own project's credentials and id.
    for request in double.received("/api/query/events/names"):
        assert request.basic_auth == (SA_USER, SA_SECRET) and request.query["project_id"] == "1234"
    for request in beta_double.received("/api/query/events/names"):
        assert request.basic_auth == (BETA.sa_username, BETA.sa_secret) and request.query["project_id"] == "5678"
    assert [r.json()[0]["$token"] for r in double.received("/engage")] == [TOKEN]
    assert [r.json()[0]["$token"] for r in beta_double.received("/engage")] == [BETA.token]
