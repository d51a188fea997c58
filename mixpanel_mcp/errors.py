"""The one place where failures become text for the agent: what went wrong, and what to do about it.

Only our own templates and Mixpanel's short `error` field reach the agent; never a raw body, a header,
a traceback or a credential.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ValidationError

from mixpanel_mcp.client.errors import (
    Api,
    AuthenticationError,
    BadRequestError,
    BudgetExhaustedError,
    Credential,
    CredentialMissingError,
    MixpanelError,
    NotFoundError,
    OutputFileError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    UpstreamError,
)

_CREDENTIAL_VARS = {
    Credential.PROJECT_TOKEN: "the project token (MIXPANEL_PROJECT_TOKEN)",
    Credential.SERVICE_ACCOUNT: (
        "the service account (MIXPANEL_SERVICE_ACCOUNT_USERNAME / MIXPANEL_SERVICE_ACCOUNT_SECRET, "
        "with MIXPANEL_PROJECT_ID)"
    ),
    Credential.API_SECRET: "the legacy project secret (MIXPANEL_API_SECRET)",
}

_LIMITS = {
    Api.INGESTION: "the ingestion limit (about 2 GB of JSON a minute per project)",
    Api.IMPORT: "the ingestion limit (about 2 GB of JSON a minute per project)",
    Api.QUERY: "the Query API limit (60 queries an hour and 5 at a time per project)",
    Api.EXPORT: "the Export API limit (60 an hour, 3 a second, 100 at a time per project)",
    Api.LEXICON: "the Lexicon limit (5 requests a minute per organization)",
}

_FAMILY = {
    Api.INGESTION: "ingestion",
    Api.IMPORT: "import",
    Api.QUERY: "Query API",
    Api.EXPORT: "Export API",
    Api.LEXICON: "Lexicon API",
}

_ROLES = {
    Api.IMPORT: "an Admin or Owner role on the project (needed for /import)",
    Api.QUERY: "a role on the project that may run reports (Analyst or higher)",
    Api.EXPORT: "a role on the project that may export data (Analyst or higher; Admin for classified data)",
    Api.LEXICON: "an Admin or Owner role on the project (needed to change Lexicon schemas; reading needs Analyst)",
    Api.INGESTION: "access to the project",
}


def describe_error(exc: MixpanelError) -> str:
    """A message that says what went wrong and what to do."""
    if isinstance(exc, CredentialMissingError):
        return f"This operation needs {exc.needed}, which is not configured: set it in the server's environment."
    if isinstance(exc, TransportError):
        if exc.timed_out:
            what = "did not answer in time"
        elif exc.maybe_applied:
            what = "gave no answer to a request it received"
        else:
            what = "could not be reached"
        return (
            f"Mixpanel ({exc.api} API, {exc.endpoint}) {what} ({exc.reason}) after {exc.attempts} attempt(s). "
            "Try again in a minute; if it persists, check the network and MIXPANEL_REGION / the *_URL settings."
        )
    if isinstance(exc, BudgetExhaustedError):
        return (
            f"Not sent: the {_FAMILY[exc.api]} budget is spent for now ({exc.limit} for this "
            f"{'organization' if exc.api is Api.LEXICON else 'project'}, counted by "
            f"this server so that Mixpanel never has to refuse). It can run again in {_duration(exc.retry_after)} "
            f"(at {_clock(exc.until)} UTC). Until then, repeat a question already asked (answered from cache), "
            "or combine questions into fewer queries."
        )
    if isinstance(exc, OutputFileError):
        if exc.disabled:
            return (
                "output_file is only available when the server runs on your machine (stdio): this server cannot "
                "write files for you. Leave output_file out and read the answer in pages (limit, narrower dates "
                "or where)."
            )
        written = f" It stopped after {exc.written:,} item(s) and the partial file was removed." if exc.written else ""
        return f"Could not write the output file {exc.path}: {exc.reason}.{written} Choose another path and try again."
    assert isinstance(exc, UpstreamError)
    said = f' Mixpanel said: "{exc.detail}".' if exc.detail else ""
    credential = _CREDENTIAL_VARS.get(exc.credential, "the credential") if exc.credential else "the credential"
    if isinstance(exc, AuthenticationError):
        return (
            f"Mixpanel rejected {credential} (401 on {exc.endpoint}).{said} Check the values, and check "
            "MIXPANEL_REGION: a project with EU or India data residency must use 'eu' or 'in'."
        )
    if isinstance(exc, PermissionDeniedError):
        return (
            f"Mixpanel refused {exc.endpoint} (403) for {credential}.{said} The service account needs "
            f"{_ROLES[exc.api]}; add it to the project in Organization Settings > Service Accounts."
        )
    if isinstance(exc, RateLimitError):
        when = f"retry in {_duration(exc.retry_after)}" if exc.retry_after else "retry in a minute or two"
        return f"Mixpanel rate limit hit: {_LIMITS[exc.api]} (429 on {exc.endpoint}); {when}.{said}"
    if isinstance(exc, ServerError):
        return (
            f"Mixpanel had a server error ({exc.status} on {exc.endpoint}) after {exc.attempts} attempt(s).{said} "
            "It is usually temporary: try again in a minute."
        )
    if isinstance(exc, PayloadTooLargeError):
        return f"Mixpanel refused the request as too large (413 on {exc.endpoint}).{said} Send fewer records at a time."
    if isinstance(exc, NotFoundError):
        return f"Mixpanel found nothing at {exc.endpoint} (404).{said} Check the id or name you gave."
    if isinstance(exc, BadRequestError) and exc.status == 200:
        return f"Mixpanel accepted the request but stored nothing ({exc.endpoint}).{said} Fix the data and send again."
    return f"Mixpanel rejected the request ({exc.status} on {exc.endpoint}).{said} Fix the arguments; do not retry as is."


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "a moment"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def _clock(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S")


def describe_validation(tool: str, exc: ValidationError, operations: list[str], single: bool) -> str:
    """Turn pydantic's report into: which field, why, and an example of a valid value."""
    lines = []
    operation = None
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        if error["type"] == "union_tag_invalid" or error["type"] == "union_tag_not_found":
            lines.append(f"- operation: must be one of {', '.join(operations)}.")
            continue
        if not single and loc and loc[0] in operations:
            operation = loc.pop(0)
        field = ".".join(loc) or "(arguments)"
        message = str(error["msg"])
        if error["type"] == "extra_forbidden":
            message = "unknown argument; remove it (see the tool's schema for the allowed ones)"
        example = _example(error)
        lines.append(f"- {field}: {message}{example}")
    where = f"{tool} (operation '{operation}')" if operation else tool
    return f"Invalid arguments for {where}; nothing was sent to Mixpanel.\n" + "\n".join(lines)


def _example(error: Any) -> str:
    ctx = error.get("ctx") or {}
    example = ctx.get("example")
    return f". Example: {example}" if example else ""
