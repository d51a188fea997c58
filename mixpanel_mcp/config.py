"""Settings: read once from the environment (and CLI overrides), validated, then never re-read.

Every error names the variable to fix, so a person reading a client's log knows what to change.
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlsplit

from pydantic import SecretStr


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable and the fix."""


class Region(StrEnum):
    US = "us"
    EU = "eu"
    IN = "in"


# Per region: (ingestion, query + app API, raw export). EU and India projects must use their own
# hosts: data sent to the US host is not ingested, and queries there fail with a 401/400.
REGION_URLS: dict[Region, tuple[str, str, str]] = {
    Region.US: ("https://api.mixpanel.com", "https://mixpanel.com/api", "https://data.mixpanel.com/api/2.0"),
    Region.EU: ("https://api-eu.mixpanel.com", "https://eu.mixpanel.com/api", "https://data-eu.mixpanel.com/api/2.0"),
    Region.IN: ("https://api-in.mixpanel.com", "https://in.mixpanel.com/api", "https://data-in.mixpanel.com/api/2.0"),
}


@dataclass(frozen=True)
class RetrySettings:
    """Mixpanel's advice: start at 2 s, double up to 60 s, add 1-5 s of jitter."""

    max_retries: int = 4
    base_delay: float = 2.0
    max_delay: float = 60.0


@dataclass(frozen=True)
class BudgetSettings:
    """Mixpanel's per-project rate limits, mirrored client-side so the server never earns a 429 itself.

    Some projects have other caps (Mixpanel raises them on request): each number is configurable.
    """

    query_per_hour: int = 60  # every /api/query request, JQL included; a rolling hour
    query_concurrent: int = 5
    export_per_hour: int = 60
    export_per_second: int = 3
    export_concurrent: int = 100
    lexicon_per_minute: int = 5  # per organization; the service account stands for it
    # A limit that frees up within this many seconds is waited for; a longer wait fails at once and says when.
    max_wait: float = 5.0


@dataclass(frozen=True)
class CacheSettings:
    """Identical read queries within a TTL are answered from memory (0 turns the cache off)."""

    ttl: float = 3600.0  # a closed range entirely in the past: its numbers no longer change
    ttl_today: float = 60.0  # a range that includes today (UTC), or no date range at all


@dataclass(frozen=True)
class Settings:
    project_token: SecretStr | None = None
    project_id: int | None = None
    service_account_username: str | None = None
    service_account_secret: SecretStr | None = None
    api_secret: SecretStr | None = None
    # Mixpanel's OAuth token for the GDPR API (Bearer), separate from every other credential.
    gdpr_token: SecretStr | None = None
    region: Region = Region.US
    workspace_id: int | None = None
    ingestion_url: str = REGION_URLS[Region.US][0]
    query_url: str = REGION_URLS[Region.US][1]
    export_url: str = REGION_URLS[Region.US][2]
    retry: RetrySettings = field(default_factory=RetrySettings)
    timeout: float = 130.0
    # The most one tool call may take, all its requests, retries and waits included (MIXPANEL_CALL_DEADLINE).
    call_deadline: float = 600.0
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    # Tools may read and write files on this machine (import from a file, export to a file): true for a
    # local stdio server, false for an HTTP endpoint, where the machine is not the agent's.
    local_files: bool = True
    # The offline sandbox (`mixpanel-mcp --sandbox`): a local demo project, not a Mixpanel account.
    sandbox: bool = False

    @property
    def has_service_account(self) -> bool:
        return self.service_account_username is not None

    @property
    def can_track(self) -> bool:
        """/track, /engage and /groups carry the project token in the payload."""
        return self.project_token is not None

    @property
    def can_import(self) -> bool:
        """/import takes a service account, the legacy secret, or the token as Basic user."""
        return self.has_service_account or self.api_secret is not None or self.project_token is not None

    @property
    def can_query(self) -> bool:
        """Query and Export take a service account (with project id) or the legacy secret."""
        return self.has_service_account or self.api_secret is not None

    @property
    def can_lexicon(self) -> bool:
        """The Lexicon Schemas API takes a service account only."""
        return self.has_service_account

    @property
    def can_app(self) -> bool:
        """The app API (annotations, lookup tables listing) takes a service account with the project id."""
        return self.has_service_account

    @property
    def can_workspace(self) -> bool:
        """Feature flags and experiments live in a workspace (data view) of the project."""
        return self.has_service_account and self.workspace_id is not None

    @property
    def can_gdpr(self) -> bool:
        """The GDPR API takes Mixpanel's GDPR OAuth token, and the project token in the query."""
        return self.gdpr_token is not None and self.project_token is not None

    def secrets(self) -> list[str]:
        """Every secret value, so logs and messages can be scrubbed of them."""
        values = [self.project_token, self.service_account_secret, self.api_secret, self.gdpr_token]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


