"""Tests for fedrag_flower.losses: token scoring, the RALT loss and the LSR loss.

All on a tiny random Llama (and, for gradients into the query adapter, the packaged
MiniLM), so they run in seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from fedrag_flower.losses.lsr import LSRLoss, lm_target_distribution
from fedrag_flower.losses.ralt import RALTLoss
from fedrag_flower.losses.scoring import (
    collate,
    full_logits_target_log_probs,
    sequence_log_likelihoods,
    shared_prefix_length,
    target_log_probs,
)
from fedrag_flower.rag.prompts import IGNORE_INDEX, Example, PromptBuilder


def random_batch(prompt_lengths=(5, 9), target_lengths=(7, 4), vocab=103, seed=0):
    """Right-padded batch of random tokens; labels only on the target part."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for n_prompt, n_target in zip(prompt_lengths, target_lengths):
        ids = torch.randint(3, vocab, (n_prompt + n_target,), generator=generator).tolist()
        examples.append(Example(ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:]))
    return collate(examples, pad_token_id=1), examples


# ----------------------------------------------------------------- logit alignment


def test_target_token_i_is_scored_with_logits_at_i_minus_1(tiny_lm):
    batch, examples = random_batch()
    with torch.no_grad():
        log_probs, rows = target_log_probs(tiny_lm, **batch)
        logits = tiny_lm(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    expected, expected_rows, shifted_wrong = [], [], []
    for b, example in enumerate(examples):
        for i, label in enumerate(example.labels):
            if label == IGNORE_INDEX:
                continue
            expected.append(torch.log_softmax(logits[b, i - 1], -1)[label])
            shifted_wrong.append(torch.log_softmax(logits[b, i], -1)[label])
            expected_rows.append(b)
    torch.testing.assert_close(log_probs, torch.stack(expected), rtol=1e-5, atol=1e-5)
    assert rows.tolist() == expected_rows
    # The off-by-one reading (logits at i score token i) gives other numbers.
    assert not torch.allclose(log_probs, torch.stack(shifted_wrong), atol=1e-3)


def test_fast_path_equals_full_logits_path(tiny_lm):
    batch, _ = random_batch(prompt_lengths=(20, 3, 11), target_lengths=(6, 15, 1))
    with torch.no_grad():
        fast, fast_rows = target_log_probs(tiny_lm, **batch)
        full, full_rows = full_logits_target_log_probs(tiny_lm, **batch)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    assert fast_rows.tolist() == full_rows.tolist()
    assert fast.numel() == 6 + 15 + 1  # one score per target token, none for the prompt


def test_fast_path_matches_full_logits_path_under_bf16_autocast(tiny_lm):
    batch, _ = random_batch(prompt_lengths=(20, 13), target_lengths=(9, 15))
    with torch.no_grad():
        reference = -full_logits_target_log_probs(tiny_lm, **batch)[0].mean()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = RALTLoss()(tiny_lm, **batch)
            plain = -full_logits_target_log_probs(tiny_lm, **batch)[0].mean()
    assert fast.dtype == torch.float32  # the log-softmax runs in fp32 even under autocast
    # bf16 keeps 8 bits of mantissa: ~0.4% relative error per product, far less on a mean.
    assert fast.item() == pytest.approx(reference.item(), rel=1e-2)
    assert fast.item() == pytest.approx(plain.item(), rel=1e-2)


def test_fast_path_gradients_equal_full_logits_path(tiny_lm):
    batch, _ = random_batch(prompt_lengths=(8, 12), target_lengths=(10, 5))
    params = [p for p in tiny_lm.parameters() if p.requires_grad]
    fast = -target_log_probs(tiny_lm, **batch)[0].mean()
    fast_grads = torch.autograd.grad(fast, params)
    full = -full_logits_target_log_probs(tiny_lm, **batch)[0].mean()
    full_grads = torch.autograd.grad(full, params)
    for a, b in zip(fast_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def shared_prefix_batch(prefix_length=14, prompt_lengths=(6, 1, 9), target_lengths=(5, 8, 3)):
    """A batch whose rows open with the same ``prefix_length`` unscored tokens (a system
    prompt), then differ; the second row's target starts right after the prefix."""
    generator = torch.Generator().manual_seed(3)
    prefix = torch.randint(3, 103, (prefix_length,), generator=generator).tolist()
    examples = []
    for n_prompt, n_target in zip(prompt_lengths, target_lengths):
        ids = prefix + torch.randint(3, 103, (n_prompt + n_target,), generator=generator).tolist()
        n_unscored = prefix_length + n_prompt
        examples.append(Example(ids, [IGNORE_INDEX] * n_unscored + ids[n_unscored:]))
    return collate(examples, pad_token_id=1)


def test_shared_prefix_length_stops_before_the_last_shared_token():
    batch = shared_prefix_batch(prefix_length=14)
    assert shared_prefix_length(**batch) == 13  # the 14th token's state predicts a target
    short = shared_prefix_batch(prefix_length=5)
    assert shared_prefix_length(**short) == 0  # too short to pay for a second pass
    one_row = {k: v[:1] for k, v in batch.items()}
    assert shared_prefix_length(**one_row) == 0
    scored = dict(batch, labels=batch["input_ids"].clone())  # a labelled token is not shared
    assert shared_prefix_length(**scored) == 0


def test_shared_prefix_path_equals_the_whole_sequence_path(tiny_lm):
    batch = shared_prefix_batch()
    assert shared_prefix_length(**batch) > 0
    with torch.no_grad():
        shared, shared_rows = target_log_probs(tiny_lm, **batch)
        whole, whole_rows = target_log_probs(tiny_lm, **batch, share_prefix=False)
        full, _ = full_logits_target_log_probs(tiny_lm, **batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            shared_bf16, _ = target_log_probs(tiny_lm, **batch)
            whole_bf16, _ = target_log_probs(tiny_lm, **batch, share_prefix=False)
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared, full, rtol=1e-5, atol=1e-5)
    assert shared_rows.tolist() == whole_rows.tolist() and shared.numel() == 5 + 8 + 3
    assert shared_bf16.mean().item() == pytest.approx(whole_bf16.mean().item(), rel=1e-2)


def test_a_model_training_with_dropout_runs_every_row_whole(tiny_lm, monkeypatch):
    """One dropout mask for a shared prefix would change the objective: with LoRA dropout
    active in training the prefix is not shared; in eval mode it is."""
    from fedrag_flower.losses import scoring

    batch = shared_prefix_batch()
    calls = []
    monkeypatch.setattr(
        scoring, "DynamicCache", lambda **kw: calls.append(kw) or DynamicCache(**kw)
    )
    for module in tiny_lm.modules():
        if hasattr(module, "lora_dropout"):  # LoRA dropout 0 is an Identity: make it 0.1
            for name in module.lora_dropout:
                module.lora_dropout[name] = torch.nn.Dropout(0.1)
    tiny_lm.train()
    target_log_probs(tiny_lm, **batch)
    assert calls == []
    tiny_lm.eval()
    target_log_probs(tiny_lm, **batch)
    assert len(calls) == 1


def test_shared_prefix_path_gradients_equal_the_whole_sequence_path(tiny_lm):
    batch = shared_prefix_batch()
    params = [p for p in tiny_lm.parameters() if p.requires_grad]
    shared = -target_log_probs(tiny_lm, **batch)[0].mean()
    shared_grads = torch.autograd.grad(shared, params)
    whole = -target_log_probs(tiny_lm, **batch, share_prefix=False)[0].mean()
    whole_grads = torch.autograd.grad(whole, params)
    for a, b in zip(shared_grads, whole_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------- RALT


def test_ralt_loss_is_mean_nll_over_target_tokens_only(tiny_lm):
    batch, examples = random_batch(prompt_lengths=(10, 4), target_lengths=(3, 8))
    with torch.no_grad():
        loss = RALTLoss()(tiny_lm, **batch)
        logits = tiny_lm(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        # Hugging Face's own shifted cross-entropy ignores -100 labels the same way.
        hf_loss = tiny_lm(**batch).loss
    nll = []
    for b, example in enumerate(examples):
        for i, label in enumerate(example.labels):
            if label != IGNORE_INDEX:
                nll.append(-torch.log_softmax(logits[b, i - 1], -1)[label].item())
    assert len(nll) == 3 + 8
    assert loss.item() == pytest.approx(sum(nll) / len(nll), rel=1e-5)
    assert loss.item() == pytest.approx(hf_loss.item(), rel=1e-5)
    # Loss on every token, prompt included (RALT's loss is on the response only), would be
    # another number.
    all_tokens = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    with torch.no_grad():
        loss_on_all = tiny_lm(**(batch | {"labels": all_tokens})).loss
    assert abs(loss_on_all.item() - loss.item()) > 1e-3


def test_ralt_loss_ignores_prompt_labels_and_padding(tiny_lm):
    """Changing the prompt changes the loss only through the conditioning, and extra
    padding or a longer padded neighbour changes nothing."""
    _, examples = random_batch(prompt_lengths=(6, 25), target_lengths=(5, 5))
    alone = collate([examples[0]], pad_token_id=1)
    padded = collate(examples, pad_token_id=1)
    with torch.no_grad():
        log_probs_alone, _ = target_log_probs(tiny_lm, **alone)
        log_probs_padded, rows = target_log_probs(tiny_lm, **padded)
    torch.testing.assert_close(log_probs_alone, log_probs_padded[rows == 0], atol=1e-5, rtol=1e-5)


def test_ralt_gradient_reaches_only_lora_parameters(tiny_lm):
    batch, _ = random_batch()
    RALTLoss()(tiny_lm, **batch).backward()
    for name, param in tiny_lm.named_parameters():
        if "lora_" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert not param.requires_grad and param.grad is None, name


def test_prompt_builder_labels_prompt_tokens_ignore_and_keeps_whole_target(tokenizer):
    builder = PromptBuilder(tokenizer, "Context:\n{context}\n\nQuestion: {query}", "Be brief.", 80)
    example = builder.example("Why?", "Because the sky is blue.", "Rayleigh.")
    prompt = builder.prompt_ids("Why?", "Because the sky is blue.")
    target = tokenizer("Rayleigh.", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    assert example.input_ids == prompt + target
    assert example.labels == [IGNORE_INDEX] * len(prompt) + target
    assert example.num_target_tokens == len(target)


# ----------------------------------------------------------------- LSR


def test_lsr_kl_matches_hand_computation_on_2x3_example():
    gamma = 0.5
    query = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    chunks = F.normalize(
        torch.tensor(
            [
                [[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]],
                [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]],
            ]
        ),
        dim=-1,
    )
    target = torch.tensor([[0.7, 0.1, 0.2], [0.2, 0.5, 0.3]])
    loss = LSRLoss(gamma=gamma)(query, chunks, target)

    total = 0.0
    for n in range(2):
        scores = [float(query[n] @ chunks[n, j]) / gamma for j in range(3)]
        log_z = math.log(sum(math.exp(s) for s in scores))
        for j in range(3):
            q = float(target[n, j])
            total += q * (math.log(q) - (scores[j] - log_z))
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)
    # KL is zero exactly when P_R equals Q.
    p_r = torch.softmax(torch.einsum("nd,nkd->nk", query, chunks) / gamma, -1)
    assert LSRLoss(gamma)(query, chunks, p_r).item() == pytest.approx(0.0, abs=1e-6)


def test_lm_target_is_not_uniform_when_log_likelihoods_differ():
    ll = torch.tensor([[-1.2, -1.5, -2.5], [-0.9, -0.9, -0.9]])
    q = lm_target_distribution(ll, beta=0.1)
    torch.testing.assert_close(q.sum(-1), torch.ones(2))
    assert q[0, 0] > q[0, 1] > q[0, 2]
    assert q[0].max() - q[0].min() > 0.5
    torch.testing.assert_close(q[1], torch.full((3,), 1 / 3))
    # The temperature sharpens: lower beta, more mass on the best candidate.
    assert lm_target_distribution(ll, beta=0.05)[0, 0] > q[0, 0]


def test_lm_target_from_real_sequence_log_likelihoods_is_not_uniform_unlike_naive_probs(
    tiny_lm,
):
    """Whole-sequence probabilities underflow: exp(sum of token log-probs) of a
    200-token response is 0.0 in fp32 under every context, and the naive normalised target
    is uniform (or NaN). Log-space softmax keeps the differences."""
    generator = torch.Generator().manual_seed(3)
    response = torch.randint(3, 103, (200,), generator=generator).tolist()
    examples = []
    for context_length in (5, 30, 60):
        context = torch.randint(3, 103, (context_length,), generator=generator).tolist()
        examples.append(Example(context + response, [IGNORE_INDEX] * context_length + response))
    batch = collate(examples, pad_token_id=1)
    with torch.no_grad():
        log_probs, rows = target_log_probs(tiny_lm, **batch)
    sums = sequence_log_likelihoods(log_probs, rows, 3, length_normalize=False)
    assert len(set(sums.tolist())) == 3 and sums.max() < -300

    naive_probs = torch.exp(sums)
    assert torch.all(naive_probs == 0)  # underflow
    naive_target = (naive_probs + 1e-30) / (naive_probs + 1e-30).sum()
    torch.testing.assert_close(naive_target, torch.full((3,), 1 / 3))

    q_sum = lm_target_distribution(sums.unsqueeze(0), beta=1.0)[0]
    assert q_sum.max() - q_sum.min() > 1e-3
    means = sequence_log_likelihoods(log_probs, rows, 3, length_normalize=True)
    q_mean = lm_target_distribution(means.unsqueeze(0), beta=0.01)[0]
    assert q_mean.max() - q_mean.min() > 1e-3
    assert torch.argmax(q_sum) == torch.argmax(sums) == torch.argmax(q_mean)


def test_sequence_log_likelihoods_sum_and_mean():
    log_probs = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    rows = torch.tensor([0, 0, 0, 2])
    sums = sequence_log_likelihoods(log_probs, rows, 3, length_normalize=False)
    means = sequence_log_likelihoods(log_probs, rows, 3, length_normalize=True)
    assert sums.tolist() == [-6.0, 0.0, -4.0]
    assert means.tolist() == [-2.0, 0.0, -4.0]


def test_lsr_loss_trains_query_adapter_and_never_chunk_embeddings():
    from fedrag_flower.rag.retriever import Retriever

    retriever = Retriever()  # fresh: this test leaves gradients on its adapter
    queries = ["How long does a building permit take?", "Who removes asbestos?"]
    texts = [
        "A building permit takes six to twelve weeks.",
        "Asbestos removal must be done by a registered company.",
        "Noise is allowed from eight to eight.",
    ]
    base_chunks = retriever.encode_chunks(texts)
    chunks = torch.from_numpy(base_chunks).unsqueeze(0).repeat(2, 1, 1).requires_grad_(True)
    target = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])

    loss = LSRLoss(gamma=0.05)(retriever.query_embeddings(queries), chunks, target)
    loss.backward()

    assert chunks.grad is None
    lora = {n: p for n, p in retriever.peft_model.named_parameters() if "lora_" in n}
    assert lora and set(map(id, lora.values())) == set(map(id, retriever.trainable_parameters()))
    # LoRA B starts at zero, so only B gets gradient on the first step (A's gradient is
    # B-weighted); every B matrix must get some.
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n
    )
    for name, param in retriever.query_model.named_parameters():
        if "lora_" not in name:
            assert param.grad is None, name

    # One optimizer step moves the query embeddings, not the chunk embeddings.
    before = retriever.encode_queries(queries)
    torch.optim.SGD(retriever.trainable_parameters(), lr=1.0).step()
    assert not torch.allclose(
        torch.from_numpy(before), torch.from_numpy(retriever.encode_queries(queries))
    )
    torch.testing.assert_close(
        torch.from_numpy(retriever.encode_chunks(texts)), torch.from_numpy(base_chunks)
    )
