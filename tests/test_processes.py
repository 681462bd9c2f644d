"""fedrag_flower.processes: stopping process trees by PID, and the background SuperLink of
one FLWR_HOME (and no other)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from fedrag_flower.processes import (
    alive,
    local_superlink_processes,
    process_tree,
    stop_local_superlink,
    stop_process_tree,
)

# A parent that starts a child which ignores SIGTERM, then both sleep (bounded).
TREE = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _start_tree(*extra: str) -> tuple[subprocess.Popen, int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", TREE, *extra], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    return parent, child


def test_stop_process_tree_stops_the_children_too_even_one_ignoring_sigterm():
    parent, child = _start_tree()
    try:
        assert {p.pid for p in process_tree(parent.pid)} == {parent.pid, child}
        start = time.monotonic()
        stopped = stop_process_tree(parent.pid, grace=1.0)
        assert set(stopped) == {parent.pid, child}
        assert parent.wait(timeout=5) is not None
        assert not alive(child) and not alive(parent.pid)
        assert time.monotonic() - start < 10  # SIGKILL after the grace period
    finally:
        for pid in (child, parent.pid):
            if alive(pid):
                psutil.Process(pid).kill()


def test_stop_local_superlink_finds_only_the_processes_of_its_flwr_home(tmp_path):
    ours, theirs = tmp_path / "ours" / "flwr-home", tmp_path / "theirs" / "flwr-home"
    # Stand-ins for `flower-superlink ... --log-file <FLWR_HOME>/...` of two runs.
    mine, my_child = _start_tree("--log-file", f"{ours}/superlink.log")
    other, other_child = _start_tree("--log-file", f"{theirs}/superlink.log")
    try:
        assert [p.pid for p in local_superlink_processes(ours)] == [mine.pid]
        stopped = stop_local_superlink(ours, grace=1.0)
        assert set(stopped) == {mine.pid, my_child}
        assert not alive(mine.pid) and not alive(my_child)
        assert alive(other.pid) and alive(other_child)  # another run's SuperLink stays
        assert stop_local_superlink(tmp_path / "nobody") == []
    finally:
        stop_process_tree(other.pid, grace=1.0)
        for proc in (mine, other):
            proc.wait(timeout=5)


def test_simulate_script_stops_its_superlink_through_the_package_helper():
    script = (Path(__file__).parents[1] / "scripts" / "simulate.sh").read_text()
    assert "pkill" not in script
    assert "-m fedrag_flower.processes stop-local-superlink" in script


def test_benchmarks_import_no_test_module_and_use_the_package_helper():
    root = Path(__file__).parents[1]
    tests = {p.stem for p in (root / "tests").glob("*.py")} | {"tests"}
    for bench in (root / "benchmarks").glob("*.py"):
        source = bench.read_text()
        for module in tests:
            assert f"from {module} import" not in source, (bench.name, module)
            assert f"import {module}\n" not in source, (bench.name, module)
        assert 'sys.path.insert(0, str(ROOT / "tests"))' not in source, bench.name
    federation = (root / "benchmarks" / "bench_federation.py").read_text()
    assert "from fedrag_flower.processes import stop_local_superlink" in federation
