"""The package's architecture, checked from its source text (see docs/design.md, "Layers").

Every module under ``slt_tms/`` is parsed with :mod:`ast` (nothing is imported) and

(a) no module imports a module of a higher layer (``LAYERS`` below is the one table of the layers; the
    table in docs/design.md must list the same layers in the same order);
(b) no two subpackages import each other, directly or through others (no cycle between units);
(c) no module is longer than ``MAX_LINES`` lines, except the ones in ``ALLOWED_LONG``;
(d) library modules (everything except ``commands/`` and ``cli.py``) never choose a matplotlib backend.

Imports are counted wherever they stand: at top level, inside functions, under ``if TYPE_CHECKING``.
Imports by name are counted too: a string constant that names a module of the package (e.g. the lazy
table of ``slt_tms.theory``) and an f-string that starts with ``"slt_tms.<unit>."`` (the command loader
of ``slt_tms.cli``).

Run this file as a script to print the layers and the import graph between units::

    python tests/test_architecture.py
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "slt_tms"
PACKAGE_DIR = ROOT / PACKAGE
DESIGN_DOC = ROOT / "docs" / "design.md"

#: The layers, from the bottom up: a module may import modules of its own layer or of a lower one.
#: A "unit" is a subpackage (``tms``) or a top-level module (``train``) of slt_tms; ``slt_tms`` itself is
#: the package's ``__init__`` (it re-exports the toy model). docs/design.md carries the same table.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": ("_rng", "_progress", "validation"),
    "model": ("tms", "slt_tms"),
    "knowledge and files": ("theory", "io"),
    "building blocks": ("potentials", "analysis", "train", "sweep"),
    "sampling": ("samplers",),
    "estimation": ("estimators",),
    "experiments": ("experiments",),
    "figures": ("plotting",),
    "shells": ("commands",),
    "entry points": ("cli", "__main__"),
}

#: Longest module allowed, in lines.
MAX_LINES = 650

#: Modules allowed above MAX_LINES (none since theory/critical_points.py and theory/discovery.py were
#: split); an entry that is no longer needed fails the test below.
ALLOWED_LONG: dict[str, str] = {}

#: The calls that choose a matplotlib backend: (module, function).
BACKEND_FUNCTIONS = (("matplotlib", "use"), ("matplotlib.pyplot", "switch_backend"))

#: Units that may choose a matplotlib backend (the shells); no library module may.
BACKEND_CHOOSERS = ("commands", "cli", "__main__")


# ----------------------------------------------------------------------------------------------------
# reading the package


def layer_of() -> dict[str, int]:
    """Unit -> layer index (0 = bottom), from LAYERS."""
    out: dict[str, int] = {}
    for i, units in enumerate(LAYERS.values()):
        for u in units:
            assert u not in out, f"{u} is listed in two layers"
            out[u] = i
    return out


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """``slt_tms/tms/model.py`` -> ``slt_tms.tms.model``; ``slt_tms/tms/__init__.py`` -> ``slt_tms.tms``."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """``slt_tms.tms.model`` -> ``tms``; ``slt_tms.train`` -> ``train``; ``slt_tms`` -> ``slt_tms``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_sources(package_dir: Path = PACKAGE_DIR) -> dict[str, tuple[str, bool]]:
    """Module name -> (source text, is a package ``__init__``) for every module of the package."""
    return {
        module_name(p, package_dir): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for p in sorted(package_dir.rglob("*.py"))
    }


def imported_modules(
    module: str, source: str, *, is_package: bool = False, known: Iterable[str] = ()
) -> set[str]:
    """The modules of the package that ``source`` (the text of ``module``) imports, anywhere in it.

    ``from a.b import c`` counts as ``a.b.c`` where that is a module in ``known``, else as ``a.b``.
    A string constant equal to a submodule in ``known`` (not the bare package name, which is also the
    distribution's name), and an f-string whose literal start is
    ``"<package>.<unit>."``, count as imports (importlib by name).
    """
    known = set(known)
    tree = ast.parse(source)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            if node.value in known:  # a submodule named as a string; the bare package name is a word
                out.add(node.value)
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str):
                m = re.match(rf"({PACKAGE}(?:\.\w+)+)\.$", head.value)
                if m and m.group(1) in known:
                    out.add(m.group(1))
    out.discard(module)
    return out


