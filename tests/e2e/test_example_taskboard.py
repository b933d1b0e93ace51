"""Issue 16, installable: the example project ``examples/taskboard`` runs end to end in Chromium.

The example is a Django project of its own (its ``manage.py``, settings and ``tasks`` app);
``realtime`` and ``accounts`` come from this checkout through ``PYTHONPATH``, as they would
from the installed wheel (``test_installable.py`` installs the wheel for real). Its servers
are the realtime app's ``manage.py serve``, started from the example's ``manage.py``:

- one server on SQLite, without Redis (the in-memory layer);
- two servers on PostgreSQL (the suite's, when the test command started it; else a shared
  SQLite file, as every e2e test falls back) and a Redis of their own.

Each case drives two Chromium pages (on different servers in the second case): a task created
through the ``task.create`` client event on one appears live on the other; a task saved from
Django code (``manage.py add_task``, another process) appears on both; an empty title is the
schema's ``validation_error``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import scaled
from tests.e2e.helpers import (
    PASSWORD,
    PYTHON,
    REPO,
    ServerProcess,
    base_env,
    call,
    connect,
    http_json,
    obtain_tokens,
    recv_json,
)
from tests.e2e.redis_server import RedisServer, free_port
from tests.e2e.test_browser_client import (  # noqa: F401  (browser is a fixture)
    UI_TIMEOUT_MS,
    DemoPage,
    _console,
    browser,
)

EXAMPLE = REPO / "examples" / "taskboard"
MANAGE = (PYTHON, str(EXAMPLE / "manage.py"))


def example_env(database_url: str, **settings: str) -> dict[str, str]:
    """The suite's server environment with the example's settings; the apps from this checkout."""
    return base_env(database_url, DJANGO_SETTINGS_MODULE="taskboard_site.settings", PYTHONPATH=str(REPO), **settings)


def example_manage(database_url: str, *args: str) -> str:
    done = subprocess.run(
        [*MANAGE, *args],
        cwd=EXAMPLE,
        env=example_env(database_url),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stderr}"
    return done.stdout


SEED = f"""
from django.core.management import call_command
from accounts.models import User
call_command("migrate", "--noinput", verbosity=0)
for name in ("alice", "bob", "carol"):
    User.objects.create_user(username=name, password={PASSWORD!r})
call_command("create_board", "Groceries", "--member", "alice", "--member", "bob")
"""


def prepare_board(database_url: str) -> int:
    """In one process (each start of Django costs seconds): migrate; add alice, bob and carol
    and, with ``manage.py create_board``, a board of alice and bob; add a task from Django code
    (``manage.py add_task``: Task.save publishes it). The board's id."""
    board = int(example_manage(database_url, "shell", "-c", SEED).split()[-1])
    example_manage(database_url, "add_task", str(board), "milk")
    return board


@pytest.fixture
def postgres_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database on the suite's server, or None when the test command started none."""
    server = os.environ.get("REALTIME_TEST_POSTGRES_URL")
    if not server:
        yield None
        return
    import psycopg

    name = f"taskboard_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.stop()


def start_servers(count: int, database_url: str, log_dir: Path, into: list[ServerProcess], **settings: str) -> None:
    """``count`` example servers on ports picked here, each allowing every server's page origin;
    started side by side."""
    ports = [free_port() for _ in range(count)]
    origins = ",".join(f"http://127.0.0.1:{port}" for port in ports)
    servers = [
        ServerProcess(
            env=example_env(database_url, REALTIME_ALLOWED_ORIGINS=origins, **settings),
            log_path=log_dir / f"taskboard-{port}.log",
            port=port,
            command=(*MANAGE, "serve"),
        )
        for port in ports
    ]
    into.extend(servers)
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(ServerProcess.start, servers))


