"""The package's layers import one way: downwards, at module level, without cycles.

Every module of `jaxpde` is parsed with `ast` (nothing is imported). A module may import
only from its own layer or the layers below it (`LAYERS`, bottom first); no jaxpde import
may sit inside a function (`jaxpde.cli` excepted: it imports lazily to start fast); and the
graph of module-level imports has no cycle. `jaxpde/__init__.py` re-exports the public API
and is exempt as an importer, but nothing inside the package may import from it.

No module imports a private name (`from X import _name`, `X` a jaxpde module) from another
module, except from a private module of its own package (`from ._power import _step` in
`jaxpde/verify/spectral.py`): a name used elsewhere is public in its module.
"""

import ast
import dataclasses
import pathlib

import jaxpde

ROOT = "jaxpde"
# Bottom first. A module belongs to the first layer with a prefix equal to its name or
# to one of its parent packages.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("jaxpde._checks", "jaxpde._xla_flags", "jaxpde.reference"),  # reference: NumPy only
    ("jaxpde._bounds",),  # rounding, norms, Gram iteration, symbol bounds
    ("jaxpde.sharding", "jaxpde.denoising"),
    ("jaxpde.operators", "jaxpde.operators2d"),
    ("jaxpde.fluxes",),
    ("jaxpde.blocks",),
    ("jaxpde.schemes",),
    ("jaxpde.nn",),
    ("jaxpde.verify",),
    ("jaxpde.claims",),
    ("jaxpde.training", "jaxpde.testing", "jaxpde.demo", "jaxpde.report", "jaxpde.images"),
    ("jaxpde.cli", "jaxpde.__main__"),
)
# The only modules that may import jaxpde modules inside a function.
LAZY_IMPORTERS = ("jaxpde.cli",)
# (importer, module, name): private names allowed across modules (none).
PRIVATE_IMPORT_EXCEPTIONS: frozenset[tuple[str, str, str]] = frozenset()
_FIX = "see LAYERS in tests/test_layers.py"


@dataclasses.dataclass(frozen=True)
class Import:
    importer: str
    line: int
    target: str
    lazy: bool


def package_sources(root: pathlib.Path) -> dict[str, str]:
    """`{module name: source}` for every `.py` file of the package at `root`."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text()
    return sources


def _is_package(module: str, modules) -> bool:
    return module == ROOT or any(other.startswith(module + ".") for other in modules)


def _path(module: str, modules) -> str:
    return module.replace(".", "/") + ("/__init__.py" if _is_package(module, modules) else ".py")


def _known(name: str, modules) -> str:
    """`name` itself, or its longest prefix that is a module (`a.b.C` -> `a.b`)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _package_of(module: str, modules) -> str:
    """The package that relative imports of `module` start from."""
    return module if _is_package(module, modules) else module.rsplit(".", 1)[0]


