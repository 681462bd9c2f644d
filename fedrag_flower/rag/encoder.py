"""Sentence encoders for the retriever: a plain one for the common case, sentence-transformers
for the rest.

Most sentence-transformers models (MiniLM, BGE, GTE, E5 without prompts...) are a Hugging
Face encoder, a pooling of its token states and an L2 normalisation, described by a folder's
``modules.json``. ``PlainEncoder`` runs exactly that with ``transformers`` alone, because
importing sentence-transformers costs ~1 s on 2 CPU cores (2026-11-29, in-process: torch +
transformers + PEFT 3.0 s, with sentence-transformers 4.0 s), paid again by every deployed
ClientApp message and every ``ask``. ``load_encoder`` picks it for a local folder it fully
understands and falls back to ``SentenceTransformer`` for anything else (a hub id, a Dense
or custom module, default prompts, lower-casing, other poolings), so any model
sentence-transformers loads still works. Both expose the same small interface:
``backbone`` (the Hugging Face model, where the LoRA adapter goes), ``replace_backbone``,
``embed`` (a batch with gradient), ``encode`` (inference, numpy) and ``dim``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_MODES = {"cls", "mean", "max"}
_MODE_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pooling_mode(config: dict) -> str | None:
    """The one pooling mode a Pooling config asks for, or ``None`` if it asks for another
    mode, several at once, or prompt-aware pooling."""
    if config.get("include_prompt", True) is not True:
        return None
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return mode if isinstance(mode, str) and mode in _POOLING_MODES else None
    modes = [mode for flag, mode in _MODE_FLAGS.items() if config.get(flag)]
    return modes[0] if len(modes) == 1 and modes[0] in _POOLING_MODES else None


def plain_layout(folder: Path) -> dict | None:
    """What ``PlainEncoder`` needs from a sentence-transformers folder (the encoder's
    folder, the pooling mode, whether it normalises, the maximum length), or ``None`` when
    the folder holds anything ``PlainEncoder`` would not reproduce exactly."""
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list) or not modules:
        return None
    types = [m.get("type") for m in modules if isinstance(m, dict)]
    if len(types) != len(modules) or types[:2] != [_TRANSFORMER, _POOLING]:
        return None
    if types[2:] not in ([], [_NORMALIZE]):
        return None
    st_config = _read_json(folder / "config_sentence_transformers.json") or {}
    if st_config.get("default_prompt_name") or any((st_config.get("prompts") or {}).values()):
        return None
    transformer_dir = folder / modules[0].get("path", "")
    settings = _read_json(transformer_dir / "sentence_bert_config.json") or {}
    if settings.get("do_lower_case") or set(settings) - {"max_seq_length", "do_lower_case"}:
        return None  # lower-casing, model/tokenizer arguments, other tasks: not ours to redo
    pooling = _read_json(folder / modules[1].get("path", "") / "config.json")
    mode = _pooling_mode(pooling) if isinstance(pooling, dict) else None
    if mode is None or not (transformer_dir / "config.json").exists():
        return None
    return {
        "transformer_dir": transformer_dir,
        "pooling": mode,
        "normalize": len(types) == 3,
        "max_seq_length": settings.get("max_seq_length"),
    }


def load_encoder(name_or_path: str, device: str = "cpu") -> torch.nn.Module:
    """A ``PlainEncoder`` for a local folder it reproduces exactly, else a
    ``SentenceTransformersEncoder``."""
    folder = Path(name_or_path)
    layout = plain_layout(folder) if folder.is_dir() else None
    if layout is None:
        return SentenceTransformersEncoder(name_or_path, device)
    return PlainEncoder(device=device, **layout)


def in_length_groups(
    texts: list[str],
    size: int,
    encode: Callable[[list[str]], torch.Tensor],
    show_progress: bool = False,
) -> torch.Tensor:
    """``encode`` over groups of at most ``size`` texts of similar length (by characters,
    so a group pads little), its rows put back in the order of ``texts`` (not empty)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    starts = range(0, len(texts), size)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Batches")
    parts = [encode([texts[i] for i in order[start : start + size]]) for start in starts]
    return torch.cat(parts)[torch.argsort(torch.tensor(order))]


