"""The saved shared system inside LlamaIndex and LangChain (the real packages): every bridge
returns the sources and the answer ``RAGSystem.query`` returns."""

from __future__ import annotations

import pytest

from fedrag_flower.rag import RAGSystem

QUESTION = "How long does a building permit take?"


def source_tuples(sources) -> list[tuple]:
    return [(s.id, s.text, s.title, pytest.approx(s.score, abs=1e-6)) for s in sources]


def node_tuples(nodes) -> list[tuple]:
    return [(n.node.id_, n.node.text, n.node.metadata["title"], n.score) for n in nodes]


def document_tuples(documents) -> list[tuple]:
    return [(d.id, d.page_content, d.metadata["title"], d.metadata["score"]) for d in documents]


@pytest.fixture
def saved_tiny_system(tiny_rag, tmp_path) -> RAGSystem:
    """The tiny system saved with ``save_pretrained`` and loaded back: what a run leaves."""
    tiny_rag.knowledge_store.titles = ["Permits", None, None, "Streets", None, None]
    tiny_rag.save_pretrained(tmp_path / "final")
    return RAGSystem.from_pretrained(tmp_path / "final")


def check_llama_index(rag: RAGSystem, question: str) -> None:
    from llama_index.core.base.response.schema import Response

    from fedrag_flower.integrations.llama_index import LlamaIndexQueryEngine, LlamaIndexRetriever

    expected = rag.query(question)
    nodes = LlamaIndexRetriever(rag).retrieve(question)
    assert node_tuples(nodes) == source_tuples(expected.sources)
    assert [n.node.id_ for n in LlamaIndexRetriever(rag, k=1).retrieve(question)] == [
        expected.sources[0].id
    ]
    response = LlamaIndexQueryEngine(rag_system=rag).query(question)
    assert isinstance(response, Response)
    assert response.response == expected.answer
    assert node_tuples(response.source_nodes) == source_tuples(expected.sources)


def check_langchain(rag: RAGSystem, questions: list[str]) -> None:
    from langchain_core.runnables import RunnableLambda

    from fedrag_flower.integrations.langchain import LangChainRetriever, LangChainRunnable

    expected = [rag.query(q) for q in questions]
    documents = LangChainRetriever(rag_system=rag).invoke(questions[0])
    assert document_tuples(documents) == source_tuples(expected[0].sources)
    runnable = LangChainRunnable(rag)
    result = runnable.invoke(questions[0])
    assert result["answer"] == expected[0].answer
    assert document_tuples(result["sources"]) == source_tuples(expected[0].sources)
    # composes like any runnable: | with a plain function, and batch
    chain = runnable | RunnableLambda(lambda out: out["answer"].upper())
    assert chain.invoke(questions[0]) == expected[0].answer.upper()
    batched = runnable.batch(questions)
    assert [b["answer"] for b in batched] == [e.answer for e in expected]
    assert [document_tuples(b["sources"]) for b in batched] == [
        source_tuples(e.sources) for e in expected
    ]


def test_llama_index_bridge_answers_like_the_saved_system(saved_tiny_system):
    check_llama_index(saved_tiny_system, QUESTION)
    nodes = saved_tiny_system.retrieve([QUESTION])[0]
    assert nodes[0].id == "permit" and nodes[0].title == "Permits"


def test_langchain_bridge_answers_like_the_saved_system(saved_tiny_system):
    check_langchain(saved_tiny_system, [QUESTION, "Do I need a permit for scaffolding?"])


@pytest.mark.slow
def test_both_bridges_answer_a_question_on_the_saved_default_system(default_rag, tmp_path):
    default_rag.save_pretrained(tmp_path / "final")
    rag = RAGSystem.from_pretrained(tmp_path / "final")
    check_llama_index(rag, QUESTION)
    check_langchain(rag, [QUESTION])
    assert rag.query(QUESTION).answer.strip()