def _base(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module `node` imports from (`..x` from `jaxpde.verify` -> `jaxpde.x`)."""
    if node.level:
        parts = package.split(".")
        return ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
    return node.module or ""


def find_imports(sources: dict[str, str]) -> list[Import]:
    """Every import of a module of `ROOT` in `sources`, relative imports resolved.

    `from P import x` imports the submodule `P.x` when there is one, else `P` itself (for
    a package, its `__init__`).
    """
    found = []
    for module, source in sources.items():
        package = _package_of(module, sources)

        def visit(node, lazy, module=module, package=package):
            for child in ast.iter_child_nodes(node):
                inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets = []
                if isinstance(child, ast.Import):
                    targets = [alias.name for alias in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = _base(child, package)
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in sources else base for a in child.names]
                for target in dict.fromkeys(targets):
                    if target == ROOT or target.startswith(ROOT + "."):
                        found.append(Import(module, child.lineno, _known(target, sources), inner))
                visit(child, inner)

        visit(ast.parse(source), False)
    return found


def layer_of(module: str, layers=LAYERS) -> int | None:
    for index, prefixes in enumerate(layers):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a self-import (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return components


def check_layers(sources: dict[str, str], layers=LAYERS, lazy_importers=LAZY_IMPORTERS) -> list[str]:
    """Every violation of the layering in `sources` (`{module: source}`), one message each."""
    problems = []
    for module in sorted(sources):
        if module != ROOT and layer_of(module, layers) is None:
            problems.append(f"{_path(module, sources)}: {module} is in no layer; add it to the layer its imports allow ({_FIX}).")
    imports = find_imports(sources)
    for imp in imports:
        where = f"{_path(imp.importer, sources)}:{imp.line}"
        if imp.lazy and imp.importer not in lazy_importers:
            problems.append(
                f"{where}: imports {imp.target} inside a function. Fix: import it at module level; if that "
                f"makes a cycle or an upward import, move the code it needs to a lower layer ({_FIX})."
            )
        if imp.importer == ROOT or imp.target == imp.importer:
            continue
        if imp.target == ROOT:
            problems.append(
                f"{where}: imports from the package root {ROOT} (its __init__). Fix: import from the "
                "module that defines the name."
            )
            continue
        low, high = layer_of(imp.target, layers), layer_of(imp.importer, layers)
        if low is not None and high is not None and low > high:
            problems.append(
                f"{where}: {imp.importer} (layer {high}: {', '.join(layers[high])}) imports {imp.target} from "
                f"the higher layer {low} ({', '.join(layers[low])}). Fix: move the code it needs down (the maths "
                f"of norm bounds into jaxpde._bounds), or move the importing code up ({_FIX})."
            )
    edges: dict[str, set[str]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for imp in imports:
        if not imp.lazy:
            edges.setdefault(imp.importer, set()).add(imp.target)
            first_line.setdefault((imp.importer, imp.target), imp.line)
    for component in _cycles(edges):
        members = set(component)
        links = [
            f"{_path(a, sources)}:{first_line[(a, b)]} imports {b}"
            for a in component
            for b in sorted(edges.get(a, ()) & members)
        ]
        problems.append(
            f"import cycle between {', '.join(component)}: {'; '.join(links)}. Fix: break the cycle by moving "
            f"the shared code into a module below all of them (a submodule must not import its own package's "
            f"__init__: import the defining module) ({_FIX})."
        )
    return problems


def check_private_imports(sources: dict[str, str], exceptions=PRIVATE_IMPORT_EXCEPTIONS) -> list[str]:
    """Every `from X import _name` in `sources` with `X` a jaxpde module and `_name` not a
    submodule, unless `X` is a private module of the importer's own package or
    `(importer, X, _name)` is in `exceptions`; one message each."""
    problems = []
    for module, source in sorted(sources.items()):
        package = _package_of(module, sources)
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _base(node, package)
            if not (base == ROOT or base.startswith(ROOT + ".")):
                continue
            parent, _, last = base.rpartition(".")
            if last.startswith("_") and parent == package:
                continue  # a private module of the importer's own package
            for alias in node.names:
                name = alias.name
                if not name.startswith("_") or name.startswith("__") or f"{base}.{name}" in sources:
                    continue
                if (module, base, name) in exceptions:
                    continue
                problems.append(
                    f"{_path(module, sources)}:{node.lineno}: {module} imports the private name {name} from {base}. "
                    f"Fix: make it a public name of {base} (rename it and every use), or move it to the module "
                    "that uses it."
                )
    return problems


def test_jaxpde_imports_one_way():
    problems = check_layers(package_sources(pathlib.Path(jaxpde.__file__).parent))
    assert not problems, "\n".join(problems)


def test_no_private_names_imported_across_modules():
    problems = check_private_imports(package_sources(pathlib.Path(jaxpde.__file__).parent))
    assert not problems, "\n".join(problems)


def test_every_layer_prefix_names_a_module():
    sources = package_sources(pathlib.Path(jaxpde.__file__).parent)
    missing = [p for prefixes in LAYERS for p in prefixes if p not in sources]
    assert not missing, f"LAYERS names modules that do not exist: {missing}"


# --- the checker itself, on small synthetic packages ------------------------------


def _clean() -> dict[str, str]:
    return {
        "jaxpde": "from . import verify as verify\nfrom .operators import Stencil as Stencil\n",
        "jaxpde._checks": "import math\n",
        "jaxpde._bounds": "from .gram import gram_bound as gram_bound\n",
        "jaxpde._bounds.gram": "from .._checks import math\n",
        "jaxpde.operators": "from ._bounds import gram_bound\nfrom ._checks import math\n",
        "jaxpde.verify": "from .spectral import spectral_norm as spectral_norm\n",
        "jaxpde.verify.spectral": "from ..operators import Stencil\nfrom . import gram\n",
        "jaxpde.verify.gram": "from .._bounds.gram import gram_bound\n",
        "jaxpde.cli": "def main():\n    from .verify import spectral_norm\n",
    }


def test_checker_accepts_a_clean_package():
    assert check_layers(_clean()) == []
    imports = {(i.importer, i.target) for i in find_imports(_clean())}
    # `from . import gram` is the submodule, not the package's __init__.
    assert ("jaxpde.verify.spectral", "jaxpde.verify.gram") in imports
    assert ("jaxpde.cli", "jaxpde.verify") in imports


def test_checker_reports_an_upward_import():
    sources = _clean() | {"jaxpde.operators": "from .verify.spectral import spectral_norm\n"}
    problems = check_layers(sources)
    upward = [p for p in problems if "from the higher layer" in p]
    assert len(upward) == 1
    assert upward[0].startswith("jaxpde/operators.py:1: jaxpde.operators")
    assert "jaxpde.verify.spectral" in upward[0] and "Fix:" in upward[0]
    # ... which here also closes a cycle operators -> verify.spectral -> operators.
    assert any(p.startswith("import cycle between jaxpde.operators, jaxpde.verify.spectral") for p in problems)


def test_checker_reports_a_lazy_import():
    lazy = "class Stencil:\n    def norm_bound(self):\n        from .verify.gram import gram_bound\n        return gram_bound\n"
    problems = check_layers(_clean() | {"jaxpde.operators": lazy})
    assert any(p.startswith("jaxpde/operators.py:3: imports jaxpde.verify.gram inside a function") for p in problems)
    assert any("from the higher layer" in p for p in problems)  # lazy and upward: both reported
    # A downward import inside a function is reported too ...
    inside = "def f():\n    from .._checks import math\n"
    [problem] = check_layers(_clean() | {"jaxpde._bounds.gram": inside})
    assert problem.startswith("jaxpde/_bounds/gram.py:2: imports jaxpde._checks inside a function")
    # ... but not in the cli.
    assert check_layers(_clean() | {"jaxpde.cli": "def main():\n    import jaxpde.verify.gram\n"}) == []


def test_checker_reports_a_cycle():
    # Within one layer (no upward import), through a package's __init__.
    sources = _clean() | {"jaxpde.verify.gram": "from . import spectral_norm\n"}
    problems = check_layers(sources)
    assert len(problems) == 1, problems
    assert problems[0].startswith("import cycle between jaxpde.verify, jaxpde.verify.gram, jaxpde.verify.spectral")
    assert "jaxpde/verify/gram.py:1 imports jaxpde.verify" in problems[0]
    assert "jaxpde/verify/__init__.py:1 imports jaxpde.verify.spectral" in problems[0]
    # A cycle between two modules of one layer.
    sources = _clean() | {"jaxpde.verify.gram": "from .spectral import spectral_norm\n"}
    [problem] = check_layers(sources)
    assert problem.startswith("import cycle between jaxpde.verify.gram, jaxpde.verify.spectral")


def test_checker_reports_the_package_root_and_unknown_modules():
    sources = _clean() | {"jaxpde.operators": "from jaxpde import Stencil\n"}
    problems = check_layers(sources)
    assert any(p.startswith("jaxpde/operators.py:1: imports from the package root jaxpde") for p in problems)
    problems = check_layers(_clean() | {"jaxpde.extra": "import math\n"})
    assert problems == [f"jaxpde/extra.py: jaxpde.extra is in no layer; add it to the layer its imports allow ({_FIX})."]


def test_checker_reports_a_private_name():
    assert check_private_imports(_clean()) == []
    # A private name of another module, at module level or inside a function.
    sources = _clean() | {"jaxpde.verify.spectral": "from ..operators import Stencil\nfrom .._bounds.gram import _steps\n"}
    [problem] = check_private_imports(sources)
    assert problem.startswith("jaxpde/verify/spectral.py:2: jaxpde.verify.spectral imports the private name _steps from jaxpde._bounds.gram")
    assert "Fix:" in problem
    inside = "def main():\n    from .verify.spectral import _power_iterate\n"
    [problem] = check_private_imports(_clean() | {"jaxpde.cli": inside})
    assert problem.startswith("jaxpde/cli.py:2: jaxpde.cli imports the private name _power_iterate from jaxpde.verify.spectral")
    # A private module of the importer's own package may share its private names ...
    own = {"jaxpde.verify._power": "def _step():\n    pass\n", "jaxpde.verify.spectral": "from ._power import _step\nfrom . import _power\n"}
    assert check_private_imports(_clean() | own) == []
    # ... but not with another package, and not through its package's __init__.
    other = own | {"jaxpde.claims": "", "jaxpde.claims.sampling": "from ..verify._power import _step\nfrom ..verify import _helper\n"}
    problems = check_private_imports(_clean() | other)
    assert [p.split(": ", 1)[0] for p in problems] == ["jaxpde/claims/sampling.py:1", "jaxpde/claims/sampling.py:2"]
    # Listed exceptions are not reported.
    assert check_private_imports(_clean() | other, exceptions={("jaxpde.claims.sampling", "jaxpde.verify._power", "_step"), ("jaxpde.claims.sampling", "jaxpde.verify", "_helper")}) == []
