"""Tests for fedrag_flower.trainers: shared pieces, and both trainers on a tiny RAG system
(packaged MiniLM retriever, six-chunk store, tiny random generator)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from fedrag_flower.losses.lsr import LSRLoss
from fedrag_flower.losses.scoring import collate, sequence_log_likelihoods, target_log_probs
from fedrag_flower.trainers.args import with_overrides
from fedrag_flower.trainers.batching import length_batches
from fedrag_flower.trainers.huggingface import lsr as lsr_module
from fedrag_flower.trainers.huggingface.lsr import HuggingFaceTrainerForLSR, LSRTrainingArgs
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT, RALTTrainingArgs
from fedrag_flower.trainers.result import TrainResult
from tests.conftest import TINY_CORPUS, TINY_LORA


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def changed(before, params) -> bool:
    return any(not torch.equal(a, p.detach()) for a, p in zip(before, params))


def frozen_params(module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if not p.requires_grad]


# ----------------------------------------------------------------- shared pieces


@pytest.mark.parametrize("n, batch_size", [(0, 4), (1, 4), (10, 3), (457, 8), (1000, 16)])
def test_length_batches_cover_every_index_exactly_once(n, batch_size):
    lengths = [random.Random(i).randint(5, 300) for i in range(n)]
    batches = list(length_batches(lengths, batch_size, random.Random(0)))
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(n))
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    assert sum(len(batch) < batch_size for batch in batches) <= -(-n // (batch_size * 50))


def test_length_batches_group_similar_lengths_and_vary_by_epoch():
    lengths = [random.Random(i).randint(5, 300) for i in range(400)]
    rng = random.Random(0)
    first = list(length_batches(lengths, 8, rng))
    second = list(length_batches(lengths, 8, rng))
    assert first != second

    def padding(batches):
        return sum(
            max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches
        )

    shuffled = list(range(400))
    random.Random(1).shuffle(shuffled)
    naive = [shuffled[i : i + 8] for i in range(0, 400, 8)]
    assert padding(first) < padding(naive) / 5


def test_train_result_metrics_are_scalars_without_history():
    result = TrainResult(
        loss=1.5,
        steps=3,
        examples=24,
        seconds=2.0,
        tokens=100,
        tokens_per_second=50.0,
        history=[2.0, 1.5, 1.0],
    )
    assert result.metrics() == {
        "loss": 1.5,
        "steps": 3.0,
        "examples": 24.0,
        "seconds": 2.0,
        "tokens": 100.0,
        "tokens_per_second": 50.0,
    }
    assert TrainResult(loss=0.1, steps=1, examples=1, seconds=0.1).history == []


def test_unknown_training_argument_is_an_error():
    with pytest.raises(TypeError, match="learning_rat"):
        with_overrides(RALTTrainingArgs(), {"learning_rat": 1e-3})
    args = with_overrides(LSRTrainingArgs(), {"gamma": 0.1, "epochs": 3})
    assert (args.gamma, args.epochs) == (0.1, 3)


class ColumnDataset:
    """Quacks like ``datasets.Dataset``: ``to_dict()`` gives columns."""

    def __init__(self, columns):
        self.columns = columns

    def to_dict(self):
        return self.columns


@pytest.mark.parametrize("trainer_class", [HuggingFaceTrainerForRALT, HuggingFaceTrainerForLSR])
def test_trainers_accept_every_train_dataset_form(trainer_class):
    queries, responses = ["What is ML?", "What is RAG?"], ["Learning.", "Retrieval."]
    rows = [{"query": q, "response": r} for q, r in zip(queries, responses)]
    forms = [
        [{"query": queries, "response": responses}],  # the seed's list of column dicts
        [
            {"query": queries[:1], "response": responses[:1]},
            {"query": queries[1:], "response": responses[1:]},
        ],
        {"query": queries, "response": responses},
        rows,
        ColumnDataset({"query": queries, "response": responses}),
    ]
    for form in forms:
        trainer = trainer_class(None, form)
        assert trainer.rows == rows
    trainer = trainer_class(None, rows, learning_rate=0.5, epochs=2)
    assert (trainer.args.learning_rate, trainer.args.epochs) == (0.5, 2)
    with pytest.raises(ValueError, match="response"):
        trainer_class(None, [{"query": "What?"}])
    with pytest.raises(ValueError, match="empty"):
        trainer_class(None, [])


# ----------------------------------------------------------------- RALT on a tiny system


def test_ralt_trains_only_the_generator_adapter(tiny_rag, tiny_qa):
    generator, retriever = tiny_rag.generator, tiny_rag.retriever
    lora, base = generator.trainable_parameters(), frozen_params(generator.model)
    lora_before, base_before = snapshot(lora), snapshot(base)
    retriever_before = snapshot(retriever.query_model.parameters())
    store_before = tiny_rag.knowledge_store.embeddings.copy()

    result = HuggingFaceTrainerForRALT(
        tiny_rag, tiny_qa, epochs=2, batch_size=4, top_k=2, progress=False
    ).train()

    assert changed(lora_before, lora)
    assert not changed(base_before, base)
    assert not changed(retriever_before, retriever.query_model.parameters())
    np.testing.assert_array_equal(tiny_rag.knowledge_store.embeddings, store_before)
    assert not generator.model.training  # back in eval mode
    examples_per_epoch = len(tiny_qa) * 2
    assert result.examples == 2 * examples_per_epoch
    assert result.steps == 2 * -(-examples_per_epoch // 4) == len(result.history)
    assert np.isfinite(result.loss) and result.loss == pytest.approx(np.mean(result.history))
    assert result.tokens > 0 and result.tokens_per_second > 0 and result.seconds > 0


def test_ralt_retrieves_once_per_train_not_per_step(tiny_rag, tiny_qa, monkeypatch):
    calls = []
    retrieve = tiny_rag.retrieve

    def counting_retrieve(queries, k=None):
        calls.append((len(queries), k))
        return retrieve(queries, k)

    monkeypatch.setattr(tiny_rag, "retrieve", counting_retrieve)
    result = HuggingFaceTrainerForRALT(
        tiny_rag, tiny_qa, epochs=3, batch_size=2, top_k=2, progress=False
    ).train()
    assert result.steps == 3 * len(tiny_qa)  # many steps ...
    assert calls == [(len(tiny_qa), 2)]  # ... one batched retrieval for all epochs


def test_ralt_counts_real_tokens_and_stops_at_max_steps(tiny_rag, tiny_qa):
    from fedrag_flower.trainers.huggingface.ralt import ralt_examples

    examples = ralt_examples(tiny_rag, tiny_qa, 2)
    assert len(examples) == 2 * len(tiny_qa)
    result = HuggingFaceTrainerForRALT(
        tiny_rag, tiny_qa, batch_size=len(examples), top_k=2, progress=False
    ).train()
    assert result.tokens == sum(len(e.input_ids) for e in examples)
    short = HuggingFaceTrainerForRALT(
        tiny_rag, tiny_qa, epochs=5, batch_size=2, top_k=2, max_steps=3, progress=False
    ).train()
    assert short.steps == 3 and short.examples == 6


def test_joined_ralt_puts_a_pairs_top_k_chunks_in_one_prompt(tiny_rag, tiny_qa, monkeypatch):
    from fedrag_flower.trainers.huggingface.ralt import ralt_examples

    monkeypatch.setattr(tiny_rag.prompts, "max_length", 1024)  # no context cut (tiny tokenizer)
    parallel = ralt_examples(tiny_rag, tiny_qa, 2, "parallel")
    joined = ralt_examples(tiny_rag, tiny_qa, 2, "joined")
    assert len(parallel) == 2 * len(tiny_qa) and len(joined) == len(tiny_qa)
    sources = tiny_rag.retrieve([row["query"] for row in tiny_qa], 2)
    decode = tiny_rag.generator.tokenizer.decode
    for chunks, example, pair in zip(sources, joined, zip(*[iter(parallel)] * 2)):
        prompt = decode([t for t, label in zip(example.input_ids, example.labels) if label < 0])
        first, second = (prompt.find(chunk.text) for chunk in chunks)
        assert 0 <= first < second  # both chunks, best first
        # the same target (response + EOS) as each parallel example of the pair, loss on it only
        target = [label for label in example.labels if label >= 0]
        assert all(target == [label for label in e.labels if label >= 0] for e in pair)
        assert example.labels[: len(example.labels) - len(target)] == [-100] * (
            len(example.labels) - len(target)
        )
    monkeypatch.undo()
    result = HuggingFaceTrainerForRALT(
        tiny_rag, tiny_qa, batch_size=2, top_k=2, context="joined", progress=False
    ).train()
    assert result.examples == len(tiny_qa)
    with pytest.raises(ValueError, match="RALT context must be one of"):
        ralt_examples(tiny_rag, tiny_qa, 2, "stacked")


@pytest.mark.parametrize("context", ["joined", "parallel"])
def test_supported_only_ralt_skips_the_pairs_whose_chunks_lack_their_gold(
    tiny_rag, tiny_qa, context
):
    """A pair whose top-k holds one of its gold ids trains, one whose top-k holds none is
    skipped, and a pair without gold ids always trains."""
    from fedrag_flower.trainers.huggingface.ralt import ralt_examples

    sources = tiny_rag.retrieve([row["query"] for row in tiny_qa[:3]], 2)
    rows = [
        dict(tiny_qa[0], gold_ids=[sources[0][1].id]),  # its second chunk: supported
        dict(tiny_qa[1], gold_ids=["not-retrieved"]),  # skipped
        dict(tiny_qa[2]),  # no gold ids: trains
    ]
    per_pair = 2 if context == "parallel" else 1
    every = ralt_examples(tiny_rag, rows, 2, context)
    kept = ralt_examples(tiny_rag, rows, 2, context, supported_only=True)
    assert len(every) == 3 * per_pair and len(kept) == 2 * per_pair
    skipped = every[per_pair : 2 * per_pair]
    assert [e.input_ids for e in kept] == [
        e.input_ids for e in every if all(e.input_ids != s.input_ids for s in skipped)
    ]
    result = HuggingFaceTrainerForRALT(
        tiny_rag, rows, top_k=2, context=context, supported_only=True, progress=False
    ).train()
    assert result.examples == 2 * per_pair


def test_ralt_lowers_the_loss_of_its_training_pairs(tiny_rag, tiny_qa):
    trainer = HuggingFaceTrainerForRALT(
        tiny_rag, tiny_qa, epochs=6, batch_size=4, top_k=1, learning_rate=1e-2, progress=False
    )
    result = trainer.train()
    per_epoch = np.array(result.history).reshape(6, -1).mean(axis=1)
    assert per_epoch[-1] < per_epoch[0]


# ----------------------------------------------------------------- LSR on a tiny system


def test_lsr_trains_only_the_query_adapter_and_keeps_the_index(tiny_rag, tiny_qa):
    generator, retriever, store = tiny_rag.generator, tiny_rag.retriever, tiny_rag.knowledge_store
    generator_before = snapshot(generator.model.parameters())
    lora = retriever.trainable_parameters()
    lora_before = snapshot(lora)
    store_before = store.embeddings.copy()
    chunks_before = retriever.encode_chunks(store.texts)

    result = HuggingFaceTrainerForLSR(
        tiny_rag, tiny_qa, epochs=2, batch_size=4, top_k=4, learning_rate=1e-3, progress=False
    ).train()

    assert changed(lora_before, lora)
    assert not changed(generator_before, generator.model.parameters())
    np.testing.assert_array_equal(store.embeddings, store_before)
    np.testing.assert_allclose(retriever.encode_chunks(store.texts), chunks_before, atol=1e-6)
    assert result.steps == 2 * 2 and result.examples == 2 * len(tiny_qa)
    # KL(Q || P_R) of an untrained query adapter: positive at every step, and the reported
    # loss is their mean.
    assert len(result.history) == 2 * 2
    assert all(np.isfinite(loss) and loss > 0 for loss in result.history)
    assert result.loss == pytest.approx(np.mean(result.history))


def test_lsr_scores_every_candidate_once_per_train_in_length_sorted_batches(
    tiny_rag, tiny_qa, monkeypatch
):
    passes = []

    def recording_target_log_probs(model, input_ids, attention_mask, labels):
        passes.append(attention_mask.sum(dim=1).tolist())
        return target_log_probs(model, input_ids, attention_mask, labels)

    monkeypatch.setattr(lsr_module, "target_log_probs", recording_target_log_probs)
    trainer = HuggingFaceTrainerForLSR(
        tiny_rag, tiny_qa, epochs=3, batch_size=2, top_k=4, score_batch_size=5, progress=False
    )
    trainer.train()
    lengths = [n for batch in passes for n in batch]
    # every (query, candidate) sequence scored exactly once for all epochs, 5 at a time ...
    assert len(lengths) == 4 * len(tiny_qa) and len(passes) == -(-len(lengths) // 5)
    assert lengths == sorted(lengths)  # ... shortest first, so a batch holds little padding
    targets = trainer.targets
    assert targets.positions.shape == targets.target.shape == (len(tiny_qa), 4)
    assert targets.chunk_embeddings.shape == (len(tiny_qa), 4, tiny_rag.retriever.dim)
    assert targets.tokens == sum(lengths)


def test_lsr_puts_the_query_encoder_in_train_mode_while_training(tiny_rag, tiny_qa, monkeypatch):
    modes = []
    query_embeddings = tiny_rag.retriever.query_embeddings

    def recording(texts):
        modes.append(tiny_rag.retriever.query_model.training)
        return query_embeddings(texts)

    monkeypatch.setattr(tiny_rag.retriever, "query_embeddings", recording)
    HuggingFaceTrainerForLSR(tiny_rag, tiny_qa, batch_size=3, top_k=3, progress=False).train()
    # candidates retrieved in eval mode; dropout (LoRA and base) active in both steps ...
    assert modes == [False, True, True]
    assert not tiny_rag.retriever.query_model.training  # ... and off again afterwards


def test_lsr_batched_scores_equal_one_candidate_at_a_time(tiny_rag, tiny_qa):
    """Padding the k candidates into one batch changes no log-likelihood, and the cached
    target is softmax(ll / beta)."""
    args = LSRTrainingArgs(top_k=3, beta=0.2, progress=False)
    targets = lsr_module.lsr_targets(tiny_rag, tiny_qa, args)
    generator, store = tiny_rag.generator, tiny_rag.knowledge_store
    for i, row in enumerate(tiny_qa[:3]):
        for j, position in enumerate(targets.positions[i].tolist()):
            example = tiny_rag.prompts.example(row["query"], store.texts[position], row["response"])
            batch = collate([example], generator.tokenizer.pad_token_id)
            with torch.no_grad():
                log_probs, rows = target_log_probs(generator.model, **batch)
            ll = sequence_log_likelihoods(log_probs, rows, 1, length_normalize=True)
            assert targets.log_likelihoods[i, j].item() == pytest.approx(ll.item(), abs=1e-4)
    torch.testing.assert_close(targets.target, torch.softmax(targets.log_likelihoods / 0.2, dim=-1))
    np.testing.assert_array_equal(
        targets.chunk_embeddings.numpy(), store.embeddings[targets.positions.numpy()]
    )


def test_lsr_gold_candidate_scores_a_missed_gold_chunk_in_place_of_the_last(tiny_rag, tiny_qa):
    """With ``gold_candidate`` a query whose gold chunk was not retrieved gets it as its
    last candidate (and the LM scores it); one whose gold was retrieved, one without gold
    ids and one whose gold id is not in the store keep their candidates."""
    store = tiny_rag.knowledge_store
    plain_args = LSRTrainingArgs(top_k=2, progress=False)
    plain = lsr_module.lsr_targets(tiny_rag, tiny_qa[:4], plain_args).positions
    missed = next(p for p in range(len(store)) if p not in plain[0].tolist())
    rows = [
        dict(tiny_qa[0], gold_ids=[store.ids[missed]]),
        dict(tiny_qa[1], gold_ids=[store.ids[int(plain[1, 1])]]),
        dict(tiny_qa[2]),
        dict(tiny_qa[3], gold_ids=["not-in-the-store"]),
    ]
    args = LSRTrainingArgs(top_k=2, gold_candidate=True, progress=False)
    targets = lsr_module.lsr_targets(tiny_rag, rows, args)
    assert targets.positions[0].tolist() == [int(plain[0, 0]), missed]
    torch.testing.assert_close(targets.positions[1:], plain[1:])
    example = tiny_rag.prompts.example(rows[0]["query"], store.texts[missed], rows[0]["response"])
    batch = collate([example], tiny_rag.generator.tokenizer.pad_token_id)
    with torch.no_grad():
        log_probs, batch_rows = target_log_probs(tiny_rag.generator.model, **batch)
    ll = sequence_log_likelihoods(log_probs, batch_rows, 1, length_normalize=True)
    assert targets.log_likelihoods[0, 1].item() == pytest.approx(ll.item(), abs=1e-4)
    no_gold = lsr_module.lsr_targets(tiny_rag, rows, plain_args).positions
    torch.testing.assert_close(no_gold, plain)


def test_lsr_gives_a_slot_the_index_could_not_fill_no_target_and_no_probability(
    tiny_rag, tiny_qa, monkeypatch
):
    """An approximate index may return -1 for a slot it could not fill: that slot is not
    scored and gets target 0 and no share of P_R (it is not read as the last chunk), and a
    query with no candidate at all is left out of training."""
    store = tiny_rag.knowledge_store
    search = store.search

    def partial_search(embeddings, k):
        scores, positions = search(embeddings, k)
        positions = positions.copy()
        positions[0, -1] = -1  # first query: its last slot empty
        positions[1, :] = -1  # second query: nothing found
        return scores, positions

    monkeypatch.setattr(store, "search", partial_search)
    rows = tiny_qa[:4]
    targets = lsr_module.lsr_targets(tiny_rag, rows, LSRTrainingArgs(top_k=3, progress=False))
    assert targets.valid[0].tolist() == [True, True, False]
    assert not targets.valid[1].any() and targets.valid[2:].all()
    assert targets.target[0, 2] == 0 and targets.target[1].sum() == 0
    assert targets.target[0].sum().item() == pytest.approx(1.0)
    query = tiny_rag.retriever.query_embeddings([rows[0]["query"]])
    chunks, target, valid = (
        t[:1].clone()
        for t in (  # out of inference mode
            targets.chunk_embeddings,
            targets.target,
            targets.valid,
        )
    )
    valid_only = LSRLoss(0.05)(query, chunks[:, :2], target[:, :2])
    masked = LSRLoss(0.05)(query, chunks, target, valid)
    assert masked.item() == pytest.approx(valid_only.item(), rel=1e-5)
    trainer = HuggingFaceTrainerForLSR(tiny_rag, rows, top_k=3, batch_size=1, progress=False)
    step_targets = []
    loss_fn = trainer.loss_fn

    def recording(query_embeddings, chunk_embeddings, target, valid=None):
        step_targets.append(target.sum(1))
        return loss_fn(query_embeddings, chunk_embeddings, target, valid)

    monkeypatch.setattr(trainer, "loss_fn", recording)
    result = trainer.train()
    assert math.isfinite(result.loss)
    assert len(step_targets) == 3  # the query with no candidate takes no step
    assert all(t.item() == pytest.approx(1.0) for t in step_targets)


def test_lsr_moves_retrieval_towards_the_lm_target(tiny_rag, tiny_qa):
    trainer = HuggingFaceTrainerForLSR(
        tiny_rag,
        tiny_qa,
        epochs=8,
        batch_size=6,
        top_k=4,
        beta=0.02,
        learning_rate=3e-3,
        progress=False,
    )
    result = trainer.train()
    assert result.history[-1] < result.history[0]


def test_ralt_micro_batches_give_the_same_step_as_the_whole_batch(tiny_rag, tiny_qa):
    """Gradient accumulation over micro-batches (bounded memory) is the same optimizer step:
    each micro-batch's loss is its target tokens' NLL over the whole batch's target count."""
    initial = tiny_rag.generator.adapter_state_dict()
    results, adapters = [], []
    for max_tokens in (100_000, 1):  # one pass per batch; one sequence per pass
        tiny_rag.generator.load_adapter_state_dict(initial)
        results.append(
            HuggingFaceTrainerForRALT(
                tiny_rag,
                tiny_qa,
                batch_size=6,
                top_k=2,
                max_steps=2,
                learning_rate=1e-2,
                max_tokens_per_pass=max_tokens,
                progress=False,
            ).train()
        )
        adapters.append(tiny_rag.generator.adapter_state_dict())
    whole, micro = results
    assert whole.steps == micro.steps == 2 and whole.examples == micro.examples == 12
    np.testing.assert_allclose(micro.history, whole.history, rtol=1e-5)
    assert any(not torch.equal(initial[k], adapters[0][k]) for k in initial)
    for key in initial:
        torch.testing.assert_close(adapters[1][key], adapters[0][key], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("mu", [0.0, 10.0])
def test_proximal_term_moves_the_minimum_as_fedprox_says(mu):
    """With loss ||w - t||^2 and FedProx's mu / 2 ||w - w_0||^2 (w_0 = 0), the loop
    converges to argmin = 2t / (2 + mu); the term's gradient is mu * (w - w_0)."""
    import time

    from fedrag_flower.trainers.args import TrainingArgs
    from fedrag_flower.trainers.loop import Step, proximal_term, train_loop

    module = torch.nn.Linear(1, 3, bias=False)
    torch.nn.init.zeros_(module.weight)
    (w,) = module.parameters()
    target = torch.full_like(w, 5.0)
    args = TrainingArgs(
        epochs=400, learning_rate=0.05, max_grad_norm=0, proximal_mu=mu, progress=False
    )
    train_loop(
        module,
        [w],
        args,
        lambda rng: [[None]],
        lambda _: Step(((w - target) ** 2).sum(), 1),
        "toy",
        time.perf_counter(),
    )
    torch.testing.assert_close(w.detach(), 2 * target / (2 + mu), atol=0.02, rtol=0.01)

    anchor = torch.zeros_like(w)
    w.grad = None
    proximal_term([w], [anchor], 3.0).backward()
    torch.testing.assert_close(w.grad, 3.0 * (w.detach() - anchor))


@pytest.fixture
def tiny_rag_adapting_chunks(tiny_generator_dir):
    """``tiny_rag`` with a retriever whose adapter encodes the chunks too."""
    from fedrag_flower.rag import Generator, KnowledgeStore, RAGConfig, RAGSystem, Retriever

    retriever = Retriever(adapt_chunks=True)
    store = KnowledgeStore.from_corpus(TINY_CORPUS, retriever)
    generator = Generator(str(tiny_generator_dir), TINY_LORA, bf16=False)
    return RAGSystem(retriever, store, generator, RAGConfig(top_k=2, max_length=160))


def test_lsr_adapting_chunks_trains_through_both_sides_and_reindexes(
    tiny_rag_adapting_chunks, tiny_qa, monkeypatch
):
    rag = tiny_rag_adapting_chunks
    retriever, store = rag.retriever, rag.knowledge_store
    base = store.embeddings.copy()
    encoded = []
    chunk_embeddings = retriever.chunk_embeddings

    def recording(texts):
        embeddings = chunk_embeddings(texts)
        encoded.append((len(texts), embeddings.requires_grad))
        return embeddings

    monkeypatch.setattr(retriever, "chunk_embeddings", recording)
    trainer = HuggingFaceTrainerForLSR(
        rag, tiny_qa, epochs=2, batch_size=3, top_k=4, learning_rate=3e-3, progress=False
    )
    result = trainer.train()
    # every step encodes its batch's distinct candidates through the adapter, with gradient
    positions = trainer.targets.positions
    assert len(encoded) == result.steps == 4
    assert all(grad for _, grad in encoded)
    assert all(n <= 3 * 4 for n, _ in encoded) and max(n for n, _ in encoded) <= len(store)
    assert len({tuple(p) for p in positions.tolist()}) > 1
    # the store is untouched until the next retrieval, which re-encodes it through the
    # trained adapter: then its embeddings equal a fresh adapted encoding of its chunks
    np.testing.assert_array_equal(store.embeddings, base)
    rag.retrieve(["How long does a building permit take?"])
    adapted = retriever.encode_chunks(store.texts, adapted=True)
    np.testing.assert_allclose(store.embeddings, adapted, atol=1e-6)
    assert np.abs(store.embeddings - base).max() > 1e-4
    assert store.chunk_encoding == retriever.chunk_encoding is not None
    # and a second retrieval with the adapter unchanged encodes nothing again
    monkeypatch.setattr(retriever, "encode_chunks", lambda *a, **k: pytest.fail("re-encoded"))
    rag.retrieve(["Who may remove asbestos?"])


def test_lsr_on_the_query_side_only_sends_no_gradient_to_the_chunks():
    query = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1).requires_grad_()
    chunks = torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1).requires_grad_()
    target = torch.softmax(torch.randn(2, 3), dim=-1)
    for train_chunks in (False, True):
        chunks.grad = None
        LSRLoss(0.05, train_chunks)(query, chunks, target).backward()
        assert (chunks.grad is not None and chunks.grad.abs().sum() > 0) == train_chunks


def test_loading_adapters_reindexes_a_store_that_adapts_chunks_and_saves_it(
    tiny_rag_adapting_chunks, tmp_path
):
    from fedrag_flower.rag import RAGSystem

    rag = tiny_rag_adapting_chunks
    state = rag.adapter_state_dict()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        for key in state:
            if key.startswith("retriever.") and "lora_B" in key:
                state[key] = torch.randn_like(state[key]) * 0.05
    rag.load_adapter_state_dict(state)
    hits = rag.retrieve(["Who may remove asbestos?"], k=6)[0]
    adapted = rag.retriever.encode_chunks(rag.knowledge_store.texts, adapted=True)
    np.testing.assert_allclose(rag.knowledge_store.embeddings, adapted, atol=1e-6)
    rag.save_pretrained(tmp_path / "system")
    loaded = RAGSystem.from_pretrained(tmp_path / "system")
    assert loaded.retriever.adapt_chunks
    np.testing.assert_allclose(loaded.knowledge_store.embeddings, adapted, atol=1e-6)
    again = loaded.retrieve(["Who may remove asbestos?"], k=6)[0]
    assert [c.id for c in again] == [c.id for c in hits]
