"""The host/plugin boundary, checked on the source (every import statement, inside functions too).

* The host (everything in clipreid_plugin/ outside plugins/) imports no plugin and no
  development tooling (tools/parity_harness).
* A plugin reaches the host through public names only (no ``_private`` module or name).
* The host's sub-packages depend on each other without cycles (a cycle hidden behind an import
  inside a function still counts).
"""

from collections import defaultdict

from import_graph import PACKAGE, imports_of, package_files

PLUGINS = f"{PACKAGE}.plugins"


def _all_imports():
    return [imp for path in package_files() for imp in imports_of(path)]


def _is_host(module: str) -> bool:
    return module.startswith(PACKAGE) and not module.startswith(PLUGINS)


def _target(i) -> str:
    """What an import brings in: ``from clipreid_plugin import plugins`` brings the package
    ``clipreid_plugin.plugins`` (the name may be a module), so both forms are checked."""
    return f"{i.module}.{i.name}" if i.name else i.module


def test_host_imports_no_plugin_and_no_dev_tooling():
    bad = [f"{i.path}:{i.lineno} imports {_target(i)}"
           for i in _all_imports()
           if _is_host(i.importer) and (i.module.startswith(PLUGINS) or _target(i).startswith(PLUGINS)
                                        or i.module.split(".")[0] in ("parity_harness", "tools"))]
    assert not bad, "the host must not import plugins or development tooling:\n  " + "\n  ".join(bad)


# The package face a plugin imports from (docs/ARCHITECTURE.md, "Writing a plugin"): the host's
# sub-packages and the one-job modules of clipreid_plugin.utils; everything deeper is private.
FACES = {f"{PACKAGE}.{p}" for p in ("config", "data", "modeling", "engine", "evaluation", "solver", "utils")}


def _is_face(module: str) -> bool:
    return module in FACES or (module.startswith(f"{PACKAGE}.utils.") and module.count(".") == 2)


def test_plugins_import_the_host_only_through_its_face():
    bad = [f"{i.path}:{i.lineno} imports {i.module}" + (f".{i.name}" if i.name else "")
           for i in _all_imports()
           if i.importer.startswith(PLUGINS) and _is_host(i.module) and not _is_face(i.module)]
    assert not bad, ("a plugin imports the host through its face (" + ", ".join(sorted(FACES)) +
                     ", clipreid_plugin.utils.<module>):\n  " + "\n  ".join(bad))


def test_plugins_use_public_names_of_the_host_only():
    bad = []
    for i in _all_imports():
        if i.importer.startswith(PLUGINS) and _is_host(i.module):
            private = [p for p in i.module.split(".") + [i.name] if p.startswith("_") and p != "__init__"]
            if private:
                bad.append(f"{i.path}:{i.lineno} imports private {i.module}" + (f".{i.name}" if i.name else ""))
    assert not bad, "a plugin may only use the host's public names:\n  " + "\n  ".join(bad)


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_host_subpackages_form_no_cycle():
    edges = defaultdict(dict)  # subpackage -> {dependency: first import seen}
    for i in _all_imports():
        if not (_is_host(i.importer) and _is_host(i.module)):
            continue
        a, b = _subpackage(i.importer), _subpackage(i.module)
        if a and b and a != b:
            edges[a].setdefault(b, f"{i.path}:{i.lineno} imports {i.module}")

    def find_cycle():
        state = {}

        def visit(node, path):
            state[node] = "open"
            for dep in edges.get(node, {}):
                if state.get(dep) == "open":
                    return path + [dep]
                if dep not in state:
                    cycle = visit(dep, path + [dep])
                    if cycle:
                        return cycle
            state[node] = "done"
            return None

        for start in list(edges):
            if start not in state:
                cycle = visit(start, [start])
                if cycle:
                    return cycle
        return None

    cycle = find_cycle()
    if cycle:
        start = cycle.index(cycle[-1])
        loop = cycle[start:]
        where = [edges[a][b] for a, b in zip(loop, loop[1:])]
        raise AssertionError("import cycle between host sub-packages " + " -> ".join(loop) + ":\n  "
                             + "\n  ".join(where))


def test_the_checks_see_imports_inside_functions(tmp_path):
    """The scanner resolves relative imports and finds those inside function bodies."""
    import import_graph

    pkg = tmp_path / "clipreid_plugin" / "engine"
    pkg.mkdir(parents=True)
    f = pkg / "hidden.py"
    f.write_text("def later():\n    from ..plugins.clipreid import stage1\n")
    old = import_graph.REPO
    import_graph.REPO = str(tmp_path)
    try:
        found = list(import_graph.imports_of(str(f)))
    finally:
        import_graph.REPO = old
    assert [(i.importer, i.lineno, i.module, i.name) for i in found] == [
        ("clipreid_plugin.engine.hidden", 2, "clipreid_plugin.plugins.clipreid", "stage1")]


def test_the_checks_see_every_way_of_importing_a_plugin(tmp_path, monkeypatch):
    """``from clipreid_plugin import plugins``, ``from .. import plugins``, ``importlib.import_module``
    and ``__import__`` of a plugin from host code are all reported by the host check."""
    import import_graph

    pkg = tmp_path / "clipreid_plugin" / "engine"
    pkg.mkdir(parents=True)
    (pkg / "sneaky.py").write_text(
        "import importlib\n"
        "from clipreid_plugin import plugins\n"
        "from .. import plugins as p2\n"
        "def later():\n"
        "    importlib.import_module('clipreid_plugin.plugins.clipreid')\n"
        "    __import__('clipreid_plugin.plugins.clipreid.stage1')\n")
    monkeypatch.setattr(import_graph, "REPO", str(tmp_path))
    found = [_target(i) for i in import_graph.imports_of(str(pkg / "sneaky.py"))]
    plugin_imports = [t for t in found if t.startswith(PLUGINS)]
    assert plugin_imports == ["clipreid_plugin.plugins", "clipreid_plugin.plugins",
                              "clipreid_plugin.plugins.clipreid", "clipreid_plugin.plugins.clipreid.stage1"]
