"""`flwr run .` with a site that raises and a server that stops after a checkpoint, then
resumes: the real packaged models on a tiny budget."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from fedrag_flower.federation.faults import SERVER_EXITS, SITE_FAILS
from tests.test_simulation import BIN, ROOT, stop_local_superlink


def flwr_run(work, run_config: str, env_extra: dict) -> tuple[int, str]:
    flwr_home = work / "flwr-home"
    flwr_home.mkdir(parents=True, exist_ok=True)
    env = (
        os.environ
        | env_extra
        | {
            "FLWR_HOME": str(flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        }
    )
    command = [str(BIN / "flwr"), "run", ".", "--stream", "--run-config", run_config,
               "--federation-config", "num-supernodes=2"]  # fmt: skip
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
    finally:
        stop_local_superlink(flwr_home)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_failing_site_is_recorded_and_a_stopped_run_resumes_to_the_end(tmp_path):
    outputs = tmp_path / "outputs"
    budget = (
        "mode='lsr' local-steps=1 pairs-per-round=2 lsr-batch-size=2 lsr-top-k=2 "
        f"eval-generate=1 fraction-evaluate=0.0 min-sites=1 output-dir='{outputs}'"
    )
    # Site 1 raises in round 1; the server stops right after round 1's checkpoint.
    code, log = flwr_run(tmp_path / "a", f"num-server-rounds=2 {budget}",
                         {SITE_FAILS: "1:1", SERVER_EXITS: "1"})  # fmt: skip
    (tmp_path / "first.log").write_text(log)
    runs = sorted(outputs.glob("run-*"))
    assert len(runs) == 1, log[-3000:]
    folder = runs[0]
    history = json.loads((folder / "metrics.json").read_text())["history"]
    assert [h["round"] for h in history] == [1], log[-3000:]
    failure = history[0]["failures"][0]
    assert failure["kind"] == "error" and failure["stage"] == "train" and failure["round"] == 1
    assert "injected test fault" in failure["reason"]
    assert f"site node {failure['node']} error" in log  # the log names it too
    assert not (folder / "final").exists()

    code, log = flwr_run(tmp_path / "b", f"num-server-rounds=2 resume-from='{folder}' {budget}", {})
    (tmp_path / "second.log").write_text(log)
    assert code == 0, log[-3000:]
    assert f"resuming {folder} at round 2" in log
    history = json.loads((folder / "metrics.json").read_text())["history"]
    assert [h["round"] for h in history] == [1, 2]
    assert history[1]["failures"] == [] and len(history[1]["site_train"]) == 2
    from safetensors.torch import load_file

    one = load_file(
        folder / "rounds" / "round-001" / "retriever_adapter" / "adapter_model.safetensors"
    )
    final = load_file(folder / "final" / "retriever_adapter" / "adapter_model.safetensors")
    assert any(not torch.equal(one[k], final[k]) for k in one)  # round 2 trained on from 1


def final_adapters(outputs) -> dict[str, torch.Tensor]:
    """The final system's adapter tensors of the one run folder in ``outputs``."""
    from safetensors.torch import load_file

    (folder,) = sorted(outputs.glob("run-*"))
    return {
        f"{part}.{key}": value
        for part in ("generator_adapter", "retriever_adapter")
        for key, value in load_file(folder / "final" / part / "adapter_model.safetensors").items()
    }


@pytest.mark.slow
def test_a_resumed_run_ends_with_the_same_adapters_as_an_uninterrupted_one(tmp_path):
    """Real sites (simulation, packaged models, both adapters trained): 2 rounds straight
    vs stopped after round 1 and resumed. Reply order varies between runs; the guard sorts
    replies by site name, so the sums are the same."""
    budget = (
        "num-server-rounds=2 mode='ralt+lsr' local-steps=1 pairs-per-round=4 batch-size=4 "
        "lsr-epochs=1 lsr-batch-size=2 lsr-top-k=2 fraction-evaluate=0.0 server-corpus='none'"
    )
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    code, log = flwr_run(tmp_path / "a", f"{budget} output-dir='{straight}'", {})
    assert code == 0, log[-3000:]
    flwr_run(tmp_path / "b", f"{budget} output-dir='{stopped}'", {SERVER_EXITS: "1"})
    (folder,) = sorted(stopped.glob("run-*"))
    assert not (folder / "final").exists()
    code, log = flwr_run(
        tmp_path / "c", f"{budget} output-dir='{stopped}' resume-from='{folder}'", {}
    )
    assert code == 0, log[-3000:]
    a, b = final_adapters(straight), final_adapters(stopped)
    assert a.keys() == b.keys()
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    print(f"\nmax |straight - resumed| over {len(a)} adapter tensors: {diff:g}")
    assert diff == 0.0