def import_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    known = set(sources)
    return {m: imported_modules(m, text, is_package=pkg, known=known) for m, (text, pkg) in sources.items()}


def upward_imports(graph: Mapping[str, set[str]], layers: Mapping[str, int]) -> list[str]:
    """Every import of a module of a higher layer (and every module whose unit has no layer)."""
    problems = []
    for mod, targets in sorted(graph.items()):
        for name in sorted({mod, *targets}):
            if unit_of(name) not in layers:
                problems.append(f"{name}: unit {unit_of(name)!r} is in no layer (add it to LAYERS)")
        lo = layers.get(unit_of(mod))
        for t in sorted(targets):
            hi = layers.get(unit_of(t))
            if lo is not None and hi is not None and hi > lo:
                problems.append(f"{mod} (layer {lo}) imports {t} (layer {hi})")
    return sorted(set(problems))


def unit_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Unit -> the other units it imports."""
    out: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        u = unit_of(mod)
        out.setdefault(u, set()).update(unit_of(t) for t in targets if unit_of(t) != u)
    return out


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def backend_calls(source: str) -> list[int]:
    """Lines where ``source`` chooses a matplotlib backend (``matplotlib.use``, ``pyplot.switch_backend``)."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> "matplotlib" | "matplotlib.pyplot"
    functions: set[str] = set()  # local names bound to matplotlib.use / pyplot.switch_backend
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in ("matplotlib", "matplotlib.pyplot"):
                    modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module in ("matplotlib", "matplotlib.pyplot"):
            for a in node.names:
                if a.name == "pyplot":
                    modules[a.asname or a.name] = "matplotlib.pyplot"
                elif (node.module, a.name) in BACKEND_FUNCTIONS:
                    functions.add(a.asname or a.name)
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in functions:
            lines.append(node.lineno)
        elif isinstance(f, ast.Attribute):
            owner = ast.unparse(f.value)
            owner = modules.get(owner, owner)
            if (owner, f.attr) in BACKEND_FUNCTIONS:
                lines.append(node.lineno)
    return sorted(lines)


