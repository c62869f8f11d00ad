"""The package's shape (issue 24): no import cycle at module level, one owner per concern."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "flatbench"


def _modules():
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), f, is_pkg


def _exists(name: str) -> bool:
    p = ROOT.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _top_level_imports(name: str, f: Path, is_pkg: bool):
    """flatbench modules imported when this module runs (its body, not its functions, and not
    under ``if TYPE_CHECKING``)."""
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.parse(f.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("flatbench")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("flatbench"):
                continue
            for a in node.names:  # `from . import digits` imports the submodule digits
                sub = f"{mod}.{a.name}"
                out.add(sub if _exists(sub) else mod)
    deps = set()
    for mod in out:
        deps.add(mod)
        parts = mod.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a.b's __init__ first, unless it is ours
            parent = ".".join(parts[:i])
            if not (name == parent or name.startswith(parent + ".")):
                deps.add(parent)
    return deps - {name}


def test_no_import_cycle_at_module_level():
    graph = {name: _top_level_imports(name, f, is_pkg) for name, f, is_pkg in _modules()}
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m in graph and not state.get(m):
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if not state.get(n):
            visit(n)
    assert not cycles, "import cycles at module level:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cell_directories_are_found_and_cell_json_is_read_in_one_place():
    """Finding cells (rglob) and reading cell.json belong to flatbench/cell/directory.py (its name to
    flatbench/core/layout.py, which reads nothing)."""
    offenders = []
    for name, f, _ in _modules():
        if name in ("flatbench.cell.directory", "flatbench.core.layout"):
            continue
        text = f.read_text()
        if '"cell.json"' in text or "rglob(" in text and ("results.csv" in text or "overrides.yaml" in text):
            offenders.append(name)
    assert not offenders, offenders


def test_a_long_test_is_marked_on_itself():
    """One way to mark a test long: ``@pytest.mark.long`` on the test (a list of names in conftest.py,
    kept apart from the tests, let a misspelt or renamed entry leave a slow test in `make test`).
    Broken variant tried: conftest adding the mark by name again (the first assertion)."""
    import ast

    here = Path(__file__).resolve().parent
    assert "add_marker" not in (here / "conftest.py").read_text()
    marked = []
    for f in sorted(here.glob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef) and any(ast.unparse(d) == "pytest.mark.long" for d in node.decorator_list):
                marked.append(f"{f.name}::{node.name}")
    assert len(marked) >= 40 and all("::test_" in m for m in marked), marked


def test_every_ported_estimator_lists_its_differences_and_the_methods_page_prints_them():
    """Each estimator that follows public code says how it differs from it, line by line
    (issue 34: 'every remaining difference is a line in docs/methods.md')."""
    from flatbench.attacks import ESTIMATORS

    page = (Path(__file__).resolve().parent.parent / "docs" / "methods.md").read_text()
    # written from a formula, no public code to differ from: the plain gradient and the member means
    own = {"plain", "members"}
    for name in ESTIMATORS.names():
        lines = ESTIMATORS.get(name).differences
        assert bool(lines) == (name not in own), name
        for line in lines:
            assert f"- {line}\n" in page, (name, line[:60])


def test_no_test_module_imports_another():
    """What the tests share lives in helper modules by job (tests/helpers.py, images.py, analytic.py, ta_reference*.py; issue 35): a test module that imported another
    would run that module's import-time code twice, under two names, and hide a helper in a test file."""
    here = Path(__file__).resolve().parent
    pattern = re.compile(r"^\s*(?:from|import)\s+(?:tests\.)?(test_\w+|conftest)\b", re.M)
    offenders = []
    for f in sorted(here.rglob("*.py")):
        for name in pattern.findall(f.read_text()):
            offenders.append(f"{f.relative_to(here)} imports {name}")
    assert not offenders, offenders


