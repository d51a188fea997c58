"""config.load_settings: every variable, the region hosts, and errors that name the variable to fix."""

from __future__ import annotations

import pytest

from mixpanel_mcp.config import BudgetSettings, CacheSettings, ConfigError, Region, RetrySettings, Settings, load_settings

TOKEN_ONLY = {"MIXPANEL_PROJECT_TOKEN": "tok-123"}
SERVICE_ACCOUNT = {
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "bot.x1.mp-service-account",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET": "sa-secret-value",
    "MIXPANEL_PROJECT_ID": "4321",
}


def config_error(env: dict[str, str], overrides: dict[str, str | None] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, overrides)
    return str(info.value)


def test_every_variable_is_read():
    settings = load_settings(
        {
            "MIXPANEL_PROJECT_TOKEN": " tok-123 ",
            "MIXPANEL_PROJECT_ID": "4321",
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "bot.x1.mp-service-account",
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": "sa-secret-value",
            "MIXPANEL_API_SECRET": "legacy-secret",
            "MIXPANEL_GDPR_TOKEN": "gdpr-oauth-token",
            "MIXPANEL_REGION": "EU",
            "MIXPANEL_WORKSPACE_ID": "77",
            "MIXPANEL_INGESTION_URL": "https://ingest.example.com/",
            "MIXPANEL_QUERY_URL": "https://query.example.com/api",
            "MIXPANEL_EXPORT_URL": "https://export.example.com/api/2.0/",
            "MIXPANEL_MAX_RETRIES": "7",
            "MIXPANEL_RETRY_BASE_DELAY": "0.5",
            "MIXPANEL_TIMEOUT": "12.5",
        }
    )
    assert settings.project_token is not None and settings.project_token.get_secret_value() == "tok-123"
    assert settings.project_id == 4321
    assert settings.service_account_username == "bot.x1.mp-service-account"
    assert settings.service_account_secret is not None
    assert settings.service_account_secret.get_secret_value() == "sa-secret-value"
    assert settings.api_secret is not None and settings.api_secret.get_secret_value() == "legacy-secret"
    assert settings.region is Region.EU
    assert settings.workspace_id == 77
    # Explicit URLs win over the region's hosts; a trailing slash is dropped.
    assert settings.ingestion_url == "https://ingest.example.com"
    assert settings.query_url == "https://query.example.com/api"
    assert settings.export_url == "https://export.example.com/api/2.0"
    assert settings.retry == RetrySettings(max_retries=7, base_delay=0.5, max_delay=60.0)
    assert settings.timeout == 12.5
    assert settings.gdpr_token is not None and settings.gdpr_token.get_secret_value() == "gdpr-oauth-token"
    assert sorted(settings.secrets()) == ["gdpr-oauth-token", "legacy-secret", "sa-secret-value", "tok-123"]
    assert (settings.can_track, settings.can_import, settings.can_query, settings.can_lexicon) == (True, True, True, True)
    assert (settings.can_app, settings.can_workspace, settings.can_gdpr) == (True, True, True)


def test_defaults_with_only_a_token():
    settings = load_settings(TOKEN_ONLY)
    assert settings.region is Region.US
    assert settings.project_id is None and settings.workspace_id is None
    assert settings.retry == RetrySettings(max_retries=4, base_delay=2.0, max_delay=60.0)
    assert settings.timeout == 130.0
    # A token alone sends data in (and may /import) but cannot run reports or touch Lexicon.
    assert (settings.can_track, settings.can_import, settings.can_query, settings.can_lexicon) == (True, True, False, False)


def test_api_secret_alone_allows_queries_but_not_tracking_or_lexicon():
    settings = load_settings({"MIXPANEL_API_SECRET": "legacy"})
    assert (settings.can_track, settings.can_import, settings.can_query, settings.can_lexicon) == (False, True, True, False)


def test_service_account_alone_allows_everything_but_tracking():
    settings = load_settings(SERVICE_ACCOUNT)
    assert (settings.can_track, settings.can_import, settings.can_query, settings.can_lexicon) == (False, True, True, True)


@pytest.mark.parametrize(
    ("region", "hosts"),
    [
        ("us", ("https://api.mixpanel.com", "https://mixpanel.com/api", "https://data.mixpanel.com/api/2.0")),
        ("eu", ("https://api-eu.mixpanel.com", "https://eu.mixpanel.com/api", "https://data-eu.mixpanel.com/api/2.0")),
        ("in", ("https://api-in.mixpanel.com", "https://in.mixpanel.com/api", "https://data-in.mixpanel.com/api/2.0")),
        ("", ("https://api.mixpanel.com", "https://mixpanel.com/api", "https://data.mixpanel.com/api/2.0")),
        (" IN ", ("https://api-in.mixpanel.com", "https://in.mixpanel.com/api", "https://data-in.mixpanel.com/api/2.0")),
    ],
)
def test_region_chooses_the_three_hosts(region, hosts):
    settings = load_settings({**TOKEN_ONLY, "MIXPANEL_REGION": region})
    assert (settings.ingestion_url, settings.query_url, settings.export_url) == hosts


