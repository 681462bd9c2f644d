"""Commands on a saved RAG system: ask it questions, evaluate it."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ask`` and ``evaluate`` to ``subparsers``."""
    ask_parser = subparsers.add_parser(
        "ask",
        help="answer questions with a saved RAG system",
        description="Load a saved RAG system (a run's final/ or rounds/round-NNN/ folder) "
        "and answer questions, printing each answer with its source chunks and scores.",
    )
    _system_arguments(ask_parser)
    ask_parser.add_argument("questions", nargs="+", help="one or more questions")
    ask_parser.add_argument("--json", action="store_true", help="print JSON lines")
    ask_parser.set_defaults(func=ask, read_only=True)

    eval_parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a saved RAG system on QA rows",
        description="Token F1 and exact match of generated answers, recall@k of the gold "
        "chunk, and response NLL per token, on a QA file or the default test split.",
    )
    _system_arguments(eval_parser)
    eval_parser.add_argument("--qa", type=Path, help="QA file (default: the default test split)")
    eval_parser.add_argument(
        "--max-answers", type=int, default=0, help="generate answers for only the first N rows"
    )
    eval_parser.set_defaults(func=evaluate, read_only=True)


def _system_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", required=True, type=Path, help="saved RAG system folder")
    parser.add_argument(
        "--corpus",
        type=Path,
        help="answer from this corpus file instead of the store saved with the system",
    )


def _load(args: argparse.Namespace):
    from fedrag_flower.data import load_corpus
    from fedrag_flower.rag import RAGSystem

    corpus = load_corpus(args.corpus) if args.corpus else None
    return RAGSystem.from_pretrained(args.system, corpus=corpus)


def ask(args: argparse.Namespace) -> int:
    rag = _load(args)
    for question, response in zip(args.questions, rag.batch_query(args.questions)):
        if args.json:
            sources = [vars(s) for s in response.sources]
            print(json.dumps({"question": question, "answer": response.answer, "sources": sources}))
            continue
        print(f"Q: {question}\nA: {response.answer}\nSources:")
        for rank, source in enumerate(response.sources, 1):
            snippet = textwrap.shorten(source.text, 100)
            print(f"  {rank}. [{source.id}] score {source.score:.3f}  {snippet}")
        print()
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from fedrag_flower.data import default_qa, load_qa
    from fedrag_flower.evaluation.rag_eval import evaluate_rag

    rag = _load(args)
    rows = load_qa(args.qa) if args.qa else default_qa("test")
    metrics = evaluate_rag(rag, rows, max_answers=args.max_answers, progress=True)
    print(json.dumps(metrics, indent=2))
    return 0