def _pool(tokens: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states over the real (unmasked) tokens, as sentence-transformers does:
    means are summed in at least fp32 and cast back."""
    if mode == "cls":  # the first real token, wherever the tokenizer pads
        first = mask.to(torch.int).argmax(dim=1)
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), first]
    if mode == "max":
        return tokens.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    accumulate = torch.promote_types(tokens.dtype, torch.float32)
    total = (tokens * weights).sum(dim=1, dtype=accumulate)
    count = weights.sum(dim=1, dtype=accumulate).clamp(min=1e-9)
    return (total / count).to(tokens.dtype)


class PlainEncoder(torch.nn.Module):
    """A Hugging Face encoder, one pooling and an optional L2 normalisation, loaded from a
    sentence-transformers folder with ``transformers`` alone (see the module docstring).

    Args:
        transformer_dir: the folder of the encoder's weights and tokenizer.
        pooling: ``"mean"``, ``"cls"`` or ``"max"``.
        normalize: the model ends with a Normalize module.
        max_seq_length: truncation length (the tokenizer's own limit if ``None``).
        device: torch device.
    """

    def __init__(
        self,
        transformer_dir: Path,
        pooling: str,
        normalize: bool,
        max_seq_length: int | None,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(transformer_dir)
        self.backbone = AutoModel.from_pretrained(transformer_dir).to(device)
        limits = [self.tokenizer.model_max_length, max_seq_length]
        positions = getattr(self.backbone.config, "max_position_embeddings", -1)
        if max_seq_length is None and positions != -1:
            limits.append(positions)  # sentence-transformers caps the tokenizer there too
        self.max_seq_length = min(n for n in limits if n is not None)
        self.pooling = pooling
        self.normalize = normalize
        self.device = device

    def replace_backbone(self, module: torch.nn.Module) -> None:
        """Put ``module`` (the backbone wrapped, e.g. by PEFT) in the backbone's place."""
        self.backbone = module

    @property
    def dim(self) -> int:
        return self.backbone.config.hidden_size

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Sentence embeddings of one batch, with gradient where autograd is on."""
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="pt",
        ).to(self.device)
        tokens = self.backbone(**batch, return_dict=True).last_hidden_state
        embeddings = _pool(tokens, batch["attention_mask"], self.pooling)
        return F.normalize(embeddings, p=2, dim=1) if self.normalize else embeddings

    def encode(
        self, texts: list[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Unit-norm float32 embeddings without gradient, in batches of similar length
        (as sentence-transformers batches them), in input order."""
        if not texts:
            return np.zeros((0, self.dim), dtype="float32")
        with torch.inference_mode():
            embeddings = in_length_groups(
                texts,
                batch_size,
                lambda batch: F.normalize(self.embed(batch).float(), dim=-1),
                show_progress,
            )
        return embeddings.cpu().numpy()


class SentenceTransformersEncoder(torch.nn.Module):
    """Any model sentence-transformers loads (a hub id, custom modules), behind the same
    interface as ``PlainEncoder``."""

    def __init__(self, name_or_path: str, device: str = "cpu") -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(name_or_path, device=device)
        self.device = device

    @property
    def backbone(self) -> torch.nn.Module:
        return self.model[0].model

    def replace_backbone(self, module: torch.nn.Module) -> None:
        self.model[0].model = module

    @property
    def dim(self) -> int:
        # sentence-transformers 6 renamed the method (the old name warns); 5.x has only it
        method = getattr(self.model, "get_embedding_dimension", None)
        return (method or self.model.get_sentence_embedding_dimension)()

    def embed(self, texts: list[str]) -> torch.Tensor:
        features = self.model.preprocess(texts)
        features = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"]

    def encode(
        self, texts: list[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        ).astype("float32")
