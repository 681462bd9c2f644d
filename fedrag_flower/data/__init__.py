"""Loading corpora and QA sets: the one place in the project that reads data files.

One concept per module:

- :mod:`~fedrag_flower.data.records`: reading a JSONL, CSV or Parquet file's rows with their
  line numbers;
- :mod:`~fedrag_flower.data.fields` and :mod:`~fedrag_flower.data.file_kinds`: checking
  fields, and the one parser for both kinds of file (corpus, QA);
- :mod:`~fedrag_flower.data.limits` and :mod:`~fedrag_flower.data.passage_window`: size
  limits, and the retriever's window that a chunk should fit in;
- :mod:`~fedrag_flower.data.site_files`: loading and checking a site's files
  (:func:`load_site_data`, :func:`check_files`, :func:`inspect_files`);
- :mod:`~fedrag_flower.data.train_dataset`: a trainer's ``train_dataset`` as rows
  (:func:`as_rows`);
- :mod:`~fedrag_flower.data.default`: the packaged default data, its split and partitions;
  :mod:`~fedrag_flower.data.passages`: its harder variant, answers joined into passages.

Every problem is raised as a :class:`DataError` that names the file, the line (row, for
Parquet) and the field, and says what to do; data that can be used but probably not as meant
(a column that is ignored, a chunk longer than the retriever reads) gives a
:class:`DataWarning`.
"""

from __future__ import annotations

from fedrag_flower.data.default import (
    DEFAULT_DATA,
    PARTITION_SCHEMES,
    default_corpus,
    default_qa,
    partition_default,
)
from fedrag_flower.data.errors import DataError, DataWarning, PathLike
from fedrag_flower.data.limits import DataLimits
from fedrag_flower.data.passage_window import PassageWindow
from fedrag_flower.data.site_files import (
    DataReport,
    SiteData,
    check_files,
    inspect_files,
    load_corpus,
    load_qa,
    load_site_data,
    validate_gold_ids,
)
from fedrag_flower.data.train_dataset import as_rows

__all__ = [
    "DEFAULT_DATA",
    "PARTITION_SCHEMES",
    "DataError",
    "DataLimits",
    "DataReport",
    "DataWarning",
    "PassageWindow",
    "PathLike",
    "SiteData",
    "as_rows",
    "check_files",
    "inspect_files",
    "default_corpus",
    "default_qa",
    "load_corpus",
    "load_qa",
    "load_site_data",
    "partition_default",
    "validate_gold_ids",
]