def test_each_directory_layout_is_named_in_one_class():
    """A cell directory, a sweep directory and the cache each have one class that names their files
    (flatbench/core/layout.py, issue 35): a file name of theirs spelled as a string anywhere else in the
    package, or one of their directory names joined onto a path there, fails here."""
    from flatbench.core.layout import CacheLayout, CellLayout, SweepLayout

    names, dirs = set(), set()
    for cls in (CellLayout, SweepLayout, CacheLayout):
        for key, value in vars(cls).items():
            if key.isupper() and isinstance(value, (str, Path)):
                parts = Path(value).parts
                (dirs if key.endswith("_DIR") or (key == "REPORT") else names).update(parts[-1:])
                dirs.update(parts[:-1])
    names |= {d for d in dirs if d.startswith(".")}
    assert {"cell.json", "error.json", "overrides.yaml", "progress.json", "rates.json"} <= names
    assert {"adv", "clean", "steps", "report", ".hydra", ".flatbench"} <= dirs
    offenders = []
    for f in sorted(ROOT.rglob("*.py")):
        if f == ROOT / "core" / "layout.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} spells {node.value!r}")
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in dirs):
                offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} joins {node.right.value!r}")
    assert not offenders, offenders


def test_one_meaning_per_name():
    """No two modules of the package define a public function or class of the same name (issue 35:
    ``record_cell`` was the recording stage and the sweep's progress record); ``main`` is each console
    script's entry point."""
    where = {}
    clashes = []
    for f in sorted(ROOT.rglob("*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_") and node.name != "main":
                if node.name in where:
                    clashes.append(f"{node.name}: {where[node.name]} and {f.relative_to(ROOT)}")
                where.setdefault(node.name, f.relative_to(ROOT))
    assert not clashes, clashes


# The package's top: the entry layer (the command lines, Hydra, the config) and the report. Nothing below
# them imports them, at module level or inside a function (issue 35: crafting imported the planner for
# its rates file, the flatness stage the report for its landscape figure).
TOP = ("flatbench.entry", "flatbench.report")
ENTRY = ("flatbench", "flatbench.__main__", "flatbench.api")   # the package's own entry points, and the API


def _imports(f: Path, name: str):
    """Every flatbench module f imports, at any level, as absolute names."""
    pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_no_import_runs_back_up_to_the_commands():
    def in_top(m):
        return any(m == t or m.startswith(t + ".") for t in TOP)

    offenders = []
    for name, f, _ in _modules():
        if in_top(name) or name in ENTRY:
            continue
        for target, line in _imports(f, name):
            if target.startswith("flatbench") and in_top(target):
                offenders.append(f"{name}:{line} imports {target}")
    assert not offenders, offenders


def test_one_registry_kind():
    """Every named extension point (the attack's parts, data sets, defenses, loggers, model sources, the report's outputs) is a
    flatbench.core.registry.Registry, so that lookup, listing and the unknown-name error are one code path;
    no other class keeps a table of names (issue 35: Parts and Registry were two)."""
    from flatbench.attacks import ESTIMATORS
    from flatbench.attacks.optimizers import OPTIMIZERS
    from flatbench.attacks.transforms import TRANSFORMS
    from flatbench.data import DATASETS
    from flatbench.cell.loggers import LOGGERS
    from flatbench.models import SOURCES
    from flatbench.models.defenses import DEFENSES
    from flatbench.core.registry import ConfigError, Registry
    from flatbench.report.outputs import OUTPUTS

    kinds = (ESTIMATORS, OPTIMIZERS, TRANSFORMS, DATASETS, DEFENSES, LOGGERS, SOURCES, OUTPUTS)
    assert all(isinstance(k, Registry) for k in kinds)
    for k in kinds:
        try:
            k.get("no-such-name")
        except ConfigError as exc:
            assert str(exc).startswith(f"unknown {k.kind} 'no-such-name'. Valid choices: {', '.join(k.names())}.")
        else:
            raise AssertionError(k.kind)
    registries = []
    for f in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ClassDef) and any(isinstance(m, ast.FunctionDef) and m.name in ("register", "declare")
                                                      for m in node.body):
                registries.append(node.name)
    assert sorted(registries) == ["Parts", "Registry"], registries


