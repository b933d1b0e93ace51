"""Issue 20, done-means: no ``import uvicorn`` and no private (underscore) name of uvicorn,
websockets, channels, channels_redis or ``logging`` anywhere in the project.

The check reads every project ``.py`` file's syntax tree (not its text, so a comment or a
string does not count and an alias does not hide a use) and reports ``file:line`` for:

- an import of uvicorn (the server is the project's own: realtime/server/);
- an import of a private module (``websockets._x``) or of a private name
  (``from logging import _srcfile``) of those packages;
- an attribute whose name starts with one underscore read or set on one of those modules,
  on a name imported from them (``ServerProtocol._x``), on a variable assigned from a call
  of such a name (``layer = InMemoryChannelLayer(); layer._groups``), through
  ``getattr``/``setattr`` with a constant name, or on ``self`` in a class deriving from one
  of their classes, unless a project class defines that name (a project mixin's method).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WATCHED = ("uvicorn", "websockets", "channels", "channels_redis", "logging")
SKIPPED_PARTS = {".venv", "node_modules", ".git", "__pycache__", "staticfiles"}
SKIPPED_PREFIXES = ("docs/research/",)


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def watched_module(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in WATCHED


def project_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if SKIPPED_PARTS.intersection(path.relative_to(ROOT).parts) or relative.startswith(SKIPPED_PREFIXES):
            continue
        files.append(path)
    return files


class PrivateUseFinder(ast.NodeVisitor):
    """Collects ``(line, what)`` for every use listed in the module docstring."""

    def __init__(self, project_names: set[str]) -> None:
        self.project_names = project_names  # private names the project's own classes define
        self.found: list[tuple[int, str]] = []
        self.tracked: set[str] = set()  # local names bound to a watched module or its objects
        self.classes: list[tuple[bool, set[str]]] = []  # (derives from a watched class, own attributes)

    def report(self, node: ast.AST, what: str) -> None:
        self.found.append((getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "uvicorn":
                self.report(node, f"import {alias.name}")
            if watched_module(alias.name):
                if any(private(part) for part in alias.name.split(".")):
                    self.report(node, f"import of private module {alias.name}")
                self.tracked.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module if node.level == 0 else None
        if module is not None and module.split(".")[0] == "uvicorn":
            self.report(node, f"from {module} import ...")
        if watched_module(module):
            assert module is not None
            if any(private(part) for part in module.split(".")):
                self.report(node, f"import from private module {module}")
            for alias in node.names:
                if private(alias.name):
                    self.report(node, f"from {module} import {alias.name}")
                self.tracked.add(alias.asname or alias.name)

    def is_tracked(self, node: ast.expr) -> bool:
        while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
            node = node.func if isinstance(node, ast.Call) else node.value
        return isinstance(node, ast.Name) and node.id in self.tracked

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call) and self.is_tracked(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.tracked.add(target.id)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        derives = any(self.is_tracked(base) for base in node.bases)
        own = {
            target.attr
            for child in ast.walk(node)
            if isinstance(child, ast.Assign | ast.AnnAssign | ast.AugAssign)
            for target in (child.targets if isinstance(child, ast.Assign) else [child.target])
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
        }
        own |= {child.name for child in node.body if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)}
        self.classes.append((derives, own))
        self.generic_visit(node)
        self.classes.pop()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if private(node.attr):
            if self.is_tracked(node.value):
                self.report(node, f"private attribute {ast.unparse(node)}")
            elif (
                isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and self.classes
                and self.classes[-1][0]
                and node.attr not in self.classes[-1][1]
                and node.attr not in self.project_names
            ):
                self.report(node, f"inherited private attribute {ast.unparse(node)}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr", "delattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
            and self.is_tracked(node.args[0])
        ):
            self.report(node, f"{node.func.id}(..., {node.args[1].value!r})")
        self.generic_visit(node)


def defined_private_names(tree: ast.AST) -> set[str]:
    """Private names a module's classes define: methods, and attributes set on ``self``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and private(node.name):
            names.add(node.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and private(node.attr)
        ):
            names.add(node.attr)
    return names


def private_uses(tree: ast.AST, project_names: set[str]) -> list[tuple[int, str]]:
    finder = PrivateUseFinder(project_names)
    finder.visit(tree)
    return finder.found


def test_the_finder_sees_each_kind_of_use() -> None:
    """The check itself: each shape it must catch is caught, and public uses are not."""
    source = """
import logging
import uvicorn
import websockets.server as wss
from websockets._speedups import apply_mask
from logging import _srcfile
from channels.layers import InMemoryChannelLayer
from websockets.server import ServerProtocol
logging._srcfile = None
wss._private
InMemoryChannelLayer._internal
layer = InMemoryChannelLayer()
layer._groups
getattr(logging, "_lock")
class Sub(ServerProtocol):
    def __init__(self):
        self._mine = 1
    def f(self):
        return self._mine, self._theirs
logging.getLogger("x").info("public")
"""
    tree = ast.parse(source)
    found = [what for _, what in private_uses(tree, project_names=set())]
    assert found == [
        "import uvicorn",
        "import from private module websockets._speedups",
        "from logging import _srcfile",
        "private attribute logging._srcfile",
        "private attribute wss._private",
        "private attribute InMemoryChannelLayer._internal",
        "private attribute layer._groups",
        "getattr(..., '_lock')",
        "inherited private attribute self._theirs",
    ]


def test_no_uvicorn_and_no_private_library_names() -> None:
    """Issue 20: the project uses only the public API of uvicorn (none), websockets,
    channels, channels_redis and logging. Fails listing every ``file:line``."""
    trees = {path.relative_to(ROOT).as_posix(): ast.parse(path.read_text(encoding="utf-8")) for path in project_files()}
    project_names = set().union(*(defined_private_names(tree) for tree in trees.values()))
    problems = []
    for relative, tree in trees.items():
        if relative == "tests/unit/test_no_private_names.py":
            continue  # its sample source above is a string, not a use
        problems += [f"{relative}:{line}: {what}" for line, what in private_uses(tree, project_names)]
    assert not problems, "\n".join(problems)
