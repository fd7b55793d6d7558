# -*- test-case-name: tests.test_layout -*-
"""
The shape of the code, checked: the file list shows the design only while
every module stays one concept (at most 800 lines), no two modules import
each other (directly or around a circle), nothing reaches into Twisted's
private names or into another module's private names, and every module says
which tests cover it.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

#: The repository: the directory holding setup.cfg.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The longest a module may be.
MAX_LINES = 800

#: Twisted private names read on purpose, each in one wrapper whose comment
#: says why and which public API would replace it: module -> names.
WRAPPED_PRIVATES = {
    # HTTPChannel holds the request line privately until the whole body is
    # in; a streaming proxy needs it once the headers are (requestLine()).
    "bluegreen.proxy.request": {"_command", "_path", "_version"},
    # HTTPChannel holds what a client sends after the request it is handling
    # privately; an upgraded connection's first bytes may be there
    # (ProxyChannel.takeOver()).
    "bluegreen.proxy.channel": {"_dataBuffer"},
}

#: Twisted private methods overridden on purpose, each in one subclass whose
#: comment says why: module -> names.
OVERRIDDEN_PRIVATES = {
    # HTTPChannel answers every request it cannot parse with a bare 400 and
    # no log line; ProxyChannel gives it a body, a log line and a count like
    # its other refusals.  A public hook (a method returning the response
    # for a parse error) would replace it.
    "bluegreen.proxy.channel": {"_respondToBadRequestAndDisconnect"},
}

#: The sample app is a separate program shipped as data for the demo; it is
#: held to the same rules but is not part of the service's import graph.
SAMPLE_APP = "bluegreen.demo.meow"


def modules() -> dict[str, str]:
    """
    Every module of the C{bluegreen} package.

    @return: Dotted module name -> file path.
    """
    found = {}
    for directory, _, files in os.walk(os.path.join(ROOT, "bluegreen")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            found[dotted.removesuffix(".__init__")] = path
    return found


def parse(path: str) -> ast.Module:
    """
    @param path: A Python file.
    @return: Its syntax tree.
    """
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def importedModules(module: str, tree: ast.Module, known: set[str]) -> set[str]:
    """
    The C{bluegreen} modules a module imports anywhere in its body (at the
    top, inside functions, or under C{TYPE_CHECKING}: each is a dependency).

    @param module: The importing module's dotted name.
    @param tree: Its syntax tree.
    @param known: Every module of the package.
    @return: The dotted names of the imported C{bluegreen} modules.
    """
    package = module if module + ".__init__" in known else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bluegreen"):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([base] if base else [])])
            if not base.startswith("bluegreen"):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    found.discard(module)
    # Importing a.b.c runs a/__init__ and a/b/__init__ too, but those hold
    # only docstrings here; the dependency that matters is the module itself.
    return {name for name in found if name in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """
    The strongly connected groups of more than one module (Tarjan).

    @param graph: Module -> the modules it imports.
    @return: Each group, sorted.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        onStack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in onStack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                onStack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def privateAttributes(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """
    Attribute reads and writes of private names on something other than
    C{self} or C{cls}.

    @param tree: A module's syntax tree.
    @return: C{(line, "value._name")} for each.
    """
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            yield node.lineno, f"{ast.unparse(owner)}.{node.attr}"


def ownPrivateNames(trees: dict[str, ast.Module]) -> set[str]:
    """
    The private names our own code defines: attributes it assigns
    (C{self._x = ...}), and classes, functions and module names.

    @param trees: Module -> syntax tree.
    @return: The names.
    """
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            ):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {name for name in names if name.startswith("_")}


