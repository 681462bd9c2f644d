"""LSR: LM-supervised retrieval loss (REPLUG / RA-DIT retriever fine-tuning)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lm_target_distribution(log_likelihoods: torch.Tensor, beta: float) -> torch.Tensor:
    """Q(c | x, y) = softmax_c( ll(y | c, x) / beta ), computed in log space.

    ``log_likelihoods`` is ``[n_queries, k]``; log-likelihoods (not probabilities, which
    underflow to a uniform target for whole sequences) of the gold response given each
    candidate chunk. Returns ``[n_queries, k]`` probabilities, no gradient.
    """
    return torch.softmax(log_likelihoods.detach().float() / beta, dim=-1)


class LSRLoss(nn.Module):
    """KL(Q || P_R) between the LM's preference over candidate chunks and the retriever's.

    Following REPLUG (Shi et al., 2023) and RA-DIT (Lin et al., 2023):

        P_R(c | x) = softmax_c( cos(E_q(x), e_c) / gamma )
        Q(c | x, y) = softmax_c( ll(y | c, x) / beta )           (a fixed target)
        L = mean_x sum_c Q(c|x,y) * (log Q(c|x,y) - log P_R(c|x))

    The query embeddings E_q(x) must come from the live, trainable query encoder (unit
    norm); the chunk embeddings e_c come from the frozen context side and get no gradient,
    unless ``train_chunks`` (a retriever whose adapter encodes the chunks too: then e_c
    must come from the live encoder as well, and the loss trains it through both sides).

    Args:
        gamma: retrieval temperature.
        train_chunks: let the gradient flow into the chunk embeddings.

    Input: ``query_embeddings [n, d]`` (with grad), ``chunk_embeddings [n, k, d]``,
    ``target [n, k]`` from ``lm_target_distribution``, and optionally ``valid [n, k]``:
    False marks an empty candidate slot, which gets no retrieval probability (its target
    must be 0).

    >>> loss = LSRLoss(gamma=0.05)(retriever.query_embeddings(queries), chunks, q_target)
    """

    def __init__(self, gamma: float = 0.05, train_chunks: bool = False) -> None:
        super().__init__()
        self.gamma = gamma
        self.train_chunks = train_chunks

    def forward(
        self,
        query_embeddings: torch.Tensor,
        chunk_embeddings: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not self.train_chunks:
            chunk_embeddings = chunk_embeddings.detach()
        scores = torch.einsum("nd,nkd->nk", query_embeddings, chunk_embeddings) / self.gamma
        if valid is not None:  # finite, so that 0 * log P_R stays 0 in the KL
            scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
        log_p_retriever = F.log_softmax(scores, dim=-1)
        return F.kl_div(log_p_retriever, target, reduction="batchmean")