def test_an_explicit_url_overrides_only_its_own_host():
    settings = load_settings({**TOKEN_ONLY, "MIXPANEL_REGION": "eu", "MIXPANEL_EXPORT_URL": "https://proxy.example.com/x"})
    assert settings.ingestion_url == "https://api-eu.mixpanel.com"
    assert settings.query_url == "https://eu.mixpanel.com/api"
    assert settings.export_url == "https://proxy.example.com/x"


@pytest.mark.parametrize("region", ["de", "usa", "eu1", "global"])
def test_unknown_region_is_refused(region):
    message = config_error({**TOKEN_ONLY, "MIXPANEL_REGION": region})
    assert "MIXPANEL_REGION" in message
    assert repr(region) in message
    assert "'us', 'eu' or 'in'" in message


@pytest.mark.parametrize("value", ["abc", "12.5", "-4", "1e3", "0x10", "²", "0"])
def test_project_id_must_be_a_positive_whole_number(value):
    message = config_error({**TOKEN_ONLY, "MIXPANEL_PROJECT_ID": value})
    assert message.startswith("MIXPANEL_PROJECT_ID must be a whole number")
    assert repr(value) in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MIXPANEL_WORKSPACE_ID", "x"),
        ("MIXPANEL_WORKSPACE_ID", "0"),
        ("MIXPANEL_MAX_RETRIES", "-1"),
        ("MIXPANEL_MAX_RETRIES", "two"),
        ("MIXPANEL_MAX_RETRIES", "11"),
        ("MIXPANEL_MAX_RETRIES", "100000"),
        ("MIXPANEL_RETRY_BASE_DELAY", "-1"),
        ("MIXPANEL_RETRY_BASE_DELAY", "fast"),
        ("MIXPANEL_RETRY_BASE_DELAY", "nan"),
        ("MIXPANEL_RETRY_BASE_DELAY", "inf"),
        ("MIXPANEL_TIMEOUT", "0"),
        ("MIXPANEL_TIMEOUT", "-5"),
        ("MIXPANEL_TIMEOUT", "inf"),
        ("MIXPANEL_TIMEOUT", "NaN"),
        ("MIXPANEL_TIMEOUT", "ten"),
        ("MIXPANEL_QUERY_LIMIT_PER_HOUR", "0"),
        ("MIXPANEL_QUERY_LIMIT_PER_HOUR", "sixty"),
        ("MIXPANEL_QUERY_CONCURRENCY", "-1"),
        ("MIXPANEL_EXPORT_LIMIT_PER_HOUR", "1.5"),
        ("MIXPANEL_EXPORT_LIMIT_PER_SECOND", "0"),
        ("MIXPANEL_EXPORT_CONCURRENCY", "0"),
        ("MIXPANEL_LEXICON_LIMIT_PER_MINUTE", "five"),
        ("MIXPANEL_RATE_LIMIT_MAX_WAIT", "-1"),
        ("MIXPANEL_CACHE_TTL", "inf"),
        ("MIXPANEL_CACHE_TTL_TODAY", "a minute"),
    ],
)
def test_numeric_settings_are_checked(name, value):
    message = config_error({**TOKEN_ONLY, name: value})
    assert message.startswith(name + " must be")
    assert repr(value) in message


def test_rate_limits_and_cache_default_to_mixpanels_own():
    settings = load_settings(TOKEN_ONLY)
    assert settings.budget == BudgetSettings(
        query_per_hour=60,
        query_concurrent=5,
        export_per_hour=60,
        export_per_second=3,
        export_concurrent=100,
        lexicon_per_minute=5,
        max_wait=5.0,
    )
    assert settings.cache == CacheSettings(ttl=3600.0, ttl_today=60.0)


def test_rate_limits_and_cache_can_be_changed():
    settings = load_settings(
        {
            **TOKEN_ONLY,
            "MIXPANEL_QUERY_LIMIT_PER_HOUR": "400",
            "MIXPANEL_QUERY_CONCURRENCY": "10",
            "MIXPANEL_EXPORT_LIMIT_PER_HOUR": "120",
            "MIXPANEL_EXPORT_LIMIT_PER_SECOND": "6",
            "MIXPANEL_EXPORT_CONCURRENCY": "50",
            "MIXPANEL_LEXICON_LIMIT_PER_MINUTE": "1",
            "MIXPANEL_RATE_LIMIT_MAX_WAIT": "0",
            "MIXPANEL_CACHE_TTL": "0",  # 0: nothing is kept
            "MIXPANEL_CACHE_TTL_TODAY": "15.5",
        }
    )
    assert settings.budget == BudgetSettings(400, 10, 120, 6, 50, 1, 0.0)
    assert settings.cache == CacheSettings(ttl=0.0, ttl_today=15.5)
    assert config_error({**TOKEN_ONLY, "MIXPANEL_QUERY_CONCURRENCY": "0"}) == (
        "MIXPANEL_QUERY_CONCURRENCY must be a whole number of at least 1 (e.g. 5), not '0'."
    )


