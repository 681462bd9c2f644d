"""Tests for where base models come from (fedrag_flower.models), the cache folder
(fedrag_flower.cache), atomic folder writes (fedrag_flower.atomic) and ``fedrag-flower
prepare``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from fedrag_flower import models
from fedrag_flower.atomic import atomic_directory
from fedrag_flower.cache import cache_dir
from fedrag_flower.cli import main

ROOT = Path(__file__).parents[1]
GENERATOR_FOLDER = Path("models") / "smollm2-135m-instruct"


def _children(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------- atomic folder writes


def test_atomic_directory_replaces_a_folder_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old.txt").write_text("old")

    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert _children(target) == ["old.txt"]  # untouched while the block runs

    assert _children(target) == ["new.txt"]
    assert _children(tmp_path) == ["store"]  # no temporary or old folder left beside it


def test_atomic_directory_keeps_the_old_folder_on_an_error(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old.txt").write_text("old")

    with pytest.raises(RuntimeError, match="disk full"), atomic_directory(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")

    assert _children(target) == ["old.txt"]
    assert (target / "old.txt").read_text() == "old"
    assert _children(tmp_path) == ["store"]


# ----------------------------------------------------------------- cache folder


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDRAG_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FEDRAG_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "fedrag_flower"


# ----------------------------------------------------------------- the packaged generator


def _fake_conversion(calls: list[Path]):
    def convert(target: Path) -> None:
        calls.append(target)
        with atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("{}")

    return convert


def test_prepare_converts_once_then_reuses_the_folder(monkeypatch, tmp_path):
    calls: list[Path] = []
    monkeypatch.setattr(models, "_convert_gguf", _fake_conversion(calls))

    first = models.prepare_packaged_generator(tmp_path)
    second = models.prepare_packaged_generator(tmp_path)

    assert first == second == tmp_path / GENERATOR_FOLDER
    assert calls == [first]


def test_prepare_waits_for_another_process_converting_and_does_not_convert_again(
    monkeypatch, tmp_path
):
    def must_not_convert(target):
        raise AssertionError("converted although another process just did")

    monkeypatch.setattr(models, "_convert_gguf", must_not_convert)
    target = tmp_path / GENERATOR_FOLDER
    target.parent.mkdir(parents=True)
    result: list[Path] = []
    with FileLock(target.parent / ".convert.lock"):  # "another process" is converting
        waiter = threading.Thread(
            target=lambda: result.append(models.prepare_packaged_generator(tmp_path))
        )
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # blocked on the lock
        target.mkdir()
        (target / "config.json").write_text("{}")
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert result == [target]


def test_library_imports_and_locks_without_fcntl(tmp_path):
    # fcntl exists only on POSIX; blocking it stands in for Windows.
    code = f"""
import sys
sys.modules["fcntl"] = None
import fedrag_flower.cli, fedrag_flower.models as models
from pathlib import Path
def convert(target):
    target.mkdir(parents=True)
    (target / "config.json").write_text("{{}}")
models._convert_gguf = convert
print(models.prepare_packaged_generator(Path({str(tmp_path)!r})))
"""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / GENERATOR_FOLDER)


def test_fedrag_flower_prepare_prints_the_generator_and_retriever_folders(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("FEDRAG_CACHE_DIR", str(tmp_path))
    converted = tmp_path / GENERATOR_FOLDER
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")  # already converted: prepare keeps it

    assert main(["prepare"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"generator: {converted}"
    retriever = Path(lines[1].removeprefix("retriever: "))
    assert retriever.name == "model" and (retriever / "config.json").exists()


@pytest.mark.slow
def test_prepare_converts_the_packaged_gguf_into_a_loadable_safetensors_folder(tmp_path):
    from transformers import AutoConfig

    target = models.prepare_packaged_generator(tmp_path)

    assert target == tmp_path / GENERATOR_FOLDER
    assert (target / "model.safetensors").stat().st_size > 100_000_000
    left = [name for name in _children(target.parent) if name != ".convert.lock"]
    assert left == [target.name]  # no temporary folder left beside it
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config  # else loading asks for GGUF again
    assert AutoConfig.from_pretrained(target).num_hidden_layers == 30
