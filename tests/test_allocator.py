"""mimalloc for training processes: the environment that selects it, and a real RALT round
trained under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from fedrag_flower import allocator

ROOT = Path(__file__).resolve().parents[1]


def test_setup_installs_mimalloc_and_the_main_job_selects_it():
    assert allocator.mimalloc_library() is not None, "run scripts/setup.sh (it installs mimalloc)"
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--no-deps cmeel-mimalloc==" in setup
    simulate = (ROOT / "scripts" / "simulate.sh").read_text()
    before_run = simulate[: simulate.index("flwr run . ")]
    assert 'eval "$("$PWD/.venv/bin/python" -m fedrag_flower.allocator)"' in before_run


def test_the_environment_preloads_mimalloc_first_and_keeps_other_preloads():
    env = allocator.allocator_environment({"LD_PRELOAD": "/opt/other.so"})
    library = str(allocator.mimalloc_library())
    assert env["LD_PRELOAD"] == f"{library}:/opt/other.so"
    assert env["MIMALLOC_PURGE_DELAY"] == "10000"  # finite: a forced collect works
    assert env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    again = allocator.allocator_environment({"LD_PRELOAD": env["LD_PRELOAD"]})
    assert again["LD_PRELOAD"] == env["LD_PRELOAD"]  # not preloaded twice


def test_a_variable_the_user_set_is_kept():
    env = allocator.allocator_environment({"MIMALLOC_PURGE_DELAY": "10"})
    assert "MIMALLOC_PURGE_DELAY" not in env and "LD_PRELOAD" in env


def test_system_allocator_on_request_or_without_mimalloc(monkeypatch):
    only_onednn = allocator.ONEDNN_ENVIRONMENT
    assert allocator.allocator_environment({"FEDRAG_ALLOCATOR": "system"}) == only_onednn

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(allocator.metadata, "distribution", missing)
    assert allocator.mimalloc_library() is None
    assert allocator.allocator_environment({}) == only_onednn


def test_the_shell_helper_prints_exports_that_a_shell_can_eval():
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    env["FEDRAG_ALLOCATOR"] = "system"
    out = subprocess.run(
        [sys.executable, "-m", "fedrag_flower.allocator"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout == "export ONEDNN_PRIMITIVE_CACHE_CAPACITY=64\n"
    ours = (
        "LD_PRELOAD",
        "FEDRAG_ALLOCATOR",
        "MIMALLOC_PURGE_DELAY",
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY",
    )
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    shell = f'eval "$({sys.executable} -m fedrag_flower.allocator)"; '
    shell += 'echo "$LD_PRELOAD|$MIMALLOC_PURGE_DELAY"'
    out = subprocess.run(["bash", "-c", shell], env=clean, capture_output=True, text=True)
    assert out.stdout.strip() == f"{allocator.mimalloc_library()}|10000"


TRAIN = """
import json, torch
from fedrag_flower import allocator
from fedrag_flower.data import default_qa
from fedrag_flower.rag.system import RAGSystem
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT

torch.set_num_threads(2)
rag = RAGSystem.from_defaults()
before = {k: v.clone() for k, v in rag.generator.adapter_state_dict().items()}
result = HuggingFaceTrainerForRALT(
    rag, default_qa("train")[:4], epochs=1, batch_size=4, top_k=2, learning_rate=1e-3,
    progress=False,
).train()
after = rag.generator.adapter_state_dict()
changed = max(float((after[k] - before[k]).abs().max()) for k in before)
print(json.dumps({"in_use": allocator.in_use(), "loss": result.loss, "steps": result.steps,
                  "changed": changed}))
"""


@pytest.mark.slow
def test_a_ralt_round_on_the_packaged_models_trains_under_mimalloc():
    env = {k: v for k, v in os.environ.items() if k != "FEDRAG_ALLOCATOR"}
    env |= allocator.allocator_environment(env)
    out = subprocess.run(
        [sys.executable, "-c", TRAIN],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["in_use"] is True
    assert report["steps"] == 2 and 0 < report["loss"] < 20
    assert report["changed"] > 0


RELEASE = """
import json, torch
from fedrag_flower import allocator

def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

blocks = [torch.ones(16, 1024) for _ in range(6400)]  # 400 MB in 64 KB tensors
held = resident()
del blocks
freed = resident()
allocator.release_free_memory()
print(json.dumps({"in_use": allocator.in_use(), "held": held, "freed": freed,
                  "released": resident()}))
"""


@pytest.mark.parametrize("kind", ["mimalloc", "system"])
def test_freed_memory_is_given_back_between_messages(kind):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MIMALLOC_PURGE_DELAY")}
    env["FEDRAG_ALLOCATOR"] = kind
    env |= allocator.allocator_environment(env)
    out = subprocess.run(
        [sys.executable, "-c", RELEASE], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["in_use"] is (kind == "mimalloc")
    # freed but still resident (the allocators keep it for reuse), then given back
    assert report["released"] < report["freed"] - 300
