"""Answering: ``RAGSystem.query`` per answer, and ``fedrag-flower ask`` from start to answer.

    python benchmarks/bench_answers.py                                  # the untrained system
    python benchmarks/bench_answers.py --system outputs/run-.../final   # a saved one
    python benchmarks/bench_answers.py --questions 8 --ask-runs 5

``query``: the first ``--questions`` default test questions (``bench_trainers.py`` uses
the first 4), one at a time, after one warm-up answer: with fp32 weights, as a process that
only answers holds them (``ask``, ``evaluate``, and any process on a CPU without bf16), and
with the frozen weights in bf16, as a process that has trained holds them on a CPU with
native bf16 (a run's own evaluation; see ``Generator``). Decoding reads every weight once
per token: bf16 weights halve the bytes read.

``ask``: the command a user runs, in a fresh process each time (``--ask-runs``), wall time
from process start to exit; then one more fresh process split into its phases (imports,
loading the saved system, the answer). Without ``--system`` the untrained default system
is saved to a temporary folder first. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PHASES = """
import sys, time
start = time.perf_counter()
from fedrag_flower.rag import RAGSystem
imported = time.perf_counter()
rag = RAGSystem.from_pretrained(sys.argv[1])
loaded = time.perf_counter()
rag.query(sys.argv[2])
answered = time.perf_counter()
print(imported - start, loaded - imported, answered - loaded)
"""


def query_seconds(system: Path, questions: list[str], trained: bool) -> tuple[float, int, bool]:
    """Mean seconds per ``RAGSystem.query`` answer, the answers' mean length in tokens, and
    whether the weights were bf16 (``trained``: as after a trainer ran in the process)."""
    from fedrag_flower.rag import RAGSystem

    rag = RAGSystem.from_pretrained(system)
    if trained:
        rag.generator.prepare_for_training()
    rag.query(questions[0])  # warm-up: first-call allocations and thread pools
    tokens = 0
    start = time.perf_counter()
    for question in questions:
        answer = rag.query(question).answer
        tokens += len(rag.generator.tokenizer(answer)["input_ids"])
    seconds = (time.perf_counter() - start) / len(questions)
    return seconds, tokens // len(questions), rag.generator.weights_in_bf16


def ask_seconds(system: Path, question: str) -> float:
    """Wall seconds of ``fedrag-flower ask`` in a fresh process, start to exit."""
    command = [str(Path(sys.executable).parent / "fedrag-flower"), "ask", "--system"]
    start = time.perf_counter()
    subprocess.run([*command, str(system), question], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", type=Path, help="saved RAG system (default: untrained)")
    parser.add_argument("--questions", type=int, default=4, help="test questions to answer")
    parser.add_argument("--ask-runs", type=int, default=3, help="fresh `ask` processes")
    args = parser.parse_args()

    from fedrag_flower.data import default_qa
    from fedrag_flower.rag import RAGSystem
    from fedrag_flower.rag.precision import cpu_supports_bf16

    questions = [row["query"] for row in default_qa("test")[: args.questions]]
    with tempfile.TemporaryDirectory() as tmp:
        system = args.system
        if system is None:
            system = RAGSystem.from_defaults().save_pretrained(Path(tmp) / "untrained")
        print(
            f"system: {args.system or 'untrained default'}; CPU native bf16: {cpu_supports_bf16()}"
        )
        for trained in (False, True):
            seconds, tokens, bf16 = query_seconds(system, questions, trained)
            where = "in a process that has trained" if trained else "in a process that answers"
            print(
                f"RAGSystem.query, {where} ({'bf16' if bf16 else 'fp32'} weights): "
                f"{seconds:.2f} s per answer over {len(questions)} test questions (answers "
                f"{tokens} tokens on average)"
            )
        walls = [ask_seconds(system, questions[0]) for _ in range(args.ask_runs)]
        print(
            f"fedrag-flower ask, start to exit: median {statistics.median(walls):.2f} s "
            f"(runs: {', '.join(f'{w:.2f}' for w in walls)})"
        )
        phases = subprocess.run(
            [sys.executable, "-c", _PHASES, str(system), questions[0]],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        imports, load, answer = (float(p) for p in phases[-3:])
        print(
            f"  of which, in a fresh process: imports {imports:.2f} s, loading the system "
            f"{load:.2f} s, the answer {answer:.2f} s"
        )


if __name__ == "__main__":
    main()
