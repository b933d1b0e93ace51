"""Several Redis servers (issue 19): which shard a stream is on, and the ``REDIS_URL`` list.

The table below is the contract between processes: every server and every publisher that
lists the same URLs sends a stream's messages to the same Redis, whatever its Python version
or hash seed. Changing the hash moves streams between shards in a running cluster: a table
change here must be a deliberate one (docs/operations.md, "Several Redis servers").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from realtime.conf import SettingsError, redis_urls
from realtime.protocol.streams import StreamName
from realtime.streams.bus_shards import layer_alias, shard_fingerprint, shard_of_group, shard_of_stream

REPO = Path(__file__).resolve().parents[2]

# stream -> (shard of 2, shard of 3): CRC-32 of the name's UTF-8 bytes, modulo the count.
TABLE = {
    "room:lobby": (1, 0),
    "room:general": (1, 0),
    "user:1": (0, 0),
    "user:42": (0, 1),
    "resource:7": (0, 0),
    "room:a": (0, 2),
    "room:c": (0, 1),
    "room:x-y": (1, 0),
    "resource:12345": (1, 1),
}


@pytest.mark.parametrize(("stream", "shards"), TABLE.items())
def test_a_stream_has_a_fixed_shard(stream: str, shards: tuple[int, int]) -> None:
    assert (shard_of_stream(stream, 2), shard_of_stream(stream, 3)) == shards
    assert shard_of_stream(stream, 1) == 0


@pytest.mark.parametrize("stream", TABLE)
def test_a_streams_group_is_on_the_streams_shard(stream: str) -> None:
    group = StreamName.parse(stream).group
    for count in (1, 2, 3, 5):
        assert shard_of_group(group, count) == shard_of_stream(stream, count)


def test_the_control_group_is_on_the_first_shard() -> None:
    assert [shard_of_group("realtime.control", n) for n in (1, 2, 3)] == [0, 0, 0]
    assert (layer_alias(0), layer_alias(2)) == ("default", "realtime.shard2")


def test_the_shards_are_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "import json; from realtime.streams.bus_shards import shard_of_stream as s; "
        f"print(json.dumps({{n: [s(n, 2), s(n, 3)] for n in {list(TABLE)!r}}}))"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str({k: list(v) for k, v in TABLE.items()}).replace("'", '"')


def test_a_spread_of_rooms_covers_every_shard_about_evenly() -> None:
    counts = [0, 0, 0]
    for i in range(3000):
        counts[shard_of_stream(f"room:r{i}", 3)] += 1
    assert min(counts) > 900, counts


# REDIS_URL ------------------------------------------------------------------------------------


def test_one_url_is_taken_exactly_as_written() -> None:
    assert redis_urls("") == ()
    assert redis_urls("redis://127.0.0.1:6379/0") == ("redis://127.0.0.1:6379/0",)
    # A raw comma in a password is not a list: before the list existed this URL worked.
    assert redis_urls("redis://:pa,ss@host:6379/0") == ("redis://:pa,ss@host:6379/0",)
    assert redis_urls(" redis://h ") == (" redis://h ",)


def test_a_list_is_split_at_each_comma_that_starts_a_url() -> None:
    assert redis_urls("redis://a:6379/0, redis://b:6380/0,rediss://:s%2Cecret@c/1") == (
        "redis://a:6379/0",
        "redis://b:6380/0",
        "rediss://:s%2Cecret@c/1",
    )
    assert redis_urls("redis://a,unix:///run/redis.sock") == ("redis://a", "unix:///run/redis.sock")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("redis://a,,redis://b", "entry 1 .*comma"),
        ("redis://a,redis://b,", "entry 2 .*comma"),
        ("redis://a,redis://b,junk", "entry 2 .*comma"),
        ("redis://a,http://b", "entry 2 .*expected a redis://"),
        ("redis://a,redis://", "entry 2 .*no host"),
        ("redis://a,redis://b:notaport", "entry 2 "),
        ("redis://a/0,redis://a/0", "entry 2 .*listed twice"),
    ],
)
def test_an_invalid_list_is_refused_naming_the_entry(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^REDIS_URL {message}"):
        redis_urls(raw)


def test_a_refusal_never_shows_a_password() -> None:
    with pytest.raises(SettingsError) as refused:
        redis_urls("redis://:hunter2@a,http://:hunter2@b")
    assert "hunter2" not in str(refused.value)
    assert "***" in str(refused.value)


def _settings_process(redis_url: str, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="project.settings", DJANGO_DEBUG="1", REDIS_URL=redis_url)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)


def test_settings_build_one_layer_per_url_and_keep_the_first_for_the_rest() -> None:
    code = (
        "from django.conf import settings as s; "
        "print(sorted(s.CHANNEL_LAYERS), s.REDIS_URL, s.CACHES['default']['LOCATION'], "
        "[l['CONFIG']['hosts'][0]['address'] for l in s.CHANNEL_LAYERS.values()])"
    )
    done = _settings_process("redis://a:1/0,redis://b:2/0", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "['default',",
        "'realtime.shard1']",
        "redis://a:1/0",
        "redis://a:1/0",
        "['redis://a:1/0',",
        "'redis://b:2/0']",
    ]
    one = _settings_process("redis://a:1/0", code)
    assert one.stdout.split()[:3] == ["['default']", "redis://a:1/0", "redis://a:1/0"]


def test_an_invalid_list_stops_the_start_with_a_clear_message() -> None:
    done = _settings_process("redis://a,redis://a", "from django.conf import settings; settings.REDIS_URL")
    assert done.returncode != 0
    assert "ImproperlyConfigured: REDIS_URL entry 2 (redis://a) is listed twice" in done.stderr


def test_the_fingerprint_follows_the_list_and_its_order() -> None:
    one, two = ["redis://a", "redis://b"], ["redis://b", "redis://a"]
    assert shard_fingerprint(one) == shard_fingerprint(list(one)) != shard_fingerprint(two)