def test_numeric_edges_that_are_allowed():
    settings = load_settings(
        {**TOKEN_ONLY, "MIXPANEL_MAX_RETRIES": "0", "MIXPANEL_RETRY_BASE_DELAY": "0", "MIXPANEL_TIMEOUT": "0.25"}
    )
    assert settings.retry.max_retries == 0
    assert settings.retry.base_delay == 0.0
    assert settings.timeout == 0.25
    assert load_settings({**TOKEN_ONLY, "MIXPANEL_MAX_RETRIES": "10"}).retry.max_retries == 10


def test_service_account_username_without_secret():
    env = {**SERVICE_ACCOUNT}
    del env["MIXPANEL_SERVICE_ACCOUNT_SECRET"]
    message = config_error(env)
    assert "MIXPANEL_SERVICE_ACCOUNT_USERNAME is set but MIXPANEL_SERVICE_ACCOUNT_SECRET is not" in message


def test_service_account_secret_without_username():
    env = {**SERVICE_ACCOUNT}
    del env["MIXPANEL_SERVICE_ACCOUNT_USERNAME"]
    message = config_error(env)
    assert "MIXPANEL_SERVICE_ACCOUNT_SECRET is set but MIXPANEL_SERVICE_ACCOUNT_USERNAME is not" in message


def test_service_account_without_project_id():
    env = {**SERVICE_ACCOUNT}
    del env["MIXPANEL_PROJECT_ID"]
    message = config_error(env)
    assert message.startswith("MIXPANEL_PROJECT_ID is required with a service account")


def test_blank_values_count_as_unset():
    env = {**SERVICE_ACCOUNT, "MIXPANEL_SERVICE_ACCOUNT_SECRET": "   "}
    assert "MIXPANEL_SERVICE_ACCOUNT_SECRET is not" in config_error(env)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"MIXPANEL_PROJECT_ID": "4321"},
        {"MIXPANEL_PROJECT_TOKEN": "", "MIXPANEL_API_SECRET": "  ", "MIXPANEL_REGION": "eu"},
    ],
)
def test_no_credentials_at_all(env):
    message = config_error(env)
    assert message.startswith("No Mixpanel credential is configured.")
    for name in (
        "MIXPANEL_PROJECT_TOKEN",
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME",
        "MIXPANEL_SERVICE_ACCOUNT_SECRET",
        "MIXPANEL_PROJECT_ID",
        "MIXPANEL_API_SECRET",
    ):
        assert name in message


@pytest.mark.parametrize("name", ["MIXPANEL_INGESTION_URL", "MIXPANEL_QUERY_URL", "MIXPANEL_EXPORT_URL"])
@pytest.mark.parametrize("host", ["api.mixpanel.com", "10.0.0.5", "localhost.evil.example", "127.example.com", "[2001:db8::1]"])
def test_plain_http_is_refused_for_a_remote_host(name, host):
    message = config_error({**TOKEN_ONLY, name: f"http://{host}:8080/api"})
    assert message.startswith(f"{name} uses plain http://")
    assert "requires https" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "127.0.0.2"])
def test_plain_http_is_allowed_on_loopback(host):
    url = f"http://{host}:9999/api"
    settings = load_settings({**TOKEN_ONLY, "MIXPANEL_QUERY_URL": url, "MIXPANEL_INGESTION_URL": url + "/"})
    assert settings.query_url == url
    assert settings.ingestion_url == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.mixpanel.com",
        "api.mixpanel.com",
        "https://",
        "https://[not-ipv6",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "https://api.mixpanel.com/?x=1",
        "https://api.mixpanel.com/#frag",
    ],
)
def test_malformed_urls_are_refused_with_the_variable_named(url):
    message = config_error({**TOKEN_ONLY, "MIXPANEL_INGESTION_URL": url})
    assert message.startswith(f"MIXPANEL_INGESTION_URL={url!r}")
    assert "https://api.mixpanel.com" in message  # the example of a valid value


def test_cli_overrides_win_over_the_environment():
    env = {**SERVICE_ACCOUNT, "MIXPANEL_REGION": "us"}
    settings = load_settings(env, {"MIXPANEL_REGION": "eu", "MIXPANEL_PROJECT_ID": " 999 "})
    assert settings.region is Region.EU
    assert settings.query_url == "https://eu.mixpanel.com/api"
    assert settings.project_id == 999


