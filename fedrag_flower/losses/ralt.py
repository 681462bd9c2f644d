"""RALT: retrieval-augmented LM training loss (RA-DIT's generator fine-tuning)."""

from __future__ import annotations

import torch
from torch import nn

from fedrag_flower.losses.scoring import target_log_probs


class RALTLoss(nn.Module):
    """Negative log-likelihood of the response given a prompt with one retrieved chunk.

    For a query x with gold response y and retrieved chunks c_1..c_k, RA-DIT (Lin et al.,
    2023, "RA-DIT: Retrieval-Augmented Dual Instruction Tuning") trains on k parallel
    examples prompt_j = template(x, c_j), target = y + EOS:

        L = - (1 / T) * sum_j sum_{t in target_j} log p_LM(y_t | prompt_j, y_<t)

    where T is the number of target tokens in the batch: a per-token mean over the
    response only. Prompt and padding tokens carry label -100 and contribute nothing.
    Passing ``num_target_tokens`` (T of a whole batch) scores one micro-batch of it: the
    micro-batches' losses then add up to the batch's loss, and so do their gradients.

    Input: a batch from ``scoring.collate`` (``input_ids``, ``attention_mask``, ``labels``).

    >>> loss = RALTLoss()(generator.model, **batch)
    >>> loss.backward()  # gradient reaches the generator's LoRA parameters only
    """

    def forward(
        self,
        causal_lm: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        num_target_tokens: int | None = None,
    ) -> torch.Tensor:
        log_probs, _ = target_log_probs(causal_lm, input_ids, attention_mask, labels)
        return -log_probs.sum() / (num_target_tokens or log_probs.numel())
