"""The library's import graph: no circles, labels and isochrones independent of the synthetic
survey, no library module importing the CLI or the flows, one pipeline module per stage, MLflow
only at the edge."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EDGE = {"apogeenet.cli"}  # the command line sits on top of everything


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> project modules it imports anywhere (lazy imports inside functions included)."""
    modules = {_module_name(p): p for p in (REPO / "apogeenet").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name} | {
            t for t in targets if t.split(".")[0] in ("flows", "expectations")}
    return graph


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            assert state.get(target) != 1, "import circle: " + " -> ".join([*path, node, target])
            if target not in state:
                visit(target, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_layers():
    graph = _graph()
    for module, targets in graph.items():
        assert not {t for t in targets if t.split(".")[0] == "flows"}, f"{module} imports the flows"
        if module not in EDGE:
            assert "apogeenet.cli" not in targets, f"{module} imports the CLI"
        if module.startswith(("apogeenet.labels", "apogeenet.isochrones", "apogeenet.photometry")):
            assert not {t for t in targets if t.startswith("apogeenet.synth")}, f"{module} imports the synthetic survey"


DVC_STAGES_WITHOUT_A_MODULE = {"ingest"}  # the store's own command (apogeenet.store), no tracked run


def _third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_one_pipeline_module_per_stage_with_one_entry_and_no_mlflow():
    import yaml

    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    modules = {p.stem for p in (REPO / "apogeenet" / "pipeline").glob("*.py")} - {"__init__", "common"}
    assert modules == stages - DVC_STAGES_WITHOUT_A_MODULE
    for path in (REPO / "apogeenet" / "pipeline").glob("*.py"):
        assert "mlflow" not in _third_party_imports(path), f"{path.name} imports mlflow: the tracked decorator logs"
        tree = ast.parse(path.read_text())
        if path.stem in modules:
            assert "run" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, path.name
    assert not (REPO / "apogeenet" / "stages.py").exists()


def test_mlflow_is_imported_only_at_the_edge():
    edge = {"tracking.py", "registry.py", "pyfunc.py", "model_uri.py", "mlflow_model.py"}
    for path in (REPO / "apogeenet").rglob("*.py"):
        if path.name not in edge:
            assert "mlflow" not in _third_party_imports(path), f"{path.relative_to(REPO)} imports mlflow"


def test_the_command_line_stays_small():
    assert len((REPO / "apogeenet" / "cli.py").read_text().splitlines()) <= 400
