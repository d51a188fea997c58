"""A Mixpanel API client that knows nothing of MCP: hosts, auth, retries and typed errors."""

from mixpanel_mcp.client.errors import (
    Api,
    AuthenticationError,
    BadRequestError,
    CallDeadlineError,
    Credential,
    CredentialMissingError,
    MixpanelError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    UnexpectedAnswerError,
    UnsendableRequestError,
    UpstreamError,
)
from mixpanel_mcp.client.http import CallStats, MixpanelClient, call_stats, raise_for_body_status

__all__ = [
    "Api",
    "AuthenticationError",
    "BadRequestError",
    "CallDeadlineError",
    "CallStats",
    "Credential",
    "CredentialMissingError",
    "MixpanelClient",
    "MixpanelError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "UnexpectedAnswerError",
    "UnsendableRequestError",
    "UpstreamError",
    "call_stats",
    "raise_for_body_status",
]
