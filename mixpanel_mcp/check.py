"""`mixpanel-mcp check`: try every configured credential with the cheapest request that proves it, and say, for a
person, what works, what does not and why, with the exact fix.

What each probe sends (and costs of the project's budgets):
    project token     POST /import with the token as Basic user and an empty batch. Mixpanel checks the credential,
                      then refuses the empty batch (400): nothing is stored, no rate budget is spent. There is no
                      read-only request that takes the token (/track, /engage and /groups store what they accept).
    service account   GET /api/query/events/names?limit=1 (1 of the 60 Query API requests an hour): the account,
                      its secret and its access to MIXPANEL_PROJECT_ID. Then, if that worked:
                      GET /api/2.0/export for yesterday with limit=1 (1 of 60 exports an hour): the role may export;
                      GET the Lexicon schema of an event that does not exist (1 of 5 Lexicon requests a minute):
                      the role may read the data dictionary;
                      POST /import with an empty batch (free, nothing stored): the role is Admin or Owner, which
                      imports and Lexicon edits need. Lexicon edits themselves are not tried: that would be a write.
                      With MIXPANEL_WORKSPACE_ID, GET the workspace's feature flags: flags and experiments can be
                      managed there (without it, the check says what to set).
    API secret        GET /api/query/events/names?limit=1 (1 Query API request).
    GDPR token        GET the status of a retrieval job that does not exist, with the project token: the token is
                      accepted, and nothing is started.

A credential refused (401/403), or a project answered with 400 "invalid project id for cluster" (what the Query and
Export hosts say of a project of another region), on the configured region is tried on the other regions' hosts (when the hosts are
Mixpanel's own, not overridden): an EU project queried on the US host is the most common mistake.

`quick=True` (the server's start-up warnings) sends only what spends no rate budget: the /import probes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import anyio
import httpx2

from mixpanel_mcp.client import (
    Api,
    AuthenticationError,
    BadRequestError,
    CallStats,
    MixpanelClient,
    MixpanelError,
    NotFoundError,
    PermissionDeniedError,
    call_stats,
    query,
)
from mixpanel_mcp.client.events import import_events
from mixpanel_mcp.client.export import export_events
from mixpanel_mcp.client.flags import list_flags
from mixpanel_mcp.client.gdpr import retrieval_status
from mixpanel_mcp.client.lexicon import list_schemas
from mixpanel_mcp.client.state import State
from mixpanel_mcp.config import (
    REGION_URLS,
    CacheSettings,
    ConfigError,
    Region,
    RetrySettings,
    Settings,
    load_redis,
    load_settings,
)
from mixpanel_mcp.errors import describe_error, wrong_cluster
from mixpanel_mcp.text import scrubber

logger = logging.getLogger("mixpanel_mcp.check")

Hosts = Mapping[Region, tuple[str, str, str]]  # (ingestion, query, export) per region, as config.REGION_URLS
PROBE_SCHEMA = "mixpanel-mcp credentials check"  # an event name no project has: reading its schema finds none
OTHER_REGION_TIMEOUT = 10.0

TOKEN = "project token"
SERVICE_ACCOUNT = "service account"
API_SECRET = "API secret"
GDPR_TOKEN = "GDPR token"

TOKEN_FIX = (
    "Copy the Project Token from your project's settings (Settings > Project Settings > Access Keys) into "
    "MIXPANEL_PROJECT_TOKEN. It is not the project secret, nor a service account secret."
)
SECRET_FIX = (
    "Copy the Project Secret (Settings > Project Settings > Access Keys) into MIXPANEL_API_SECRET, or better, use a "
    "service account instead: the project secret is deprecated."
)


class Status(StrEnum):
    OK = "ok"
    FAILED = "FAILED"
    NOT_CHECKED = "not checked"


@dataclass(frozen=True)
class Finding:
    """One thing checked (or knowingly not checked) for one credential."""

    credential: str  # TOKEN, SERVICE_ACCOUNT or API_SECRET
    what: str  # what it is needed for, e.g. "reports (Query API)"
    status: Status
    why: str  # what Mixpanel answered, and what it means
    fix: str | None = None  # the exact thing to change, when something is wrong
    region: Region | None = None  # the region the project answered from, when it is not the configured one
    api: Api | None = None  # the API family the probe used
    requests: int = 0  # requests sent for this finding (retries included): what it cost

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED

    def text(self) -> str:
        """One line (plus the fix), for a log."""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.credential}, {self.what}: {self.status.value}. {self.why}{fix}"


# -- probes: each proves one thing, or raises the client's typed error --------------------------------


async def _import_probe(client: MixpanelClient) -> None:
    """An empty batch: a 400 after the credential was accepted, and nothing stored."""
    try:
        await import_events(client, [])
    except BadRequestError as exc:
        if exc.status != 400:
            raise


async def _query_probe(client: MixpanelClient) -> None:
    await query.event_names(client, type="general", limit=1)


async def _export_probe(client: MixpanelClient) -> None:
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    await export_events(client, from_date=yesterday, to_date=yesterday, limit=1)


async def _lexicon_probe(client: MixpanelClient) -> None:
    try:
        await list_schemas(client, "event", PROBE_SCHEMA)
    except NotFoundError:
        pass  # the account may read schemas; this one does not exist


async def _workspace_probe(client: MixpanelClient) -> None:
    await list_flags(client)


async def _gdpr_probe(client: MixpanelClient) -> None:
    await retrieval_status(client, "mixpanel-mcp-credentials-check")


Probe = Callable[[MixpanelClient], Awaitable[None]]


@dataclass
class Outcome:
    error: MixpanelError | None
    requests: int
    region: Region | None = None  # set when the probe failed here and worked in this other region


class Checker:
    def __init__(
        self, settings: Settings, transport: httpx2.AsyncBaseTransport | None, hosts: Hosts, state: State | None = None
    ) -> None:
        # A check asks Mixpanel every time (no cache), and does not sit through minutes of retries.
        self.settings = replace(
            settings,
            cache=CacheSettings(ttl=0, ttl_today=0),
            retry=RetrySettings(max_retries=min(settings.retry.max_retries, 2), base_delay=min(settings.retry.base_delay, 1.0)),
            timeout=min(settings.timeout, 30.0),
        )
        self.transport = transport
        self.hosts = hosts
        self.state = state  # with Redis, the check's requests count in the replicas' shared budget

    def only(self, credential: str) -> Settings:
        """The settings with just one credential, so the probe cannot be answered by another."""
        s = self.settings
        if credential in (TOKEN, GDPR_TOKEN):  # the GDPR API also takes the project token
            return replace(s, service_account_username=None, service_account_secret=None, api_secret=None)
        if credential == SERVICE_ACCOUNT:
            return replace(s, project_token=None, api_secret=None)
        return replace(s, project_token=None, service_account_username=None, service_account_secret=None)

    async def attempt(self, settings: Settings, probe: Probe) -> Outcome:
        stats = CallStats()
        token = call_stats.set(stats)
        try:
            async with MixpanelClient(settings, transport=self.transport, state=self.state) as client:
                await probe(client)
        except MixpanelError as exc:
            return Outcome(exc, stats.requests)
        finally:
            call_stats.reset(token)
        return Outcome(None, stats.requests)

    def on_own_hosts(self) -> bool:
        """Whether the configured hosts are the region's own (overridden hosts are not second-guessed)."""
        own = self.hosts.get(self.settings.region)
        s = self.settings
        return own is not None and (s.ingestion_url, s.query_url, s.export_url) == own

    async def probe(self, credential: str, probe: Probe) -> Outcome:
        """The probe on the configured hosts; when refused (401/403), on the other regions' too."""
        settings = self.only(credential)
        outcome = await self.attempt(settings, probe)
        refused = isinstance(outcome.error, (AuthenticationError, PermissionDeniedError))
        if not (refused or (outcome.error is not None and wrong_cluster(outcome.error))) or not self.on_own_hosts():
            return outcome
        for region, (ingestion, query_url, export) in self.hosts.items():
            if region == self.settings.region:
                continue
            elsewhere = replace(
                settings,
                region=region,
                ingestion_url=ingestion,
                query_url=query_url,
                export_url=export,
                retry=RetrySettings(max_retries=0),
                timeout=OTHER_REGION_TIMEOUT,
            )
            there = await self.attempt(elsewhere, probe)
            outcome.requests += there.requests
            if there.error is None:
                outcome.region = region
                return outcome
        return outcome


