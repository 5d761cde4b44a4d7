"""dvc.yaml is complete: every module a stage's command can import is among its dependencies, so
an edit to any of them makes `dvc status` report the stage."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("apogeenet", "expectations", "flows")


def _source(module: str) -> Path | None:
    """The file of a project module; None for a name that is not a module (a class, a constant)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, AttributeError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Project modules imported anywhere in ``tree`` (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


WIRING = {"apogeenet.cli", "apogeenet.commands"}
"""Modules whose functions belong to different stages: followed function by function (a stage
depends on the functions it calls there, not on its neighbours'); other modules as a whole."""


def _functions(module: str) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(_source(module).read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _module_level(module: str) -> ast.Module:
    tree = ast.parse(_source(module).read_text())
    return ast.Module(body=[n for n in tree.body if not isinstance(n, ast.FunctionDef)], type_ignores=[])


def _closure(start: set[str]) -> set[str]:
    """The project modules reachable from ``start`` (modules or ``wiring_module.function``)."""
    seen, modules, todo = set(), set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        owner, _, attr = name.rpartition(".")
        if owner in WIRING and attr in _functions(owner):  # one function of a wiring module
            function = _functions(owner)[attr]
            todo.append(owner)
            todo += sorted(_imports(function, owner.rsplit(".", 1)[0]))
            called = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}
            todo += [f"{owner}.{f}" for f in sorted(called & set(_functions(owner)))]
            continue
        path = _source(name)
        if path is None:
            continue
        modules.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = _module_level(name) if name in WIRING else ast.parse(path.read_text())
        todo += sorted(_imports(tree, package))
    return modules


def _command_modules(command: str) -> set[str]:
    """Modules the ``apogeenet <command>`` of a stage can import: the CLI's module-level imports,
    the command function's (lazy) imports, the stage functions it calls, and all they import."""
    cli = ast.parse((REPO / "apogeenet" / "cli.py").read_text())
    function = next(node.name for node in cli.body if isinstance(node, ast.FunctionDef)
                    and any(_command_name(d) == command or (_command_name(d) == "" and node.name == command)
                            for d in node.decorator_list))
    return _closure({f"apogeenet.cli.{function}", "apogeenet.cli.main"})


def _command_name(decorator: ast.expr) -> str | None:
    if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "command":
        return decorator.args[0].value if decorator.args else ""
    return None


def _covered(module: str, deps: list[str]) -> bool:
    path = _source(module).relative_to(REPO).as_posix()
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_module_a_stage_imports_is_a_dependency():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        command = stage["cmd"].split()[1]
        deps = [d for d in stage.get("deps", []) if not d.startswith("$")]
        uncovered = sorted(m for m in _command_modules(command) if _source(m) and not _covered(m, deps))
        if uncovered:
            missing[name] = [str(_source(m).relative_to(REPO)) for m in uncovered]
    assert not missing, f"modules missing from dvc.yaml deps: {missing}"


def test_the_check_sees_lazy_imports():
    modules = _command_modules("predict")
    assert {"apogeenet.uncertainty", "apogeenet.model", "apogeenet.serving", "apogeenet.pipeline.predict"} <= modules
    assert "apogeenet.synth.emulator" not in modules  # predicting makes no survey
