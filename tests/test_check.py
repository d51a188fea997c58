"""`mixpanel-mcp check`: every configured credential probed against the double over real HTTP; the printed
verdicts, the fixes and the exit status; a second double with other credentials stands for another region."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import time
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixpanel_mcp.check import Status, exit_code, main_check, render, run_check, startup_warnings
from mixpanel_mcp.config import Region, load_settings
from mixpanel_mcp.double import DoubleState, Project, running
from tests.conftest import API_SECRET, PROJECT_ID, SA_SECRET, SA_USER, TOKEN, server_env

ROOT = Path(__file__).resolve().parent.parent
CHECK = "import sys; from mixpanel_mcp.check import main_check; sys.exit(main_check(sys.argv[1:]))"
PROBE_PATH = f"/api/app/projects/{PROJECT_ID}/schemas/event"
PROBE_QUERY = {"entity_name": "mixpanel-mcp credentials check"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    return subprocess.run(
        [sys.executable, "-c", CHECK, *args], env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def hosts(url: str) -> tuple[str, str, str]:
    """A region's (ingestion, query, export) hosts, as config.REGION_URLS, on a double."""
    return (url, f"{url}/api", f"{url}/api/2.0")


def blocks(stdout: str) -> dict[str, str]:
    """Each verdict's text, by its heading line ('[ok] project token: ...')."""
    found: dict[str, str] = {}
    heading = None
    for line in stdout.splitlines():
        if line.startswith("["):
            heading = line
            found[heading] = ""
        elif heading is not None and line.startswith(" "):
            found[heading] += line.strip() + "\n"
        else:
            heading = None
    return found


def heading(status: str, credential: str, what: str) -> str:
    return f"{f'[{status}]':<13} {credential}: {what}"


SA = f"service account {SA_USER}"


@pytest.fixture
def other_region() -> Iterator[tuple[DoubleState, str]]:
    """A second double: the same project id, other credentials (what the configured host does not know)."""
    state = DoubleState(Project(token="eu-token", sa_secret="eu-sa-secret", api_secret="eu-api-secret"))
    with running(state) as url:
        yield state, url


# -- through the command, as a person runs it -----------------------------------------------------------------


def test_all_good_exits_0_and_says_what_each_probe_proved_without_storing_anything(double, double_url):
    result = run(server_env(double_url, MIXPANEL_API_SECRET=API_SECRET))
    assert result.returncode == 0, result.stdout + result.stderr
    found = blocks(result.stdout)
    assert list(found) == [
        heading("ok", "project token", "sending events and profiles (/track, /engage, /groups)"),
        heading("ok", SA, f"reports (Query API) on project {PROJECT_ID}"),
        heading("ok", SA, "export (raw events)"),
        heading("ok", SA, "Lexicon read (data dictionary)"),
        heading("ok", SA, "imports (/import, $merge)"),
        heading("not checked", SA, "Lexicon edits (upsert, delete)"),
        heading("not checked", SA, "feature flags and experiments (workspace)"),
        heading("ok", "API secret", "reports and export (legacy project secret)"),
    ]
    assert "Fix: to manage flags and experiments, set MIXPANEL_WORKSPACE_ID" in result.stdout
    assert "It is not used while a service account is configured." in result.stdout
    assert "Rate budget spent by this check: 2 Query API request(s) of 60 an hour, 1 export(s) of 60 an hour, 1 Lexicon request(s) of 5 a minute." in result.stdout
    assert result.stdout.rstrip().endswith("Everything checked works.")

    token_import, query, export, lexicon, sa_import, secret_query = double.received()
    assert (token_import.method, token_import.path, token_import.query) == ("POST", "/import", {"strict": "1"})
    assert token_import.basic_auth == (TOKEN, "") and token_import.body == b"[]"
    assert (query.method, query.path) == ("GET", "/api/query/events/names")
    assert query.query == {"project_id": str(PROJECT_ID), "type": "general", "limit": "1"}
    assert query.basic_auth == (SA_USER, SA_SECRET)
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    assert (export.path, export.query) == (
        "/api/2.0/export", {"project_id": str(PROJECT_ID), "from_date": yesterday, "to_date": yesterday, "limit": "2"}
    )
    assert (lexicon.method, lexicon.path, lexicon.basic_auth) == ("GET", PROBE_PATH, (SA_USER, SA_SECRET))
    assert lexicon.query == PROBE_QUERY
    assert (sa_import.path, sa_import.query, sa_import.body) == ("/import", {"project_id": str(PROJECT_ID), "strict": "1"}, b"[]")
    assert sa_import.basic_auth == (SA_USER, SA_SECRET)
    assert (secret_query.path, secret_query.basic_auth) == ("/api/query/events/names", (API_SECRET, ""))
    assert "project_id" not in secret_query.query
    assert double.events == [] and double.schemas == {}