# -- what the answers mean --------------------------------------------------------------------------------


def _host(settings: Settings, api: Api) -> str:
    return settings.ingestion_url if api in (Api.IMPORT, Api.INGESTION) else settings.export_url if api is Api.EXPORT else settings.query_url


def _said(error: MixpanelError) -> str:
    detail = getattr(error, "detail", None)
    return f' Mixpanel said: "{detail}".' if detail else ""


def _status(error: MixpanelError) -> str:
    status = getattr(error, "status", None)
    endpoint = getattr(error, "endpoint", "")
    return f"{status} on {endpoint}" if status is not None else endpoint


def _wrong_region(credential: str, what: str, settings: Settings, outcome: Outcome, api: Api) -> Finding:
    assert outcome.error is not None and outcome.region is not None
    region = outcome.region
    return Finding(
        credential,
        what,
        Status.FAILED,
        f"Refused by the {settings.region.value.upper()} host ({_status(outcome.error)}), accepted by the "
        f"{region.value.upper()} host: your project looks like {region.value.upper()} (its data is stored there).",
        f"set MIXPANEL_REGION={region.value} (or run with --region {region.value}); the project's data residency is "
        "shown in its settings.",
        region=region,
        api=api,
        requests=outcome.requests,
    )


def _unreachable_or_transient(credential: str, what: str, outcome: Outcome, api: Api) -> Finding:
    """Anything that is not a verdict on the credential: the message errors.py gives an agent, which says what to do."""
    assert outcome.error is not None
    return Finding(
        credential, what, Status.FAILED, "Could not check: " + describe_error(outcome.error),
        "run the check again once this is resolved.", api=api, requests=outcome.requests,
    )


