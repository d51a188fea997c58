"""The sandbox's demo dataset: six weeks of "Acme Boards", a small project-board SaaS, ending on a given day.

`generate(end, seed)` is deterministic (one `random.Random(seed)`): the same end day and seed give the same
events, profiles, group profiles, funnels, cohorts, Lexicon schemas and saved report. With `now`, events after
that moment are left out (so a dataset ending today is only as far along as the clock): the events are a prefix
of the whole day's, and everything derived from events (profiles, cohorts) is derived from the events kept.

What happens in it:
- Visitors arrive (a little more each week, fewer at weekends) from a utm_source, in a country, on a browser.
  A visit is a "Session started" and a few "Viewed page" events (page, country, browser, $os, utm_source).
- Some sign up during that visit ("Signed up", after their page views); some come back another day and do.
- Signed-up users come back in later sessions, less and less often; they "Created board" and, in a team,
  "Invited teammate". Team members' events carry company_id (the group key of the company group profiles).
- Some buy a plan after looking at /pricing ("Purchased": plan, billing, amount, currency, company_id),
  a month later it renews ("renewal": true).
- User profiles ($email, $name, plan, country, created, ...) exist for users who signed up; group profiles for
  companies with at least one member. Every event has distinct_id, time (epoch seconds) and $insert_id.
- Around it (`experimentation`): annotations (a release, an outage, a pricing change) with their tags, two
  feature flags (the checkout redesign's, and dark mode rolled out to 20 %), the "Checkout redesign" experiment
  on the checkout flag, running for the last two weeks, and a lookup table of plans. Everyone who looked at
  /pricing since the experiment started has an exposure event ($experiment_started) for the variant the flag
  gives them, as Mixpanel's SDKs track it.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from mixpanel_mcp.double.flags import assign

DEFAULT_SEED = 6
DAYS = 42
VISITORS = 900

FUNNEL_PURCHASE = 1001
FUNNEL_ACTIVATION = 1002
COHORT_PAYING = 2001
COHORT_POWER = 2002
BOOKMARK_WEEKLY = 3001

COUNTRIES = {"US": 35, "GB": 12, "DE": 10, "IN": 10, "FR": 8, "CA": 8, "BR": 7, "JP": 5, "AU": 5}
CURRENCY = {"GB": "GBP", "DE": "EUR", "FR": "EUR"}
BROWSERS = {"Chrome": 60, "Safari": 20, "Firefox": 10, "Edge": 10}
SYSTEMS = {
    "Chrome": {"Windows": 45, "Mac OS X": 30, "Android": 15, "Linux": 10},
    "Safari": {"Mac OS X": 55, "iOS": 45},
    "Firefox": {"Windows": 50, "Linux": 30, "Mac OS X": 20},
    "Edge": {"Windows": 100},
}
SOURCES = {"google": 35, "direct": 25, "newsletter": 15, "twitter": 13, "producthunt": 12}
SIGNUP_RATE = {"google": 0.40, "direct": 0.45, "newsletter": 0.50, "twitter": 0.25, "producthunt": 0.35}
LANDING = {"google": "/", "direct": "/", "newsletter": "/blog", "twitter": "/blog", "producthunt": "/features"}
SITE_PAGES = ["/", "/features", "/pricing", "/blog", "/docs", "/customers"]
APP_PAGES = {"/app/dashboard": 40, "/app/boards": 30, "/app/reports": 12, "/app/settings": 8, "/pricing": 6, "/docs": 4}
PLANS = {"starter": 12.0, "pro": 29.0, "team": 79.0}
TEMPLATES = {"kanban": 45, "roadmap": 20, "sprint": 20, "blank": 15}
SIGNUP_METHODS = {"email": 50, "google": 40, "github": 10}
INDUSTRIES = ["Software", "Retail", "Healthcare", "Finance", "Education", "Media", "Logistics", "Manufacturing"]
FIRST_NAMES = [
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jack", "Kai", "Lena", "Mia", "Noah",
    "Olivia", "Priya", "Quinn", "Ravi", "Sofia", "Tom", "Uma", "Victor", "Wen", "Yusuf", "Zoe", "Aiko", "Lucas",
    "Marta", "Omar", "Sara",
]
LAST_NAMES = [
    "Adams", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jones", "Khan", "Lopez",
    "Martin", "Nguyen", "Okafor", "Patel", "Rossi", "Silva", "Tanaka", "Weber", "Young", "Kowalski", "Murphy",
    "Schmidt",
]
COMPANY_WORDS = (
    ["Acme", "Blue", "North", "Bright", "Silver", "Cedar", "Summit", "Pixel", "Iron", "Lumen", "Nova", "Orbit"],
    ["Labs", "Logistics", "Health", "Studio", "Foods", "Systems", "Analytics", "Works", "Bank", "Media"],
)
COMPANIES = 60


@dataclass
class Dataset:
    """Everything the sandbox starts with, in the double's own shapes (see DoubleState)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_profiles: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    schemas: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    funnels: list[dict[str, Any]] = field(default_factory=list)
    cohorts: list[dict[str, Any]] = field(default_factory=list)
    bookmarks: dict[int, dict[str, Any]] = field(default_factory=dict)
    annotations: dict[int, dict[str, Any]] = field(default_factory=dict)
    annotation_tags: dict[int, dict[str, Any]] = field(default_factory=dict)
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    lookup_tables: dict[str, dict[str, Any]] = field(default_factory=dict)


