"""The package is what setup.py installs: emzoo's own subpackages plus apps and zoo configs.

A source checkout once appended the repository root to ``emzoo.__path__``, so ``emzoo.tests``,
``emzoo.benchmarks`` and even ``emzoo.emzoo`` imported. These tests pin the intended layout and
that imports flow one way (no circles between the modules the layout issue untangled).
"""

import ast
import importlib
import os
import pathlib
import pkgutil
import subprocess
import sys


import emzoo

REPO = pathlib.Path(__file__).resolve().parents[1]
INTENDED = {"adaptation", "apps", "data", "engine", "export", "layers", "losses", "models",
            "napari", "pretrained", "samples", "training", "zoo_configs"}


def test_only_the_intended_subpackages_import(tmp_path):
    code = (
        "import importlib, sys\n"
        "ok = []\n"
        "for name in ('apps', 'zoo_configs', 'engine', 'training', 'models.film', 'export',\n"
        "             'adaptation'):\n"
        "    importlib.import_module('emzoo.' + name); ok.append(name)\n"
        "bad = []\n"
        "for name in ('tests', 'benchmarks', 'emzoo', 'third_party', 'setup'):\n"
        "    try:\n"
        "        importlib.import_module('emzoo.' + name)\n"
        "        bad.append(name)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "print(ok, bad)\n"
        "sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=str(tmp_path),  # the installed emzoo, not the checkout's folder
                            env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_package_search_path_is_the_package_folder_alone():
    assert [pathlib.Path(p) for p in emzoo.__path__] == [pathlib.Path(emzoo.__file__).parent]
    packages = {m.name for m in pkgutil.iter_modules(emzoo.__path__) if m.ispkg}
    assert packages <= INTENDED, packages - INTENDED


def _emzoo_import_graph():
    """``{module: modules it imports}`` over emzoo/ and apps/, from every import statement.

    Lazy imports inside functions count too: an arrow is an arrow, whenever it runs. A
    ``from package import name`` points at ``package.name`` when that is a module, else at the
    package; parent packages imported implicitly are not arrows.
    """
    files = {}
    for path in list((REPO / "emzoo").rglob("*.py")) + list((REPO / "apps").glob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[0] == "apps":
            parts = ["emzoo"] + parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    graph = {}
    for name, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files
                           else node.module for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles():
    assert _cycles(_emzoo_import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_library_never_imports_apps():
    graph = _emzoo_import_graph()
    offenders = {name: sorted(e for e in edges if e.startswith("emzoo.apps"))
                 for name, edges in graph.items() if not name.startswith("emzoo.apps")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_the_test_drivers_registers_nothing(tmp_path):
    # emzoo.testing is for any architecture's tests: the suite's ``tiny-test`` architecture and
    # its Keras registration live in tests/emzoo_test_helpers.py, which a fresh Python cannot see.
    code = (
        "import keras\n"
        "from emzoo import zoo\n"
        "def registered():\n"
        "    return set(zoo.architectures()) | set(keras.saving.get_custom_objects())\n"
        "before = registered()\n"
        "import emzoo.testing\n"
        "assert registered() == before, sorted(registered() - before)\n"
        "assert 'tiny-test' not in before\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=str(tmp_path), env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]


def test_weights_module_imports_no_registry_or_model():
    source = (REPO / "emzoo" / "weights.py").read_text()
    assert "from emzoo import zoo" not in source and "emzoo.models" not in source
    assert importlib.import_module("emzoo.weights")


def test_test_files_have_unique_names():
    # tests/ has no __init__.py files: pytest imports test modules by basename, so two files of one
    # name in different folders stop the whole run at collection.
    seen = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}