def _ok(credential: str, what: str, why: str, api: Api, outcome: Outcome) -> Finding:
    return Finding(credential, what, Status.OK, why, api=api, requests=outcome.requests)


class Report:
    """Builds the findings, in the order a person reads them."""

    def __init__(self, checker: Checker, quick: bool) -> None:
        self.checker = checker
        self.settings = checker.settings
        self.quick = quick
        self.findings: list[Finding] = []

    def add(self, finding: Finding) -> Finding:
        self.findings.append(finding)
        return finding

    async def token(self) -> None:
        what = "sending events and profiles (/track, /engage, /groups)"
        outcome = await self.checker.probe(TOKEN, _import_probe)
        host = self.settings.ingestion_url
        if outcome.error is None:
            self.add(_ok(TOKEN, what, f"Accepted by {host}/import (an empty batch: nothing was stored).", Api.IMPORT, outcome))
        elif outcome.region is not None:
            self.add(_wrong_region(TOKEN, what, self.settings, outcome, Api.IMPORT))
        elif isinstance(outcome.error, (AuthenticationError, PermissionDeniedError)):
            self.add(Finding(
                TOKEN, what, Status.FAILED,
                f"Mixpanel rejected the project token ({_status(outcome.error)} at {host}).{_said(outcome.error)} "
                + self._regions_tried(),
                TOKEN_FIX, api=Api.IMPORT, requests=outcome.requests,
            ))
        else:
            self.add(_unreachable_or_transient(TOKEN, what, outcome, Api.IMPORT))

    def _regions_tried(self) -> str:
        if not self.checker.on_own_hosts():
            return "Custom hosts are configured (MIXPANEL_*_URL), so other regions were not tried."
        others = [r.value.upper() for r in self.checker.hosts if r != self.settings.region]
        return f"It was not accepted in the other regions ({', '.join(others)}) either." if others else ""

    async def service_account(self) -> None:
        s = self.settings
        who = f"service account {s.service_account_username}"
        if self.quick:
            await self._service_account_quick(who)
            return
        what = f"reports (Query API) on project {s.project_id}"
        outcome = await self.checker.probe(SERVICE_ACCOUNT, _query_probe)
        if outcome.error is None:
            self.add(_ok(who, what, f"Accepted by {s.query_url}/query/events/names (1 query).", Api.QUERY, outcome))
        else:
            self._service_account_refused(who, what, outcome, Api.QUERY)
            for later in ("export", "Lexicon read", "imports and Lexicon edits (Admin or Owner role)"):
                self.add(Finding(who, later, Status.NOT_CHECKED, "Not checked until the service account itself works."))
            return
        await self._export(who)
        await self._lexicon_read(who)
        await self._admin(who)
        await self._workspace(who)

    async def _workspace(self, who: str) -> None:
        """Feature flag management and experiments live in a workspace: without one they are not offered."""
        s = self.settings
        what = "feature flags and experiments (workspace)"
        if s.workspace_id is None:
            self.add(Finding(
                who, what, Status.NOT_CHECKED,
                "No workspace is configured, so the flags tool offers only evaluate and definitions, and the "
                "experiments tool is not offered.",
                "to manage flags and experiments, set MIXPANEL_WORKSPACE_ID to the id of the project's workspace "
                "(data view).",
            ))
            return
        outcome = await self.checker.probe(SERVICE_ACCOUNT, _workspace_probe)
        host = _host(s, Api.APP)
        if outcome.error is None:
            self.add(_ok(who, what, f"Workspace {s.workspace_id} answered at {host} (its feature flags were listed).", Api.APP, outcome))
        elif outcome.region is not None:
            self.add(_wrong_region(who, what, s, outcome, Api.APP))
        elif isinstance(outcome.error, (PermissionDeniedError, NotFoundError)):
            self.add(Finding(
                who, what, Status.FAILED,
                f"Workspace {s.workspace_id} was refused ({_status(outcome.error)}).{_said(outcome.error)}",
                "check MIXPANEL_WORKSPACE_ID: it must be a workspace (data view) of project "
                f"{s.project_id} that the service account may use.",
                api=Api.APP, requests=outcome.requests,
            ))
        else:
            self._service_account_refused(who, what, outcome, Api.APP)

    async def gdpr(self) -> None:
        """The GDPR token, with the project token that names the project: a status read of no job changes nothing."""
        s = self.settings
        what = "GDPR retrievals and deletions"
        if s.project_token is None:
            self.add(Finding(
                GDPR_TOKEN, what, Status.FAILED, "The GDPR API names the project by its project token, which is not set.",
                "set MIXPANEL_PROJECT_TOKEN as well (Settings > Project Settings > Access Keys).",
            ))
            return
        outcome = await self.checker.probe(GDPR_TOKEN, _gdpr_probe)
        error = outcome.error
        if error is None or isinstance(error, NotFoundError):
            self.add(_ok(GDPR_TOKEN, what, f"Accepted by {_host(s, Api.GDPR)}/app/data-retrievals/v3.0 (a status read: nothing was started).", Api.GDPR, outcome))
        elif outcome.region is not None:
            self.add(_wrong_region(GDPR_TOKEN, what, s, outcome, Api.GDPR))
        elif isinstance(error, (AuthenticationError, PermissionDeniedError)):
            refused_token = isinstance(error, AuthenticationError)
            self.add(Finding(
                GDPR_TOKEN, what, Status.FAILED,
                f"Mixpanel refused the {'GDPR token' if refused_token else 'project token for this GDPR token'} "
                f"({_status(error)}).{_said(error)}",
                "generate a new GDPR OAuth token as Mixpanel's end-user data management docs describe, and set it in "
                "MIXPANEL_GDPR_TOKEN." if refused_token else
                "check that MIXPANEL_PROJECT_TOKEN is the token of a project the GDPR token was made for.",
                api=Api.GDPR, requests=outcome.requests,
            ))
        else:
            self.add(_unreachable_or_transient(GDPR_TOKEN, what, outcome, Api.GDPR))

    def _service_account_refused(self, who: str, what: str, outcome: Outcome, api: Api) -> None:
        s = self.settings
        error = outcome.error
        if outcome.region is not None:
            self.add(_wrong_region(who, what, s, outcome, api))
        elif isinstance(error, AuthenticationError):
            self.add(Finding(
                who, what, Status.FAILED,
                f"Mixpanel rejected the username or secret ({_status(error)} at {_host(s, api)}).{_said(error)} "
                + self._regions_tried(),
                "check MIXPANEL_SERVICE_ACCOUNT_USERNAME and MIXPANEL_SERVICE_ACCOUNT_SECRET (Organization Settings > "
                "Service Accounts). The secret is shown only once, when the account is created: if it is lost, create "
                "a new secret there.",
                api=api, requests=outcome.requests,
            ))
        elif isinstance(error, PermissionDeniedError):
            self.add(Finding(
                who, what, Status.FAILED,
                f"The account is valid but has no access to project {s.project_id} ({_status(error)}).{_said(error)}",
                f"in Organization Settings > Service Accounts, add {s.service_account_username} to project "
                f"{s.project_id} (role Analyst or higher; Admin to import and edit the Lexicon), and check that "
                "MIXPANEL_PROJECT_ID is the number in your project's URL (mixpanel.com/project/<id>/...).",
                api=api, requests=outcome.requests,
            ))
        elif isinstance(error, BadRequestError):
            self.add(Finding(
                who, what, Status.FAILED,
                f"Mixpanel refused the request ({_status(error)}).{_said(error)}",
                "check MIXPANEL_PROJECT_ID (the number in your project's URL) and MIXPANEL_WORKSPACE_ID (leave it "
                "unset unless the project uses data views).",
                api=api, requests=outcome.requests,
            ))
        else:
            self.add(_unreachable_or_transient(who, what, outcome, api))

    async def _export(self, who: str) -> None:
        what = "export (raw events)"
        outcome = await self.checker.attempt(self.checker.only(SERVICE_ACCOUNT), _export_probe)
        if outcome.error is None:
            self.add(_ok(who, what, f"Accepted by {self.settings.export_url}/export (1 export, at most 1 event read).", Api.EXPORT, outcome))
        elif isinstance(outcome.error, PermissionDeniedError):
            self.add(Finding(
                who, what, Status.FAILED,
                f"The account's role may run reports but not export ({_status(outcome.error)}).{_said(outcome.error)}",
                f"give {self.settings.service_account_username} a role that may export on project "
                f"{self.settings.project_id} (Analyst or higher; Admin for classified data), or leave export out "
                "(--toolsets without export).",
                api=Api.EXPORT, requests=outcome.requests,
            ))
        elif isinstance(outcome.error, AuthenticationError):
            self.add(Finding(
                who, what, Status.FAILED,
                f"Reports work but the export host refused the account ({_status(outcome.error)} at "
                f"{self.settings.export_url}).{_said(outcome.error)}",
                "check MIXPANEL_EXPORT_URL (unset it to use the region's export host) and MIXPANEL_REGION.",
                api=Api.EXPORT, requests=outcome.requests,
            ))
        else:
            self.add(_unreachable_or_transient(who, what, outcome, Api.EXPORT))

    async def _lexicon_read(self, who: str) -> None:
        what = "Lexicon read (data dictionary)"
        outcome = await self.checker.attempt(self.checker.only(SERVICE_ACCOUNT), _lexicon_probe)
        if outcome.error is None:
            self.add(_ok(who, what, "Allowed (1 Lexicon request, for a schema that does not exist).", Api.LEXICON, outcome))
        elif isinstance(outcome.error, PermissionDeniedError):
            self.add(Finding(
                who, what, Status.FAILED,
                f"The account may not read the project's Lexicon ({_status(outcome.error)}).{_said(outcome.error)}",
                f"give {self.settings.service_account_username} the Analyst role or higher on project "
                f"{self.settings.project_id} (Admin to edit schemas), or leave lexicon out (--toolsets without lexicon).",
                api=Api.LEXICON, requests=outcome.requests,
            ))
        else:
            self.add(_unreachable_or_transient(who, what, outcome, Api.LEXICON))

    async def _admin(self, who: str) -> None:
        what = "imports (/import, $merge)"
        outcome = await self.checker.attempt(self.checker.only(SERVICE_ACCOUNT), _import_probe)
        edits = "Lexicon edits (upsert, delete)"
        if outcome.error is None:
            self.add(_ok(who, what, "Allowed: the role is Admin or Owner (an empty batch: nothing was stored).", Api.IMPORT, outcome))
            self.add(Finding(
                who, edits, Status.NOT_CHECKED,
                "Not tried, as that would change the Lexicon; they need the same Admin or Owner role that /import just "
                "accepted, so they should work.",
            ))
            return
        if isinstance(outcome.error, PermissionDeniedError):
            fix = (
                f"give {self.settings.service_account_username} the Admin role on project {self.settings.project_id} "
                "(Organization Settings > Service Accounts), or, if this server only reads, run it with --read-only."
            )
            self.add(Finding(
                who, what, Status.FAILED,
                f"The role is below Admin ({_status(outcome.error)}).{_said(outcome.error)} While a service account is "
                "configured, the server sends /import with it (not with the token), so imports and merges will fail.",
                fix, api=Api.IMPORT, requests=outcome.requests,
            ))
            self.add(Finding(
                who, edits, Status.FAILED,
                "Not tried (it would change the Lexicon), but they need the Admin or Owner role that /import just refused.",
                fix,
            ))
            return
        self.add(_unreachable_or_transient(who, what, outcome, Api.IMPORT))
        self.add(Finding(who, edits, Status.NOT_CHECKED, "Not verified: it would need a write, and the role could not be read from /import."))

    async def _service_account_quick(self, who: str) -> None:
        """Free: /import with the service account. A refusal cannot tell a wrong secret, no access to the
        project and a role below Admin apart: the full check can."""
        what = f"project {self.settings.project_id}"
        outcome = await self.checker.probe(SERVICE_ACCOUNT, _import_probe)
        if outcome.error is None:
            self.add(_ok(who, what, "Accepted by /import (an empty batch: nothing was stored); the role is Admin or Owner.", Api.IMPORT, outcome))
        elif outcome.region is not None:
            self.add(_wrong_region(who, what, self.settings, outcome, Api.IMPORT))
        elif isinstance(outcome.error, (AuthenticationError, PermissionDeniedError)):
            self.add(Finding(
                who, what, Status.FAILED,
                f"Refused by /import ({_status(outcome.error)}).{_said(outcome.error)} The username or secret is wrong, "
                f"the account has no access to project {self.settings.project_id}, or its role is below Admin "
                "(then reports work, but imports, merges and Lexicon edits will fail).",
                "run `mixpanel-mcp check` to tell which, and for the exact fix.",
                api=Api.IMPORT, requests=outcome.requests,
            ))
        else:
            self.add(_unreachable_or_transient(who, what, outcome, Api.IMPORT))

    async def api_secret(self) -> None:
        s = self.settings
        unused = " It is not used while a service account is configured." if s.has_service_account else ""
        api, probe = (Api.IMPORT, _import_probe) if self.quick else (Api.QUERY, _query_probe)
        what = "reports and export (legacy project secret)"
        outcome = await self.checker.probe(API_SECRET, probe)
        if outcome.error is None:
            cost = "an empty batch: nothing was stored" if self.quick else "1 query"
            self.add(_ok(API_SECRET, what, f"Accepted by {_host(s, api)} ({cost}).{unused}", api, outcome))
        elif outcome.region is not None:
            self.add(_wrong_region(API_SECRET, what, s, outcome, api))
        elif isinstance(outcome.error, (AuthenticationError, PermissionDeniedError)):
            self.add(Finding(
                API_SECRET, what, Status.FAILED,
                f"Mixpanel rejected the API secret ({_status(outcome.error)} at {_host(s, api)}).{_said(outcome.error)} "
                + self._regions_tried() + unused,
                SECRET_FIX, api=api, requests=outcome.requests,
            ))
        else:
            self.add(_unreachable_or_transient(API_SECRET, what, outcome, api))