# The collections `experimentation` fills (attributes of both Dataset and DoubleState).
EXPERIMENTATION = ("annotations", "annotation_tags", "flags", "experiments", "lookup_tables")


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class _World:
    def __init__(self, rng: random.Random, start: dt.date, end: dt.date, cutoff: float) -> None:
        self.rng = rng
        self.start = start
        self.end = end
        self.cutoff = cutoff
        self.events: list[dict[str, Any]] = []

    def day_start(self, day: dt.date) -> float:
        return dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()

    def session_time(self, day: dt.date) -> float:
        """A moment on `day`, busiest in the (UTC) afternoon, quiet at night."""
        hour = self.rng.triangular(0.0, 24.0, 15.0)
        return self.day_start(day) + int(hour * 3600) + self.rng.randrange(60)

    def emit(self, name: str, user: dict[str, Any], at: float, **properties: Any) -> bool:
        """Add an event (False, and nothing added, when it would happen after the last day)."""
        if at > self.cutoff:
            return False
        props: dict[str, Any] = {
            "time": int(at),
            "distinct_id": user["id"],
            "$insert_id": f"{self.rng.getrandbits(128):032x}",
            "country": user["country"],
            "browser": user["browser"],
            "$os": user["os"],
        }
        if user.get("company_id") and user.get("signed_up"):
            props["company_id"] = user["company_id"]
        props.update(properties)
        self.events.append({"event": name, "properties": props})
        return True


def generate(
    end: dt.date, seed: int = DEFAULT_SEED, *, now: dt.datetime | None = None, days: int = DAYS, project_id: int = 1
) -> Dataset:
    """The demo dataset for the `days` days ending on `end` (UTC); events after `now` are left out."""
    rng = random.Random(seed)
    start = end - dt.timedelta(days=days - 1)
    world = _World(rng, start, end, dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp() - 1)

    company_names = [f"{a} {b}" for a in COMPANY_WORDS[0] for b in COMPANY_WORDS[1]]
    rng.shuffle(company_names)
    companies = [
        {
            "id": f"c-{n + 1:03d}",
            "$name": company_names[n],
            "industry": rng.choice(INDUSTRIES),
            "employees": rng.choice([5, 12, 25, 40, 80, 150, 300, 1200]),
            "country": _pick(rng, COUNTRIES),
        }
        for n in range(COMPANIES)
    ]

    day_weights = [(1 + d / days) * (0.6 if (start + dt.timedelta(days=d)).weekday() >= 5 else 1.0) for d in range(days)]
    users: list[dict[str, Any]] = []
    for n in range(VISITORS):
        browser = _pick(rng, BROWSERS)
        user = {
            "id": f"user-{n + 1:04d}",
            "number": n + 1,
            "country": _pick(rng, COUNTRIES),
            "browser": browser,
            "os": _pick(rng, SYSTEMS[browser]),
            "source": _pick(rng, SOURCES),
            "first_day": start + dt.timedelta(days=rng.choices(range(days), weights=day_weights)[0]),
            "signed_up": False,
            "company_id": rng.choice(companies)["id"] if rng.random() < 0.7 else None,
            "engagement": rng.uniform(0.3, 1.3),
            "buyer": rng.random() < 0.3,
        }
        users.append(user)
        _visitor(world, user)

    world.events.sort(key=lambda e: (e["properties"]["time"], e["properties"]["distinct_id"]))
    if now is not None:  # the same story, only as far as it has got: a prefix of the whole dataset's events
        world.events = [e for e in world.events if e["properties"]["time"] <= now.timestamp()]
    data = Dataset(events=world.events)
    experimentation(data, end, project_id)
    data.events.extend(exposures(data))
    data.events.sort(key=lambda e: (e["properties"]["time"], e["properties"]["distinct_id"]))
    _profiles(data, users, companies)
    data.funnels = [
        {"funnel_id": FUNNEL_PURCHASE, "name": "Visit to purchase", "steps": ["Viewed page", "Signed up", "Purchased"],
         "length": 14, "length_unit": "day"},
        {"funnel_id": FUNNEL_ACTIVATION, "name": "Activation", "steps": ["Signed up", "Created board", "Invited teammate"],
         "length": 7, "length_unit": "day"},
    ]
    _cohorts(data, start, project_id)
    data.schemas = schemas()
    data.bookmarks = {
        BOOKMARK_WEEKLY: {
            "name": "Weekly sign-ups and purchases",
            "definition": {"events": ["Signed up", "Purchased"], "unit": "week", "last_days": 28},
        }
    }
    return data


