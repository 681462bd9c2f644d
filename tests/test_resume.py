"""Checkpoints, resume and the too-few-sites stop on a tiny real RAG system (tiny Llama +
MiniLM adapters), with sites as deterministic functions of the global adapters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord, RecordDict

from fedrag_flower.federation.adapter_strategy import TooFewSitesError
from fedrag_flower.federation.rounds import run_rounds
from fedrag_flower.federation.run_folder import CheckpointError, RunFolder
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.strategies import build_strategy
from tests.conftest import TINY_CORPUS
from tests.fake_grid import FakeGrid, arrays_of, record_of


def local_training(node: int, fail_round: int | None = None):
    """A site whose 'training' moves each tensor towards a site- and round-specific
    target: new = 0.5 * global + noise(seed = node, round)."""

    def site(content, kind, server_round):
        metrics = MetricRecord({"num-examples": float(node), "nll": float(node)})
        if server_round == fail_round:
            return None
        if kind == "evaluate":
            return RecordDict({"metrics": metrics})
        rng = np.random.default_rng(1000 * node + server_round)
        out = {
            k: (0.5 * v + rng.normal(0, 0.01, v.shape)).astype(v.dtype)
            for k, v in arrays_of(content["arrays"]).items()
        }
        return RecordDict({"arrays": record_of(out), "metrics": metrics})

    return site


def settings_for(tmp_path, **keys) -> FederationSettings:
    base = dict(num_server_rounds=3, min_sites=2, output_dir=str(tmp_path / "outputs"))
    return FederationSettings(**(base | keys))


def run(rag, settings, rounds=None, folder=None, sites=None):
    strategy = build_strategy(settings)
    if folder is None:
        runfolder = RunFolder.create(settings, rag, strategy, {})
    else:
        runfolder = RunFolder.resume(folder, settings, rag, strategy, {})
    grid = FakeGrid(sites or {n: local_training(n) for n in (1, 2, 3)})
    last = rounds or settings.num_server_rounds
    arrays = run_rounds(strategy, grid, runfolder.arrays, last, first_round=runfolder.next_round,
                        hooks=[runfolder.end_of_round])  # fmt: skip
    return runfolder, arrays


def scramble(rag):
    """Overwrite the system's adapters, so a resume must really load its checkpoint."""
    rag.load_adapter_state_dict(
        {k: torch.randn_like(v) for k, v in rag.adapter_state_dict().items()}
    )


@pytest.mark.parametrize(
    "keys",
    [
        {"strategy": "fedadam", "fedopt_eta": 0.01},  # server moments carried over
        {"strategy": "fedavgm", "server_momentum": 0.9},  # server momentum carried over
        {
            "strategy": "fedavg",
            "dp": "server-fixed",
            "dp_noise": 0.5,
            "dp_clip": 0.5,
            "dp_sampled_sites": 3,
        },  # DP noise generator and accountant carried over
    ],  # fmt: skip
    ids=["fedadam", "fedavgm", "dp"],
)
def test_a_run_stopped_after_a_checkpoint_resumes_to_the_same_final_adapters(
    tiny_rag, tmp_path, keys
):
    initial = tiny_rag.adapter_state_dict()
    whole, expected = run(tiny_rag, settings_for(tmp_path / "whole", **keys))

    tiny_rag.load_adapter_state_dict(initial)
    stopped, _ = run(tiny_rag, settings_for(tmp_path / "stopped", **keys), rounds=1)
    assert [h["round"] for h in stopped.history] == [1]
    scramble(tiny_rag)
    np.random.seed(12345)  # the crashed process's random state is gone too
    resumed_settings = settings_for(tmp_path / "stopped", resume_from=str(stopped.folder), **keys)
    resumed, final = run(tiny_rag, resumed_settings, folder=stopped.folder)

    assert resumed.folder == stopped.folder and resumed.next_round == 2
    for key, value in arrays_of(expected).items():
        assert np.array_equal(arrays_of(final)[key], value), key  # bit for bit
    history = json.loads((stopped.folder / "metrics.json").read_text())["history"]
    assert [h["round"] for h in history] == [1, 2, 3]
    rounds = sorted(p.name for p in (stopped.folder / "rounds").iterdir())
    assert rounds == ["round-000", "round-001", "round-002", "round-003"]
    if "dp" in keys:
        whole_history = json.loads((whole.folder / "metrics.json").read_text())["history"]
        assert [h["privacy"]["releases"] for h in history] == [1, 2, 3]
        assert [h["privacy"] for h in history] == [h["privacy"] for h in whole_history]