def design_doc_layers(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """The layer table of docs/design.md: rows ``| <index> | <name> | `unit`, ... | ...`` sorted bottom first.

    A unit is written as a folder (```tms/```), a module (```train.py```) or bare (```slt_tms```).
    """
    rows = []
    for line in text.splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|([^|]*)\|", line)
        if m:
            units = tuple(u.removesuffix(".py").strip("/") for u in re.findall(r"`([^`]+)`", m.group(3)))
            rows.append((int(m.group(1)), m.group(2), units))
    rows.sort()
    return [(name, units) for _, name, units in rows]


# ----------------------------------------------------------------------------------------------------
# the checks


@pytest.fixture(scope="module")
def sources() -> dict[str, tuple[str, bool]]:
    return package_sources()


@pytest.fixture(scope="module")
def graph(sources) -> dict[str, set[str]]:
    return import_graph(sources)


def test_every_unit_has_a_layer_and_every_layer_entry_exists(sources):
    units = {unit_of(m) for m in sources}
    listed = set(layer_of())
    assert sorted(units - listed) == [], "units without a layer: add them to LAYERS"
    assert sorted(listed - units) == [], "LAYERS lists units that do not exist"


def test_no_import_goes_up_a_layer(graph):
    assert upward_imports(graph, layer_of()) == []


def test_no_cycle_between_units(graph):
    assert cycles(unit_graph(graph)) == []


def test_no_module_is_too_long():
    too_long = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and rel not in ALLOWED_LONG:
            too_long[rel] = n
    assert too_long == {}, f"modules over {MAX_LINES} lines (split them)"


def test_allowed_long_entries_are_still_needed():
    stale = [
        rel
        for rel in ALLOWED_LONG
        if not (PACKAGE_DIR / rel).is_file()
        or len((PACKAGE_DIR / rel).read_text(encoding="utf-8").splitlines()) <= MAX_LINES
    ]
    assert stale == [], "these modules are split or short now: remove them from ALLOWED_LONG"


def test_library_modules_choose_no_matplotlib_backend(sources):
    found = {
        mod: lines
        for mod, (text, _) in sources.items()
        if unit_of(mod) not in BACKEND_CHOOSERS and (lines := backend_calls(text))
    }
    assert found == {}, "only the shells (commands/, cli.py) may choose a matplotlib backend"


def test_design_doc_lists_the_same_layers():
    doc = [(name, sorted(units)) for name, units in design_doc_layers(DESIGN_DOC.read_text(encoding="utf-8"))]
    assert doc == [(name, sorted(units)) for name, units in LAYERS.items()], (
        "the layer table of docs/design.md and LAYERS differ"
    )


# ----------------------------------------------------------------------------------------------------
# negative controls: the same functions find what they are meant to find


def test_control_upward_import_is_found():
    known = {"slt_tms.tms", "slt_tms.tms.model", "slt_tms.estimators", "slt_tms.estimators.llc"}
    # An import inside a function, from a package face, and a relative one: all three go up.
    text = (
        "import torch\n"
        "def f():\n"
        "    from slt_tms.estimators import estimate_llc\n"
        "    return estimate_llc\n"
        "from ..estimators import llc\n"
    )
    g = {"slt_tms.tms.model": imported_modules("slt_tms.tms.model", text, known=known)}
    assert g["slt_tms.tms.model"] == {"slt_tms.estimators", "slt_tms.estimators.llc"}
    problems = upward_imports(g, layer_of())
    assert len(problems) == 2 and all("imports slt_tms.estimators" in p for p in problems)
    # The same text placed in a higher layer is fine.
    g_ok = {"slt_tms.experiments.x": imported_modules("slt_tms.experiments.x", text, known=known)}
    assert upward_imports(g_ok, layer_of()) == []


def test_control_import_by_name_is_found():
    known = {"slt_tms.commands", "slt_tms.theory.symbolic"}
    lazy = '_LAZY = {"population_loss": "slt_tms.theory.symbolic"}\n'
    loader = 'import importlib\nm = importlib.import_module(f"slt_tms.commands.{name}")\n'
    assert imported_modules("slt_tms.tms", lazy, is_package=True, known=known) == {"slt_tms.theory.symbolic"}
    assert imported_modules("slt_tms.analysis.x", loader, known=known) == {"slt_tms.commands"}
    assert upward_imports({"slt_tms.analysis.x": {"slt_tms.commands"}}, layer_of()) != []


def test_control_unlisted_unit_is_found():
    assert upward_imports({"slt_tms.newthing.a": {"slt_tms.tms"}}, layer_of()) == [
        "slt_tms.newthing.a: unit 'newthing' is in no layer (add it to LAYERS)"
    ]


def test_control_cycle_is_found():
    g = {
        "slt_tms.potentials.a": {"slt_tms.analysis.b"},
        "slt_tms.analysis.b": {"slt_tms.train"},
        "slt_tms.train": {"slt_tms.potentials"},
        "slt_tms.potentials": set(),
    }
    assert upward_imports(g, layer_of()) == []  # one layer: only the cycle check sees it
    assert cycles(unit_graph(g)) == [["analysis", "potentials", "train"]]


def test_control_backend_choice_is_found():
    assert backend_calls("import matplotlib\nmatplotlib.use('Agg')\n") == [2]
    assert backend_calls("import matplotlib as mpl\n\nmpl.use('Agg')\n") == [3]
    assert backend_calls("from matplotlib import use as u\nu('Agg')\n") == [2]
    assert backend_calls("import matplotlib.pyplot as plt\nplt.switch_backend('Agg')\n") == [2]
    assert backend_calls("import matplotlib as mpl\nmpl.rcParams['a'] = 1\nx.use('y')\n") == []


def test_control_design_doc_table_is_read():
    text = (
        "| layer | name | units | why |\n|---|---|---|---|\n"
        "| 1 | model | `tms/`, `slt_tms` | the `TMS` |\n"
        "| 0 | foundation | `_rng.py` | x |\n"
        "| `tms/` | `_rng` |\n"  # another table of the page: not a layer row
    )
    assert design_doc_layers(text) == [("foundation", ("_rng",)), ("model", ("tms", "slt_tms"))]


if __name__ == "__main__":
    g = import_graph(package_sources())
    units = unit_graph(g)
    for i, (name, members) in reversed(list(enumerate(LAYERS.items()))):
        print(f"layer {i}  {name}")
        for u in members:
            print(f"    {u:12s} -> {', '.join(sorted(units.get(u, ()))) or '-'}")
    print("upward imports:", upward_imports(g, layer_of()) or "none")
    print("cycles between units:", cycles(unit_graph(g)) or "none")
