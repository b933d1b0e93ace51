"""/metrics in Prometheus format, scraped and parsed (issue 8)."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import ServerProcess, call, connect, http_json, obtain_tokens, recv_json
from tests.waiting import wait_until


def scrape(server: ServerProcess, token: str | None = None) -> dict[str, float]:
    request = urllib.request.Request(f"{server.http_url}/metrics")  # noqa: S310 - loopback
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_metrics_count_connections_messages_and_errors(server_factory) -> None:
    """Risks: Debugging difficulty -> /metrics reports open connections, messages by event, errors by
    code and closes by code, in a format Prometheus parses."""
    srv = server_factory()
    ws = await connect(srv, obtain_tokens(srv, "alice")["access"])
    await recv_json(ws)
    await call(ws, {"event": "echo", "data": {}})
    await call(ws, {"event": "nope.nope"})
    await call(ws, "{broken")
    samples = scrape(srv)
    assert samples["realtime_open_connections{}"] == 1
    assert samples["realtime_messages_in_total{event=echo}"] == 1
    assert samples["realtime_errors_total{code=unknown_event}"] == 1
    assert samples["realtime_errors_total{code=invalid_json}"] == 1
    assert samples["realtime_messages_in_total{event=other}"] == 2
    await ws.close()
    refused = await connect(srv)
    with contextlib.suppress(Exception):  # the server closes it: that is the point
        await recv_json(refused)
    for _ in range(50):
        samples = scrape(srv)
        if samples.get("realtime_closes_total{code=1000}") == 1:
            break
    assert samples["realtime_open_connections{}"] == 0
    assert samples["realtime_closes_total{code=1000}"] == 1
    assert samples["realtime_refused_total{reason=missing_token}"] == 1


def test_metrics_are_not_public(server_factory) -> None:
    """Security gaps -> /metrics is refused from addresses not allowed, unless a staff token is shown."""
    srv = server_factory(REALTIME_METRICS_ALLOW="10.255.255.0/24")
    status, _, _ = http_json("GET", f"{srv.http_url}/metrics")
    assert status == 403
    status, _, _ = http_json(
        "GET", f"{srv.http_url}/metrics", headers={"Authorization": f"Bearer {obtain_tokens(srv, 'alice')['access']}"}
    )
    assert status == 403
    assert "realtime_open_connections{}" in scrape(srv, obtain_tokens(srv, "admin")["access"])


def _echoes_reach(server: ServerProcess, count: int) -> Callable[[], bool]:
    return lambda: scrape(server)["realtime_messages_in_total{event=echo}"] == count


async def test_metrics_sum_processes_sharing_a_multiprocess_dir(server_factory, tmp_path) -> None:
    """Risks: Debugging difficulty -> with PROMETHEUS_MULTIPROC_DIR shared by two server processes,
    /metrics on either reports the host's total (message counts of the other process within
    its fold interval: it counts them in plain ints and folds them every second)."""
    shared = tmp_path / "prom"
    shared.mkdir()
    a = server_factory(PROMETHEUS_MULTIPROC_DIR=str(shared))
    b = server_factory(PROMETHEUS_MULTIPROC_DIR=str(shared))
    clients = [await connect(srv, obtain_tokens(srv, "alice")["access"]) for srv in (a, b, b)]
    for ws in clients:
        await recv_json(ws)
        await call(ws, {"event": "echo", "data": {}})
    for srv in (a, b):
        assert scrape(srv)["realtime_open_connections{}"] == 3
        wait_until(_echoes_reach(srv, 3), timeout=5)
