"""realtime.conf: REALTIME_* settings from the environment (PROTOCOL.md section 1)."""

from __future__ import annotations

import dataclasses

import pytest

from realtime.conf import DEFAULT_ALLOWED_ORIGINS, RealtimeSettings, SettingsError

NUMERIC_VARS = [
    "REALTIME_IDLE_TIMEOUT",
    "REALTIME_MAX_MESSAGE_BYTES",
    "REALTIME_RATE_LIMIT",
    "REALTIME_SEND_QUEUE",
    "REALTIME_SEND_QUEUE_BYTES",
    "REALTIME_HEARTBEAT_INTERVAL",
    "REALTIME_HEARTBEAT_TIMEOUT",
    "JWT_ACCESS_TTL",
]
DERIVED_FROM_MAX_MESSAGE = ("max_reply_bytes",)
INTEGER_VARS = ["REALTIME_MAX_MESSAGE_BYTES", "REALTIME_SEND_QUEUE", "REALTIME_SEND_QUEUE_BYTES", "JWT_ACCESS_TTL"]
POSITIVE_VARS = [
    "REALTIME_IDLE_TIMEOUT",
    "REALTIME_HEARTBEAT_INTERVAL",
    "REALTIME_HEARTBEAT_TIMEOUT",
    "REALTIME_SEND_QUEUE",
    "JWT_ACCESS_TTL",
]


def test_defaults_equal_contract_defaults():
    """Operating: configuration defaults of section 1"""
    settings = RealtimeSettings.from_env({})
    assert settings.allowed_origins == ("http://localhost:8000", "http://127.0.0.1:8000")
    assert settings.idle_timeout == 300
    assert settings.max_message_bytes == 1_048_576
    assert settings.rate_limit == 200
    assert settings.send_queue == 1000
    assert settings.send_queue_bytes == 4_194_304
    assert settings.heartbeat_interval == 25
    assert settings.heartbeat_timeout == 20
    assert settings.access_token_ttl == 300
    assert settings.server_id is None  # resolved to hostname:port by `serve`


def test_class_defaults_equal_env_defaults():
    """Operating: configuration defaults are the same however the settings are built"""
    assert RealtimeSettings.from_env({}) == RealtimeSettings()
    assert RealtimeSettings().allowed_origins == DEFAULT_ALLOWED_ORIGINS


@pytest.mark.parametrize("name", NUMERIC_VARS)
@pytest.mark.parametrize("raw", ["", "   "])
def test_empty_value_means_default(name, raw):
    """Operating: configuration -> an empty variable means the default"""
    assert RealtimeSettings.from_env({name: raw}) == RealtimeSettings()


@pytest.mark.parametrize(
    ("name", "raw", "attr", "value"),
    [
        ("REALTIME_IDLE_TIMEOUT", "60", "idle_timeout", 60),
        ("REALTIME_IDLE_TIMEOUT", "0.5", "idle_timeout", 0.5),
        ("REALTIME_MAX_MESSAGE_BYTES", "65536", "max_message_bytes", 65536),
        ("REALTIME_RATE_LIMIT", "50", "rate_limit", 50),
        ("REALTIME_RATE_LIMIT", "2.5", "rate_limit", 2.5),
        ("REALTIME_SEND_QUEUE", "10", "send_queue", 10),
        ("REALTIME_SEND_QUEUE_BYTES", "8192", "send_queue_bytes", 8192),
        ("REALTIME_HEARTBEAT_INTERVAL", "5", "heartbeat_interval", 5),
        ("REALTIME_HEARTBEAT_TIMEOUT", "3", "heartbeat_timeout", 3),
        ("JWT_ACCESS_TTL", "3600", "access_token_ttl", 3600),
        ("JWT_ACCESS_TTL", " 60 ", "access_token_ttl", 60),
        ("REALTIME_SERVER_ID", "node-a", "server_id", "node-a"),
        ("REALTIME_HANDSHAKE_SLOTS", "8", "handshake_slots", 8),
        ("REALTIME_HANDSHAKE_SLOTS", "0", "handshake_slots", 0),
    ],
)
def test_values_are_read_from_env(name, raw, attr, value):
    """Operating: configuration is by environment variable"""
    settings = RealtimeSettings.from_env({name: raw})
    assert getattr(settings, attr) == value
    # the other settings keep their defaults (the byte budgets derived from the message size follow it)
    expected = RealtimeSettings(**{attr: value})
    if attr == "max_message_bytes":
        expected = dataclasses.replace(expected, **dict.fromkeys(DERIVED_FROM_MAX_MESSAGE, value))
    assert settings == expected


