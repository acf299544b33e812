"""Dependency rule: the library never pulls in Ray; the arm-side modules not even torch."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _imported(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return {name.split(".")[0] for name in out}


@pytest.mark.parametrize("module", ["hz_ray", "hz_ray.local", "hz_ray.optimizer",
                                    "hz_ray.backends", "hz_ray.telemetry", "hz_ray.storage"])
def test_hz_ray_modules_do_not_import_ray(module):
    code = f"import {module}\n"
    if module == "hz_ray":
        code += "from hz_ray import run_local, load_config, SimClock, TuningConfig\n"
    assert "ray" not in _imported(code)


def test_arm_side_modules_do_not_import_torch():
    modules = _imported("import hz_ray.arm_feed, hz_ray.delta, hz_ray.records, hz_ray.lifecycle")
    assert "torch" not in modules
    assert "ray" not in modules


@pytest.mark.parametrize("module", ["hz_ray.service.posterior", "hz_ray.service.slot",
                                    "hz_ray.run_folder", "hz_ray.sim", "hz_ray.testing"])
def test_the_control_plane_and_the_simulators_do_not_import_ray(module):
    assert "ray" not in _imported(f"import {module}\n")


def test_importing_the_backend_protocol_loads_no_simulator():
    code = ("import sys\nfrom hz_ray.backends import ArmBackend, RecordedBackend\n"
            "print('SIM', any(m.startswith('hz_ray.sim') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert "SIM False" in out
    from hz_ray.backends import SimulatedBackend  # still importable from the old place
    from hz_ray.sim import SimulatedBackend as Same
    assert SimulatedBackend is Same


def _module_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (``TYPE_CHECKING`` included)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = {}
    for package in ("hz_ray", "actors"):
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text())
        nodes = list(tree.body)
        while nodes:  # module level and inside module-level ifs (TYPE_CHECKING); not functions
            node = nodes.pop()
            if isinstance(node, ast.If):
                nodes += node.body + node.orelse
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and node.module in files:
                subs = {f"{node.module}.{a.name}" for a in node.names}
                edges |= (subs & set(files)) or {node.module}
        graph[name] = edges - {name}
    return graph


def test_no_import_cycle():
    graph = _module_imports()
    assert "hz_ray.service.posterior" in graph and "actors.posterior" in graph
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if module not in state and visit(module, []):
            break
    assert not cycle, " -> ".join(cycle)
    # The one-way rule: the library never imports the Ray layer.
    assert not any(m.startswith("hz_ray") and any(e.startswith("actors") for e in edges)
                   for m, edges in graph.items())
