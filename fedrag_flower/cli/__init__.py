"""The ``fedrag-flower`` command line.

fedrag-flower prepare
fedrag-flower ask --system outputs/run-.../final "How long does a building permit take?"
fedrag-flower evaluate --system outputs/run-.../final
fedrag-flower check-data --corpus corpus.jsonl --qa train.jsonl
fedrag-flower node-key / supernode-command                         (a site; see cli/site.py)
fedrag-flower coordinator-credentials / coordinator-command  (the coordinator; cli/coordinator.py)
fedrag-flower compare --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import sys

from fedrag_flower import __version__
from fedrag_flower.cli import compare, coordinator, prepare, site, system


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrag-flower",
        description="Federated fine-tuning of retrieval-augmented generation on Flower: "
        "prepare the default models, query and evaluate saved RAG systems, set up a site or "
        "the coordinator, and compare training alone, federated and centralized.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    prepare.register(subparsers)
    system.register(subparsers)
    site.register(subparsers)
    coordinator.register(subparsers)
    compare.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


def console(argv: list[str] | None = None) -> None:
    """The ``fedrag-flower`` script: ``main``, then exit.

    Commands that only read (``ask``, ``evaluate``) leave without tearing the interpreter
    down: once their output is flushed nothing is left to save, and finalizing the modules
    that PyTorch and transformers load takes ~0.8 s of a ~5 s ``ask``.
    """
    args = build_parser().parse_args(argv)
    code = _run(args)
    if getattr(args, "read_only", False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as error:  # bad input: say what, no traceback
        print(f"fedrag-flower: error: {error}", file=sys.stderr)
        return 2