@pytest.mark.parametrize(
    ("name", "attr", "default"),
    [
        ("REALTIME_MAX_SUBSCRIPTIONS", "max_subscriptions", 1000),
        ("REALTIME_MAX_CONNECTIONS_PER_USER", "max_connections_per_user", 100),
        ("REALTIME_MAX_REPLY_BYTES", "max_reply_bytes", 1_048_576),
        ("REALTIME_MAX_REQUEST_BODY_BYTES", "max_request_body_bytes", 1_048_576),
    ],
)
def test_section_11_limits_are_read_from_env_and_refuse_nonsense(name, attr, default):
    """Security: every limit of section 11 is a setting with the documented default"""
    assert getattr(RealtimeSettings.from_env({}), attr) == default
    assert getattr(RealtimeSettings.from_env({name: "4096"}), attr) == 4096
    for bad in ("0", "-1", "lots"):
        with pytest.raises(SettingsError, match=name):
            RealtimeSettings.from_env({name: bad})


def test_byte_budgets_follow_the_message_size_unless_set():
    """Security: the reply budget defaults to REALTIME_MAX_MESSAGE_BYTES; the body bound never
    falls below 1 MiB with it (a small WebSocket limit must not refuse REST bodies)"""
    settings = RealtimeSettings.from_env({"REALTIME_MAX_MESSAGE_BYTES": "65536", "REALTIME_MAX_REPLY_BYTES": "8192"})
    assert (settings.max_reply_bytes, settings.max_request_body_bytes) == (8192, 1_048_576)
    small = RealtimeSettings.from_env({"REALTIME_MAX_MESSAGE_BYTES": "64"})
    assert (small.max_reply_bytes, small.max_request_body_bytes) == (64, 1_048_576)
    big = RealtimeSettings.from_env({"REALTIME_MAX_MESSAGE_BYTES": "4194304"})
    assert big.max_request_body_bytes == 4_194_304


@pytest.mark.parametrize("name", INTEGER_VARS)
def test_integer_settings_are_ints(name):
    """Operating: byte and count settings are integers"""
    settings = RealtimeSettings.from_env({name: "4096"})
    values = [settings.max_message_bytes, settings.send_queue, settings.send_queue_bytes, settings.access_token_ttl]
    assert all(type(value) is int for value in values)


def test_rate_limit_zero_turns_the_limit_off():
    """Operating: REALTIME_RATE_LIMIT 0 turns the limit off (so 0 is a valid value)"""
    assert RealtimeSettings.from_env({"REALTIME_RATE_LIMIT": "0"}).rate_limit == 0


def test_empty_server_id_means_unset():
    """Operating: REALTIME_SERVER_ID default hostname:port (empty = unset)"""
    assert RealtimeSettings.from_env({"REALTIME_SERVER_ID": ""}).server_id is None


@pytest.mark.parametrize("name", NUMERIC_VARS)
@pytest.mark.parametrize("raw", ["abc", "ten", "1,000", "0x10", "nan", "-1", "--5"])
def test_bad_value_raises_settings_error_naming_the_variable(name, raw):
    """Operating: a bad configuration value -> SettingsError naming the variable"""
    with pytest.raises(SettingsError, match=name):
        RealtimeSettings.from_env({name: raw})


@pytest.mark.parametrize("name", INTEGER_VARS)
@pytest.mark.parametrize("raw", ["1.5", "1e6", "100.0"])
def test_integer_variable_rejects_non_integers(name, raw):
    """Operating: byte/count variables must be integers -> SettingsError naming the variable"""
    with pytest.raises(SettingsError, match=name):
        RealtimeSettings.from_env({name: raw})