MAX_RETRIES_LIMIT = 10  # with the 60 s cap, ten retries already hold a call for several minutes

# Which project, and how to reach it: a policy's [projects.*] table names these (see policy.py).
PROJECT_VARS = (
    "MIXPANEL_PROJECT_TOKEN",
    "MIXPANEL_PROJECT_ID",
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET",
    "MIXPANEL_API_SECRET",
    "MIXPANEL_GDPR_TOKEN",
    "MIXPANEL_REGION",
    "MIXPANEL_WORKSPACE_ID",
    "MIXPANEL_INGESTION_URL",
    "MIXPANEL_QUERY_URL",
    "MIXPANEL_EXPORT_URL",
)

ENV_VARS = (
    *PROJECT_VARS,
    "MIXPANEL_MAX_RETRIES",
    "MIXPANEL_RETRY_BASE_DELAY",
    "MIXPANEL_TIMEOUT",
    "MIXPANEL_CALL_DEADLINE",  # seconds one tool call may take in all (600)
    "MIXPANEL_STARTUP_CHECK",
    # The client-side limiter (BudgetSettings): Mixpanel's per-project caps, for projects that have others.
    "MIXPANEL_QUERY_LIMIT_PER_HOUR",  # Query API requests per rolling hour (60)
    "MIXPANEL_QUERY_CONCURRENCY",  # Query API requests at a time (5)
    "MIXPANEL_EXPORT_LIMIT_PER_HOUR",  # raw exports per hour (60)
    "MIXPANEL_EXPORT_LIMIT_PER_SECOND",  # raw exports per second (3)
    "MIXPANEL_EXPORT_CONCURRENCY",  # raw exports at a time (100)
    "MIXPANEL_LEXICON_LIMIT_PER_MINUTE",  # Lexicon requests per minute (5)
    "MIXPANEL_RATE_LIMIT_MAX_WAIT",  # seconds a call may wait for a limit to free up before failing (5)
    # The result cache (CacheSettings), in seconds; 0 turns it off.
    "MIXPANEL_CACHE_TTL",  # closed date ranges in the past (3600)
    "MIXPANEL_CACHE_TTL_TODAY",  # ranges that include today, or no range (60)
)


