"""The client's exception tree. Raised in one place (`http.py`), turned into agent text in one place.

    MixpanelError
    ├── CredentialMissingError      the operation needs a credential that is not configured
    ├── UpstreamError               Mixpanel answered with a failure
    │   ├── BadRequestError         400 (never retried), or a 200 carrying {"status": 0}
    │   ├── AuthenticationError     401: the credential was rejected
    │   ├── PermissionDeniedError   403: the credential lacks a project role
    │   ├── NotFoundError           404
    │   ├── PayloadTooLargeError    413
    │   ├── RateLimitError          429 (after retries, or with a wait too long to sleep through)
    │   ├── ServerError             5xx after retries
    │   └── UnexpectedAnswerError   not an answer the API documents: a redirect, or a body that is not JSON
    ├── TransportError              no usable answer: connection failed or timed out (after retries)
    ├── BudgetExhaustedError        not sent: this project's rate budget (counted here) is spent for now
    ├── CallDeadlineError           stopped: the tool call reached its overall deadline
    ├── UnsendableRequestError      not sent: no valid HTTP request carries these arguments (a URL too long)
    ├── SharedStateUnavailableError not sent: the state the replicas share (Redis) cannot be reached
    └── OutputFileError             not sent, or stopped: the output file cannot be written here
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Api(StrEnum):
    """Mixpanel's API families: each has its own host, credential and limits."""

    INGESTION = "ingestion"  # /track, /engage, /groups: project token in the payload
    IMPORT = "import"  # /import: service account, secret or token as Basic user
    QUERY = "query"  # /api/query/*: service account + project_id, or secret
    EXPORT = "export"  # data.mixpanel.com/api/2.0/export
    LEXICON = "lexicon"  # /api/app/projects/{id}/schemas: service account only
    APP = "app"  # /api/app/...: annotations, feature flag management, experiments; service account only
    FLAGS = "flags"  # /flags on the ingestion host: service account + project_id, or secret
    LOOKUP = "lookup tables"  # /lookup-tables on the ingestion host: service account + project_id, or secret
    GDPR = "gdpr"  # /api/app/data-retrievals|data-deletions/v3.0: GDPR OAuth token (Bearer) + project token


class Credential(StrEnum):
    PROJECT_TOKEN = "project token"
    SERVICE_ACCOUNT = "service account"
    API_SECRET = "API secret"
    GDPR_TOKEN = "GDPR token"


class MixpanelError(Exception):
    """Base of every error the client raises."""


class CredentialMissingError(MixpanelError):
    def __init__(self, api: Api, needed: str) -> None:
        super().__init__(f"{api} needs {needed}")
        self.api = api
        self.needed = needed


class UpstreamError(MixpanelError):
    """Mixpanel answered, and the answer was a failure."""

    def __init__(
        self,
        *,
        api: Api,
        status: int,
        detail: str | None,
        credential: Credential | None,
        endpoint: str,
        retry_after: float | None = None,
        attempts: int = 1,
        maybe_applied: bool | None = None,
    ) -> None:
        super().__init__(f"{endpoint} answered {status}: {detail or 'no detail'}")
        self.api = api
        self.status = status
        self.detail = detail
        self.credential = credential
        self.endpoint = endpoint
        self.retry_after = retry_after
        self.attempts = attempts
        # Whether Mixpanel may have applied the request: a 5xx may come after the work was done, and so may
        # any answer to a retry whose earlier attempt went unanswered.
        self.maybe_applied = status >= 500 if maybe_applied is None else maybe_applied


class BadRequestError(UpstreamError):
    pass


class AuthenticationError(UpstreamError):
    pass


class PermissionDeniedError(UpstreamError):
    pass


class NotFoundError(UpstreamError):
    pass


class PayloadTooLargeError(UpstreamError):
    pass


class RateLimitError(UpstreamError):
    pass


class ServerError(UpstreamError):
    pass


class UnexpectedAnswerError(UpstreamError):
    """Something answered that is not the API as documented (a redirect, an HTML page): never read as a result."""


class TransportError(MixpanelError):
    """No answer that could be used: the connection failed, or Mixpanel did not answer in time."""

    def __init__(
        self,
        *,
        api: Api,
        endpoint: str,
        reason: str,
        timed_out: bool,
        attempts: int,
        maybe_applied: bool = True,
        budget: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.api = api
        self.endpoint = endpoint
        self.reason = reason
        self.timed_out = timed_out
        self.attempts = attempts
        self.maybe_applied = maybe_applied  # False only when no attempt ever reached Mixpanel
        self.budget = budget  # what is left of the family's rate budget after these attempts


class UnsendableRequestError(MixpanelError):
    """Not sent: the arguments make a request HTTP cannot carry (today: a URL component over its limit)."""

    def __init__(self, *, api: Api, endpoint: str, reason: str) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.api = api
        self.endpoint = endpoint
        self.reason = reason


class CallDeadlineError(MixpanelError):
    """The tool call used up its overall time (MIXPANEL_CALL_DEADLINE): stopped, whatever it was doing."""

    def __init__(self, *, seconds: float, requests: int, endpoint: str | None = None) -> None:
        super().__init__(f"call deadline of {seconds:g} s reached")
        self.seconds = seconds
        self.requests = requests
        self.endpoint = endpoint  # the request under way when the deadline came, if any


class BudgetExhaustedError(MixpanelError):
    """The client-side limiter refused a request before it was sent: waiting would take too long.

    `retry_after` is how many seconds until the limit frees a slot; `until` the same moment as epoch seconds.
    """

    def __init__(self, *, api: Api, endpoint: str, limit: str, retry_after: float, until: float) -> None:
        super().__init__(f"{endpoint}: {api} budget spent ({limit}); free again in {retry_after:.0f} s")
        self.api = api
        self.endpoint = endpoint
        self.limit = limit
        self.retry_after = retry_after
        self.until = until


class SharedStateUnavailableError(MixpanelError):
    """The state the replicas share (Redis) cannot be reached, so a call that needs it is not made: the rate
    limiter (never an unmetered request to Mixpanel) or the record of spent confirmation codes."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"the shared {what} is unavailable: {reason}")
        self.what = what  # "rate limiter", "confirmation record"
        self.reason = reason


class OutputFileError(MixpanelError):
    """An export's output file cannot be written: local files are off, or the file system said no."""

    def __init__(self, path: str, reason: str, *, disabled: bool = False, written: int = 0) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.disabled = disabled  # local files are off (an HTTP server): no path will do
        self.written = written  # events written before the failure


class UnreadableAnswerError(MixpanelError):
    """Mixpanel answered 200 with a shape this project cannot read: reported as such, never as zeros."""

    def __init__(self, endpoint: str, expected: str, got: str) -> None:
        super().__init__(f"{endpoint}: expected {expected}, got {got}")
        self.endpoint = endpoint
        self.expected = expected
        self.got = got


STATUS_ERRORS: dict[int, type[UpstreamError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    429: RateLimitError,
}


def error_for_status(status: int) -> type[UpstreamError]:
    if status >= 500:
        return ServerError
    if status < 400:
        return UnexpectedAnswerError
    return STATUS_ERRORS.get(status, BadRequestError)
