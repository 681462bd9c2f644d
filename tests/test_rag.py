"""Tests for fedrag_flower.rag: prompts, knowledge store, retriever, adapters, and the
RAG system's save/load, on tiny pieces (the packaged MiniLM loads in well under a second)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fedrag_flower.rag import KnowledgeStore, RAGSystem
from fedrag_flower.rag.prompts import IGNORE_INDEX, PromptBuilder

TEMPLATE = "Context:\n{context}\n\nQuestion: {query}"


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ----------------------------------------------------------------- prompts


def test_example_labels_every_prompt_token_ignore(tokenizer):
    builder = PromptBuilder(tokenizer, TEMPLATE, "Answer briefly.", max_length=200)
    example = builder.example("What is ML?", "ML is machine learning.", "Learning from data.")
    prompt = builder.prompt_ids("What is ML?", "ML is machine learning.")
    assert example.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert example.labels[len(prompt) :] == example.input_ids[len(prompt) :]
    assert tokenizer.decode(example.input_ids[len(prompt) : -1]) == "Learning from data."
    assert example.input_ids[-1] == tokenizer.eos_token_id


def test_example_truncates_context_before_target(tokenizer):
    builder = PromptBuilder(tokenizer, TEMPLATE, "", max_length=120)
    context = "The quick brown fox jumps over the lazy dog. " * 20  # ~900 characters
    response = "It is a pangram used for typing practice."
    example = builder.example("What is this sentence?", context, response)

    assert len(example.input_ids) <= 120
    target = builder.target_ids(response)
    assert example.input_ids[-len(target) :] == target
    assert example.num_target_tokens == len(target)
    prompt_text = tokenizer.decode(example.input_ids[: -len(target)])
    assert "Question: What is this sentence?" in prompt_text  # the query survives
    assert "The quick brown fox" in prompt_text  # the context is cut from its end
    assert prompt_text.count("lazy dog") < 20


def test_example_cuts_a_target_longer_than_max_length_minus_8_from_its_end(tokenizer):
    builder = PromptBuilder(tokenizer, TEMPLATE, "", max_length=120)
    response = "A long answer. " * 12  # 180 characters: one token each
    example = builder.example("Why?", "Some context.", response)

    kept = builder.target_ids(response)[: 120 - 8]
    assert example.num_target_tokens == 112
    assert example.input_ids[-112:] == kept  # the target's start, EOS cut away
    assert tokenizer.eos_token_id not in example.input_ids
    assert len(example.input_ids) > 112  # the prompt (query and template) is still there


def test_prompt_template_must_name_query_and_context(tokenizer):
    with pytest.raises(ValueError, match=r"\{context\}"):
        PromptBuilder(tokenizer, "Question: {query}", "", 100)


# ----------------------------------------------------------------- knowledge store


def test_search_returns_cosine_top_k_like_numpy():
    chunks = unit_rows(500, 16, seed=0)
    queries = unit_rows(7, 16, seed=1)
    store = KnowledgeStore([f"c{i}" for i in range(500)], ["t"] * 500, chunks)
    scores, positions = store.search(queries, k=5)
    cosine = queries @ chunks.T
    expected = np.argsort(-cosine, axis=1)[:, :5]
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, expected, 1), rtol=1e-5)
    # k larger than the store returns every chunk
    assert store.search(queries, k=1000)[1].shape == (7, 500)


def test_store_rejects_duplicate_ids_and_mismatched_lengths():
    with pytest.raises(ValueError, match="unique"):
        KnowledgeStore(["a", "a"], ["x", "y"], unit_rows(2, 4, 0))
    with pytest.raises(ValueError, match="same length"):
        KnowledgeStore(["a", "b"], ["x"], unit_rows(2, 4, 0))


def test_store_save_load_round_trip(tmp_path):
    store = KnowledgeStore(
        ["a", "b", "c"], ["alpha", "beta ü", "gamma"], unit_rows(3, 8, 0), ["T", None, "U"], "enc"
    )
    store.save(tmp_path / "store", fingerprint="abc")
    loaded = KnowledgeStore.load(tmp_path / "store")
    assert (loaded.ids, loaded.texts, loaded.titles, loaded.encoder) == (
        store.ids,
        store.texts,
        store.titles,
        "enc",
    )
    np.testing.assert_array_equal(loaded.embeddings, store.embeddings)
    query = unit_rows(2, 8, 5)
    np.testing.assert_array_equal(loaded.search(query, 2)[1], store.search(query, 2)[1])
    assert loaded.position("c") == 2


def test_failed_save_leaves_previous_store_intact(tmp_path, monkeypatch):
    target = tmp_path / "store"
    KnowledgeStore(["a"], ["old"], unit_rows(1, 4, 0)).save(target)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        KnowledgeStore(["b", "c"], ["new", "newer"], unit_rows(2, 4, 1)).save(target)
    monkeypatch.undo()

    assert KnowledgeStore.load(target).texts == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no temporary leftovers


def test_load_missing_store_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="store.json"):
        KnowledgeStore.load(tmp_path)


def test_load_or_build_rebuilds_only_when_corpus_changes(
    tmp_path, minilm_retriever, tiny_corpus, monkeypatch
):
    builds = []
    from_corpus = KnowledgeStore.from_corpus.__func__

    def counting_from_corpus(cls, corpus, retriever, batch_size=64):
        builds.append(len(corpus))
        return from_corpus(cls, corpus, retriever, batch_size)

    monkeypatch.setattr(KnowledgeStore, "from_corpus", classmethod(counting_from_corpus))
    directory = tmp_path / "store"
    first = KnowledgeStore.load_or_build(directory, tiny_corpus, minilm_retriever)
    again = KnowledgeStore.load_or_build(directory, tiny_corpus, minilm_retriever)
    assert builds == [len(tiny_corpus)]
    np.testing.assert_array_equal(first.embeddings, again.embeddings)

    changed = tiny_corpus[:-1] + [dict(tiny_corpus[-1], text="A changed answer.")]
    rebuilt = KnowledgeStore.load_or_build(directory, changed, minilm_retriever)
    assert builds == [len(tiny_corpus), len(changed)]
    assert rebuilt.texts[-1] == "A changed answer."
    assert KnowledgeStore.load(directory).texts[-1] == "A changed answer."


def test_store_of_100k_chunks_builds_and_searches_exactly():
    n, dim = 100_000, 384
    chunks = unit_rows(n, dim, seed=0)
    queries = unit_rows(64, dim, seed=1)
    start = time.perf_counter()
    store = KnowledgeStore([str(i) for i in range(n)], [""] * n, chunks)
    built = time.perf_counter() - start
    start = time.perf_counter()
    scores, positions = store.search(queries, k=10)
    searched = time.perf_counter() - start
    print(f"\n100k x 384 store: build {built:.2f} s, search of 64 queries {searched * 1e3:.1f} ms")
    assert positions.shape == (64, 10)
    np.testing.assert_array_equal(positions[:8, 0], np.argmax(queries[:8] @ chunks.T, axis=1))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


# ----------------------------------------------------------------- retriever


def test_chunk_embeddings_ignore_the_query_adapter(minilm_retriever, tiny_corpus):
    from fedrag_flower.rag.retriever import Retriever

    retriever = Retriever()
    texts = [row["text"] for row in tiny_corpus[:3]]
    queries = ["How long does a permit take?", "What does the licence cost?"]
    chunks_before = retriever.encode_chunks(texts)
    queries_before = retriever.encode_queries(queries)
    np.testing.assert_allclose(np.linalg.norm(queries_before, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(queries_before, chunks_like(minilm_retriever, queries), atol=1e-5)

    with torch.no_grad():
        for name, param in retriever.peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    np.testing.assert_array_equal(retriever.encode_chunks(texts), chunks_before)
    assert np.abs(retriever.encode_queries(queries) - queries_before).max() > 1e-3


def test_the_retrievers_training_passes_in_bf16_stay_within_bf16_tolerance(tiny_corpus):
    """The LSR step's encoder passes run under ``Retriever.autocast()``: bf16 where the
    generator uses it. On the real MiniLM with a trained-looking adapter, both sides: cosine
    scores within 0.01 of fp32, P_R over the candidates (gamma 0.05) within KL 1e-3, and
    gradients pointing the same way."""
    from fedrag_flower.rag.retriever import Retriever

    texts = [row["text"] for row in tiny_corpus[:6]]
    queries = ["How long does a permit take?", "What does the licence cost?"]
    results = {}
    for bf16 in (False, True):
        retriever = Retriever(adapt_chunks=True, bf16=bf16)
        assert retriever.bf16 is bf16
        torch.manual_seed(0)
        with torch.no_grad():
            for name, param in retriever.peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.05)
        with retriever.autocast():
            q, c = retriever.query_embeddings(queries), retriever.chunk_embeddings(texts)
        scores = q.float() @ c.float().T
        torch.logsumexp(scores / 0.05, -1).sum().backward()
        grad = torch.cat([p.grad.flatten() for p in retriever.trainable_parameters()])
        results[bf16] = scores.detach(), grad
    (s32, g32), (s16, g16) = results[False], results[True]
    assert 0 < (s32 - s16).abs().max() < 0.01  # the products did run in bf16
    p32, p16 = (torch.log_softmax(s / 0.05, -1) for s in (s32, s16))
    assert (p32.exp() * (p32 - p16)).sum(-1).max() < 1e-3
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_fedrag_bf16_0_keeps_the_retriever_in_fp32(monkeypatch):
    from fedrag_flower.rag.retriever import Retriever

    monkeypatch.setenv("FEDRAG_BF16", "0")
    retriever = Retriever()
    assert retriever.bf16 is False
    with torch.no_grad():
        plain = retriever.query_embeddings(["a question"])
        with retriever.autocast():
            assert torch.equal(retriever.query_embeddings(["a question"]), plain)


def chunks_like(retriever, texts):
    """A fresh adapter is a no-op: queries encode like chunks (the base model)."""
    return retriever.encode_chunks(texts)


# ----------------------------------------------------------------- adapters and system


def test_adapter_state_dict_round_trip_and_prefixes(tiny_rag):
    state = tiny_rag.adapter_state_dict()
    assert state and all(k.startswith(("generator.", "retriever.")) for k in state)
    assert any(k.startswith("generator.") for k in state)
    assert any(k.startswith("retriever.") for k in state)
    assert all("lora_" in k for k in state)
    trainable = sum(p.numel() for p in tiny_rag.generator.trainable_parameters()) + sum(
        p.numel() for p in tiny_rag.retriever.trainable_parameters()
    )
    assert sum(v.numel() for v in state.values()) == trainable

    changed = {k: torch.randn_like(v) for k, v in state.items()}
    tiny_rag.load_adapter_state_dict(changed)
    for key, value in tiny_rag.adapter_state_dict().items():
        torch.testing.assert_close(value, changed[key])
    # The copies returned are detached from the live parameters.
    changed_copy = tiny_rag.adapter_state_dict()
    next(iter(changed_copy.values())).add_(1.0)
    for key, value in tiny_rag.adapter_state_dict().items():
        torch.testing.assert_close(value, changed[key])

    # One side only: the other is left as it is.
    generator_only = {k: v for k, v in state.items() if k.startswith("generator.")}
    tiny_rag.load_adapter_state_dict(generator_only)
    after = tiny_rag.adapter_state_dict()
    for key in after:
        expected = state[key] if key.startswith("generator.") else changed[key]
        torch.testing.assert_close(after[key], expected)


def test_adapter_state_dict_mismatch_is_an_error(tiny_rag):
    state = tiny_rag.adapter_state_dict()
    key = next(k for k in state if k.startswith("generator."))
    with pytest.raises(ValueError, match="missing"):
        tiny_rag.load_adapter_state_dict({k: v for k, v in state.items() if k != key})
    with pytest.raises(ValueError, match="unexpected"):
        tiny_rag.load_adapter_state_dict(state | {"generator.foo.lora_A.weight": state[key]})
    with pytest.raises(ValueError, match="generator. or retriever."):
        tiny_rag.load_adapter_state_dict({"decoder.x": state[key]})


def test_query_returns_answer_and_ranked_sources(tiny_rag):
    response = tiny_rag.query("How long does a building permit take?")
    assert isinstance(response.answer, str)
    assert len(response.sources) == tiny_rag.config.top_k
    assert response.sources[0].id == "permit"
    scores = [s.score for s in response.sources]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1 + 1e-5
    batch = tiny_rag.batch_query(["How long does a building permit take?", "Who removes asbestos?"])
    assert [r.sources[0].id for r in batch] == ["permit", "asbestos"]
    assert batch[0].answer == response.answer


def test_saved_tiny_system_loads_back_with_same_answers_and_adapters(tiny_rag, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with torch.no_grad():  # a trained-looking adapter, so loading it back is not a no-op
        for p in (
            tiny_rag.generator.trainable_parameters() + tiny_rag.retriever.trainable_parameters()
        ):
            p.normal_(0, 0.05)
    questions = ["How long does a building permit take?", "Who removes asbestos?"]
    answers = [r.answer for r in tiny_rag.batch_query(questions)]

    path = tiny_rag.save_pretrained(tmp_path / "system", extra={"round": 3})
    loaded = RAGSystem.from_pretrained(path)
    assert [r.answer for r in loaded.batch_query(questions)] == answers
    saved, restored = tiny_rag.adapter_state_dict(), loaded.adapter_state_dict()
    assert saved.keys() == restored.keys()
    for key in saved:
        torch.testing.assert_close(restored[key], saved[key])
    assert loaded.config == tiny_rag.config
    assert loaded.knowledge_store.ids == tiny_rag.knowledge_store.ids

    base = AutoModelForCausalLM.from_pretrained(tiny_rag.generator.model_name_or_path)
    peft_model = PeftModel.from_pretrained(base, path / "generator_adapter").eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(
            peft_model(input_ids=ids).logits, tiny_rag.generator.model(input_ids=ids).logits
        )


def test_from_pretrained_on_a_wrong_folder_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="rag_system.json"):
        RAGSystem.from_pretrained(tmp_path)


def test_the_ask_command_leaves_early_with_its_output_and_exit_code_intact(tmp_path):
    # `ask` and `evaluate` skip the interpreter's teardown (os._exit): what they printed
    # must still arrive, and their exit code must still say whether they failed.
    result = subprocess.run(
        [sys.executable, "-m", "fedrag_flower.cli", "ask", "--system", str(tmp_path), "Why?"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert f"error: {tmp_path} is not a saved RAG system" in result.stderr
    assert "Traceback" not in result.stderr
