"""Loading corpora and QA sets: the one place in the project that reads data files.

One concept per module:

- :mod:`~fedrag_flower.data.records`: reading a JSONL, CSV or Parquet file's rows with their
  line numbers;
- :mod:`~fedrag_flower.data.fields` and :mod:`~fedrag_flower.data.file_kinds`: checking
  fields, and the one parser for both kinds of file (corpus, QA);
- :mod:`~fedrag_flower.data.site_files`: loading and checking a site's files
  (:func:`load_site_data`, :func:`check_files`);
- :mod:`~fedrag_flower.data.train_dataset`: a trainer's ``train_dataset`` as rows
  (:func:`as_rows`);
- :mod:`~fedrag_flower.data.default`: the packaged default data, its split and partitions;
  :mod:`~fedrag_flower.data.passages`: its harder variant, answers joined into passages.

Every problem is raised as a :class:`DataError` that names the file, the line (row, for
Parquet) and the field, and says what to do.
"""

from __future__ import annotations

from fedrag_flower.data.default import (
    DEFAULT_DATA,
    PARTITION_SCHEMES,
    default_corpus,
    default_qa,
    partition_default,
)
from fedrag_flower.data.errors import DataError, PathLike
from fedrag_flower.data.site_files import (
    SiteData,
    check_files,
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
    "PathLike",
    "SiteData",
    "as_rows",
    "check_files",
    "default_corpus",
    "default_qa",
    "load_corpus",
    "load_qa",
    "load_site_data",
    "partition_default",
    "validate_gold_ids",
]