def test_the_stages_read_the_settings_not_the_config():
    """The config is checked and typed once (flatbench/entry/settings.py, load_settings); the cell's stages
    and the planner's cost take that Settings object, run_cell too: the entry points (the command line,
    ``flatbench evaluate``) load the settings and hand them in, and resolve() is called from load_settings alone (issue 35, step 1: cfg was read in 27
    modules, 13 times in cell/plan.py)."""
    offenders = []
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT).as_posix()
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "resolve" \
                    and rel not in ("entry/settings.py", "entry/config.py"):
                offenders.append(f"{rel}:{node.lineno} calls resolve(cfg) itself")
            if rel.startswith("cell/") or rel == "entry/planning/cost.py":
                if isinstance(node, ast.FunctionDef) and any(a.arg == "cfg" for a in node.args.args + node.args.kwonlyargs):
                    offenders.append(f"{rel}:{node.lineno} {node.name}() takes the raw config")
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cfg":
                    offenders.append(f"{rel}:{node.lineno} reads cfg.{node.attr}")
    assert not offenders, offenders


def test_the_attack_engine_imports_no_model_source():
    """flatbench.attacks builds and runs attacks on any model it is handed; a surrogate that changes per
    step (LGV's snapshots) says so through a protocol (attacks/model_state.py: per_step_models), so no
    module of the engine imports flatbench.models. Broken variant tried: loop.py importing models.lgv."""
    found = [f"{name}:{line} imports {target}" for name, f, _ in _modules() if name.startswith("flatbench.attacks")
             for target, line in _imports(f, name) if target == "flatbench.models" or target.startswith("flatbench.models.")]
    assert len([n for n, _, _ in _modules() if n.startswith("flatbench.attacks")]) > 10
    assert not found, found


def test_the_root_holds_few_modules_and_each_layer_is_a_package():
    """The package's folders show its layers (issue 49: 36 modules lay loose at the root): at most 12
    modules at the root, and each subpackage says in its docstring which layer it is."""
    loose = sorted(f.name for f in ROOT.glob("*.py"))
    assert len(loose) <= 12, loose
    for pkg in sorted(d for d in ROOT.iterdir() if (d / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"{pkg.name}/__init__.py says nothing of its layer"


def test_only_the_entry_reads_the_config():
    """Hydra and OmegaConf stop at the entry (flatbench/entry): below it, the cell, the report, the attacks,
    the models and the measures take typed settings and plain files. Broken variant tried: cell/plan.py
    reading HydraConfig for the config files it names in an error."""
    found = [f"{name}:{line} imports {target}" for name, f, _ in _modules()
             if not name.startswith("flatbench.entry")
             for target, line in _imports(f, name) if target.split(".")[0] in ("hydra", "omegaconf")]
    assert [n for n, _, _ in _modules() if n.startswith("flatbench.entry.")], "no entry layer"
    assert not found, found


def test_one_command_line_runner_and_test_helpers_by_job():
    """The tests run the package's commands through helpers.command (it returns the process and its
    output; run and fails assert on it), not through runners of their own: a subprocess.run of a
    console script elsewhere is flagged, except where the test is about the raw streams (stdout= or
    input= given). Each helper module stays under 250 lines. Broken variant tried: test_budget's own
    _cli runner, as it was."""
    tests = Path(__file__).resolve().parent
    offenders = []
    for f in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "subprocess.run" and node.args \
                    and "BIN /" in ast.unparse(node.args[0]) \
                    and not {k.arg for k in node.keywords} & {"stdout", "input"}:
                offenders.append(f"{f.name}:{node.lineno}")
    assert not offenders, offenders
    helpers = [f for f in tests.glob("*.py") if not f.name.startswith(("test_", "conftest"))]
    assert len(helpers) >= 4
    assert all(len(f.read_text().splitlines()) <= 250 for f in helpers), \
        {f.name: len(f.read_text().splitlines()) for f in helpers}
