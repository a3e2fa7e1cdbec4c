"""The package's shape (docs/design.md): floors, no circles, short functions, small files.

These read the source with `ast` (no imports), so they run in a second and fail naming the
module, the line and the rule.
"""

import ast
import os

import pytest

from tests.helpers.paths import REPO_ROOT

PACKAGES = ("sdl_tf", "data_prep")
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 450

# Each module's floor; a module imports only from its own floor or lower ones.
# (prefix, floor): the longest matching prefix wins.
FLOORS = (
    ("sdl_tf.errors", 0),
    ("sdl_tf.utils", 0),
    ("sdl_tf.config_flags", 1),
    ("sdl_tf.config", 1),
    ("sdl_tf.labels", 2),
    ("sdl_tf.data", 3),
    ("sdl_tf.modeling", 3),
    ("sdl_tf.evaluation", 4),
    ("sdl_tf.training", 5),
    ("sdl_tf.serving", 5),
    ("sdl_tf", 6),  # the commands and their plumbing (cli)
    ("data_prep", 6),  # converters: command and library in one module each
)
LIBRARY_PACKAGES = ("sdl_tf.utils", "sdl_tf.labels", "sdl_tf.data", "sdl_tf.modeling",
                    "sdl_tf.evaluation", "sdl_tf.training", "sdl_tf.serving")


def _modules():
    """{module name: path} of every project module."""
    out = {}
    for package in PACKAGES:
        for root, _, files in os.walk(os.path.join(REPO_ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    rel = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
                    out[rel.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(path):
    """(imported project module, line) pairs of a file, module-level and inside functions."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from sdl_tf.modeling import losses` imports the module sdl_tf.modeling.losses.
            names = [(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                      else node.module, node.lineno) for a in node.names]
        else:
            continue
        for name, line in names:
            if name.split(".")[0] in PACKAGES:
                yield name, line


def _floor(module):
    return max((p for p in FLOORS if module == p[0] or module.startswith(p[0] + ".")),
               key=lambda p: len(p[0]))[1]


def test_no_import_from_a_lower_floor_to_a_higher_one():
    bad = [f"{m} (floor {_floor(m)}) line {line} imports {name} (floor {_floor(name)})"
           for m, path in MODULES.items() for name, line in _imports(path)
           if _floor(name) > _floor(m)]
    assert not bad, "\n".join(bad)


def test_library_never_imports_a_command_or_reads_flags():
    bad = []
    for m, path in MODULES.items():
        if not any(m == p or m.startswith(p + ".") for p in LIBRARY_PACKAGES):
            continue
        bad += [f"{m} line {line} imports {name}" for name, line in _imports(path)
                if _floor(name) == 6]
        source = open(path, encoding="utf-8").read()
        if "flags.FLAGS" in source:
            bad.append(f"{m} reads absl flags.FLAGS")
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    graph = {m: {name for name, _ in _imports(p) if name in MODULES and name != m}
             for m, p in MODULES.items()}
    # A package __init__ is imported with its modules; only module-to-module edges count.
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_functions_and_files_are_short(package):
    bad = []
    for m, path in MODULES.items():
        if not (m == package or m.startswith(package + ".")):
            continue
        text = open(path, encoding="utf-8").read()
        lines = text.count("\n")
        if lines > MAX_FILE_LINES:
            bad.append(f"{m}: {lines} lines (> {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{m} line {node.lineno}: {node.name} has {length} lines "
                               f"(> {MAX_FUNCTION_LINES})")
    assert not bad, "\n".join(bad)