# -- what a visitor does -------------------------------------------------------------------------


def _visitor(world: _World, user: dict[str, Any]) -> None:
    rng = world.rng
    day = user["first_day"]
    signs_up = rng.random() < SIGNUP_RATE[user["source"]]
    t = _site_visit(world, user, day, signs_up)
    if not signs_up:
        if rng.random() < 0.25:  # comes back within a week, and may sign up then
            day = day + dt.timedelta(days=rng.randint(1, 7))
            if day <= world.end:
                signs_up = rng.random() < 0.3
                t = _site_visit(world, user, day, signs_up)
        if not signs_up:
            return
    if t is None:  # the sign-up would have been after the cutoff
        return
    _member(world, user, day, t)


def _site_visit(world: _World, user: dict[str, Any], day: dt.date, signs_up: bool) -> float | None:
    """A visit to the marketing site; with `signs_up`, ends in "Signed up". Its time, if that was emitted."""
    rng = world.rng
    t = world.session_time(day)
    source = user["source"]
    world.emit("Session started", user, t, utm_source=source)
    pages = [LANDING[source]] + rng.sample(SITE_PAGES, rng.randint(0, 3))
    for page in pages:
        t += rng.randint(5, 90)
        world.emit("Viewed page", user, t, page=page, utm_source=source)
    if not signs_up:
        return None
    t += rng.randint(20, 240)
    method = _pick(rng, SIGNUP_METHODS)
    if not world.emit("Signed up", user, t, utm_source=source, signup_method=method, plan="free"):
        return None
    user["signed_up"] = True
    t += rng.randint(10, 120)
    world.emit("Viewed page", user, t, page="/app/onboarding", utm_source=source)
    if rng.random() < 0.7:
        t += rng.randint(30, 600)
        world.emit("Created board", user, t, template=_pick(rng, TEMPLATES), board_number=1)
        user["boards"] = 1
    return t


def _member(world: _World, user: dict[str, Any], signup_day: dt.date, signup_time: float) -> None:
    """A signed-up user's later sessions, boards, invitations and purchases."""
    rng = world.rng
    buy_day = None
    if user["buyer"]:
        buy_day = signup_day + dt.timedelta(days=min(int(rng.expovariate(1 / 3)), 20))
    plan = rng.choice(["team", "team", "pro"]) if user["company_id"] else rng.choice(["starter", "pro", "pro"])
    billing = "annual" if rng.random() < 0.25 else "monthly"
    bought_at = None
    if buy_day == signup_day:
        bought_at = _purchase(world, user, signup_time + rng.randint(60, 900), plan, billing)
    day = signup_day + dt.timedelta(days=1)
    k = 1
    while day <= world.end:
        chance = min(0.95, user["engagement"] * (0.55 * math.exp(-k / 10) + 0.12))
        must_buy = buy_day is not None and bought_at is None and day >= buy_day
        if must_buy or rng.random() < chance:
            t = _app_session(world, user, day)
            if must_buy:
                bought_at = _purchase(world, user, t + rng.randint(30, 300), plan, billing)
        if bought_at is not None and billing == "monthly" and not user.get("renewed"):
            renew_day = dt.datetime.fromtimestamp(bought_at, dt.UTC).date() + dt.timedelta(days=30)
            if day == renew_day:
                world.emit("Purchased", user, world.session_time(day), plan=plan, billing=billing,
                           amount=PLANS[plan], currency=CURRENCY.get(user["country"], "USD"), renewal=True)
                user["renewed"] = True
        day += dt.timedelta(days=1)
        k += 1