def test_a_wrong_token_fails_with_where_to_find_the_right_one_and_the_rest_still_checked(double, double_url):
    result = run(server_env(double_url, MIXPANEL_PROJECT_TOKEN="not-the-token"))
    assert result.returncode == 1
    found = blocks(result.stdout)
    why = found[heading("FAILED", "project token", "sending events and profiles (/track, /engage, /groups)")]
    assert f'Mixpanel rejected the project token (401 on /import at {double_url}). Mixpanel said: "Invalid credentials".' in why
    assert "Fix: Copy the Project Token from your project's settings (Settings > Project Settings > Access Keys) into MIXPANEL_PROJECT_TOKEN." in why
    assert heading("ok", SA, f"reports (Query API) on project {PROJECT_ID}") in found
    assert "1 problem(s) found" in result.stdout
    assert "not-the-token" not in result.stdout + result.stderr


def test_a_wrong_service_account_secret_stops_the_account_checks_after_one_query(double, double_url):
    result = run(server_env(double_url, MIXPANEL_SERVICE_ACCOUNT_SECRET="wrong-secret", MIXPANEL_PROJECT_TOKEN=None))
    assert result.returncode == 1
    found = blocks(result.stdout)
    why = found[heading("FAILED", SA, f"reports (Query API) on project {PROJECT_ID}")]
    assert "Mixpanel rejected the username or secret (401 on /events/names" in why
    assert "Fix: check MIXPANEL_SERVICE_ACCOUNT_USERNAME and MIXPANEL_SERVICE_ACCOUNT_SECRET" in why
    assert "create a new secret there" in why
    assert [h for h in found if h.startswith("[not checked]")] == [
        heading("not checked", SA, "export"),
        heading("not checked", SA, "Lexicon read"),
        heading("not checked", SA, "imports and Lexicon edits (Admin or Owner role)"),
    ]
    assert [r.path for r in double.received()] == ["/api/query/events/names"]
    assert "wrong-secret" not in result.stdout + result.stderr


def test_a_service_account_without_access_to_the_project_is_told_where_to_add_it(double, double_url):
    result = run(server_env(double_url, MIXPANEL_PROJECT_ID="999", MIXPANEL_PROJECT_TOKEN=None))
    assert result.returncode == 1
    why = blocks(result.stdout)[heading("FAILED", SA, "reports (Query API) on project 999")]
    assert "The account is valid but has no access to project 999 (403 on /events/names)." in why
    assert 'Mixpanel said: "service account does not have access to project 999"' in why
    assert f"Fix: in Organization Settings > Service Accounts, add {SA_USER} to project 999" in why
    assert "MIXPANEL_PROJECT_ID is the number in your project's URL" in why


