"""Static import graph of the package (every ``import`` statement, inside functions too)."""

import ast
import os
from typing import Iterator, NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "clipreid_plugin"


class Import(NamedTuple):
    """One imported module (with the name taken from it, if any) and where it is imported."""

    importer: str  # dotted module name of the importing file
    path: str  # file, relative to the repository root
    lineno: int
    module: str  # absolute dotted name of the imported module
    name: str  # the name imported from it ("" for ``import x``)


def module_name(path: str) -> str:
    """Dotted module name of a file under the repository root."""
    rel = os.path.relpath(path, REPO)[:-len(".py")].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def package_files(root: str = PACKAGE) -> Iterator[str]:
    """Every .py file below ``REPO/root``."""
    for folder, _, files in os.walk(os.path.join(REPO, root)):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def imports_of(path: str) -> Iterator[Import]:
    """Every import of one file, relative imports resolved to absolute names."""
    importer = module_name(path)
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    rel = os.path.relpath(path, REPO)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, rel, node.lineno, alias.name, "")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = importer.split(".")
                base = parts if is_package else parts[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield Import(importer, rel, node.lineno, module, alias.name)
        elif isinstance(node, ast.Call) and _dynamic_import_target(node):
            yield Import(importer, rel, node.lineno, _dynamic_import_target(node), "")


def _dynamic_import_target(call: ast.Call) -> str:
    """The module a ``importlib.import_module("x")`` / ``__import__("x")`` call with a literal
    name imports ("" for any other call)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name not in ("import_module", "__import__") or not call.args:
        return ""
    arg = call.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else ""