async def run_check(
    settings: Settings,
    transport: httpx2.AsyncBaseTransport | None = None,
    *,
    hosts: Hosts = REGION_URLS,
    quick: bool = False,
    state: State | None = None,
) -> list[Finding]:
    """Check every configured credential; `quick` sends only requests that spend no rate budget.

    `hosts` is where each region's APIs live (tests point it at local doubles).
    """
    report = Report(Checker(settings, transport, hosts, state), quick)
    if settings.project_token is not None:
        await report.token()
    if settings.has_service_account:
        await report.service_account()
    if settings.api_secret is not None:
        await report.api_secret()
    if settings.gdpr_token is not None and not quick:
        await report.gdpr()
    return report.findings


# -- for a person, and for the server's log ---------------------------------------------------------------


_BUDGETS = (
    (Api.QUERY, "Query API request(s) of 60 an hour"),
    (Api.EXPORT, "export(s) of 60 an hour"),
    (Api.LEXICON, "Lexicon request(s) of 5 a minute"),
)


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.failed for f in findings) else 0


def render(settings: Settings, findings: Sequence[Finding]) -> str:
    project = f"project {settings.project_id}" if settings.project_id is not None else "project of the configured token"
    lines = [f"Mixpanel credentials check: {project}, region {settings.region.value}", ""]
    width = max(len(f"[{s.value}]") for s in Status)
    for f in findings:
        lines.append(f"{f'[{f.status.value}]':<{width}} {f.credential}: {f.what}")
        lines.append(f"{'':<{width}}   {f.why}")
        if f.fix:
            lines.append(f"{'':<{width}}   Fix: {f.fix}")
    failed = sum(f.failed for f in findings)
    lines.append("")
    spent = [(sum(f.requests for f in findings if f.api is api), what) for api, what in _BUDGETS]
    cost = ", ".join(f"{n} {what}" for n, what in spent if n)
    lines.append(f"Rate budget spent by this check: {cost or 'nothing'}.")
    if failed:
        lines.append(f"{failed} problem(s) found: fix them and run `mixpanel-mcp check` again.")
    else:
        lines.append("Everything checked works.")
    return "\n".join(lines)


