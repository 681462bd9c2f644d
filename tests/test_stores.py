"""Tests for the knowledge-store backends: FAISS exact, FAISS HNSW/IVF, Qdrant (embedded),
their shared interface and saved format, and how a backend is chosen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedrag_flower.rag import (
    FaissHNSWKnowledgeStore,
    FaissIVFKnowledgeStore,
    KnowledgeStore,
    QdrantKnowledgeStore,
)
from fedrag_flower.rag.approximate_store import recall_at_k
from fedrag_flower.rag.store_backends import load_store, store_class, store_options

EXACT_BACKENDS = [KnowledgeStore, QdrantKnowledgeStore]


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered_unit_rows(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres: neighbourhoods like real
    embeddings have (uniform random vectors are all nearly equidistant)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(clusters, dim, seed + 1000)
    rows = centres[rng.integers(0, clusters, n)] + 0.15 * rng.standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("backend", EXACT_BACKENDS, ids=lambda b: b.backend)
def test_exact_backends_return_cosine_top_k_like_numpy(backend):
    chunks = unit_rows(500, 16, seed=0)
    queries = unit_rows(7, 16, seed=1)
    store = backend([f"c{i}" for i in range(500)], ["t"] * 500, chunks)
    scores, positions = store.search(queries, k=5)
    cosine = queries @ chunks.T
    expected = np.argsort(-cosine, axis=1)[:, :5]
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, expected, 1), rtol=1e-5)
    assert store.search(queries, k=1000)[1].shape == (7, 500)
    chunks_found = store.chunks(positions[0], scores[0])
    assert [c.id for c in chunks_found] == [f"c{p}" for p in expected[0]]


@pytest.mark.parametrize(
    "backend",
    [KnowledgeStore, FaissHNSWKnowledgeStore, QdrantKnowledgeStore],
    ids=lambda b: b.backend,
)
def test_every_backend_reindexes_its_chunks_under_new_embeddings(backend):
    """What a store does when a retriever that adapts its chunks re-encodes them."""
    old, new = unit_rows(60, 16, seed=0), unit_rows(60, 16, seed=2)
    queries = unit_rows(5, 16, seed=3)
    store = backend([f"c{i}" for i in range(60)], ["t"] * 60, old)
    store.replace_embeddings(new, chunk_encoding=(1, 2))
    fresh = backend([f"c{i}" for i in range(60)], ["t"] * 60, new)
    np.testing.assert_array_equal(store.search(queries, 5)[1], fresh.search(queries, 5)[1])
    assert store.chunk_encoding == (1, 2)
    with pytest.raises(ValueError, match=r"new embeddings have shape \(3, 16\)"):
        store.replace_embeddings(new[:3])


def test_chunks_adapt_only_with_one_shared_encoder():
    from fedrag_flower.rag.retriever import Retriever

    with pytest.raises(ValueError, match="adapt_chunks needs one shared encoder"):
        Retriever(context_model_name_or_path="some/context-encoder", adapt_chunks=True)


def test_qdrant_returns_faiss_exact_top_k_on_the_default_data(minilm_retriever):
    """The packaged FAQ corpus (503 chunks) and the 101 default test questions, real
    MiniLM embeddings: Qdrant's top-10 ids equal FAISS exact search's, in order."""
    from fedrag_flower.data import default_corpus, default_qa

    corpus = default_corpus()
    faiss_store = KnowledgeStore.from_corpus(corpus, minilm_retriever)
    qdrant_store = QdrantKnowledgeStore(
        faiss_store.ids, faiss_store.texts, faiss_store.embeddings, faiss_store.titles
    )
    queries = minilm_retriever.encode_queries([row["query"] for row in default_qa("test")])
    assert len(queries) == 101
    faiss_scores, faiss_positions = faiss_store.search(queries, 10)
    qdrant_scores, qdrant_positions = qdrant_store.search(queries, 10)
    faiss_ids = [[faiss_store.ids[p] for p in row] for row in faiss_positions]
    qdrant_ids = [[qdrant_store.ids[p] for p in row] for row in qdrant_positions]
    assert qdrant_ids == faiss_ids
    np.testing.assert_allclose(qdrant_scores, faiss_scores, atol=1e-5)


def test_qdrant_payloads_keep_chunk_ids_titles_and_texts():
    store = QdrantKnowledgeStore(
        ["permit", "fee"], ["six weeks", "four percent"], unit_rows(2, 8, 0), ["Permits", None]
    )
    points = store.client.retrieve(store.collection, ids=[0, 1], with_payload=True)
    payloads = {p.id: p.payload for p in points}
    assert payloads[0] == {"chunk_id": "permit", "title": "Permits", "text": "six weeks"}
    assert payloads[1] == {"chunk_id": "fee", "title": None, "text": "four percent"}


def test_a_qdrant_server_that_does_not_answer_is_named_in_the_error():
    import socket

    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(ConnectionError, match=f"Qdrant server at store-url '{url}' does not"):
        QdrantKnowledgeStore(["a"], ["text"], np.ones((1, 4), "float32"), url=url)


def test_qdrant_on_disk_collection_is_reused_not_uploaded_again(tmp_path, monkeypatch):
    from qdrant_client import QdrantClient

    ids, texts, embeddings = [f"c{i}" for i in range(50)], ["t"] * 50, unit_rows(50, 8, 0)
    uploads = []
    upload = QdrantClient.upload_collection
    monkeypatch.setattr(
        QdrantClient,
        "upload_collection",
        lambda self, *a, **k: uploads.append(a[0]) or upload(self, *a, **k),
    )
    first = QdrantKnowledgeStore(ids, texts, embeddings, location=str(tmp_path / "qdrant"))
    expected = first.search(embeddings[:3], 4)
    first.close()
    again = QdrantKnowledgeStore(ids, texts, embeddings, location=str(tmp_path / "qdrant"))
    assert len(uploads) == 1 and again.collection == first.collection
    np.testing.assert_array_equal(again.search(embeddings[:3], 4)[1], expected[1])
    again.close()
    changed = QdrantKnowledgeStore(
        ids, texts, unit_rows(50, 8, 1), location=str(tmp_path / "qdrant")
    )
    assert len(uploads) == 2 and changed.collection != first.collection
    changed.close()


def test_a_store_saved_by_one_backend_loads_into_any(tmp_path):
    store = QdrantKnowledgeStore(["a", "b"], ["x", "y"], unit_rows(2, 4, 0), ["A", None])
    store.save(tmp_path / "store", fingerprint="abc")
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    assert meta["backend"] == "qdrant" and meta["fingerprint"] == "abc"
    again = load_store(tmp_path / "store")  # the backend it was saved from
    assert isinstance(again, QdrantKnowledgeStore)
    as_faiss = KnowledgeStore.load(tmp_path / "store")
    assert (as_faiss.ids, as_faiss.titles) == (["a", "b"], ["A", None])
    np.testing.assert_array_equal(as_faiss.embeddings, store.embeddings)
    assert isinstance(load_store(tmp_path / "store", "faiss-hnsw"), FaissHNSWKnowledgeStore)


def test_stores_saved_before_backends_load_as_faiss(tmp_path):
    KnowledgeStore(["a"], ["x"], unit_rows(1, 4, 0)).save(tmp_path / "store")
    meta_path = tmp_path / "store" / "store.json"
    meta = json.loads(meta_path.read_text())
    del meta["backend"], meta["options"]
    meta_path.write_text(json.dumps(meta))
    assert type(load_store(tmp_path / "store")) is KnowledgeStore


@pytest.mark.parametrize("backend", [FaissHNSWKnowledgeStore, FaissIVFKnowledgeStore])
def test_approximate_index_prints_its_recall_against_exact_search(backend, capsys):
    chunks = clustered_unit_rows(5000, 32, clusters=100, seed=0)
    store = backend([str(i) for i in range(5000)], [""] * 5000, chunks)
    printed = capsys.readouterr().out
    assert f"{backend.backend} over 5000 chunks, recall@10" in printed
    assert f"{store.recall_at_10:.3f}" in printed
    assert store.recall_at_10 >= 0.9
    queries = (
        clustered_unit_rows(100, 32, clusters=100, seed=0)[:50] * 0.5 + unit_rows(50, 32, 3) * 0.5
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    assert recall_at_k(store, queries, 10) >= 0.8
    assert recall_at_k(KnowledgeStore(store.ids, store.texts, chunks), queries, 10) == 1.0


def test_ivf_with_one_probe_misses_neighbours_that_exact_search_finds():
    """recall_at_k can fail: a one-cluster scan over many clusters loses neighbours."""
    chunks = unit_rows(4000, 32, seed=0)
    store = FaissIVFKnowledgeStore([str(i) for i in range(4000)], [""] * 4000, chunks, nprobe=1)
    assert store.recall_at_10 < 0.9


def test_backend_names_and_options_are_checked():
    assert store_class("qdrant") is QdrantKnowledgeStore
    assert store_class("faiss") is KnowledgeStore
    with pytest.raises(ValueError, match="unknown knowledge-store backend 'milvus'.*'qdrant'"):
        store_class("milvus")
    assert store_options("qdrant", "http://localhost:6333") == {"url": "http://localhost:6333"}
    assert store_options("qdrant") == {}
    with pytest.raises(ValueError, match="store-url.*only for store-backend 'qdrant'"):
        store_options("faiss", "http://localhost:6333")


def test_from_defaults_builds_the_chosen_backend(tiny_generator_dir, tiny_corpus, tmp_path):
    from conftest import TINY_LORA

    from fedrag_flower.rag import RAGSystem

    rags = {
        name: RAGSystem.from_defaults(
            corpus=tiny_corpus,
            generator_model=str(tiny_generator_dir),
            generator_lora=TINY_LORA,
            store_dir=tmp_path / name,
            store_backend=name,
        )
        for name in ("faiss", "qdrant")
    }
    assert type(rags["qdrant"].knowledge_store) is QdrantKnowledgeStore
    assert type(rags["faiss"].knowledge_store) is KnowledgeStore
    questions = ["How long does a building permit take?", "Who may remove asbestos?"]
    ids = {
        name: [[c.id for c in hits] for hits in rag.retrieve(questions, k=4)]
        for name, rag in rags.items()
    }
    assert ids["qdrant"] == ids["faiss"]
    assert ids["faiss"][0][0] == "permit" and ids["faiss"][1][0] == "asbestos"
    saved = json.loads((tmp_path / "qdrant" / "store.json").read_text())
    assert saved["backend"] == "qdrant"


def test_site_builds_the_store_backend_of_the_run_config(tiny_generator_dir, tmp_path):
    from conftest import TINY_CORPUS, TINY_QA

    from fedrag_flower.data import SiteData
    from fedrag_flower.federation.settings import FederationSettings
    from fedrag_flower.federation.site import Site, site_rag_system

    settings = FederationSettings.from_run_config(
        {"store-backend": "qdrant", "generator-model": str(tiny_generator_dir), "lora-r": 4}
    )
    site = Site("s", SiteData(list(TINY_CORPUS), list(TINY_QA), []), tmp_path / "store")
    rag = site_rag_system(site, settings)
    assert type(rag.knowledge_store) is QdrantKnowledgeStore
    assert json.loads((tmp_path / "store" / "store.json").read_text())["backend"] == "qdrant"
