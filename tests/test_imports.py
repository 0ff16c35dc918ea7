"""The package's import graph, read from the source (ast, every import, lazy ones inside functions too): data
flows one way, so no module imports from a later stage of the pipeline, and the CLI names every subcommand."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "multiglance"

# The stages in pipeline order, by the first part of the module's name under multiglance (a folder or a file).
# A module may import from its own stage and from earlier ones only.
STAGES = [
    {"errors", "config", "config_rules", "allocator", "files"},  # the base: exceptions, typed config, its rules,
    # the allocator, atomic writes
    {"data"},
    {"models"},
    {"train", "runs"},  # training and the run folder it writes
    {"evaluate", "flops", "predict", "compare", "weights", "results", "analysis"},  # reading runs back
    {"bench"},  # the benchmark drivers over the library
    {"cli", "__main__", "__init__"},  # the command and the package's public names
]
STAGE = {part: i for i, parts in enumerate(STAGES) for part in parts}


def module_name(path: Path, root: Path = SRC.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts  # ("multiglance", "data", "scenes")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> int:
    parts = module.split(".")
    return STAGE["__init__" if len(parts) == 1 else parts[1]]


def imported(path: Path, root: Path = SRC.parent) -> list[tuple[int, str]]:
    """(line, module) of every multiglance module `path` imports, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "multiglance"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "multiglance":
                continue
            # `from .. import runs` names modules of the package itself, not the package's __init__
            out += [(node.lineno, f"{module}.{a.name}") for a in node.names] if module == "multiglance" else \
                [(node.lineno, module)]
    return out


def arrows() -> list[tuple[str, int, str]]:
    """(importer, line, imported) for every import inside the package."""
    return [(module_name(p), line, target) for p in sorted(SRC.rglob("*.py")) for line, target in imported(p)]


def test_every_module_has_a_stage():
    names = {module_name(p) for p in SRC.rglob("*.py")}
    unplaced = sorted(n for n in names if n != "multiglance" and n.split(".")[1] not in STAGE)
    assert not unplaced, f"modules with no stage in STAGES: {unplaced}"


def test_no_module_imports_from_a_later_stage():
    backwards = [f"{src}:{line} imports {dst}" for src, line, dst in arrows()
                 if src != "multiglance" and stage_of(dst) > stage_of(src)]
    assert not backwards, "imports against the pipeline:\n" + "\n".join(backwards)


@pytest.mark.parametrize("layer", ["data", "models", "config", "config_rules", "files", "errors"])
def test_lower_layers_import_nothing_of_training_evaluation_or_the_cli(layer):
    """The issue's own wording: no arrow from data, models or config (or the base) to a later stage."""
    later = {part for parts in STAGES[STAGE["train"]:] for part in parts}
    found = [f"{src}:{line} imports {dst}" for src, line, dst in arrows()
             if src.split(".")[1:2] == [layer] and (dst == "multiglance" or dst.split(".")[1] in later)]
    assert not found, "\n".join(found)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """A lazy `from ..runs import x` inside a function of data/ is found and resolved: the check can fail."""
    probe = tmp_path / "multiglance" / "data" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import os\nfrom . import split\n\n\ndef f():\n    from ..runs import load_run\n"
                     "    from .. import train, errors\n    import multiglance.cli\n")
    found = imported(probe, root=tmp_path)
    assert found == [(2, "multiglance.data"), (6, "multiglance.runs"), (7, "multiglance.train"),
                     (7, "multiglance.errors"), (8, "multiglance.cli")]
    assert [stage_of(m) > STAGE["data"] for _, m in found] == [False, True, True, False, True]


def test_the_cli_names_every_subcommand():
    """cli.py registers each subcommand itself: every module with a `register(subparsers)` is imported and called
    there by name, and no module is looked up by a string at run time."""
    cli = SRC / "cli.py"
    assert "find_spec" not in cli.read_text() and "import_module" not in cli.read_text()
    tree = ast.parse(cli.read_text())
    alias = {}  # name in cli.py -> module, for `from .bench import paper` and `from .analysis import commands as c`
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            alias |= {a.asname or a.name: f"multiglance.{node.module}.{a.name}" for a in node.names}
    called = {alias.get(n.func.value.id) for n in ast.walk(tree) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Attribute) and n.func.attr == "register" and isinstance(n.func.value, ast.Name)}
    defining = {module_name(p) for p in SRC.rglob("*.py")
                if any(isinstance(d, ast.FunctionDef) and d.name == "register" for d in ast.parse(p.read_text()).body)}
    assert defining and called == defining
    from multiglance.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"train", "eval", "weights", "compare", "presets", "bench", "analyze", "report", "predict",
            "data"} <= set(sub.choices)
    bench = next(a for a in sub.choices["bench"]._actions if a.dest == "bench_command")
    assert {"paper", "speed", "megapixel", "beyond", "large"} <= set(bench.choices)
