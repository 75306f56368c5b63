"""Data flows one way: envs -> policies -> bench. A package imports only from its left."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["envs", "policies", "bench"]


@pytest.mark.parametrize("package", ORDER)
def test_imports_flow_one_way(package):
    forbidden = set(ORDER[ORDER.index(package) + 1 :])
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n.split(".")[0] in forbidden]
    assert not offenders, offenders
