"""End-to-end tests on the real packaged models and data (SmolLM2-135M-Instruct generator,
all-MiniLM-L6-v2 retriever, Zaragoza FAQ), marked slow: ``pytest -m "not slow"`` skips them.

The default system is built once per session (``default_rag`` in conftest.py); tests that
train use ``default_rag_reset``, which puts the initial adapters back afterwards.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from fedrag_flower.data import default_qa
from fedrag_flower.evaluation.rag_eval import response_nll
from fedrag_flower.rag import RAGConfig, RAGSystem
from fedrag_flower.trainers.huggingface.lsr import HuggingFaceTrainerForLSR
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT

pytestmark = pytest.mark.slow

QUESTIONS = [
    "How long does it take to get a building permit?",
    "Do I need a permit to replace my kitchen tiles?",
    "Who do I contact about scaffolding on the street?",
]


def seed_dataset(n: int = 4) -> list[dict]:
    rows = default_qa("train")[:n]
    return [{"query": [r["query"] for r in rows], "response": [r["response"] for r in rows]}]


def gold_retrieval_probability(rag: RAGSystem, rows: list[dict], trainer) -> float:
    """Mean P_R(gold | x) = softmax(cos / gamma) over the trainer's cached candidates, for
    the queries whose gold chunk is among them."""
    targets, store = trainer.targets, rag.knowledge_store
    gamma = trainer.args.gamma
    with torch.no_grad():
        queries = torch.from_numpy(rag.retriever.encode_queries([r["query"] for r in rows]))
        p_r = torch.softmax(
            torch.einsum("nd,nkd->nk", queries, targets.chunk_embeddings) / gamma, dim=-1
        )
    probabilities = []
    for i, row in enumerate(rows):
        candidates = targets.positions[i].tolist()
        gold = [
            candidates.index(store.position(g))
            for g in row["gold_ids"]
            if store.position(g) in candidates
        ]
        if gold:
            probabilities.append(float(p_r[i, gold].sum()))
    assert len(probabilities) >= len(rows) // 2
    return float(np.mean(probabilities))


def test_ralt_lowers_response_nll_on_held_out_questions(default_rag_reset):
    rag = default_rag_reset
    train, test = default_qa("train")[:48], default_qa("test")[:24]
    before = response_nll(rag, test)

    start = time.perf_counter()
    result = HuggingFaceTrainerForRALT(
        rag, train, epochs=1, top_k=2, batch_size=8, learning_rate=1e-3, progress=False
    ).train()
    after = response_nll(rag, test)
    print(
        f"\nRALT 48 pairs x 2 chunks: {result.steps} steps in {time.perf_counter() - start:.1f} s"
        f" ({result.tokens_per_second:.0f} tokens/s), train loss {result.loss:.3f};"
        f" held-out NLL {before:.3f} -> {after:.3f}"
    )
    assert result.steps == 12 and result.examples == 96
    assert after < before


def test_lsr_raises_gold_chunk_probability_and_keeps_chunk_embeddings(
    default_rag_reset, default_initial_adapters
):
    rag = default_rag_reset
    store, retriever = rag.knowledge_store, rag.retriever
    rows = default_qa("train")[48:112]
    sample = [store.texts[i] for i in (0, 100, 250, 502)]
    store_before = store.embeddings.copy()
    chunks_before = retriever.encode_chunks(sample)

    trainer = HuggingFaceTrainerForLSR(
        rag, rows, epochs=3, top_k=5, batch_size=16, learning_rate=1e-3, progress=False
    )
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    after = gold_retrieval_probability(rag, rows, trainer)

    # P_R before training: the same cached candidates under the initial adapter.
    trained = retriever.adapter_state_dict()
    rag.load_adapter_state_dict(
        {k: v for k, v in default_initial_adapters.items() if k.startswith("retriever.")}
    )
    before = gold_retrieval_probability(rag, rows, trainer)
    retriever.load_adapter_state_dict(trained)

    q = trainer.targets.target
    gold_q = []
    for i, row in enumerate(rows):
        candidates = trainer.targets.positions[i].tolist()
        position = store.position(row["gold_ids"][0])
        if position in candidates:
            gold_q.append(float(q[i, candidates.index(position)]))
    print(
        f"\nLSR 64 queries x 5 candidates, 3 epochs: {seconds:.1f} s, loss {result.history[0]:.3f}"
        f" -> {result.history[-1]:.3f}; mean Q(gold) {np.mean(gold_q):.3f};"
        f" mean P_R(gold) {before:.3f} -> {after:.3f}"
    )
    assert after > before
    np.testing.assert_array_equal(store.embeddings, store_before)
    np.testing.assert_allclose(retriever.encode_chunks(sample), chunks_before, atol=1e-6)
    np.testing.assert_allclose(chunks_before, store_before[[0, 100, 250, 502]], atol=1e-5)


def test_lsr_gold_candidate_pulls_missed_gold_chunks_up_the_ranking(default_rag_reset):
    """Training queries whose gold chunk is not among their top 8: with ``gold_candidate``
    the LM scores the gold chunk too, puts most of Q on it, and LSR moves it up their
    ranking."""
    rag = default_rag_reset
    store = rag.knowledge_store
    rows = default_qa("train")
    embeddings = rag.retriever.encode_queries([r["query"] for r in rows])
    _, top = store.search(embeddings, 8)
    missed = [
        row
        for row, candidates in zip(rows, top)
        if store.position(row["gold_ids"][0]) not in candidates.tolist()
    ][:12]
    assert len(missed) == 12

    def gold_ranks() -> list[int]:
        scores = rag.retriever.encode_queries([r["query"] for r in missed]) @ store.embeddings.T
        gold = [store.position(r["gold_ids"][0]) for r in missed]
        return [int((s > s[g]).sum()) for s, g in zip(scores, gold)]

    before = gold_ranks()
    trainer = HuggingFaceTrainerForLSR(
        rag, missed, epochs=3, top_k=8, batch_size=4, learning_rate=1e-3, gold_candidate=True,
        progress=False,
    )  # fmt: skip
    trainer.train()
    after = gold_ranks()
    gold_q = trainer.targets.target[:, -1]  # the gold chunk took the last slot
    print(
        f"\nLSR gold candidate, 12 missed queries: mean Q(gold) {gold_q.mean():.3f}; "
        f"gold rank (0 = first) mean {np.mean(before):.1f} -> {np.mean(after):.1f}"
    )
    positions = trainer.targets.positions[:, -1].tolist()
    assert positions == [store.position(r["gold_ids"][0]) for r in missed]
    assert float(gold_q.mean()) > 1 / 8  # the LM prefers the gold over a retrieved chunk
    assert np.mean(after) < np.mean(before)


def test_saved_system_loads_back_with_same_answers(default_rag_reset, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fedrag_flower.models import resolve_generator

    rag = default_rag_reset
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a non-trivial adapter
        torch.manual_seed(0)
        for name, p in list(rag.generator.model.named_parameters()) + list(
            rag.retriever.peft_model.named_parameters()
        ):
            if "lora_B" in name:
                p.normal_(0, 0.002)
    quick = RAGSystem(
        rag.retriever, rag.knowledge_store, rag.generator, RAGConfig(max_new_tokens=12)
    )
    answers = quick.batch_query(QUESTIONS)

    path = quick.save_pretrained(tmp_path / "system")
    loaded = RAGSystem.from_pretrained(path)
    reloaded = loaded.batch_query(QUESTIONS)
    assert [r.answer for r in reloaded] == [r.answer for r in answers]
    assert [[s.id for s in r.sources] for r in reloaded] == [
        [s.id for s in r.sources] for r in answers
    ]
    saved, restored = quick.adapter_state_dict(), loaded.adapter_state_dict()
    assert saved.keys() == restored.keys()
    for key in saved:
        torch.testing.assert_close(restored[key], saved[key], rtol=0, atol=0)

    base = AutoModelForCausalLM.from_pretrained(
        resolve_generator(rag.generator.model_name_or_path), dtype=torch.float32
    )
    peft_model = PeftModel.from_pretrained(base, path / "generator_adapter").eval()
    ids = torch.tensor([rag.generator.tokenizer("Building permits in Zaragoza")["input_ids"]])
    with torch.no_grad():
        # Same weights, separately built modules: equal up to fp32 summation order.
        torch.testing.assert_close(
            peft_model(input_ids=ids).logits,
            loaded.generator.model(input_ids=ids).logits,  # fp32: it only answered
            rtol=1e-3,
            atol=1e-3,
        )


def test_seed_snippet_runs_with_the_default_system(default_rag_reset, capsys):
    rag_system = default_rag_reset
    train_dataset = seed_dataset(4)

    trainer = HuggingFaceTrainerForRALT(rag_system, train_dataset)
    train_result = trainer.train()
    print(f"loss: {train_result.loss}")

    lsr_trainer = HuggingFaceTrainerForLSR(rag_system, train_dataset)
    lsr_result = lsr_trainer.train()
    print(f"loss: {lsr_result.loss}")

    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("loss")]
    assert printed == [f"loss: {train_result.loss}", f"loss: {lsr_result.loss}"]
    assert train_result.examples == 4 * rag_system.config.top_k
    assert lsr_result.examples == 4
    # One epoch by default: every batch is one step; every step's loss is positive (NLL of
    # the response; KL of an untrained query adapter) and the result reports their mean.
    for result, batch_size in (
        (train_result, trainer.args.batch_size),
        (lsr_result, lsr_trainer.args.batch_size),
    ):
        assert len(result.history) == result.steps == math.ceil(result.examples / batch_size)
        assert all(np.isfinite(loss) and loss > 0 for loss in result.history)
        assert result.loss == pytest.approx(np.mean(result.history))