def load_settings(env: Mapping[str, str], overrides: Mapping[str, str | None] | None = None) -> Settings:
    """Build settings from environment variables; `overrides` (from CLI flags) win over the environment."""
    values = {name: (env.get(name) or "").strip() for name in ENV_VARS}
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value.strip()

    region_text = values["MIXPANEL_REGION"].lower() or "us"
    try:
        region = Region(region_text)
    except ValueError:
        raise ConfigError(
            f"MIXPANEL_REGION={region_text!r} is not a Mixpanel region: use 'us', 'eu' or 'in' "
            "(the data residency shown in your project settings)."
        ) from None
    ingestion, query, export = REGION_URLS[region]
    if values["MIXPANEL_STARTUP_CHECK"] not in ("", "0", "1"):
        raise ConfigError(
            f"MIXPANEL_STARTUP_CHECK={values['MIXPANEL_STARTUP_CHECK'][:20]!r} is not 0 or 1: use 1 to check the "
            "credentials at start-up, 0 to skip it."
        )

    username = values["MIXPANEL_SERVICE_ACCOUNT_USERNAME"] or None
    sa_secret = _secret(values["MIXPANEL_SERVICE_ACCOUNT_SECRET"])
    project_id = _integer(values, "MIXPANEL_PROJECT_ID", "the number in your project's URL, e.g. 1234567", minimum=1)
    if username and sa_secret is None:
        raise ConfigError(
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME is set but MIXPANEL_SERVICE_ACCOUNT_SECRET is not: set the "
            "secret shown once when the service account was created (Organization Settings > Service Accounts)."
        )
    if sa_secret is not None and not username:
        raise ConfigError(
            "MIXPANEL_SERVICE_ACCOUNT_SECRET is set but MIXPANEL_SERVICE_ACCOUNT_USERNAME is not: set the "
            "service account's username (it looks like name.1a2b3c.mp-service-account)."
        )
    if username and project_id is None:
        raise ConfigError(
            "MIXPANEL_PROJECT_ID is required with a service account: set it to the number in your "
            "project's URL (mixpanel.com/project/<id>/...)."
        )

    settings = Settings(
        project_token=_secret(values["MIXPANEL_PROJECT_TOKEN"]),
        project_id=project_id,
        service_account_username=username,
        service_account_secret=sa_secret,
        api_secret=_secret(values["MIXPANEL_API_SECRET"]),
        gdpr_token=_secret(values["MIXPANEL_GDPR_TOKEN"]),
        region=region,
        workspace_id=_integer(values, "MIXPANEL_WORKSPACE_ID", "the workspace (data view) id, e.g. 3456", minimum=1),
        ingestion_url=_base_url(values, "MIXPANEL_INGESTION_URL", ingestion),
        query_url=_base_url(values, "MIXPANEL_QUERY_URL", query),
        export_url=_base_url(values, "MIXPANEL_EXPORT_URL", export),
        retry=RetrySettings(
            max_retries=_integer(values, "MIXPANEL_MAX_RETRIES", "0 to 10, e.g. 4", maximum=MAX_RETRIES_LIMIT)
            if values["MIXPANEL_MAX_RETRIES"]
            else RetrySettings.max_retries,
            base_delay=_number(values, "MIXPANEL_RETRY_BASE_DELAY", RetrySettings.base_delay),
        ),
        timeout=_number(values, "MIXPANEL_TIMEOUT", Settings.timeout, positive=True),
        call_deadline=_number(values, "MIXPANEL_CALL_DEADLINE", Settings.call_deadline, positive=True),
        budget=_budget(values),
        cache=CacheSettings(
            ttl=_number(values, "MIXPANEL_CACHE_TTL", CacheSettings.ttl),
            ttl_today=_number(values, "MIXPANEL_CACHE_TTL_TODAY", CacheSettings.ttl_today),
        ),
    )
    if not (settings.can_import or settings.can_query):
        raise ConfigError(
            "No Mixpanel credential is configured. Set MIXPANEL_PROJECT_TOKEN to send data in, and "
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME + MIXPANEL_SERVICE_ACCOUNT_SECRET + MIXPANEL_PROJECT_ID to "
            "run reports, export and edit Lexicon (MIXPANEL_API_SECRET, the legacy project secret, also works "
            "for reports and export). To try the server without an account: mixpanel-mcp --sandbox."
        )
    return settings


def _budget(values: Mapping[str, str]) -> BudgetSettings:
    def count(name: str, default: int) -> int:
        number = _integer(values, name, f"e.g. {default}", minimum=1)
        return default if number is None else number

    d = BudgetSettings
    return BudgetSettings(
        query_per_hour=count("MIXPANEL_QUERY_LIMIT_PER_HOUR", d.query_per_hour),
        query_concurrent=count("MIXPANEL_QUERY_CONCURRENCY", d.query_concurrent),
        export_per_hour=count("MIXPANEL_EXPORT_LIMIT_PER_HOUR", d.export_per_hour),
        export_per_second=count("MIXPANEL_EXPORT_LIMIT_PER_SECOND", d.export_per_second),
        export_concurrent=count("MIXPANEL_EXPORT_CONCURRENCY", d.export_concurrent),
        lexicon_per_minute=count("MIXPANEL_LEXICON_LIMIT_PER_MINUTE", d.lexicon_per_minute),
        max_wait=_number(values, "MIXPANEL_RATE_LIMIT_MAX_WAIT", d.max_wait),
    )


def _secret(text: str) -> SecretStr | None:
    return SecretStr(text) if text else None


def _integer(
    values: Mapping[str, str], name: str, example: str, *, minimum: int = 0, maximum: int | None = None
) -> int | None:
    text = values[name]
    if not text:
        return None
    # isdigit() alone accepts digits int() refuses (e.g. superscripts): plain ASCII digits only.
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"{name} must be a whole number ({example}), not {text!r}.")
    number = int(text)
    if number < minimum or (maximum is not None and number > maximum):
        limits = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise ConfigError(f"{name} must be a whole number {limits} ({example}), not {text!r}.")
    return number