def log_findings(findings: Sequence[Finding], log: logging.Logger = logger) -> None:
    """What failed, as warnings (nothing is logged when everything works)."""
    for finding in findings:
        if finding.failed:
            log.warning("Mixpanel credentials: %s", finding.text())


async def startup_warnings(
    settings: Settings, transport: httpx2.AsyncBaseTransport | None = None, *, log: logging.Logger = logger, timeout: float = 15.0
) -> list[Finding]:
    """The quick check, logged: for the server's start-up. Never raises, never waits more than `timeout` seconds."""
    findings: list[Finding] = []
    try:
        with anyio.move_on_after(timeout):
            findings = await run_check(settings, transport, quick=True)
    except Exception:  # a start-up aid must not stop the server
        log.debug("The start-up credentials check failed", exc_info=True)
        return []
    log_findings(findings, log)
    return findings


SHARED = "the rate budgets, the result cache, spent confirmation codes and agents' calls in flight"


def redis_finding(env: Mapping[str, str], url: str | None = None) -> Finding | None:
    """Whether the Redis the replicas share answers (None when none is configured)."""
    what = "state shared by every replica (MIXPANEL_MCP_REDIS_URL)"
    try:
        redis = load_redis(env, url)
    except ConfigError as exc:
        return Finding("REDIS", what, Status.FAILED, str(exc), "correct MIXPANEL_MCP_REDIS_URL (or --redis-url).")
    if redis is None:
        return None
    try:
        from mixpanel_mcp.client.redis_state import check_redis

        version = check_redis(redis.url.get_secret_value())
    except ImportError:
        return Finding("REDIS", what, Status.FAILED, "the Redis client is not installed.", "pip install 'mixpanel-mcp[redis]'")
    except ConnectionError as exc:
        return Finding(
            "REDIS", what, Status.FAILED, f"{redis.shown}: {exc}.",
            "start Redis, or correct MIXPANEL_MCP_REDIS_URL; the server will not start without it.",
        )
    return Finding("REDIS", what, Status.OK, f"{redis.shown} answers (Redis {version}); shared through it: {SHARED}.")


