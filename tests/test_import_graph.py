"""The package import graph of free_jax is acyclic and follows the layers of free_jax/__init__.py."""
import ast
import graphlib
import re
from pathlib import Path

import free_jax

PACKAGE = Path(free_jax.__file__).parent


def documented_layers(package: Path = PACKAGE) -> dict[str, int]:
    """``{top-level module or package: layer}`` from the root docstring (lowest layer 0)."""
    lines = ast.get_docstring(ast.parse((package / "__init__.py").read_text())).splitlines()
    rows = [m.group(1) for line in lines if (m := re.match(r"    ([a-z_]+(?:, [a-z_]+)*)  ", line))]
    return {name: layer for layer, row in enumerate(rows) for name in row.split(", ")}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{X: {Y, ...}}``: some module of free_jax.X imports from free_jax.Y (Y ≠ X; "" is the root).

    Every import counts, including those inside functions.
    """
    graph = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        source = "" if parts == ("__init__",) else parts[0]
        targets = graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".") for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: a relative import; write the free_jax path in full"
                module = node.module.split(".")
                names = [module + [alias.name] for alias in node.names] if module == ["free_jax"] else [module]
            else:
                continue
            targets.update(_top_level(package, name) for name in names if name[0] == "free_jax")
        targets.discard(source)
    return graph


def _top_level(package: Path, name: list[str]) -> str:
    """free_jax.models.apply -> "models"; free_jax and free_jax.__version__ -> "" (the root)."""
    if len(name) > 1 and ((package / name[1]).is_dir() or (package / f"{name[1]}.py").exists()):
        return name[1]
    return ""


def test_import_graph_is_acyclic():
    graphlib.TopologicalSorter(import_graph()).prepare()  # raises CycleError naming the loop


def test_every_import_points_down_the_documented_layers():
    layers, graph = documented_layers(), import_graph()
    assert graph[""] == set(), "free_jax/__init__.py must import nothing from free_jax"
    unplaced = sorted(set(graph) - set(layers) - {""})
    assert not unplaced, f"add {unplaced} to the layer list in free_jax/__init__.py"
    upward = sorted(f"{source} -> {target}" for source, targets in graph.items() if source
                    for target in targets if target and layers[target] >= layers[source])
    assert not upward, f"imports that do not point to a lower layer: {upward}"