def test_too_few_sites_stops_with_a_clear_error_and_the_last_checkpoint_loads(tiny_rag, tmp_path):
    from fedrag_flower.rag.system import RAGSystem

    settings = settings_for(tmp_path, num_server_rounds=3, min_sites=2)
    sites = {1: local_training(1), 2: local_training(2, fail_round=2)}
    strategy = build_strategy(settings)
    folder = RunFolder.create(settings, tiny_rag, strategy, {})
    with pytest.raises(TooFewSitesError, match="round 2: only 1 site") as caught:
        run_rounds(strategy, FakeGrid(sites), folder.arrays, 3, hooks=[folder.end_of_round])
    folder.record_stop(caught.value)
    report = json.loads((folder.folder / "metrics.json").read_text())
    assert report["stops"][0]["round"] == 2
    assert report["stops"][0]["failures"][0]["node"] == 2
    assert report["stops"][0]["failures"][0]["kind"] == "timeout"
    assert report["stops"][0]["last_checkpoint"].endswith("round-001")
    rounds = sorted(p.name for p in (folder.folder / "rounds").iterdir())
    assert rounds == ["round-000", "round-001"]
    loaded = RAGSystem.from_pretrained(folder.folder / "rounds" / "round-001", corpus=TINY_CORPUS)
    for key, value in loaded.adapter_state_dict().items():
        assert torch.equal(value, torch.from_numpy(folder.arrays[key].numpy())), key


def test_resume_refuses_a_corrupted_or_foreign_checkpoint_and_changes_nothing(tiny_rag, tmp_path):
    settings = settings_for(tmp_path)
    stopped, _ = run(tiny_rag, settings, rounds=1)
    folder = stopped.folder
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}

    def resume(**keys):
        s = settings_for(tmp_path, resume_from=str(folder), **keys)
        return RunFolder.resume(folder, s, tiny_rag, build_strategy(s), {})

    with pytest.raises(CheckpointError, match="other settings: .*'lora-r'"):
        resume(lora_r=4)
    with pytest.raises(CheckpointError, match="already holds round 1"):
        resume(num_server_rounds=1)
    weights = folder / "rounds" / "round-001" / "generator_adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a torn or corrupted file
    before[weights] = weights.stat().st_mtime_ns
    with pytest.raises(CheckpointError, match="round-001 cannot be read"):
        resume()
    with pytest.raises(CheckpointError, match="is not a run folder"):
        RunFolder.resume(tmp_path, settings, tiny_rag, build_strategy(settings), {})
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before  # nothing touched


def test_a_damaged_or_foreign_saved_system_gives_a_clear_error(tiny_rag, tmp_path):
    from fedrag_flower.rag.system import MANIFEST, RAGSystem

    saved = tiny_rag.save_pretrained(tmp_path / "system", include_store=False)
    weights = saved / "retriever_adapter" / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:64])
    with pytest.raises(ValueError, match="retriever_adapter cannot be loaded"):
        RAGSystem.from_pretrained(saved, corpus=TINY_CORPUS)
    weights.write_bytes(good)
    (saved / MANIFEST).write_text('{"name": "some other tool"}')
    with pytest.raises(ValueError, match="is not a fedrag-flower system manifest"):
        RAGSystem.from_pretrained(saved, corpus=TINY_CORPUS)