HOSTED_VARS = ("MIXPANEL_MCP_POLICY", "MIXPANEL_MCP_SECRET_KEY")


def hosted_finding(env: Mapping[str, str]) -> Finding | None:
    """For a worker deployment (`uvicorn --factory mixpanel_mcp.asgi:create_app`): whether a worker would start.

    With `--workers 2` or more, uvicorn stops when a worker cannot start but exits 0 itself, so a process manager
    sees success; run `mixpanel-mcp check && uvicorn ...` and a bad policy or secret fails the deployment."""
    if not any(env.get(name, "").strip() for name in HOSTED_VARS):
        return None
    from mixpanel_mcp.asgi import StartupError, build_app

    what = "the hosted endpoint's worker settings (MIXPANEL_MCP_*)"
    try:
        build_app(env)  # exactly what each worker does at start
    except StartupError as exc:
        return Finding(
            "HOSTED", what, Status.FAILED, f"a worker would not start: {exc}",
            "correct the setting named above; uvicorn stops without serving until it is fixed.",
        )
    return Finding("HOSTED", what, Status.OK, "a worker starts with them: policy, secret, allowed_hosts and audit log are usable.")


def check_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mixpanel-mcp check",
        description="Try every configured Mixpanel credential with the cheapest request that proves it, and say what "
        "works, what does not, and how to fix it. It spends 1 Query API request per service account or API secret, "
        "1 export and 1 Lexicon request (and one more query in each other region when a credential is refused in "
        "its own). Exit status: 0 all good, 1 any problem (a configuration error too). With --sandbox it checks the "
        "local demo project instead, which needs no account. With MIXPANEL_MCP_POLICY or MIXPANEL_MCP_SECRET_KEY "
        "set, it also builds a hosted worker's app as uvicorn would, and fails when a worker would not start.",
    )
    p.add_argument("--region", choices=[r.value for r in Region], help="overrides MIXPANEL_REGION")
    p.add_argument("--project-id", help="overrides MIXPANEL_PROJECT_ID")
    p.add_argument("--redis-url", metavar="URL", help="overrides MIXPANEL_MCP_REDIS_URL: the Redis to check")
    p.add_argument("--sandbox", action="store_true", help="check the local demo project (what mixpanel-mcp --sandbox serves)")
    p.add_argument("--sandbox-dir", metavar="DIR", help="the sandbox's folder (default: the per-user one)")
    return p