def test_cli_override_of_none_keeps_the_environment():
    settings = load_settings({**SERVICE_ACCOUNT, "MIXPANEL_REGION": "in"}, {"MIXPANEL_REGION": None, "MIXPANEL_PROJECT_ID": None})
    assert settings.region is Region.IN
    assert settings.project_id == 4321


def test_cli_override_is_validated_and_named_like_the_variable():
    assert "MIXPANEL_PROJECT_ID must be a whole number" in config_error(SERVICE_ACCOUNT, {"MIXPANEL_PROJECT_ID": "abc"})
    assert "MIXPANEL_REGION='mars'" in config_error(SERVICE_ACCOUNT, {"MIXPANEL_REGION": "mars"})


def test_cli_project_id_completes_a_service_account():
    env = {**SERVICE_ACCOUNT}
    del env["MIXPANEL_PROJECT_ID"]
    assert load_settings(env, {"MIXPANEL_PROJECT_ID": "55"}).project_id == 55


def test_secrets_never_appear_in_repr_or_str():
    env = {**SERVICE_ACCOUNT, "MIXPANEL_PROJECT_TOKEN": "tok-123", "MIXPANEL_API_SECRET": "legacy-secret",
           "MIXPANEL_GDPR_TOKEN": "gdpr-oauth-token"}
    settings = load_settings(env)
    for text in (repr(settings), str(settings), f"{settings}", repr(settings.project_token)):
        for secret in ("tok-123", "sa-secret-value", "legacy-secret", "gdpr-oauth-token"):
            assert secret not in text
    assert "**********" in repr(settings)
    # The username is not a secret and stays readable.
    assert "bot.x1.mp-service-account" in repr(settings)


def test_settings_are_immutable():
    settings = load_settings(TOKEN_ONLY)
    with pytest.raises(AttributeError):
        settings.project_id = 1  # type: ignore[misc]
    assert isinstance(settings, Settings)


@pytest.mark.parametrize(
    ("region", "app", "ingestion"),
    [
        ("us", "https://mixpanel.com/api/app", "https://api.mixpanel.com"),
        ("eu", "https://eu.mixpanel.com/api/app", "https://api-eu.mixpanel.com"),
        ("in", "https://in.mixpanel.com/api/app", "https://api-in.mixpanel.com"),
    ],
)
def test_every_new_api_family_has_its_regional_host(region, app, ingestion):
    from mixpanel_mcp.client import Api, MixpanelClient

    client = MixpanelClient(load_settings({**SERVICE_ACCOUNT, "MIXPANEL_REGION": region}))
    assert client.url(Api.APP, "/projects/1/annotations") == f"{app}/projects/1/annotations"
    assert client.url(Api.GDPR, "/data-deletions/v3.0") == f"{app}/data-deletions/v3.0"
    assert client.url(Api.FLAGS, "/flags") == f"{ingestion}/flags"
    assert client.url(Api.LOOKUP, "/lookup-tables") == f"{ingestion}/lookup-tables"


def test_flags_and_experiments_need_a_workspace_and_gdpr_needs_both_tokens():
    settings = load_settings(SERVICE_ACCOUNT)
    assert (settings.can_app, settings.can_workspace, settings.can_gdpr) == (True, False, False)
    gdpr_only = load_settings({**SERVICE_ACCOUNT, "MIXPANEL_GDPR_TOKEN": "g"})
    assert gdpr_only.can_gdpr is False  # the GDPR API names the project by its token
    assert load_settings({**SERVICE_ACCOUNT, "MIXPANEL_GDPR_TOKEN": "g", "MIXPANEL_PROJECT_TOKEN": "t"}).can_gdpr is True


@pytest.mark.parametrize("name", ["MIXPANEL_INGESTION_URL", "MIXPANEL_QUERY_URL", "MIXPANEL_EXPORT_URL"])
@pytest.mark.parametrize("url", ["https://user:pw-s3cret@eu.mixpanel.com/api", "https://pw-s3cret@host.example", "http://a:pw-s3cret@127.0.0.1:1"])
def test_user_info_in_a_base_url_is_refused_naming_the_variable_and_never_echoed(name, url):
    """It once showed in the project resource and in check, and displaced the service account (every query 401)."""
    message = config_error({**TOKEN_ONLY, name: url})
    assert message.startswith(f"{name} carries a user name or password")
    assert "pw-s3cret" not in message


@pytest.mark.parametrize("value", ["maybe", "yes", "2"])
def test_startup_check_is_0_or_1(value):
    assert config_error({**TOKEN_ONLY, "MIXPANEL_STARTUP_CHECK": value}).startswith(f"MIXPANEL_STARTUP_CHECK={value!r} is not 0 or 1")
    load_settings({**TOKEN_ONLY, "MIXPANEL_STARTUP_CHECK": "0"})