def _number(values: Mapping[str, str], name: str, default: float, *, positive: bool = False) -> float:
    text = values[name]
    if not text:
        return default
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    # nan and inf parse as floats but would make every wait or time limit meaningless.
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        qualifier = "a positive" if positive else "a"
        raise ConfigError(f"{name} must be {qualifier} number of seconds, e.g. {default}, not {text!r}.")
    return number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _base_url(values: Mapping[str, str], name: str, default: str) -> str:
    url = values[name] or default
    if "@" in url.partition("://")[2].partition("/")[0]:
        # Not echoed: the user-info is a password. Sent to Mixpanel it would also displace the credentials.
        raise ConfigError(
            f"{name} carries a user name or password (user:password@ before the host): remove it, and give "
            f"credentials in their own variables only. Use a form like {default}."
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        raise ConfigError(f"{name}={url!r} is not a URL: use a form like {default}.") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{name}={url!r} is not a URL: use a form like {default}.")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}={url!r} must not carry a query or fragment: use a form like {default}.")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{name} uses plain http:// for {parts.hostname}: Mixpanel requires https (http is only allowed "
            "for a local test server on 127.0.0.1, localhost or [::1])."
        )
    return url.rstrip("/")


def default_sandbox_dir(platform: str = sys.platform, env: Mapping[str, str] = os.environ, home: Path | None = None) -> Path:
    """Where `--sandbox` keeps its data unless told otherwise: the per-user data folder (XDG_DATA_HOME, else
    ~/.local/share, on Linux; ~/Library/Application Support on macOS; %LOCALAPPDATA% on Windows), then
    mixpanel-mcp/sandbox."""
    home = home if home is not None else Path.home()
    if platform.startswith("win"):
        base = Path(env["LOCALAPPDATA"]) if env.get("LOCALAPPDATA") else home / "AppData" / "Local"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_DATA_HOME", "")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"
    return base / "mixpanel-mcp" / "sandbox"


REDIS_URL_VAR = "MIXPANEL_MCP_REDIS_URL"
REDIS_LEASE_VAR = "MIXPANEL_MCP_REDIS_LEASE"
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisSettings:
    """The Redis every replica shares its state through (rate budgets, cache, spent codes, agent caps)."""

    url: SecretStr  # may carry a password
    lease: float = 30.0  # seconds a dead replica's slots stay taken

    @property
    def shown(self) -> str:
        """The URL without its password, for messages and logs."""
        parts = urlsplit(self.url.get_secret_value())
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        if parts.password is not None:
            netloc = f"{user}:***@{netloc}"
        elif user:
            netloc = f"{user}@{netloc}"
        query = "&".join(
            f"{name}=***" if name == "password" else f"{name}={value}" for name, value in parse_qsl(parts.query)
        )
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")

    def secrets(self) -> list[str]:
        """The password (and the URL that carries it), so logs and messages can be scrubbed of them."""
        parts = urlsplit(self.url.get_secret_value())
        passwords = [parts.password, *parse_qs(parts.query).get("password", [])]  # unix:///path?password=...
        found = [p for p in passwords if p]
        return [*found, self.url.get_secret_value()] if found else []


def load_redis(env: Mapping[str, str], url: str | None = None) -> RedisSettings | None:
    """MIXPANEL_MCP_REDIS_URL (or --redis-url, which wins), validated; None when neither is set."""
    text = (url if url is not None else env.get(REDIS_URL_VAR, "")).strip()
    if not text:
        return None
    example = "redis://redis.internal:6379/0, rediss://:PASSWORD@redis.example.com:6380/0 or unix:///run/redis.sock"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in REDIS_SCHEMES or not (parts.hostname or parts.path):
        raise ConfigError(f"{REDIS_URL_VAR} is not a Redis URL: use a form like {example}.")
    lease = _number({REDIS_LEASE_VAR: env.get(REDIS_LEASE_VAR, "").strip()}, REDIS_LEASE_VAR, RedisSettings.lease, positive=True)
    return RedisSettings(url=SecretStr(text), lease=lease)
