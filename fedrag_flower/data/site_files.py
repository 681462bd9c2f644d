"""Loading and checking one site's own files: its corpus and its QA files.

A site brings two kinds of files, each as JSONL, CSV or Parquet (chosen by extension):

- a **corpus** (knowledge store), one chunk per row: ``id`` (string or integer), ``text``
  (non-empty) and an optional ``title``;
- a **QA set**, one question per row: ``query`` and ``response`` (non-empty), optional gold
  chunk ids under ``gold_ids`` (or ``gold_id``): a list of ids, or one string in which several
  ids are separated by ``|`` (a plain ``"c1"`` is one id; a list written as text,
  ``"['c1', 'c2']"``, is refused); optional ``id`` and ``category`` are passed through.

Decisions on input that is usable but suspect: a UTF-8 byte-order mark at the start of a
file is accepted (UTF-16/32 is refused); a column or JSONL key that is not used is ignored
with a :class:`DataWarning` naming it; a chunk longer than the retriever's window (given as
a :class:`PassageWindow`) gives a warning. Sizes are limited by :class:`DataLimits`.

The loaders raise the first problem as a :class:`DataError` naming file, line (row, for
Parquet) and field; :func:`inspect_files` and :func:`check_files` list every problem at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedrag_flower.data.errors import DataError, DataWarning, PathLike
from fedrag_flower.data.fields import GOLD_ID_SEPARATOR
from fedrag_flower.data.file_kinds import CORPUS, QA, Parsed, parse, raise_first
from fedrag_flower.data.limits import DataLimits
from fedrag_flower.data.passage_window import PassageWindow
from fedrag_flower.data.records import located_error, unit

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


def load_corpus(
    path: PathLike, *, limits: DataLimits | None = None, window: PassageWindow | None = None
) -> list[dict]:
    """Load a knowledge store file (JSONL, CSV or Parquet).

    Returns rows ``{"id": str, "text": str, "title": str | None}`` in file order; integer ids
    become strings. Raises DataError naming file, line and field for a directory or missing
    file, an unknown format, a file or chunk over ``limits``, non-UTF-8 bytes, invalid JSON,
    a missing, empty or wrongly typed ``id``/``text``, a duplicate id, or an empty corpus.
    Warns (:class:`DataWarning`) of ignored columns and, given the retriever's ``window``,
    of chunks longer than it.
    """
    parsed = parse(path, CORPUS, limits)
    raise_first(parsed)
    if window is not None:
        parsed.warnings += window.over_long(parsed.path, parsed.rows, parsed.positions)
    _warn(parsed.warnings)
    return parsed.rows


def load_qa(path: PathLike, *, limits: DataLimits | None = None) -> list[dict]:
    """Load a QA file (JSONL, CSV or Parquet).

    Returns rows ``{"query": str, "response": str, "gold_ids": list[str]}`` in file order,
    with ``id`` and ``category`` too where the file has them. Gold ids come from ``gold_ids``
    or ``gold_id``: a list of ids, or a string read as ids separated by ``|`` (so a plain
    ``"c1"`` is one id; CSV can only give a string). A string that looks like a list
    (``"['c1', 'c2']"``, as pandas writes lists into CSV) is refused. Raises DataError and
    warns like :func:`load_corpus`.
    """
    parsed = parse(path, QA, limits)
    raise_first(parsed)
    _warn(parsed.warnings)
    return parsed.rows


def _warn(found: Sequence[DataWarning]) -> None:
    for warning in found:
        warnings.warn(warning, stacklevel=3)


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
            f"{corpus_name}. {_separator_hint(unknown, corpus_ids)}Use chunk ids from the "
            "corpus, or add the missing chunks."
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


def _separator_hint(unknown: Sequence[str], corpus_ids: set[str]) -> str:
    """Advice when an unknown id is several known ids joined by the wrong separator."""
    for gid in unknown:
        for separator in (",", ";", " "):
            parts = [part.strip() for part in gid.split(separator) if part.strip()]
            if len(parts) > 1 and all(part in corpus_ids for part in parts):
                return (
                    f"'{gid}' looks like several ids separated by '{separator}': separate "
                    f"them with '{GOLD_ID_SEPARATOR}', or give a list. "
                )
    return ""


def _shared_questions(qa_files: Sequence[Parsed]) -> list[DataError]:
    """The same question (same query, ignoring case and spacing) in two QA files: trained on
    and tested on, it makes the test score meaningless. Ids are not compared: two files may
    number their questions independently."""
    problems = []
    seen: dict[str, tuple[Path, int]] = {}
    for qa in qa_files:
        mine: dict[str, tuple[Path, int]] = {}
        for row, position in zip(qa.rows, qa.positions):
            key = " ".join(row["query"].split()).casefold()
            if key in seen:
                other, other_row = seen[key]
                problems.append(
                    located_error(
                        qa.path,
                        f"the same question as {other}, {unit(other)} {other_row}: a question "
                        "in both training and test data makes the test score meaningless. "
                        "Keep it in one file.",
                        row=position,
                        field="query",
                    )
                )
            mine.setdefault(key, (qa.path, position))
        seen.update({key: where for key, where in mine.items() if key not in seen})
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
    corpus_path: PathLike,
    train_path: PathLike,
    test_path: PathLike | None = None,
    *,
    limits: DataLimits | None = None,
    window: PassageWindow | None = None,
) -> SiteData:
    """Load one site's own files: its corpus, training QA and (optionally) test QA.

    Raises DataError for the first problem :func:`check_files` would list: every gold id in
    the QA files must be a chunk id of the corpus, and no question may be in both the training
    and the test file. Warns like :func:`load_corpus`.
    """
    corpus = parse(corpus_path, CORPUS, limits)
    raise_first(corpus)
    if window is not None:
        corpus.warnings += window.over_long(corpus.path, corpus.rows, corpus.positions)
    _warn(corpus.warnings)
    corpus_ids = {row["id"] for row in corpus.rows}
    qa_files = []
    for qa_path in (train_path, test_path):
        if qa_path is None:
            continue
        qa = parse(qa_path, QA, limits)
        raise_first(qa)
        _warn(qa.warnings)
        qa.problems = _unknown_gold_problems(
            qa.rows, corpus_ids, qa.path, qa.positions, f" file {corpus.path}"
        )
        raise_first(qa)
        qa_files.append(qa)
    shared = _shared_questions(qa_files)
    if shared:
        raise_first(Parsed(Path(str(shared[0].file)), problems=shared))
    test = qa_files[1].rows if test_path is not None else []
    return SiteData(corpus=corpus.rows, train=qa_files[0].rows, test=test)


@dataclass
class DataReport:
    """Everything wrong with a site's files: ``problems`` stop training, ``warnings`` are
    data that can be used but probably not as meant."""

    problems: list[DataError] = field(default_factory=list)
    warnings: list[DataWarning] = field(default_factory=list)


def inspect_files(
    corpus_path: PathLike,
    qa_paths: PathLike | Sequence[PathLike] = (),
    *,
    limits: DataLimits | None = None,
    window: PassageWindow | None = None,
) -> DataReport:
    """Every problem and warning in a corpus file and its QA files, all at once.

    Unlike the loaders, this does not stop at the first problem. A row that is rejected
    (bad bytes, a bad field) still counts as in the corpus for the gold-id check, so one bad
    chunk is one problem, not one more per question that names it.
    """
    if isinstance(qa_paths, str | Path):
        qa_paths = [qa_paths]
    report = DataReport()
    corpus_ids: set[str] | None = None
    try:
        corpus = parse(corpus_path, CORPUS, limits)
        report.problems += corpus.problems
        report.warnings += corpus.warnings
        if window is not None:
            report.warnings += window.over_long(corpus.path, corpus.rows, corpus.positions)
        corpus_ids = {row["id"] for row in corpus.rows} | corpus.unusable_ids
    except DataError as exc:
        report.problems.append(exc)
    qa_files = []
    for qa_path in qa_paths:
        try:
            qa = parse(qa_path, QA, limits)
        except DataError as exc:
            report.problems.append(exc)
            continue
        report.problems += qa.problems
        report.warnings += qa.warnings
        qa_files.append(qa)
        if corpus_ids is not None:
            report.problems += _unknown_gold_problems(
                qa.rows, corpus_ids, qa.path, qa.positions, f" file {Path(corpus_path)}"
            )
    report.problems += _shared_questions(qa_files)
    return report


def check_files(
    corpus_path: PathLike,
    qa_paths: PathLike | Sequence[PathLike] = (),
    *,
    limits: DataLimits | None = None,
    window: PassageWindow | None = None,
) -> list[str]:
    """Every problem in a corpus file and its QA files, as messages (empty when all is fine).

    The problems of :func:`inspect_files` (up to 50, then how many more), each naming file,
    line and field, including gold ids that are not in the corpus. Warnings are not listed.
    """
    problems = inspect_files(corpus_path, qa_paths, limits=limits, window=window).problems
    return capped_messages(problems)


def capped_messages(found: Sequence[Exception], noun: str = "problems") -> list[str]:
    """The messages of ``found``, at most 50, then a line counting the rest."""
    messages = [str(exc) for exc in found[:MAX_PROBLEMS]]
    if len(found) > MAX_PROBLEMS:
        messages.append(f"... and {len(found) - MAX_PROBLEMS} more {noun}")
    return messages