def test_a_configuration_error_exits_1_before_anything_is_sent(double, double_url, monkeypatch, capsys):
    """Exit status 1 on any problem, as the README says (a missing setting is one)."""
    for name in [n for n in os.environ if n.startswith("MIXPANEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT_USERNAME", SA_USER)
    assert main_check([]) == 1
    assert "MIXPANEL_SERVICE_ACCOUNT_SECRET" in capsys.readouterr().err
    assert double.received() == []


# -- regions ---------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_project_of_another_region_is_found_there_and_the_fix_names_the_region(double, double_url, other_region):
    eu, eu_url = other_region
    regions = {Region.US: hosts(double_url), Region.EU: hosts(eu_url)}
    # Credentials of the "EU" project, configured for the US hosts (the default region).
    settings = load_settings(
        server_env(double_url, MIXPANEL_PROJECT_TOKEN="eu-token", MIXPANEL_SERVICE_ACCOUNT_SECRET="eu-sa-secret")
    )
    findings = await run_check(settings, hosts=regions)
    token, account = findings[0], findings[1]
    for finding in (token, account):
        assert finding.status is Status.FAILED and finding.region is Region.EU
        assert "Refused by the US host (401 on" in finding.why
        assert "accepted by the EU host: your project looks like EU" in finding.why
        assert finding.fix.startswith("set MIXPANEL_REGION=eu (or run with --region eu)")
    assert [f.status for f in findings[2:]] == [Status.NOT_CHECKED] * 3
    assert exit_code(findings) == 1
    text = render(settings, findings)
    assert "Fix: set MIXPANEL_REGION=eu" in text and "2 problem(s) found" in text
    # Each credential was tried where it is configured, then on the other region's hosts.
    assert [(r.path, r.basic_auth) for r in double.received()] == [
        ("/import", ("eu-token", "")), ("/api/query/events/names", (SA_USER, "eu-sa-secret")),
    ]
    assert [(r.path, r.basic_auth) for r in eu.received()] == [
        ("/import", ("eu-token", "")), ("/api/query/events/names", (SA_USER, "eu-sa-secret")),
    ]
    assert "Rate budget spent by this check: 2 Query API request(s)" in text  # one on each region

    fixed = load_settings(
        server_env(eu_url, MIXPANEL_PROJECT_TOKEN="eu-token", MIXPANEL_SERVICE_ACCOUNT_SECRET="eu-sa-secret", MIXPANEL_REGION="eu")
    )
    assert exit_code(await run_check(fixed, hosts=regions)) == 0


@pytest.mark.asyncio
async def test_a_credential_wrong_everywhere_says_every_region_was_tried(double, double_url, other_region):
    _, eu_url = other_region
    settings = load_settings(server_env(double_url, MIXPANEL_SERVICE_ACCOUNT_SECRET="nobody-knows-this", MIXPANEL_PROJECT_TOKEN=None))
    (account, *_) = await run_check(settings, hosts={Region.US: hosts(double_url), Region.EU: hosts(eu_url)})
    assert account.status is Status.FAILED and account.region is None
    assert "Mixpanel rejected the username or secret" in account.why
    assert "It was not accepted in the other regions (EU) either." in account.why


# -- roles --------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_role_that_may_report_but_not_export_or_import_is_told_which_role_it_needs(double, double_url):
    double.fail("/api/2.0/export", 403, body="Forbidden: no export permission")
    double.fail("/import", 403, body={"code": 403, "error": "service account role is too low", "status": "Forbidden"})
    settings = load_settings(server_env(double_url, MIXPANEL_PROJECT_TOKEN=None))
    findings = await run_check(settings)
    by_what = {f.what: f for f in findings}
    assert by_what[f"reports (Query API) on project {PROJECT_ID}"].status is Status.OK
    export = by_what["export (raw events)"]
    assert export.status is Status.FAILED
    assert "may run reports but not export (403 on /export)" in export.why
    assert export.fix.startswith(f"give {SA_USER} a role that may export on project {PROJECT_ID}")
    assert by_what["Lexicon read (data dictionary)"].status is Status.OK
    imports = by_what["imports (/import, $merge)"]
    assert imports.status is Status.FAILED
    assert 'The role is below Admin (403 on /import). Mixpanel said: "service account role is too low".' in imports.why
    assert "the server sends /import with it (not with the token)" in imports.why
    edits = by_what["Lexicon edits (upsert, delete)"]
    assert edits.status is Status.FAILED and "need the Admin or Owner role that /import just refused" in edits.why
    assert imports.fix == edits.fix and "--read-only" in edits.fix
    assert exit_code(findings) == 1
    assert double.events == []


@pytest.mark.asyncio
async def test_a_role_that_may_not_read_the_lexicon_and_the_writes_that_were_not_tried(double, double_url):
    double.fail(f"/api/app/projects/{PROJECT_ID}/schemas", 403, body={"error": "forbidden", "status": "error"})
    settings = load_settings(server_env(double_url, MIXPANEL_PROJECT_TOKEN=None))
    findings = await run_check(settings)
    by_what = {f.what: f for f in findings}
    read = by_what["Lexicon read (data dictionary)"]
    assert read.status is Status.FAILED
    assert "may not read the project's Lexicon (403 on" in read.why
    assert "the Analyst role or higher" in read.fix
    edits = by_what["Lexicon edits (upsert, delete)"]
    assert edits.status is Status.NOT_CHECKED  # not tried: it would be a write
    assert "Not tried, as that would change the Lexicon" in edits.why
    assert [r.method for r in double.received() if "schemas" in r.path] == ["GET"]  # nothing was written


@pytest.mark.asyncio
async def test_mixpanel_failing_is_reported_as_could_not_check_not_as_a_bad_credential(double, double_url):
    double.fail("/api/query/events/names", 503, times=10)
    settings = load_settings(server_env(double_url, MIXPANEL_PROJECT_TOKEN=None))
    (account, *_) = await run_check(settings)
    assert account.status is Status.FAILED
    assert account.why.startswith("Could not check: Mixpanel had a server error (503 on /events/names) after 3 attempt(s).")
    assert account.fix == "run the check again once this is resolved."


# -- the quick check behind the server's start-up warnings -----------------------------------------------------------


@pytest.mark.asyncio
async def test_the_quick_check_spends_no_rate_budget(double, double_url):
    settings = load_settings(server_env(double_url, MIXPANEL_API_SECRET=API_SECRET))
    findings = await run_check(settings, quick=True)
    assert [f.status for f in findings] == [Status.OK] * 3
    assert [(r.path, r.basic_auth) for r in double.received()] == [
        ("/import", (TOKEN, "")), ("/import", (SA_USER, SA_SECRET)), ("/import", (API_SECRET, "")),
    ]
    assert "Rate budget spent by this check: nothing." in render(settings, findings)


@pytest.mark.asyncio
async def test_startup_warnings_log_only_what_fails_with_its_fix_and_no_secret(double, double_url, caplog):
    log = logging.getLogger("test.startup")
    settings = load_settings(server_env(double_url, MIXPANEL_SERVICE_ACCOUNT_SECRET="bad-secret-value"))
    with caplog.at_level(logging.WARNING, logger="test.startup"):
        findings = await startup_warnings(settings, log=log)
    assert [f.status for f in findings] == [Status.OK, Status.FAILED]
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith(f"Mixpanel credentials: {SA}, project {PROJECT_ID}: FAILED. Refused by /import (401 on /import).")
    assert "Fix: run `mixpanel-mcp check` to tell which" in message
    assert "bad-secret-value" not in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="test.startup"):
        await startup_warnings(load_settings(server_env(double_url)), log=log)
    assert caplog.records == []


