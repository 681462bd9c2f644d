"""The generator: a Hugging Face causal LM with a LoRA adapter."""

from __future__ import annotations

import contextlib
import os

import torch
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedrag_flower.models import PACKAGED_GENERATOR, resolve_generator
from fedrag_flower.rag.lora import (
    LoraSettings,
    adapter_state_dict,
    attach_lora,
    trainable_parameters,
)
from fedrag_flower.rag.lora import load_adapter_state_dict as _load_adapter
from fedrag_flower.rag.precision import autocast_for, bf16_by_default

_DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class Generator:
    """A causal LM (any hub id or local path) wrapped with a LoRA adapter; base frozen.

    The adapter's weights stay fp32 (its optimizer state needs it); ``autocast()`` runs
    the matrix products in bf16 where the hardware has it (``bf16=None`` decides by CPU
    flags, or always on CUDA). Every forward pass goes through ``autocast()``.

    Training on a CPU with bf16 also *stores* the frozen base weights of the linear layers
    in bf16 (``bf16_weights``), from the first ``train()`` of a trainer on: autocast would
    cast them to bf16 at every pass anyway, so training and LM scoring compute exactly the
    same numbers, without the fp32 copies (about half the model's memory) and without a
    cast of every weight per pass. Answers generated after that run under bf16 autocast
    (as they do on CUDA) instead of in fp32. A process that only answers (``ask``,
    ``evaluate``) keeps fp32 weights: its first answer would otherwise wait for the bf16
    conversion and oneDNN's bf16 kernels (~2 s more for ``ask``).

    Args:
        model_name_or_path: hub id, local folder, or ``PACKAGED_GENERATOR``.
        lora: adapter settings (default: r=16, alpha=32 on q/k/v/o projections).
        device: torch device.
        bf16: use bf16 autocast; ``None`` chooses by hardware.
        bf16_weights: let training store the frozen linear weights in bf16 (only with
            ``bf16``); ``None``: on CPU, unless the environment sets
            ``FEDRAG_BF16_WEIGHTS=0`` (fp32 weights throughout, at a cost in memory and
            speed).
    """

    def __init__(
        self,
        model_name_or_path: str = PACKAGED_GENERATOR,
        lora: LoraSettings | None = None,
        device: str = "cpu",
        bf16: bool | None = None,
        bf16_weights: bool | None = None,
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.lora = lora if lora is not None else LoraSettings()
        self.device = device
        path = resolve_generator(model_name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
        base.eval()
        self.model = attach_lora(base, self.lora, _DEFAULT_TARGETS)
        self.model.eval()
        self.bf16 = bf16_by_default(device) if bf16 is None else bf16
        if bf16_weights is None:
            off = os.environ.get("FEDRAG_BF16_WEIGHTS", "1") == "0"
            bf16_weights = not device.startswith("cuda") and not off
        self.bf16_weights = bool(self.bf16 and bf16_weights)
        self.weights_in_bf16 = False

    def prepare_for_training(self) -> None:
        """Called by the trainers before their first pass: stores the frozen linear weights
        in bf16 where ``bf16_weights`` allows (once; see the class docstring)."""
        if self.bf16_weights and not self.weights_in_bf16:
            store_frozen_linear_weights_in_bf16(self.model)
            self.weights_in_bf16 = True
            # Every pass starts at the input embeddings, whichever wrapper it goes through.
            self.model.get_input_embeddings().register_forward_pre_hook(self._check_autocast)

    def _check_autocast(self, module, args) -> None:
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        if not torch.is_autocast_enabled(device_type):
            raise RuntimeError(
                "The generator's frozen weights are stored in bf16 since it trained in this "
                "process: run its model under `generator.autocast()` (or build the Generator "
                "with bf16_weights=False, or set FEDRAG_BF16_WEIGHTS=0)."
            )

    def autocast(self):
        """The training and scoring precision: bf16 autocast, or fp32 where bf16 is off."""
        return autocast_for(self.bf16, self.device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return trainable_parameters(self.model, self.lora)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], max_new_tokens: int = 128) -> list[str]:
        """Greedy answers for tokenized prompts (left-padded into one batch).

        On CPU, decoding is bound by reading the weights once per token: it runs with the
        adapter merged into the base weights, in fp32, or in bf16 where the weights are
        stored in bf16 (half the bytes per token; autocast over fp32 weights would re-cast
        every weight at every step). A single prompt uses prompt-lookup decoding: a RAG answer
        copies spans of its context, which are proposed from the prompt and verified in
        one forward pass; the output is exactly the greedy one.
        """
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        lookup = {"prompt_lookup_num_tokens": 10} if len(prompts) == 1 else {}
        on_cuda = self.bf16 and self.device.startswith("cuda")
        precision = self.autocast() if on_cuda or self.weights_in_bf16 else contextlib.nullcontext()
        with self._adapter_merged(), precision:
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=self.tokenizer.eos_token_id,
                **lookup,
            )
        return [
            self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output
        ]

    @contextlib.contextmanager
    def _adapter_merged(self):
        """For the duration, each adapted layer's base weight is replaced by W + BA and the
        adapter is bypassed; afterwards the original weight tensors are put back as they
        were. (PEFT's merge/unmerge adds and subtracts BA in place, which does not give W
        back bit for bit, so each evaluation would drift the frozen base.)"""
        originals = []
        with torch.no_grad():
            for module in self.model.modules():
                if not isinstance(module, LoraLayer) or not module.lora_A:
                    continue
                base = module.get_base_layer()
                weight = base.weight
                delta = sum(module.get_delta_weight(name) for name in module.active_adapters)
                merged = (weight.float() + delta.float()).to(weight.dtype).detach()
                originals.append((base, weight))
                base.weight = torch.nn.Parameter(merged, requires_grad=False)
        try:
            with self.model.disable_adapter():
                yield
        finally:
            for base, weight in originals:
                base.weight = weight

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return adapter_state_dict(self.model)

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        _load_adapter(self.model, state)

    def save_adapter(self, directory: str) -> None:
        """PEFT format: loads with ``PeftModel.from_pretrained(base_model, directory)``."""
        self.model.save_pretrained(directory)

    def load_adapter(self, directory: str) -> None:
        from peft.utils import load_peft_weights

        self.load_adapter_state_dict(load_peft_weights(directory, device=self.device))