def _app_session(world: _World, user: dict[str, Any], day: dt.date) -> float:
    rng = world.rng
    t = world.session_time(day)
    world.emit("Session started", user, t)
    for _ in range(rng.randint(1, 6)):
        t += rng.randint(10, 400)
        world.emit("Viewed page", user, t, page=_pick(rng, APP_PAGES))
    if rng.random() < 0.3:
        t += rng.randint(20, 300)
        user["boards"] = user.get("boards", 0) + 1
        world.emit("Created board", user, t, template=_pick(rng, TEMPLATES), board_number=user["boards"])
    if user["company_id"] and rng.random() < 0.1:
        t += rng.randint(20, 300)
        world.emit("Invited teammate", user, t, role=rng.choice(["member", "member", "admin", "viewer"]))
    return t


def _purchase(world: _World, user: dict[str, Any], t: float, plan: str, billing: str) -> float | None:
    amount = PLANS[plan] * (10 if billing == "annual" else 1)
    world.emit("Viewed page", user, t - 30, page="/pricing")
    currency = CURRENCY.get(user["country"], "USD")
    if world.emit("Purchased", user, t, plan=plan, billing=billing, amount=amount, currency=currency, renewal=False):
        return t
    return None


# -- profiles, cohorts, schemas ------------------------------------------------------------------


def _profiles(data: Dataset, users: list[dict[str, Any]], companies: list[dict[str, Any]]) -> None:
    by_user: dict[str, list[dict[str, Any]]] = {}
    for event in data.events:
        by_user.setdefault(event["properties"]["distinct_id"], []).append(event)
    company_of = {c["id"]: c for c in companies}
    members: dict[str, list[tuple[float, str | None]]] = {}
    for user in users:
        events = by_user.get(user["id"], [])
        signup = next((e for e in events if e["event"] == "Signed up"), None)
        if signup is None:
            continue
        purchases = [e for e in events if e["event"] == "Purchased"]
        first, last = FIRST_NAMES[user["number"] % len(FIRST_NAMES)], LAST_NAMES[user["number"] * 7 % len(LAST_NAMES)]
        profile: dict[str, Any] = {
            "$email": f"{first.lower()}.{last.lower()}{user['number']}@example.com",
            "$name": f"{first} {last}",
            "plan": purchases[-1]["properties"]["plan"] if purchases else "free",
            "country": user["country"],
            "created": _iso(signup["properties"]["time"]),
            "signup_method": signup["properties"]["signup_method"],
            "utm_source": user["source"],
            "purchases": len(purchases),
            "boards": sum(1 for e in events if e["event"] == "Created board"),
            "last_seen": _iso(events[-1]["properties"]["time"]),
        }
        if user["company_id"]:
            profile["company_id"] = user["company_id"]
            plan = purchases[-1]["properties"]["plan"] if purchases else None
            members.setdefault(user["company_id"], []).append((signup["properties"]["time"], plan))
        data.profiles[user["id"]] = profile
    for company_id in sorted(members):
        company = company_of[company_id]
        joined = members[company_id]
        plans = [p for _, p in joined if p]
        data.group_profiles[("company_id", company_id)] = {
            "$name": company["$name"],
            "industry": company["industry"],
            "employees": company["employees"],
            "country": company["country"],
            "plan": max(plans, key=lambda p: PLANS[p]) if plans else "free",
            "members": len(joined),
            "created": _iso(min(t for t, _ in joined)),
        }


def _cohorts(data: Dataset, start: dt.date, project_id: int) -> None:
    sessions: dict[str, int] = {}
    payers = set()
    for event in data.events:
        user = event["properties"]["distinct_id"]
        if event["event"] == "Session started":
            sessions[user] = sessions.get(user, 0) + 1
        elif event["event"] == "Purchased":
            payers.add(user)
    power = sorted(u for u, n in sessions.items() if n >= 10 and u in data.profiles)
    created = f"{start.isoformat()} 09:00:00"
    for cohort_id, name, description, members in (
        (COHORT_PAYING, "Paying customers", "Users with at least one Purchased event", sorted(payers)),
        (COHORT_POWER, "Power users", "Users with 10 or more sessions", power),
    ):
        data.cohorts.append(
            {"id": cohort_id, "name": name, "count": len(members), "description": description, "created": created,
             "is_visible": 1, "project_id": project_id, "members": members}
        )