def test_cli_subcommand_and_server_start_up_log_the_same_findings(double, double_url, tmp_path):
    """`mixpanel-mcp check` exits 1 on a rejected secret, and the HTTP server logs the finding when it starts."""
    bad = server_env(double_url, MIXPANEL_SERVICE_ACCOUNT_SECRET="wrong-secret", MIXPANEL_STARTUP_CHECK="1")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    checked = subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp", "check"], env={**clean, **bad}, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 1
    assert "MIXPANEL_SERVICE_ACCOUNT_SECRET" in checked.stdout and "wrong-secret" not in checked.stdout

    from mixpanel_mcp.double.app import free_port

    log = tmp_path / "server.log"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mixpanel_mcp", "--transport", "http", "--port", str(port)],
        env={**clean, **bad},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        deadline = time.monotonic() + 30
        while "Mixpanel credentials:" not in log.read_text() and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "Mixpanel credentials:" in text and "service account" in text
    assert "wrong-secret" not in text


def test_the_workspace_and_the_gdpr_token_are_checked_when_configured(double, double_url):
    env = server_env(double_url, MIXPANEL_WORKSPACE_ID="5678", MIXPANEL_GDPR_TOKEN="test-gdpr-token")
    result = run(env)
    assert result.returncode == 0, result.stdout
    found = blocks(result.stdout)
    assert heading("ok", SA, "feature flags and experiments (workspace)") in found
    assert heading("ok", "GDPR token", "GDPR retrievals and deletions") in found
    flags, gdpr = (r for r in double.received() if "feature-flags" in r.path or "data-retrievals" in r.path)
    assert (flags.method, flags.path) == ("GET", f"/api/app/projects/{PROJECT_ID}/workspaces/5678/feature-flags")
    assert (gdpr.method, gdpr.query, gdpr.headers["authorization"]) == ("GET", {"token": TOKEN}, "Bearer test-gdpr-token")
    assert double.gdpr_jobs == {}

    double.reset()
    wrong = run(server_env(double_url, MIXPANEL_WORKSPACE_ID="999", MIXPANEL_GDPR_TOKEN="expired-token"))
    assert wrong.returncode == 1
    found = blocks(wrong.stdout)
    workspace = found[heading("FAILED", SA, "feature flags and experiments (workspace)")]
    assert "Workspace 999 was refused (403" in workspace and "Fix: check MIXPANEL_WORKSPACE_ID" in workspace
    gdpr = found[heading("FAILED", "GDPR token", "GDPR retrievals and deletions")]
    assert "Mixpanel refused the GDPR token (401" in gdpr and "MIXPANEL_GDPR_TOKEN" in gdpr
    assert "expired-token" not in wrong.stdout + wrong.stderr