def _redis_secrets(url: str | None) -> list[str]:
    try:
        redis = load_redis(os.environ, url)
    except ConfigError:
        return []  # reported by redis_finding, without the URL
    return redis.secrets() if redis is not None else []


def main_check(argv: Sequence[str], *, hosts: Hosts = REGION_URLS) -> int:
    args = check_parser().parse_args(list(argv))
    if args.sandbox:
        return _check_sandbox(args.sandbox_dir, hosts)
    try:
        settings = load_settings(os.environ, {"MIXPANEL_REGION": args.region, "MIXPANEL_PROJECT_ID": args.project_id})
    except ConfigError as exc:
        print(f"mixpanel-mcp check: configuration error: {exc}", file=sys.stderr)
        return 1
    shared = redis_finding(os.environ, args.redis_url)
    scrubber.add([*settings.secrets(), *_redis_secrets(args.redis_url)])

    async def check() -> list[Finding]:
        if shared is None or shared.failed:
            return await run_check(settings, hosts=hosts)
        from mixpanel_mcp.client.redis_state import RedisState

        redis = load_redis(os.environ, args.redis_url)
        assert redis is not None
        state = RedisState(redis.url.get_secret_value(), lease=redis.lease)
        try:
            return await run_check(settings, hosts=hosts, state=state)
        finally:
            await state.aclose()

    findings = anyio.run(check)
    findings.extend(f for f in (shared, hosted_finding(os.environ)) if f is not None)
    print(scrubber.text(render(settings, findings)))
    return exit_code(findings)


def _check_sandbox(directory: str | None, hosts: Hosts) -> int:
    """The same checks against the local demo project: whether the sandbox opens and answers every API."""
    import sqlite3

    from mixpanel_mcp.sandbox import open_sandbox

    try:
        sandbox = open_sandbox(directory)
    except (OSError, sqlite3.Error) as exc:
        print(f"mixpanel-mcp check: cannot open the sandbox: {exc}", file=sys.stderr)
        return 1
    try:
        settings = sandbox.settings()
        findings = anyio.run(lambda: run_check(settings, sandbox.transport(), hosts=hosts))
    finally:
        sandbox.close()
    print(f"Sandbox in {sandbox.directory}: {sandbox.describe()}.")
    print(render(settings, findings))
    return exit_code(findings)


__all__ = [
    "Finding",
    "Status",
    "exit_code",
    "log_findings",
    "main_check",
    "render",
    "run_check",
    "startup_warnings",
]