@pytest.mark.parametrize("name", POSITIVE_VARS)
def test_zero_is_rejected_where_it_makes_no_sense(name):
    """Operating: timeouts, intervals, queue length and token lifetime must be > 0"""
    with pytest.raises(SettingsError, match=name):
        RealtimeSettings.from_env({name: "0"})


@pytest.mark.parametrize(("name", "raw"), [("REALTIME_MAX_MESSAGE_BYTES", "10"), ("REALTIME_SEND_QUEUE_BYTES", "100")])
def test_absurdly_small_byte_limits_are_rejected(name, raw):
    """Operating: byte limits too small to carry one frame -> SettingsError naming the variable"""
    with pytest.raises(SettingsError, match=name):
        RealtimeSettings.from_env({name: raw})


def test_settings_error_is_a_value_error_and_quotes_the_value():
    """Operating: a bad value is reported with the variable and the value"""
    with pytest.raises(ValueError, match=r"REALTIME_IDLE_TIMEOUT='soon'"):
        RealtimeSettings.from_env({"REALTIME_IDLE_TIMEOUT": "soon"})
    assert issubclass(SettingsError, ValueError)


def test_unrelated_variables_are_ignored():
    """Operating: only the documented variables are read"""
    assert RealtimeSettings.from_env({"PATH": "/bin", "REALTIME_UNKNOWN": "x"}) == RealtimeSettings()


# --- REALTIME_ALLOWED_ORIGINS --------------------------------------------------------------------


def test_default_origins_allow_localhost_8000_only():
    """Handshake: Origin present and not allowed -> 403 (defaults: localhost:8000 and 127.0.0.1:8000)"""
    settings = RealtimeSettings.from_env({})
    assert settings.origin_allowed("http://localhost:8000")
    assert settings.origin_allowed("http://127.0.0.1:8000")
    for origin in (
        "http://localhost:8001",
        "https://localhost:8000",
        "http://localhost",
        "http://evil.example",
        "http://localhost:8000.evil.example",
        "null",
        "",
    ):
        assert not settings.origin_allowed(origin), origin


def test_origins_are_comma_separated_and_trimmed():
    """Operating: REALTIME_ALLOWED_ORIGINS comma-separated browser origins"""
    settings = RealtimeSettings.from_env({"REALTIME_ALLOWED_ORIGINS": " https://a.example , https://b.example:8443,,"})
    assert settings.allowed_origins == ("https://a.example", "https://b.example:8443")
    assert settings.origin_allowed("https://a.example")
    assert settings.origin_allowed("https://b.example:8443")
    assert not settings.origin_allowed("http://localhost:8000")
    assert not settings.origin_allowed("https://b.example")


def test_origins_compare_case_insensitively_and_ignore_trailing_slash():
    """Handshake: origin check -> scheme and host are case-insensitive; a trailing slash is not a different origin"""
    settings = RealtimeSettings.from_env({"REALTIME_ALLOWED_ORIGINS": "HTTPS://App.Example/"})
    assert settings.allowed_origins == ("https://app.example",)
    assert settings.origin_allowed("https://app.example")
    assert settings.origin_allowed("https://APP.example/")
    assert not settings.origin_allowed("http://app.example")


def test_origin_is_not_a_prefix_or_substring_match():
    """Handshake: Origin present and not allowed -> 403 (no prefix/suffix matching)"""
    settings = RealtimeSettings.from_env({"REALTIME_ALLOWED_ORIGINS": "https://app.example"})
    for origin in (
        "https://app.example.evil",
        "https://evil-app.example",
        "https://app.exampl",
        "https://sub.app.example",
    ):
        assert not settings.origin_allowed(origin), origin


@pytest.mark.parametrize("raw", ["*", " * ", "https://a.example,*"])
def test_star_allows_every_origin(raw):
    """Operating: REALTIME_ALLOWED_ORIGINS "*" allows any browser origin"""
    settings = RealtimeSettings.from_env({"REALTIME_ALLOWED_ORIGINS": raw})
    for origin in ("https://anything.example", "http://localhost:1234", "null"):
        assert settings.origin_allowed(origin)