def test_check_sandbox_checks_the_demo_project_without_an_account(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    done = subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp", "check", "--sandbox", "--sandbox-dir", str(tmp_path / "sb")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Sandbox in {(tmp_path / 'sb').resolve()}" in done.stdout
    assert "FAILED" not in done.stdout and "[ok]" in done.stdout.lower()


@pytest.mark.asyncio
async def test_a_project_of_another_cluster_is_a_400_on_query_hosts_and_check_finds_its_region():
    """The live Query/Export hosts answer a project of another data residency with 400 "invalid project id for
    cluster" (not 401), and the US ingestion host accepts its data, which never shows up."""
    import httpx2

    from mixpanel_mcp.client import BadRequestError
    from mixpanel_mcp.errors import describe_error

    project = Project(region="eu")
    us, eu = DoubleState(project, region="us"), DoubleState(project)
    with running(us) as us_url, running(eu) as eu_url:
        regions = {Region.US: hosts(us_url), Region.EU: hosts(eu_url)}
        settings = load_settings(server_env(us_url, MIXPANEL_PROJECT_TOKEN=None))
        findings = await run_check(settings, hosts=regions)
        answer = httpx2.get(f"{us_url}/api/query/events/names", params={"project_id": PROJECT_ID, "type": "general"}, auth=(SA_USER, SA_SECRET))
        now = int(time.time())
        event = {"event": "E", "properties": {"distinct_id": "u1", "time": now, "$insert_id": "i-1"}}
        imported = httpx2.post(f"{us_url}/import", params={"strict": "1", "project_id": PROJECT_ID}, json=[event], auth=(SA_USER, SA_SECRET))
    assert answer.status_code == 400 and answer.json()["error"] == "Invalid project id for cluster"
    assert imported.status_code == 200 and us.events == [] and eu.events == []
    account = findings[0]
    assert account.status is Status.FAILED and account.region is Region.EU
    assert "Refused by the US host (400 on /events/names)" in account.why
    assert account.fix.startswith("set MIXPANEL_REGION=eu")
    error = BadRequestError(api=None, status=400, detail="Invalid project id for cluster", credential=None, endpoint="/segmentation")
    text = describe_error(error)
    assert "another data-residency region" in text and "MIXPANEL_REGION" in text and "eu or in" in text