async def open_board(browser: Browser, server: ServerProcess, board: int, username: str) -> DemoPage:  # noqa: F811
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: _console(errors, msg.type, msg.text))
    response = await page.goto(f"{server.http_url}/boards/{board}/")
    assert response is not None
    assert response.status == 200
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#login button")
    await expect(page.locator("#state")).to_have_attribute("data-state", "open", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#tasks")).to_have_attribute("data-live", "true", timeout=UI_TIMEOUT_MS)
    return DemoPage(page, context, errors)


async def expect_tasks(page: Page, titles: list[str]) -> None:
    """Exactly these tasks, in this order: none missing, none twice (snapshot and stream)."""
    await expect(page.locator("#tasks li")).to_have_text(titles, timeout=UI_TIMEOUT_MS)


async def drive(browser: Browser, servers: list[ServerProcess], database_url: str, board: int) -> None:  # noqa: F811
    alice, bob = await asyncio.gather(
        open_board(browser, servers[0], board, "alice"), open_board(browser, servers[-1], board, "bob")
    )
    pages = (alice.page, bob.page)
    for page in pages:
        await expect(page.locator("#title")).to_have_text("Groceries")
        await expect_tasks(page, ["milk"])  # the snapshot

    # A client event on one page, live on the other (another server in the two-server case).
    await alice.page.fill("#task-title", "bread <b>now</b>")
    await alice.page.click("#new-task button")
    for page in pages:
        await expect_tasks(page, ["milk", "bread <b>now</b>"])  # text, never markup
    assert await bob.page.locator("#tasks b").count() == 0

    # Saved from Django code in another process: Task.save publishes it.
    example_manage(database_url, "add_task", str(board), "eggs")
    for page in pages:
        await expect_tasks(page, ["milk", "bread <b>now</b>", "eggs"])

    # The schema of task.create: an empty title never reaches the handler.
    await bob.page.fill("#task-title", "")
    await bob.page.click("#new-task button")
    await expect(bob.page.locator("#error")).to_have_attribute("data-code", "validation_error", timeout=UI_TIMEOUT_MS)
    await expect(bob.page.locator("#error")).to_contain_text("title")
    await expect_tasks(bob.page, ["milk", "bread <b>now</b>", "eggs"])

    # The client event again with the same id (a reconnect's resend): one task, the same ack.
    resend = """async (board) => {
        const data = {board, title: "butter"};
        const first = await window.taskboard.client.call("task.create", data, {id: "resend-1"});
        const again = await window.taskboard.client.call("task.create", data, {id: "resend-1"});
        return [first, again];
    }"""
    first, again = await bob.page.evaluate(resend, board)
    assert first == again, (first, again)
    for page in pages:
        await expect_tasks(page, ["milk", "bread <b>now</b>", "eggs", "butter"])
    alice.assert_no_errors()
    bob.assert_no_errors()


async def assert_refused_to_non_member(server: ServerProcess, board: int) -> None:
    """The board: namespace's can_subscribe, the snapshot view and the handler's check: carol, not
    a member, gets ``forbidden`` for ``board:ID`` and for ``task.create`` there, 404 for its tasks."""
    token = obtain_tokens(server, "carol")["access"]
    status, _, body = http_json(
        "GET", f"{server.http_url}/boards/{board}/tasks/", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 404, body
    ws = await connect(server, token)
    assert (await recv_json(ws))["event"] == "session.welcome"
    refused = await call(ws, {"event": "stream.subscribe", "id": "s1", "data": {"stream": f"board:{board}"}})
    assert refused["event"] == "error", refused
    assert refused["data"]["code"] == "forbidden", refused
    assert refused["data"]["message"] == f"board:{board}: not a member of this board"
    created = await call(ws, {"event": "task.create", "id": "t1", "data": {"board": board, "title": "x"}})
    assert created["data"]["code"] == "forbidden", created


async def test_taskboard_on_sqlite_one_server_without_redis(
    browser: Browser,  # noqa: F811
    started: list[ServerProcess],
    tmp_path: Path,
) -> None:
    """Installable example, SQLite without Redis: one ``manage.py serve`` of the example project;
    two pages see tasks from the client event and from Django code live; a schema error shows;
    a user who is not a member of the board is refused."""
    database_url = f"sqlite:///{tmp_path / 'taskboard.sqlite3'}"
    board = prepare_board(database_url)
    start_servers(1, database_url, tmp_path, started)
    await drive(browser, started, database_url, board)
    await assert_refused_to_non_member(started[0], board)


async def test_taskboard_on_postgres_two_servers_with_redis(
    browser: Browser,  # noqa: F811
    started: list[ServerProcess],
    postgres_url: str | None,
    tmp_path: Path,
) -> None:
    """Installable example, PostgreSQL with two servers and Redis: the pages are on different
    servers; what one creates, and what Django code saves, the other sees live."""
    database_url = postgres_url or f"sqlite:///{tmp_path / 'taskboard.sqlite3'}"
    board = prepare_board(database_url)
    redis = RedisServer(port=free_port(), workdir=tmp_path).start()
    try:
        start_servers(2, database_url, tmp_path, started, REDIS_URL=redis.url)
        await drive(browser, started, database_url, board)
        for server in started:
            server.stop()
    finally:
        redis.kill()


@pytest.mark.slow  # ~7 s: a cold strict mypy run of the example; run with -m slow
def test_example_passes_strict_mypy_with_its_own_settings() -> None:
    """The example is typed like the repository: strict mypy with the Django plugin loading the
    example's own settings (its mypy.ini; the repository's run excludes ``examples/``)."""
    done = subprocess.run(
        [PYTHON, "-m", "mypy", "."],
        cwd=EXAMPLE,
        env=example_env("sqlite:///:memory:"),
        capture_output=True,
        text=True,
        timeout=scaled(240),
    )
    assert done.returncode == 0, done.stdout + done.stderr


EXCERPT = re.compile(r"```(?:python|js)\n(?:#|//) (examples/taskboard/\S+)\n(.*?)```", re.DOTALL)


def test_platform_docs_show_the_examples_code() -> None:
    """docs/platform.md, "Adding it to your project", shows the example's own code: every block
    headed by an example file's path is a verbatim excerpt of that file."""
    docs = (REPO / "docs" / "platform.md").read_text()
    section = docs[docs.index("# Adding it to your project") :]
    excerpts = EXCERPT.findall(section)
    assert len(excerpts) >= 8, excerpts
    for path, code in excerpts:
        assert code in (REPO / path).read_text(), f"docs/platform.md shows code that is not in {path}:\n{code}"