def store_frozen_linear_weights_in_bf16(model: nn.Module) -> int:
    """Store the frozen weights (and biases) of ``model``'s linear layers in bf16, in place;
    returns how many layers changed.

    Under bf16 autocast a linear layer casts its weight and bias to bf16 before the
    product, so a pass over bf16-stored weights computes the same numbers. Left as they
    are: trainable parameters, every LoRA layer (its A and B stay fp32 even when frozen,
    as the adapter's state), and a linear layer that shares its weight with another module
    (a tied LM head: the embedding lookup does not autocast). The other frozen
    parameters are copied into fresh memory, so that no tensor keeps the file mapping that
    ``from_pretrained`` may have read the fp32 weights through alive (its pages would stay
    resident once touched). Each kind goes into one buffer, of which the parameters are
    views: two allocations instead of hundreds (on a VM, fresh pages are the slow part).
    """
    embedding = model.get_input_embeddings()
    tied = {id(embedding.weight)} if embedding is not None else set()
    to_bf16: list[tuple[nn.Module, str]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or "lora_" in name:
            continue
        if module.weight.requires_grad or id(module.weight) in tied:
            continue
        to_bf16 += [(module, "weight")] + ([(module, "bias")] if module.bias is not None else [])
    converted = {id(getattr(module, attr)) for module, attr in to_bf16}
    to_copy = [
        (module, attr)
        for module in model.modules()
        for attr, param in module.named_parameters(recurse=False)
        if not param.requires_grad and id(param) not in converted
    ]
    with torch.no_grad():
        _into_one_buffer(to_bf16, torch.bfloat16)
        _into_one_buffer(to_copy, None)
    return len({id(module) for module, _ in to_bf16})


def _into_one_buffer(params: list[tuple[nn.Module, str]], dtype: torch.dtype | None) -> None:
    """Replace each ``module.attr`` parameter by a frozen view of one new buffer holding its
    values (cast to ``dtype``, or in its own dtype when ``None``; a parameter shared by
    several modules stays shared)."""
    groups: dict[torch.dtype, list[tuple[nn.Module, str]]] = {}
    for module, attr in params:
        groups.setdefault(dtype or getattr(module, attr).dtype, []).append((module, attr))
    for group_dtype, group in groups.items():
        unique = {id(getattr(module, attr)): getattr(module, attr) for module, attr in group}
        device = next(iter(unique.values())).device
        total = sum(param.numel() for param in unique.values())
        buffer = torch.empty(total, dtype=group_dtype, device=device)
        replaced: dict[int, nn.Parameter] = {}
        offset = 0
        for module, attr in group:
            old = getattr(module, attr)
            if id(old) not in replaced:
                size = old.numel()
                view = buffer[offset : offset + size].view(old.shape)
                view.copy_(old)
                replaced[id(old)] = nn.Parameter(view, requires_grad=False)
                offset += size
            setattr(module, attr, replaced[id(old)])
