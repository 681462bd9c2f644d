"""`flwr run .` end to end: local simulation on the real packaged models and data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedrag_flower.processes import alive, stop_local_superlink

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def simulation_run(tmp_path_factory):
    """One 2-site, 2-round run in mode ralt+lsr with a small budget per round."""
    work = tmp_path_factory.mktemp("simulation")
    flwr_home, outputs = work / "flwr-home", work / "outputs"
    flwr_home.mkdir()
    env = os.environ | {
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    run_config = (
        f"num-server-rounds=2 mode='ralt+lsr' local-steps=1 pairs-per-round=4 "
        f"batch-size=4 lsr-batch-size=4 lsr-top-k=3 eval-generate=1 min-sites=2 "
        f"output-dir='{outputs}'"
    )
    command = [
        str(BIN / "flwr"), "run", ".", "--stream",
        "--run-config", run_config,
        "--federation-config", "num-supernodes=2",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
    finally:
        stopped = stop_local_superlink(flwr_home)
    log = proc.stdout + proc.stderr
    (work / "flwr-run.log").write_text(log)
    assert proc.returncode == 0, log[-4000:]
    runs = sorted(outputs.glob("run-*"))
    assert len(runs) == 1, f"expected one run folder in {outputs}; log:\n{log[-4000:]}"
    return {"folder": runs[0], "log": log, "stopped": stopped}


@pytest.mark.slow
def test_simulation_saves_checkpoints_and_the_final_system(simulation_run):
    folder = simulation_run["folder"]
    assert str(folder) in simulation_run["log"]  # the run says where its result is
    rounds = sorted(p.name for p in (folder / "rounds").iterdir())
    assert rounds == ["round-000", "round-001", "round-002"]
    for name in ("generator_adapter", "retriever_adapter", "rag_system.json"):
        assert (folder / "final" / name).exists()
    assert (folder / "final" / "knowledge_store" / "store.json").exists()
    assert (folder / "metrics.png").stat().st_size > 1000


@pytest.mark.slow
def test_simulation_records_per_round_metrics(simulation_run):
    history = json.loads((simulation_run["folder"] / "metrics.json").read_text())["history"]
    assert [h["round"] for h in history] == [1, 2]
    for entry in history:
        assert len(entry["site_train"]) == 2  # each site's own reply
        assert all(site["metrics"]["num-examples"] > 0 for site in entry["site_train"])
        assert all(site["bytes"] > 0 for site in entry["site_train"])
        for loss in ("ralt-loss", "lsr-loss"):  # NLL and KL of each round: finite, positive
            assert math.isfinite(entry["train"][loss]) and entry["train"][loss] > 0
        for key in ("nll", "recall@1", "f1", "em"):
            assert key in entry["evaluate"]
    # ... and prints them, a row per round, as the run ends
    log = simulation_run["log"]
    assert "fedrag-flower: the shared system after each round" in log
    for entry in history:
        row = f"{entry['round']:>5} {entry['evaluate']['f1']:>9.3f}"
        assert row in log, log[-3000:]


@pytest.mark.slow
def test_final_adapters_differ_from_the_initial_ones(simulation_run):
    from safetensors.torch import load_file

    folder = simulation_run["folder"]
    for side in ("generator_adapter", "retriever_adapter"):
        initial = load_file(folder / "rounds" / "round-000" / side / "adapter_model.safetensors")
        final = load_file(folder / "final" / side / "adapter_model.safetensors")
        assert initial.keys() == final.keys()
        assert any(not torch.equal(initial[k], final[k]) for k in initial), side


@pytest.mark.slow
def test_saved_system_answers_from_the_command_line(simulation_run):
    final = simulation_run["folder"] / "final"
    proc = subprocess.run(
        [str(BIN / "fedrag-flower"), "ask", "--system", str(final), "--json",
         "How long does it take to get a building permit?"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["answer"].strip()
    assert len(answer["sources"]) >= 1 and answer["sources"][0]["score"] > 0


@pytest.mark.slow
def test_no_process_of_the_run_is_left(simulation_run):
    assert simulation_run["stopped"], "the background SuperLink was not found"
    assert not [pid for pid in simulation_run["stopped"] if alive(pid)]
