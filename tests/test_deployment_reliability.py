"""A site's processes killed mid-round on the loopback deployment topology: the run
completes with the other sites, records the killed site by name, and saves its system.

The project's own ServerApp and ClientApp (the guard, run folder and final system are the
real ones) with a tiny random Llama as the generator and the packaged MiniLM retriever, so
each ClientApp process starts in seconds. The killed site's failure arrives the way a
crashed hospital's does: its SuperNode stops sending heartbeats, and after Flower's
patience (at most 2 x 30 s) the SuperLink answers for it with NODE_UNAVAILABLE.
"""

from __future__ import annotations

import json
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file
from test_deployment import ROOT, write_hospital_data

from fedrag_flower.loopback import LoopbackDeployment, SiteSpec
from fedrag_flower.processes import alive, process_tree
from fedrag_flower.rag.system import RAGSystem

ADAPTER_FILE = "adapter_model.safetensors"

SITES = ["hospital-a", "hospital-b", "hospital-c"]
KILLED = "hospital-c"


def _clientapp_of(deployment: LoopbackDeployment, site: str) -> psutil.Process | None:
    """The ClientApp process the site's SuperExec runs now, if any: the site is at work."""
    superexec = next(p for p in deployment.processes if p.name == f"superexec-{site}")
    for proc in process_tree(superexec.popen.pid)[:-1]:  # its descendants
        try:
            if any("clientapp" in part for part in proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    return None


def _kill_site(deployment: LoopbackDeployment, site: str) -> list[int]:
    """SIGKILL the site's SuperNode and SuperExec and everything under them (its
    ClientApp), as a machine that crashes would; they leave the deployment's list."""
    mine = [p for p in deployment.processes if p.name in (f"supernode-{site}", f"superexec-{site}")]
    tree = [proc for p in mine for proc in process_tree(p.popen.pid)]  # read before killing
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)
    for p in mine:
        p.popen.wait(timeout=10)
        deployment.processes.remove(p)
    return [proc.pid for proc in tree]


@pytest.mark.slow  # ~100 s: 8 processes, and Flower's heartbeat patience (up to 60 s)
def test_a_site_killed_mid_round_is_recorded_and_the_run_completes_with_the_rest(
    tmp_path, tiny_generator_dir
):
    outputs = tmp_path / "outputs"
    configs = write_hospital_data(tmp_path / "data", SITES, qa_rows=10)
    sites = [SiteSpec(name, configs[name]) for name in SITES]
    run_config = (
        f"num-server-rounds=2 mode='ralt' local-steps=1 pairs-per-round=2 batch-size=2 "
        f"fraction-evaluate=0.0 min-sites=2 round-timeout=150.0 server-corpus='none' "
        f"generator-model='{tiny_generator_dir}' output-dir='{outputs}'"
    )
    with LoopbackDeployment(tmp_path / "deployment", sites) as deployment:
        deployment.start()
        run_id = deployment.submit(ROOT, run_config=run_config)
        # Round 1 is in flight once the site's ClientApp process runs: kill the site then.
        deadline = time.monotonic() + 120
        while _clientapp_of(deployment, KILLED) is None:
            assert time.monotonic() < deadline, f"{KILLED} never started round 1\n{deployment}"
            deployment.check_alive()
            time.sleep(0.2)
        killed = _kill_site(deployment, KILLED)
        assert killed and not any(alive(pid) for pid in killed)
        status = deployment.wait_for_run(run_id, timeout=300)
        logs = deployment.flwr(["log", str(run_id), "loopback", "--show"], timeout=60).stdout
        assert status == "finished:completed", logs[-4000:] + str(deployment)

    runs = sorted(outputs.glob("run-*"))
    assert len(runs) == 1, runs
    report = json.loads((runs[0] / "metrics.json").read_text())
    history = report["history"]
    assert [h["round"] for h in history] == [1, 2]
    # Round 1: the killed site is recorded by name as having left; the others trained.
    failures = history[0]["failures"]
    assert [(f["site"], f["stage"], f["kind"]) for f in failures] == [(KILLED, "train", "left")]
    assert "heartbeat" in failures[0]["reason"]
    trained = sorted(r["site"] for r in history[0]["site_train"] if "metrics" in r)
    assert trained == ["hospital-a", "hospital-b"]
    # The log names it too.
    assert f"round 1 train: site {KILLED} (node {failures[0]['node']}) left" in logs
    # Round 2 went on with the two that are left, without a failure.
    assert history[1]["failures"] == []
    assert sorted(r["site"] for r in history[1]["site_train"]) == ["hospital-a", "hospital-b"]
    # The final system is saved and loads (saved without a store: server-corpus='none'),
    # with round 2's aggregate as its adapters.
    system = RAGSystem.from_pretrained(runs[0] / "final", corpus=[{"id": "1", "text": "x"}])
    checkpoint = runs[0] / "rounds" / "round-002" / "generator_adapter" / ADAPTER_FILE
    saved = load_file(checkpoint)
    loaded = system.generator.adapter_state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    initial = load_file(runs[0] / "rounds" / "round-000" / "generator_adapter" / ADAPTER_FILE)
    assert any(not torch.equal(saved[k], initial[k]) for k in saved)  # the two sites trained
