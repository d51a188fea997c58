"""Who may do what: a level per tool group for each agent, agents' keys (as hashes), their projects.

A policy file is TOML:

    [defaults]                      # for every agent and for local use; each may override them
    confirm_destructive = true      # merge, profile/group delete, Lexicon delete or truncate ask first
    max_calls_in_flight = 4

    [local]                         # stdio, and HTTP on loopback without keys: every group at full if absent
    access = { "*" = "full" }

    [server]                        # --transport http only
    allowed_hosts = ["mcp.example.com"]        # Host names clients use (DNS rebinding protection)
    allowed_origins = ["https://app.example.com"]

    [agents.reporting-bot]
    key_sha256 = "…"                # from `mixpanel-mcp new-agent-key reporting-bot`
    access = { segmentation = "read", funnels = "read", "*" = "off" }
    project = "marketing"           # optional: a [projects.*] entry; default is the server's environment

    [projects.marketing]            # each value NAMES the environment variable holding the setting
    MIXPANEL_PROJECT_ID = "MARKETING_PROJECT_ID"
    MIXPANEL_SERVICE_ACCOUNT_USERNAME = "MARKETING_SA_USERNAME"
    MIXPANEL_SERVICE_ACCOUNT_SECRET = "MARKETING_SA_SECRET"

Levels are `off` (not listed, refused), `read` (read operations only) and `full`. Anything not granted is
off. Flags (`--read-only`, `--toolsets`) and request headers can only narrow a grant, never widen it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from mixpanel_mcp.config import ENV_VARS, PROJECT_VARS, ConfigError, Settings, load_settings
from mixpanel_mcp.tools import ALL_GROUPS
from mixpanel_mcp.tools._base import Access

logger = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = tuple(group.name for group in ALL_GROUPS)
LOCAL_AGENT = "local"
KEY_PREFIX = "mxp_"
DEFAULT_MAX_IN_FLIGHT = 8
# Every setting beyond which project and how to reach it (retries, time limits, rate limits, cache) is about how
# to call Mixpanel: a policy project inherits it from the server's environment unless it names its own.
OPERATIONAL_VARS = tuple(name for name in ENV_VARS if name not in PROJECT_VARS)
_AGENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PolicyError(ConfigError):
    """The policy file (or a flag narrowing it) is invalid; the message says where and how to fix it."""


class Level(StrEnum):
    OFF = "off"
    READ = "read"
    FULL = "full"

    def permits(self, access: Access) -> bool:
        return self is Level.FULL or (self is Level.READ and access is Access.READ)


@dataclass(frozen=True)
class Grant:
    """What one caller may use: a level per tool group, its project, and how destructive calls are handled."""

    agent: str
    levels: Mapping[str, Level]
    project: str | None = None  # a [projects.*] name; None: the server's own environment
    confirm_destructive: bool = True
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    def level(self, group: str) -> Level:
        return self.levels.get(group, Level.OFF)

    def permits(self, group: str, access: Access) -> bool:
        return self.level(group).permits(access)

    def narrowed(self, toolsets: Collection[str] | None = None, read_only: bool = False) -> Grant:
        """The same grant with fewer groups and/or writes taken away; never more than it had."""
        levels = {}
        for group, level in self.levels.items():
            if toolsets is not None and group not in toolsets:
                level = Level.OFF
            if read_only and level is Level.FULL:
                level = Level.READ
            levels[group] = level
        return replace(self, levels=levels)

    @property
    def view_key(self) -> tuple[Any, ...]:
        """What decides the tool list this grant sees (with the project's credentials)."""
        return (self.project, tuple(sorted((g, lv.value) for g, lv in self.levels.items())), self.confirm_destructive)


def full_grant(agent: str = LOCAL_AGENT) -> Grant:
    return Grant(agent=agent, levels={group: Level.FULL for group in GROUPS})


@dataclass(frozen=True)
class Agent:
    grant: Grant
    key_sha256: str
    revoked: bool = False


@dataclass(frozen=True)
class Policy:
    local: Grant = field(default_factory=full_grant)
    agents: tuple[Agent, ...] = ()
    projects: Mapping[str, Settings] = field(default_factory=dict)
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()

    def authenticate(self, key: str | None) -> Grant | None:
        """The grant of the agent holding `key`, or None (no key, unknown key, revoked key)."""
        if not key:
            return None
        digest = hash_key(key)
        found = None
        for agent in self.agents:  # every entry is compared, so timing says nothing about which matched
            if hmac.compare_digest(agent.key_sha256, digest) and not agent.revoked:
                found = agent.grant
        return found

    def uses_default_project(self, hosted: bool) -> bool:
        """Whether some caller uses the server's own environment (so it must hold credentials)."""
        grants = [a.grant for a in self.agents] if hosted else [self.local]
        return any(g.project is None for g in grants)


def server_settings(
    env: Mapping[str, str],
    policy: Policy | None,
    hosted: bool,
    *,
    overrides: Mapping[str, str | None] | None = None,
    local_files: bool,
) -> Settings | None:
    """The server's own project (from the environment), or None when no caller uses it: every agent of a hosted
    endpoint has a [projects.*] entry of its own. Raises ConfigError when a caller needs it and it is not usable."""
    try:
        settings = load_settings(env, overrides)
    except ConfigError:
        if policy is None or policy.uses_default_project(hosted):
            raise
        return None
    # Over HTTP the agent is not on this machine: its tools must not read or write files here.
    return replace(settings, local_files=local_files)


# -- keys -----------------------------------------------------------------------------------------


def new_key() -> str:
    """A fresh agent key: 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.strip().encode()).hexdigest()


def agent_entry(name: str, key: str) -> str:
    """The policy-file lines for a new agent holding `key` (the key itself is not in them)."""
    check_agent_name(name)
    return (
        f"[agents.{name}]\n"
        f'key_sha256 = "{hash_key(key)}"\n'
        '# Grant what it needs, e.g. { segmentation = "read", funnels = "read" } or { "*" = "read", track = "full" }\n'
        "access = {}\n"
    )


def check_agent_name(name: str) -> str:
    if not _AGENT_NAME.match(name) or name == LOCAL_AGENT:
        raise PolicyError(
            f"{name!r} is not a usable agent name: use 1-64 letters, digits, '-' or '_' (and not 'local')."
        )
    return name


# -- narrowing (flags and headers) ----------------------------------------------------------------


def parse_toolsets(text: str, *, strict: bool) -> frozenset[str]:
    """`a,b,c` -> group names. Strict (a flag): an unknown name is an error; lenient (a header): ignored."""
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = sorted(names - set(GROUPS))
    if unknown and strict:
        raise PolicyError(f"unknown toolset(s) {', '.join(unknown)}: choose from {', '.join(GROUPS)}.")
    return frozenset(names & set(GROUPS))


def truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


# The grant of the caller of the current request: set by the HTTP gate, absent on stdio (the local grant).
current_grant: ContextVar[Grant | None] = ContextVar("mixpanel_mcp_grant", default=None)


# -- the file -------------------------------------------------------------------------------------


def load_policy(path: str | Path, env: Mapping[str, str] | None = None) -> Policy:
    """Read and check a policy file; every error names the table and key to fix."""
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file {path}: {exc.strerror or exc}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"the policy file {path} is not valid TOML: {exc}.") from None
    return parse_policy(data, env)


def parse_policy(data: Mapping[str, Any], env: Mapping[str, str]) -> Policy:
    _only(data, "the policy file", {"defaults", "local", "server", "agents", "projects"})
    defaults = _table(data, "defaults", "[defaults]")
    _only(defaults, "[defaults]", {"confirm_destructive", "max_calls_in_flight"})
    confirm = _bool(defaults, "confirm_destructive", "[defaults]", True)
    in_flight = _in_flight(defaults, "[defaults]", DEFAULT_MAX_IN_FLIGHT)

    projects_data = _table(data, "projects", "[projects]")
    projects = {name: _project(name, _table(projects_data, name, f"[projects.{name}]"), env) for name in projects_data}

    def grant(table: Mapping[str, Any], where: str, agent: str, default_access: Mapping[str, Any]) -> Grant:
        project = table.get("project")
        if project is not None and (not isinstance(project, str) or project not in projects):
            known = ", ".join(sorted(projects)) or "none defined"
            raise PolicyError(f"{where}: project = {project!r} is not a [projects.*] entry (defined: {known}).")
        return Grant(
            agent=agent,
            levels=_levels(table.get("access", default_access), where),
            project=project,
            confirm_destructive=_bool(table, "confirm_destructive", where, confirm),
            max_in_flight=_in_flight(table, where, in_flight),
        )

    local_table = _table(data, "local", "[local]")
    _only(local_table, "[local]", {"access", "project", "confirm_destructive", "max_calls_in_flight"})
    local = grant(local_table, "[local]", LOCAL_AGENT, {"*": "full"})

    agents = []
    seen: dict[str, str] = {}
    agents_data = _table(data, "agents", "[agents]")
    for name in agents_data:
        where = f"[agents.{name}]"
        check_agent_name(name)
        table = _table(agents_data, name, where)
        if "key" in table:
            raise PolicyError(
                f"{where}: keys are never stored in clear; replace key = ... with key_sha256 = \"<sha256 hex of the "
                "key>\" (`mixpanel-mcp new-agent-key NAME` prints the line)."
            )
        _only(table, where, {"key_sha256", "access", "project", "confirm_destructive", "max_calls_in_flight", "revoked"})
        digest = table.get("key_sha256")
        if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise PolicyError(
                f"{where}: key_sha256 must be the 64-character hex SHA-256 of the agent's key "
                "(`mixpanel-mcp new-agent-key NAME` prints it)."
            )
        digest = digest.lower()
        if digest in seen:
            raise PolicyError(f"{where}: the same key_sha256 as [agents.{seen[digest]}]; give each agent its own key.")
        seen[digest] = name
        agents.append(Agent(grant(table, where, name, {}), digest, _bool(table, "revoked", where, False)))

    server = _table(data, "server", "[server]")
    _only(server, "[server]", {"allowed_hosts", "allowed_origins"})
    return Policy(
        local=local,
        agents=tuple(agents),
        projects=projects,
        allowed_hosts=_strings(server, "allowed_hosts", "[server]"),
        allowed_origins=_strings(server, "allowed_origins", "[server]"),
    )


def _project(name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    where = f"[projects.{name}]"
    values = {var: env[var] for var in OPERATIONAL_VARS if env.get(var)}
    for setting, reference in table.items():
        if setting not in ENV_VARS:
            raise PolicyError(f"{where}: {setting} is not a setting; use one of {', '.join(ENV_VARS)}.")
        if not isinstance(reference, str) or not _ENV_NAME.match(reference):
            raise PolicyError(
                f"{where}: {setting} must name the environment variable that holds its value "
                f'(e.g. {setting} = "{name.upper().replace("-", "_")}_{setting.removeprefix("MIXPANEL_")}"), '
                "not the value itself."
            )
        value = env.get(reference, "").strip()
        if not value:
            raise PolicyError(f"{where}: {setting} refers to the environment variable {reference}, which is not set.")
        values[setting] = value
    try:
        return load_settings(values)
    except ConfigError as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _levels(value: Any, where: str) -> dict[str, Level]:
    if not isinstance(value, Mapping):
        raise PolicyError(f'{where}: access must be a table of group = level, e.g. {{ segmentation = "read" }}.')
    levels = {group: Level.OFF for group in GROUPS}
    parsed: dict[str, Level] = {}
    for group, text in value.items():
        if group != "*" and group not in GROUPS:
            raise PolicyError(f"{where}: {group!r} is not a tool group; use one of {', '.join(GROUPS)} or \"*\".")
        try:
            parsed[group] = Level(text)
        except ValueError:
            raise PolicyError(f"{where}: access.{group} = {text!r}: use \"off\", \"read\" or \"full\".") from None
    if "*" in parsed:
        levels = {group: parsed["*"] for group in GROUPS}
    levels.update({g: lv for g, lv in parsed.items() if g != "*"})
    return levels


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where} must be a table.")
    return value


def _only(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.")


def _bool(table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: {key} must be true or false.")
    return value


def _in_flight(table: Mapping[str, Any], where: str, default: int) -> int:
    value = table.get("max_calls_in_flight", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise PolicyError(f"{where}: max_calls_in_flight must be a whole number from 1 to 1000.")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PolicyError(f'{where}: {key} must be a list of strings, e.g. ["mcp.example.com"].')
    return tuple(v.strip() for v in value)


# -- reloading ------------------------------------------------------------------------------------


class PolicySource:
    """The policy in force: a file re-read when it changes (so a revoked key stops working without a restart).

    A file that fails to load is reported and the previous policy stays in force.
    """

    def __init__(
        self,
        policy: Policy,
        path: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        check_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._path = Path(path) if path is not None else None
        self._env = env
        self._check_every = check_every
        self._clock = clock
        self._checked = clock()
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            info = self._path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def current(self) -> Policy:
        if self._path is None or self._clock() - self._checked < self._check_every:
            return self._policy
        self._checked = self._clock()
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._policy = load_policy(self._path, self._env)
                logger.warning("Policy file %s changed: reloaded.", self._path)
            except PolicyError as exc:
                logger.error("Policy file %s changed but was not reloaded (the previous policy stays): %s", self._path, exc)
        return self._policy
