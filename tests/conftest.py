"""Shared fixtures: tiny in-process models for unit tests, the real default system for the
slow end-to-end tests.

Unit tests build a character-level tokenizer and a 2-layer Llama with random weights in a
temporary folder, so they need neither the packaged generator nor its conversion cache.
The slow tests use ``RAGSystem.from_defaults()`` with the default model cache
(``$FEDRAG_CACHE_DIR`` or ``~/.cache/fedrag_flower``) and a per-session knowledge-store
folder.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

from fedrag_flower.rag.lora import LoraSettings, attach_lora

TINY_LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])

# Federation settings small enough for tiny models: one step per trainer per round.
TINY_FEDERATION_SETTINGS = dict(
    mode="ralt+lsr",
    local_steps=1,
    pairs_per_round=2,
    batch_size=2,
    lsr_batch_size=2,
    lsr_top_k=2,
    top_k=2,
    max_length=160,
    lora_dropout=0.0,
)

TINY_CORPUS = [
    {"id": "permit", "text": "A building permit takes six to twelve weeks to be granted."},
    {"id": "fee", "text": "The licence fee is four percent of the construction budget."},
    {"id": "noise", "text": "Construction noise is allowed from eight in the morning to eight."},
    {
        "id": "scaffold",
        "text": "Scaffolding on a public street needs a separate occupation permit.",
    },
    {"id": "asbestos", "text": "Asbestos removal must be done by a registered company."},
    {"id": "terrace", "text": "Closing a terrace with glass needs a minor works communication."},
]

TINY_QA = [
    {"query": "How long does a building permit take?", "response": "Six to twelve weeks."},
    {"query": "How much is the licence fee?", "response": "Four percent of the budget."},
    {"query": "When can I make construction noise?", "response": "From eight to eight."},
    {"query": "Who may remove asbestos?", "response": "A registered company."},
    {"query": "Do I need a permit for scaffolding?", "response": "Yes, an occupation permit."},
    {"query": "Can I close my terrace with glass?", "response": "With a minor works notice."},
]


def char_tokenizer():
    """A character-level fast tokenizer over ``string.printable`` (103 ids, no chat
    template): every character is one token, so token counts are easy to reason about."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    specials = ["<eos>", "<pad>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + list(string.printable))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_llama(vocab_size: int = 103, seed: int = 0):
    """A 2-layer Llama with random weights (fp32, eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=1,
        eos_token_id=0,
        bos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


@pytest.fixture
def tiny_corpus() -> list[dict]:
    return [dict(row) for row in TINY_CORPUS]


@pytest.fixture
def tiny_qa() -> list[dict]:
    return [dict(row) for row in TINY_QA]


@pytest.fixture
def tokenizer():
    return char_tokenizer()


@pytest.fixture
def tiny_lm():
    """A tiny Llama wrapped with a LoRA adapter whose B matrices are made non-zero, so the
    adapter changes the outputs (a fresh LoRA adapter is an exact no-op)."""
    model = attach_lora(tiny_llama(), TINY_LORA, ["q_proj", "v_proj"])
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_generator_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama + character tokenizer: a local model path the ``Generator`` loads
    like any Hugging Face model."""
    path = tmp_path_factory.mktemp("tiny-generator")
    tiny_llama().save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def minilm_retriever():
    """The packaged all-MiniLM-L6-v2 with its query-side adapter (shared: do not train)."""
    from fedrag_flower.rag.retriever import Retriever

    return Retriever()


@pytest.fixture
def tiny_rag(tiny_generator_dir):
    """A whole RAG system on tiny pieces: packaged MiniLM retriever, six-chunk store, tiny
    random generator. Fresh per test (trainers change it in place)."""
    from fedrag_flower.rag import Generator, KnowledgeStore, RAGConfig, RAGSystem, Retriever

    retriever = Retriever()
    store = KnowledgeStore.from_corpus(TINY_CORPUS, retriever)
    generator = Generator(str(tiny_generator_dir), TINY_LORA, bf16=False)
    config = RAGConfig(top_k=2, max_length=160, max_new_tokens=8)
    return RAGSystem(retriever, store, generator, config)


# ------------------------------------------------------------------ slow: the real system


@pytest.fixture(scope="session")
def default_rag(tmp_path_factory):
    """``RAGSystem.from_defaults()`` built once per session, its knowledge store in a
    session folder. Tests that train must use ``default_rag_reset``."""
    from fedrag_flower.rag import RAGSystem

    store_dir = tmp_path_factory.mktemp("stores") / "default"
    return RAGSystem.from_defaults(store_dir=store_dir)


@pytest.fixture(scope="session")
def default_initial_adapters(default_rag) -> dict[str, torch.Tensor]:
    return default_rag.adapter_state_dict()


@pytest.fixture
def default_rag_reset(default_rag, default_initial_adapters):
    """The session's default system, its adapters put back to their initial state after
    the test, so training in one test does not leak into another."""
    default_rag.load_adapter_state_dict(default_initial_adapters)
    yield default_rag
    default_rag.load_adapter_state_dict(default_initial_adapters)