def _property(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


COMMON = {
    "country": _property("string", "Two-letter country code of the visitor"),
    "browser": _property("string", "Browser name"),
    "$os": _property("string", "Operating system"),
}


def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """Lexicon schemas for the main events and the user profile (Created board and Invited teammate have none)."""

    def event(description: str, tags: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "description": description,
            "properties": {**COMMON, **properties},
            "metadata": {"com.mixpanel": {"tags": tags, "hidden": False, "dropped": False}},
        }

    return {
        ("event", "Session started"): event(
            "A visit began, on the site or in the app", ["engagement"],
            utm_source=_property("string", "Marketing source of the first visit"),
        ),
        ("event", "Viewed page"): event(
            "A page of the site or the app was shown", ["engagement"],
            page=_property("string", "Path of the page, e.g. /pricing"),
            utm_source=_property("string", "Marketing source (site pages only)"),
        ),
        ("event", "Signed up"): event(
            "A visitor created an account", ["acquisition", "kpi"],
            utm_source=_property("string", "Marketing source"),
            signup_method=_property("string", "email, google or github"),
            plan=_property("string", "Always free at sign-up"),
        ),
        ("event", "Purchased"): event(
            "A plan was bought or renewed", ["revenue", "kpi"],
            plan=_property("string", "starter, pro or team"),
            billing=_property("string", "monthly or annual"),
            amount=_property("number", "Price paid, in currency"),
            currency=_property("string", "ISO 4217 code: USD, EUR or GBP"),
            renewal=_property("boolean", "True for an automatic renewal"),
            company_id=_property("string", "The buyer's company (group key company_id)"),
        ),
        ("profile", "$user"): {
            "description": "A person who signed up",
            "properties": {
                "$email": _property("string", "Email address"),
                "$name": _property("string", "Full name"),
                "plan": _property("string", "free, starter, pro or team"),
                "country": _property("string", "Two-letter country code"),
                "created": _property("string", "When they signed up (UTC)"),
                "company_id": _property("string", "Their company, if any"),
                "purchases": _property("integer", "Purchased events so far"),
            },
            "metadata": {"com.mixpanel": {"tags": ["users"]}},
        },
    }


# -- annotations, feature flags, the experiment and its exposures, lookup tables ---------------------------------

WORKSPACE_ID = 1
EXPERIMENT_NAME = "Checkout redesign"
EXPERIMENT_DAYS = 14  # the experiment has been running for the last two weeks


def _uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mixpanel-mcp-sandbox/{name}"))


CHECKOUT_FLAG = _uuid("flag/new-checkout")
DARK_MODE_FLAG = _uuid("flag/dark-mode")
CHECKOUT_EXPERIMENT = _uuid("experiment/checkout-redesign")
PLANS_TABLE = _uuid("lookup-table/plans")


def _stamp(day: dt.date, hour: int = 9) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


def experimentation(data: Dataset, end: dt.date, project_id: int = 1, workspace_id: int = WORKSPACE_ID) -> None:
    """Fill the dataset's annotations, tags, flags, experiment and lookup table (no events)."""
    day = lambda n: end - dt.timedelta(days=n)  # noqa: E731 - n days before the last day
    data.annotation_tags = {
        1: {"id": 1, "name": "release", "project_id": project_id},
        2: {"id": 2, "name": "incident", "project_id": project_id},
    }
    creator = {"id": 1, "first_name": "Dana", "last_name": "Okafor"}
    data.annotations = {
        1: {"id": 1, "date": f"{day(30)} 10:00:00", "description": "Pricing page refresh: annual billing shown first",
            "user": creator, "tags": [1]},
        2: {"id": 2, "date": f"{day(20)} 10:00:00", "description": "Release 2.4: board templates", "user": creator, "tags": [1]},
        3: {"id": 3, "date": f"{day(9)} 14:30:00", "description": "Outage: checkout down 40 min (payment provider)",
            "user": creator, "tags": [2]},
    }
    flag_base = {
        "can_update_basic": True, "can_view": True, "can_share": True, "is_shared_with_project": True,
        "project_id": project_id, "workspace_id": workspace_id, "content_type": "feature-flags", "context": "distinct_id",
        "serving_method": "remote_or_local", "data_group_id": None, "deleted": None, "creator_id": 1,
        "creator_name": "Dana Okafor", "creator_email": "dana@acmeboards.example", "status": "enabled",
    }
    started = day(EXPERIMENT_DAYS - 1)
    data.flags = {
        CHECKOUT_FLAG: {
            **flag_base, "id": CHECKOUT_FLAG, "name": "New checkout", "key": "new-checkout",
            "description": "One-page checkout with saved cards", "tags": ["checkout"],
            "experiment_id": CHECKOUT_EXPERIMENT, "is_experiment_active": True, "hash_salt": uuid.uuid5(uuid.NAMESPACE_URL, CHECKOUT_FLAG).hex,
            "ruleset": {
                "variants": [
                    {"key": "control", "value": False, "is_control": True, "split": 0.5, "is_sticky": False},
                    {"key": "treatment", "value": True, "is_control": False, "split": 0.5, "is_sticky": True},
                ],
                "rollout": [{"name": "Everyone", "rollout_percentage": 1.0, "variant_splits": {"control": 0.5, "treatment": 0.5}}],
            },
            "created": _stamp(day(EXPERIMENT_DAYS + 2)), "modified": _stamp(started), "enabled_at": _stamp(started),
        },
        DARK_MODE_FLAG: {
            **flag_base, "id": DARK_MODE_FLAG, "name": "Dark mode", "key": "dark-mode", "description": "Dark theme for boards",
            "tags": ["ui"], "experiment_id": None, "is_experiment_active": None, "hash_salt": uuid.uuid5(uuid.NAMESPACE_URL, DARK_MODE_FLAG).hex,
            "ruleset": {
                "variants": [
                    {"key": "off", "value": False, "is_control": True, "split": 0.0, "is_sticky": False},
                    {"key": "on", "value": True, "is_control": False, "split": 1.0, "is_sticky": False},
                ],
                "rollout": [{"name": "Everyone", "rollout_percentage": 0.2, "variant_splits": {"off": 0.0, "on": 1.0}}],
            },
            "created": _stamp(day(25)), "modified": _stamp(day(5)), "enabled_at": _stamp(day(25)),
        },
    }
    data.experiments = {
        CHECKOUT_EXPERIMENT: {
            "id": CHECKOUT_EXPERIMENT, "name": EXPERIMENT_NAME, "content_type": "experiments",
            "description": "Does the one-page checkout raise purchases?",
            "hypothesis": "Fewer steps at checkout lead to more purchases", "created": _stamp(day(EXPERIMENT_DAYS + 2)),
            "modified": _stamp(started), "creator_id": 1, "creator_name": "Dana Okafor", "creator_email": "dana@acmeboards.example",
            "deleted": None, "is_favorited": False, "pinned_date": None, "tags": ["checkout"], "status": "active",
            "variants": [{"key": "control", "name": "Current checkout"}, {"key": "treatment", "name": "One-page checkout"}],
            "metrics": [{"event": "Purchased", "type": "primary"}, {"event": "Viewed page", "type": "guardrail"}],
            "settings": {"feature_flag_id": CHECKOUT_FLAG, "exposure_event": "$experiment_started"},
            "exposures_cache": {}, "results_cache": {}, "start_date": _stamp(started), "end_date": None, "_archived": False,
        },
    }
    data.lookup_tables = {
        PLANS_TABLE: {
            "id": PLANS_TABLE, "name": "Plans",
            "header": ["plan", "monthly_price_usd", "seats", "reports"],
            "rows": [["free", "0", "1", "false"], ["starter", "12", "3", "false"], ["pro", "29", "10", "true"],
                     ["team", "79", "50", "true"]],
        },
    }


def exposures(data: Dataset) -> list[dict[str, Any]]:
    """$experiment_started for each user's first look at /pricing since the experiment started, with the variant
    the checkout flag gives them (the same assignment its evaluation returns)."""
    experiment = data.experiments.get(CHECKOUT_EXPERIMENT)
    flag = data.flags.get(CHECKOUT_FLAG)
    if experiment is None or flag is None:
        return []
    since = dt.datetime.fromisoformat(experiment["start_date"].replace("Z", "+00:00")).timestamp()
    seen: set[str] = set()
    found = []
    for event in data.events:
        props = event["properties"]
        user = props["distinct_id"]
        if event["event"] != "Viewed page" or props.get("page") != "/pricing" or props["time"] < since or user in seen:
            continue
        seen.add(user)
        variant = assign(flag, {"distinct_id": user})
        if variant is None:
            continue
        found.append({"event": "$experiment_started", "properties": {
            "time": props["time"], "distinct_id": user, "$insert_id": _uuid(f"exposure/{user}").replace("-", ""),
            "Experiment name": EXPERIMENT_NAME, "Variant name": variant["variant_key"],
        }})
    return found