class LayoutTests(SynchronousTestCase):
    """
    The package keeps the shape that README.rst's Architecture section
    describes.
    """

    def setUp(self) -> None:
        self.files = modules()
        self.trees = {name: parse(path) for name, path in self.files.items()}

    def test_moduleSize(self) -> None:
        """
        No module is over L{MAX_LINES} lines.
        """
        long = {}
        for name, path in self.files.items():
            with open(path, encoding="utf-8") as f:
                count = sum(1 for _ in f)
            if count > MAX_LINES:
                long[name] = count
        self.assertEqual(long, {})

    def test_noImportCycles(self) -> None:
        """
        No module imports itself through others, counting imports inside
        functions and under C{TYPE_CHECKING}.
        """
        known = set(self.files)
        known |= {
            name + ".__init__"
            for name, path in self.files.items()
            if path.endswith("__init__.py")
        }
        graph = {
            name: importedModules(name, tree, known)
            for name, tree in self.trees.items()
            if not name.startswith(SAMPLE_APP)
        }
        self.assertEqual(cycles(graph), [])

    def test_noTwistedPrivateImports(self) -> None:
        """
        Nothing imports a private Twisted module or name
        (C{twisted.web._newclient}, C{from twisted.x import _y}).
        """
        found: list[str] = []
        for name, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "twisted"
                ):
                    if re.search(r"\._", node.module or ""):
                        found.append(f"{name}:{node.lineno} {node.module}")
                    found.extend(
                        f"{name}:{node.lineno} {node.module}.{alias.name}"
                        for alias in node.names
                        if alias.name.startswith("_")
                    )
                elif isinstance(node, ast.Import):
                    found.extend(
                        f"{name}:{node.lineno} {alias.name}"
                        for alias in node.names
                        if alias.name.startswith("twisted")
                        and re.search(r"\._", alias.name)
                    )
        self.assertEqual(found, [])

    def test_noForeignPrivateAttributes(self) -> None:
        """
        No code reads or writes a private attribute that our own code does
        not define: such an attribute belongs to Twisted (or another
        library), and may change in any release.
        """
        ours = ownPrivateNames(self.trees)
        found = [
            f"{name}:{line} {text}"
            for name, tree in self.trees.items()
            for line, text in privateAttributes(tree)
            if text.rpartition(".")[2] not in ours
            and text.rpartition(".")[2] not in WRAPPED_PRIVATES.get(name, ())
        ]
        self.assertEqual(found, [])

    def test_wrappedPrivatesOnce(self) -> None:
        """
        Each private Twisted name read on purpose is read in one place only.
        """
        for module, names in WRAPPED_PRIVATES.items():
            uses = [
                text
                for line, text in privateAttributes(self.trees[module])
                if text.rpartition(".")[2] in names
            ]
            self.assertEqual(len(uses), len(names), uses)
            for other, tree in self.trees.items():
                if other != module:
                    self.assertEqual(
                        [
                            text
                            for line, text in privateAttributes(tree)
                            if text.rpartition(".")[2] in names
                        ],
                        [],
                        other,
                    )

    def test_noPrivateImportsAcrossModules(self) -> None:
        """
        No module imports another module's private name: what is shared is
        public in its own module.
        """
        found: list[str] = []
        for name, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (
                    node.level or (node.module or "").startswith("bluegreen")
                ):
                    found.extend(
                        f"{name}:{node.lineno} {node.module}.{alias.name}"
                        for alias in node.names
                        if alias.name.startswith("_")
                        and not alias.name.startswith("__")
                    )
        self.assertEqual(found, [])

    def test_headers(self) -> None:
        """
        Every module has a docstring and a C{test-case-name} header naming
        test modules that exist.
        """
        missing = []
        for name, path in self.files.items():
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            match = re.match(r"# -\*- test-case-name: ([\w.,]+) -\*-", first)
            if match is None:
                missing.append(f"{name}: no test-case-name header")
            else:
                for target in match.group(1).split(","):
                    parts = target.split(".")
                    testPath = os.path.join(ROOT, *parts)
                    if not (
                        os.path.exists(testPath + ".py") or os.path.isdir(testPath)
                    ):
                        missing.append(f"{name}: {target} does not exist")
            if ast.get_docstring(self.trees[name]) is None:
                missing.append(f"{name}: no docstring")
        self.assertEqual(missing, [])

    def test_overriddenPrivatesOnce(self) -> None:
        """
        Each Twisted private method overridden on purpose is defined in its
        one module only, and nothing calls it from outside.
        """
        for module, names in OVERRIDDEN_PRIVATES.items():
            for name, tree in self.trees.items():
                defined = {
                    node.name
                    for node in ast.walk(tree)
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                }
                if name == module:
                    self.assertEqual(names - defined, set(), module)
                else:
                    self.assertEqual(names & defined, set(), name)
                    used = [
                        text
                        for line, text in privateAttributes(tree)
                        if text.rpartition(".")[2] in names
                    ]
                    self.assertEqual(used, [], name)
