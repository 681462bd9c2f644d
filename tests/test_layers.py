"""The architecture's import rules (``[tool.importlinter]`` in pyproject.toml) hold: each
layer imports only the layers below it, and only the federation layer imports flwr."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_lint_imports_keeps_every_contract():
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},  # this checkout, not another installed copy
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_every_module_but_the_federation_is_forbidden_flwr():
    contracts = _contracts()
    layers = contracts["layers"]
    placed = {name.strip(" ()") for layer in layers["layers"] for name in layer.split("|")}
    children = {module.name for module in pkgutil.iter_modules([str(ROOT / "fedrag_flower")])}
    assert layers["exhaustive"]  # lint-imports fails on a module placed in no layer ...
    assert children <= placed
    # ... and every one of them except the federation layer is barred from flwr.
    forbidden = contracts["flwr-only-in-federation"]
    expected = {f"fedrag_flower.{name}" for name in children - {"federation"}}
    assert set(forbidden["source_modules"]) == expected
    assert forbidden["forbidden_modules"] == ["flwr"]
