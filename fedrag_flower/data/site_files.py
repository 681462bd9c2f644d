"""Loading and checking one site's own files: its corpus and its QA files.

A site brings two kinds of files, each as JSONL, CSV or Parquet (chosen by extension):

- a **corpus** (knowledge store), one chunk per row: ``id`` (string or integer), ``text``
  (non-empty) and an optional ``title``;
- a **QA set**, one question per row: ``query`` and ``response`` (non-empty), optional gold
  chunk ids under ``gold_ids`` (or ``gold_id``): a list of ids, or one string in which several
  ids are separated by ``|``; optional ``id`` and ``category`` are passed through.

The loaders raise the first problem as a :class:`DataError` naming file, line (row, for
Parquet) and field; :func:`check_files` lists every problem at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedrag_flower.data.errors import DataError, PathLike
from fedrag_flower.data.file_kinds import CORPUS, QA, Parsed, parse, raise_first
from fedrag_flower.data.records import located_error

MAX_PROBLEMS = 50


@dataclass
class SiteData:
    """What one site trains and evaluates on.

    Attributes:
        corpus: the site's knowledge store, rows ``{"id", "text", "title"}``.
        train: QA rows to fine-tune on, ``{"query", "response", "gold_ids", ...}``.
        test: QA rows held out for evaluation (may be empty).
    """

    corpus: list[dict]
    train: list[dict]
    test: list[dict] = field(default_factory=list)


def load_corpus(path: PathLike) -> list[dict]:
    """Load a knowledge store file (JSONL, CSV or Parquet).

    Returns rows ``{"id": str, "text": str, "title": str | None}`` in file order; integer ids
    become strings. Raises DataError naming file, line and field for a missing file, an
    unknown format, non-UTF-8 bytes, invalid JSON, a missing or empty ``id``/``text``, a
    duplicate id, or an empty corpus.
    """
    parsed = parse(path, CORPUS)
    raise_first(parsed)
    return parsed.rows


def load_qa(path: PathLike) -> list[dict]:
    """Load a QA file (JSONL, CSV or Parquet).

    Returns rows ``{"query": str, "response": str, "gold_ids": list[str]}`` in file order,
    with ``id`` and ``category`` too where the file has them. Gold ids come from ``gold_ids``
    or ``gold_id``: a list, or a string with ids separated by ``|``. Raises DataError like
    :func:`load_corpus`.
    """
    parsed = parse(path, QA)
    raise_first(parsed)
    return parsed.rows


def _unknown_gold_problems(
    qa_rows: Sequence[Mapping],
    corpus_ids: set[str],
    qa_path: PathLike,
    positions: Sequence[int] | None,
    corpus_name: str,
) -> list[DataError]:
    path = Path(qa_path)
    problems = []
    for index, row in enumerate(qa_rows):
        unknown = [gid for gid in row.get("gold_ids") or [] if gid not in corpus_ids]
        if not unknown:
            continue
        shown = ", ".join(f"'{gid}'" for gid in unknown[:5])
        if len(unknown) > 5:
            shown += f" and {len(unknown) - 5} more"
        what = (
            f"gold id{'s' if len(unknown) > 1 else ''} {shown} not in the corpus"
            f"{corpus_name}. Use chunk ids from the corpus, or add the missing chunks."
        )
        if positions is not None:
            problems.append(located_error(path, what, row=positions[index], field="gold_ids"))
        else:
            label = f"question {index + 1}" + (f" (id '{row['id']}')" if "id" in row else "")
            problems.append(
                DataError(
                    f"{path}, {label}, field 'gold_ids': {what}",
                    file=path,
                    row=index + 1,
                    field="gold_ids",
                )
            )
    return problems


def validate_gold_ids(
    qa_rows: Sequence[Mapping], corpus_rows: Sequence[Mapping], qa_path: PathLike
) -> None:
    """Raise DataError if any question's gold id is not a chunk id of the corpus.

    The message names ``qa_path`` and the question by its 1-based position (and its ``id``).
    """
    corpus_ids = {str(row["id"]) for row in corpus_rows}
    problems = _unknown_gold_problems(qa_rows, corpus_ids, qa_path, None, "")
    if problems:
        raise_first(Parsed(Path(qa_path), problems=problems))


def load_site_data(
    corpus_path: PathLike, train_path: PathLike, test_path: PathLike | None = None
) -> SiteData:
    """Load one site's own files: its corpus, training QA and (optionally) test QA.

    Every gold id in the QA files must be a chunk id of the corpus (DataError otherwise).
    """
    corpus = parse(corpus_path, CORPUS)
    raise_first(corpus)
    corpus_ids = {row["id"] for row in corpus.rows}
    splits = []
    for qa_path in (train_path, test_path):
        if qa_path is None:
            splits.append([])
            continue
        qa = parse(qa_path, QA)
        raise_first(qa)
        qa.problems = _unknown_gold_problems(
            qa.rows, corpus_ids, qa.path, qa.positions, f" file {corpus.path}"
        )
        raise_first(qa)
        splits.append(qa.rows)
    return SiteData(corpus=corpus.rows, train=splits[0], test=splits[1])


def check_files(corpus_path: PathLike, qa_paths: PathLike | Sequence[PathLike] = ()) -> list[str]:
    """Every problem in a corpus file and its QA files, as messages (empty when all is fine).

    Unlike the loaders, this does not stop at the first problem: it lists every row-level
    problem (up to 50, then how many more), each naming file, line and field, including gold
    ids that are not in the corpus.
    """
    if isinstance(qa_paths, str | Path):
        qa_paths = [qa_paths]
    problems: list[DataError] = []
    corpus_ids: set[str] | None = None
    try:
        corpus = parse(corpus_path, CORPUS)
        problems += corpus.problems
        corpus_ids = {row["id"] for row in corpus.rows}
    except DataError as exc:
        problems.append(exc)
    for qa_path in qa_paths:
        try:
            qa = parse(qa_path, QA)
        except DataError as exc:
            problems.append(exc)
            continue
        problems += qa.problems
        if corpus_ids is not None:
            problems += _unknown_gold_problems(
                qa.rows, corpus_ids, qa.path, qa.positions, f" file {Path(corpus_path)}"
            )
    messages = [str(exc) for exc in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        messages.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
    return messages
