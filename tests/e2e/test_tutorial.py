"""docs/tutorial.md, run as a reader would (issue 18: "a test runs the tutorial's commands").

The tutorial is read as a script of steps, in document order:

- a ```` ```sh ```` block is typed into a terminal; its first line ``# terminal N`` says which,
  and ``(keeps running`` there marks a long-running command (started in the background, its
  output read as it comes);
- a ```` ```text terminal=N ```` block is what terminal N prints next: ``…`` in a line matches
  anything, a line of only ``…`` any number of lines;
- ``<!-- ctrl-c: terminal N -->`` is the reader pressing Ctrl-C there (SIGINT to the
  terminal's process group); the command must exit 0.

Each terminal is its own ``bash`` with its own exported variables, in the repository root.
Everything a terminal prints must be shown by the tutorial (elided with ``…`` at most) before
the next command in that terminal and at Ctrl-C, so a duplicate or missing event fails.

Only what the tutorial names as the reader's to change is changed:

- ``make serve`` (terminal 1) runs the steps ``scripts/serve.sh`` takes (``migrate``,
  ``seed_demo_users``, ``serve``; checked below) on a new SQLite file and a free port;
- the ``export`` lines of ``BASE``, ``REALTIME_URL``, ``REALTIME_PASSWORD`` and
  ``DJANGO_SECRET_KEY`` get this server's address, alice's password as ``seed_demo_users``
  printed it, and the test key; ``DATABASE_URL`` is set in every terminal, as the tutorial
  says to when the server's database is not the default;
- ``127.0.0.1:8000`` in expected output is this server's address.

Every other command runs verbatim, through public entry points only (``manage.py``, the CLI,
HTTP with curl, ``realtime.publish``).
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.conftest import scaled
from tests.e2e.helpers import REPO, SECRET_KEY, ServerProcess, base_env, manage

TUTORIAL = REPO / "docs" / "tutorial.md"
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
OVERRIDDEN = ("BASE", "REALTIME_URL", "REALTIME_PASSWORD", "DJANGO_SECRET_KEY")
# What issue 18 asks the tutorial to walk through, as text its commands must contain.
TEACHES = {
    "get a token": "/api/auth/token/",
    "connect": "realtime_client whoami",
    "subscribe": "realtime_client --username alice tail room:",
    "publish from Django code": "realtime.publish(",
    "resume after a cut": "tail room:tutorial --since ",
}

FENCE = re.compile(r"```(\S*)[ \t]*(.*)")
TERMINAL_LINE = re.compile(r"# terminal (\d+)(.*)")
CTRL_C = re.compile(r"<!-- ctrl-c: terminal (\d+) -->")
EXPORT = re.compile(r"export ([A-Z_]+)=")


@dataclass(frozen=True)
class Step:
    kind: Literal["run", "expect", "ctrl-c"]
    terminal: int
    lines: tuple[str, ...] = ()
    background: bool = False
    where: int = 0  # line number in the tutorial


def parse(text: str) -> list[Step]:
    """The tutorial's steps; every fenced block must be a command or a terminal's output."""
    lines = text.splitlines()
    steps: list[Step] = []
    number = 0
    while number < len(lines):
        line = lines[number].strip()
        if found := CTRL_C.fullmatch(line):
            steps.append(Step("ctrl-c", int(found[1]), where=number + 1))
        elif fence := FENCE.fullmatch(line):
            end = lines.index("```", number + 1)
            body = tuple(lines[number + 1 : end])
            if fence[1] == "sh":
                head = TERMINAL_LINE.fullmatch(body[0]) if body else None
                assert head, f"tutorial line {number + 1}: a sh block starts with '# terminal N'"
                background = "(keeps running" in head[2]
                steps.append(Step("run", int(head[1]), body[1:], background, number + 1))
            else:
                output = re.fullmatch(r"terminal=(\d+)", fence[2]) if fence[1] == "text" else None
                assert output, f"tutorial line {number + 1}: a block is ```sh (run) or ```text terminal=N (output)"
                steps.append(Step("expect", int(output[1]), body, where=number + 1))
            number = end
        number += 1
    return steps


def line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.rstrip().split("…")))


@dataclass
class Terminal:
    """One terminal: its shell variables, what it printed, and its long-running command."""

    number: int
    env: dict[str, str]
    printed: list[str] = field(default_factory=list)
    shown: int = 0  # printed lines the tutorial has shown so far
    proc: subprocess.Popen[str] | None = None
    incoming: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def transcript(self) -> str:
        return "\n".join(f"  {'=' if i < self.shown else '+'} {line}" for i, line in enumerate(self.printed))

    def fail(self, step: Step, message: str) -> AssertionError:
        return AssertionError(
            f"tutorial line {step.where}, terminal {self.number}: {message}\nprinted so far:\n{self.transcript()}"
        )

    def all_shown(self, step: Step) -> None:
        if self.shown < len(self.printed):
            raise self.fail(step, "printed lines the tutorial does not show")

    def run(self, step: Step, script: str, scratch: Path) -> None:
        """Type the block and wait for the prompt; the exported variables carry on."""
        if self.proc is not None:
            raise self.fail(step, "a command still runs here: the tutorial must say Ctrl-C first")
        self.all_shown(step)
        env_file = scratch / f"env-{step.where}"
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", f"{script}\nenv -0 > {shlex.quote(str(env_file))}"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=scaled(60),
        )
        self.printed.extend(result.stdout.splitlines())
        if result.returncode != 0:
            raise self.fail(step, f"the command exited {result.returncode}")
        pairs = (item.partition("=") for item in env_file.read_text().split("\0") if item)
        self.env = {name: value for name, _, value in pairs}

    def start(self, step: Step, script: str) -> None:
        """Type a long-running command: it runs on while the tutorial goes on."""
        if self.proc is not None:
            raise self.fail(step, "a command still runs here: the tutorial must say Ctrl-C first")
        self.all_shown(step)
        self.proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.incoming.put(line.rstrip("\n"))
        self.incoming.put(None)

    def _next_line(self, deadline: float) -> str | None:
        while self.shown >= len(self.printed):
            if self.proc is None:
                return None  # a finished command prints nothing more
            try:
                line = self.incoming.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            self.printed.append(line)
        self.shown += 1
        return self.printed[self.shown - 1]

    def expect(self, step: Step, lines: Sequence[str], timeout: float = 20.0) -> None:
        """The next lines printed here are ``lines`` (waiting for a long-running command's)."""
        deadline = time.monotonic() + scaled(timeout)
        skipping = False
        for wanted in lines:
            if wanted.strip() == "…":
                skipping = True
                continue
            pattern = line_pattern(wanted)
            while True:
                got = self._next_line(deadline)
                if got is None:
                    raise self.fail(step, f"no line {wanted!r}")
                if pattern.fullmatch(got.rstrip()):
                    break
                if not skipping:
                    raise self.fail(step, f"expected {wanted!r}, got {got!r}")
            skipping = False
        if skipping:
            self.shown = len(self.printed)

    def interrupt(self, step: Step) -> None:
        """Ctrl-C: SIGINT to the foreground job; it must exit 0 having printed nothing unshown."""
        if self.proc is None:
            raise self.fail(step, "Ctrl-C, but nothing runs here")
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise self.fail(step, "still running 20 s after Ctrl-C") from None
        while (line := self.incoming.get(timeout=scaled(10))) is not None:
            self.printed.append(line)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None
        if code != 0:
            raise self.fail(step, f"exited {code} after Ctrl-C")
        self.all_shown(step)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def alice_password(seed_output: str) -> str:
    found = re.search(r"^  alice +(\S+) +\(user\)$", seed_output, re.MULTILINE)
    assert found, f"seed_demo_users printed no password for alice:\n{seed_output}"
    return found[1]


def test_make_serve_takes_the_steps_the_tutorial_test_runs() -> None:
    """The test runs ``make serve``'s steps itself (on another port and database): they are these."""
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^serve:.*\n\tscripts/serve\.sh$", makefile, re.MULTILINE)
    script = (REPO / "scripts" / "serve.sh").read_text()
    for command in (
        "manage.py migrate --noinput",
        "manage.py seed_demo_users",
        f"manage.py serve --host {DOCUMENTED_ADDRESS.replace(':', ' --port ')}",
    ):
        assert command in script, f"scripts/serve.sh no longer runs {command!r}: update docs/tutorial.md"


def test_tutorial_teaches_what_issue_18_asks() -> None:
    """Connect, subscribe, publish from Django code, resume after a cut: each is a command."""
    commands = "\n".join("\n".join(step.lines) for step in parse(TUTORIAL.read_text()) if step.kind == "run")
    missing = [topic for topic, text in TEACHES.items() if text not in commands]
    assert not missing, f"docs/tutorial.md no longer shows how to: {missing}"
    assert "DATABASE_URL" in TUTORIAL.read_text(), "the tutorial must say how to point it at another database"


def test_tutorial_commands_run_as_written(tmp_path: Path) -> None:
    """Issue 18: every command of docs/tutorial.md, in order, against a real server on SQLite:
    a token is obtained, the live tail prints the published event with its offset, and the
    resume with --since prints exactly the events published while it was stopped."""
    steps = parse(TUTORIAL.read_text())
    database_url = f"sqlite:///{tmp_path / 'tutorial.sqlite3'}"
    env = {k: v for k, v in base_env(database_url).items() if k != "DJANGO_SECRET_KEY"}
    terminals: dict[int, Terminal] = {}
    server: ServerProcess | None = None
    overrides: dict[str, str] = {}
    substituted: set[str] = set()

    def start_service(step: Step) -> Terminal:
        """``make serve``, on this test's database and port (scripts/serve.sh's steps)."""
        nonlocal server
        assert (step.terminal, step.lines, step.background) == (1, ("make serve",), True), step
        migrate = manage(database_url, "migrate", "--noinput", check=True)
        seed = manage(database_url, "seed_demo_users", check=True)
        server = ServerProcess(env=base_env(database_url), log_path=tmp_path / "server.log").start()
        overrides.update(
            BASE=server.http_url,
            REALTIME_URL=server.ws_url,
            REALTIME_PASSWORD=alice_password(seed.stdout),
            DJANGO_SECRET_KEY=SECRET_KEY,
        )
        printed = [*migrate.stdout.splitlines(), *seed.stdout.splitlines(), *server.stdout_lines]
        return Terminal(1, env, printed=[line.rstrip("\n") for line in printed])

    def script(step: Step) -> str:
        lines = []
        for line in step.lines:
            export = EXPORT.match(line)
            if export and export[1] in OVERRIDDEN:
                substituted.add(export[1])
                line = f"export {export[1]}={shlex.quote(overrides[export[1]])}"
            lines.append(line)
        return "\n".join(lines)

    try:
        for step in steps:
            if step.terminal == 1 and step.kind == "run":
                assert server is None, "the tutorial starts the service once"
                terminals[1] = start_service(step)
                continue
            if step.terminal == 1 and step.kind == "ctrl-c":
                assert server is not None
                assert server.stop(signal.SIGINT) == 0, server.log_text()
                continue
            terminal = terminals.setdefault(step.terminal, Terminal(step.terminal, dict(env)))
            if step.kind == "run" and step.background:
                terminal.start(step, script(step))
            elif step.kind == "run":
                terminal.run(step, script(step), tmp_path)
            elif step.kind == "expect":
                address = server.http_url.removeprefix("http://") if server else DOCUMENTED_ADDRESS
                terminal.expect(step, [line.replace(DOCUMENTED_ADDRESS, address) for line in step.lines])
            else:
                terminal.interrupt(step)
        assert substituted == set(OVERRIDDEN), f"the tutorial no longer exports {set(OVERRIDDEN) - substituted}"
        assert server is not None
        assert server.proc is not None
        assert server.proc.poll() is not None, "the tutorial ends by stopping the server"
        for terminal in terminals.values():
            assert terminal.proc is None, f"terminal {terminal.number} still runs a command at the end"
            assert terminal.shown == len(terminal.printed), f"terminal {terminal.number}:\n{terminal.transcript()}"
    finally:
        for terminal in terminals.values():
            terminal.kill()
        if server is not None:
            server.stop()
