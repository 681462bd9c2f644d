"""Tests for fedrag_flower.data: file loading, its errors, default data and partitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrag_flower.data import (
    DataError,
    SiteData,
    as_rows,
    check_files,
    default_corpus,
    default_qa,
    load_corpus,
    load_qa,
    load_site_data,
    partition_default,
    validate_gold_ids,
)
from fedrag_flower.data import default as default_data


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


CHUNKS = [
    {"id": "c1", "text": "Alpha text.", "title": "A"},
    {"id": "c2", "text": "Beta text."},
    {"id": 3, "text": "Gamma text.", "title": None},
]
QUESTIONS = [
    {"query": "What is alpha?", "response": "Alpha.", "gold_ids": ["c1"], "id": "q1"},
    {"query": "What is beta?", "response": "Beta.", "gold_id": "c2", "category": "b"},
    {"query": "What is gamma?", "response": "Gamma.", "gold_ids": "c1|3"},
]
EXPECTED_CORPUS = [
    {"id": "c1", "text": "Alpha text.", "title": "A"},
    {"id": "c2", "text": "Beta text.", "title": None},
    {"id": "3", "text": "Gamma text.", "title": None},
]
EXPECTED_QA = [
    {"query": "What is alpha?", "response": "Alpha.", "gold_ids": ["c1"], "id": "q1"},
    {"query": "What is beta?", "response": "Beta.", "gold_ids": ["c2"], "category": "b"},
    {"query": "What is gamma?", "response": "Gamma.", "gold_ids": ["c1", "3"]},
]


def assert_names(error: DataError, path: Path, where: str | None, field: str | None) -> None:
    message = str(error)
    assert str(path) in message
    if where is not None:
        assert where in message
    if field is not None:
        assert f"'{field}'" in message
        assert error.field == field


# --------------------------------------------------------------------------- good files


def test_load_corpus_jsonl_converts_int_ids_and_defaults_title(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", CHUNKS)
    assert load_corpus(path) == EXPECTED_CORPUS


def test_load_corpus_csv_reads_header_and_empty_title_as_none(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text(
        'id,text,title\nc1,Alpha text.,A\nc2,Beta text.,\n3,"Gamma text.",\n', encoding="utf-8"
    )
    assert load_corpus(path) == EXPECTED_CORPUS


def test_load_corpus_csv_accepts_quoted_commas_newlines_and_bom(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_bytes('\ufeffid,text\r\nc1,"one, two\nthree"\r\n'.encode())
    assert load_corpus(path) == [{"id": "c1", "text": "one, two\nthree", "title": None}]


def test_load_corpus_parquet(tmp_path):
    rows = [{"id": "c1", "text": "Alpha text.", "title": "A"}, {"id": "c2", "text": "Beta text."}]
    path = write_parquet(tmp_path / "corpus.parquet", rows)
    assert load_corpus(path) == [
        {"id": "c1", "text": "Alpha text.", "title": "A"},
        {"id": "c2", "text": "Beta text.", "title": None},
    ]


def test_load_corpus_accepts_json_lines_extension_and_skips_blank_lines(tmp_path):
    path = tmp_path / "corpus.json-lines"
    path.write_text('{"id": "c1", "text": "x"}\n\n{"id": "c2", "text": "y"}\n', encoding="utf-8")
    assert [row["id"] for row in load_corpus(path)] == ["c1", "c2"]


def test_load_qa_jsonl_normalises_gold_ids_and_passes_id_category(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", QUESTIONS)
    assert load_qa(path) == EXPECTED_QA


def test_load_qa_csv_splits_pipe_separated_gold_ids(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text(
        "query,response,gold_ids\nWhat is alpha?,Alpha.,c1\nWhat is gamma?,Gamma., c1 | 3 \n"
        "No gold?,None.,\n",
        encoding="utf-8",
    )
    assert [row["gold_ids"] for row in load_qa(path)] == [["c1"], ["c1", "3"], []]


def test_load_qa_parquet_with_list_gold_ids(tmp_path):
    rows = [
        {"query": "q1?", "response": "r1", "gold_ids": ["c1", "c2"]},
        {"query": "q2?", "response": "r2", "gold_ids": []},
    ]
    path = write_parquet(tmp_path / "qa.parquet", rows)
    assert load_qa(path) == [
        {"query": "q1?", "response": "r1", "gold_ids": ["c1", "c2"]},
        {"query": "q2?", "response": "r2", "gold_ids": []},
    ]


def test_load_qa_without_gold_ids_gives_empty_list(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"query": "q?", "response": "r"}])
    assert load_qa(path) == [{"query": "q?", "response": "r", "gold_ids": []}]


# --------------------------------------------------------------------------- bad files


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="does not exist") as info:
        load_corpus(path)
    assert_names(info.value, path, None, None)


@pytest.mark.parametrize("name", ["corpus.txt", "corpus.json", "corpus"])
def test_unknown_format_lists_accepted_formats(tmp_path, name):
    path = tmp_path / name
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_corpus(path)
    message = str(info.value)
    assert str(path) in message
    for ext in (".jsonl", ".json-lines", ".csv", ".parquet"):
        assert ext in message


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"id": "c1", "text": "ok"}\n{"id": "c2", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match="UTF-8") as info:
        load_corpus(path)
    assert_names(info.value, path, "line 2", None)
    assert info.value.row == 2


def test_non_utf8_bytes_in_csv_name_line(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_bytes(b"query,response\nq?,r\nq2?,r\xff\n")
    with pytest.raises(DataError, match="UTF-8") as info:
        load_qa(path)
    assert_names(info.value, path, "line 3", None)


def test_invalid_json_line_names_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "c1", "text": "ok"}\n{"id": "c2", "text": \n', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON") as info:
        load_corpus(path)
    assert_names(info.value, path, "line 2", None)


def test_json_line_that_is_not_an_object_is_rejected(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('["c1", "text"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="JSON object") as info:
        load_corpus(path)
    assert_names(info.value, path, "line 1", None)


def test_missing_text_field_names_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "c1", "text": "x"}, {"id": "c2"}])
    with pytest.raises(DataError, match="missing") as info:
        load_corpus(path)
    assert_names(info.value, path, "line 2", "text")


def test_empty_text_field_names_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "c1", "text": "   "}])
    with pytest.raises(DataError, match="empty") as info:
        load_corpus(path)
    assert_names(info.value, path, "line 1", "text")


def test_empty_id_in_csv_names_line_and_field(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text("id,text\nc1,x\n,y\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty") as info:
        load_corpus(path)
    assert_names(info.value, path, "line 3", "id")


def test_csv_without_required_column_names_the_column(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text("id,content\nc1,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="no column 'text'") as info:
        load_corpus(path)
    assert_names(info.value, path, None, "text")


def test_csv_row_with_too_many_values_names_line(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text("id,text\nc1,one, two\n", encoding="utf-8")
    with pytest.raises(DataError, match="Quote") as info:
        load_corpus(path)
    assert_names(info.value, path, "line 2", None)


def test_parquet_null_field_names_row_and_field(tmp_path):
    path = write_parquet(
        tmp_path / "qa.parquet",
        [{"query": "q?", "response": "r"}, {"query": "q2?", "response": None}],
    )
    with pytest.raises(DataError, match="missing") as info:
        load_qa(path)
    assert_names(info.value, path, "row 2", "response")


def test_bad_parquet_file_names_the_file(tmp_path):
    path = tmp_path / "corpus.parquet"
    path.write_bytes(b"not parquet")
    pytest.importorskip("pyarrow")
    with pytest.raises(DataError, match="Parquet") as info:
        load_corpus(path)
    assert_names(info.value, path, None, None)


def test_duplicate_chunk_id_names_both_lines(tmp_path):
    rows = [{"id": "c1", "text": "x"}, {"id": "c2", "text": "y"}, {"id": "c1", "text": "z"}]
    path = write_jsonl(tmp_path / "corpus.jsonl", rows)
    with pytest.raises(DataError, match="duplicate chunk id 'c1'") as info:
        load_corpus(path)
    assert_names(info.value, path, "line 3", "id")
    assert "line 1" in str(info.value)


def test_int_and_str_ids_that_collide_are_duplicates(tmp_path):
    path = write_jsonl(
        tmp_path / "corpus.jsonl", [{"id": 1, "text": "x"}, {"id": "1", "text": "y"}]
    )
    with pytest.raises(DataError, match="duplicate"):
        load_corpus(path)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_corpus_is_an_error(tmp_path, content):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="no chunks") as info:
        load_corpus(path)
    assert_names(info.value, path, None, None)


def test_header_only_csv_corpus_is_empty(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text("id,text\n", encoding="utf-8")
    with pytest.raises(DataError, match="no chunks"):
        load_corpus(path)


def test_empty_qa_file_is_an_error(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no questions"):
        load_qa(path)


@pytest.mark.parametrize("field", ["query", "response"])
def test_qa_missing_or_empty_field_names_line_and_field(tmp_path, field):
    row = {"query": "q?", "response": "r"}
    missing = {k: v for k, v in row.items() if k != field}
    path = write_jsonl(tmp_path / "qa.jsonl", [row, missing, {**row, field: ""}])
    with pytest.raises(DataError, match="missing") as info:
        load_qa(path)
    assert_names(info.value, path, "line 2", field)
    assert "1 more problem" in str(info.value)


def test_qa_gold_ids_of_wrong_type_names_field(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"query": "q", "response": "r", "gold_ids": 1.5}])
    with pytest.raises(DataError) as info:
        load_qa(path)
    assert_names(info.value, path, "line 1", "gold_ids")


def test_qa_duplicate_question_id_is_an_error(tmp_path):
    rows = [
        {"id": "q1", "query": "a", "response": "b"},
        {"id": "q1", "query": "c", "response": "d"},
    ]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    with pytest.raises(DataError, match="duplicate question id") as info:
        load_qa(path)
    assert_names(info.value, path, "line 2", "id")


def test_first_error_counts_the_remaining_problems(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "c1"}, {"id": "c2"}, {"id": "c3"}])
    with pytest.raises(DataError, match="2 more problems") as info:
        load_corpus(path)
    assert info.value.row == 1


# --------------------------------------------------------------------------- gold ids, sites


def test_validate_gold_ids_names_question_and_unknown_id(tmp_path):
    qa = [
        {"query": "a", "response": "b", "gold_ids": ["c1"]},
        {"query": "c", "response": "d", "gold_ids": ["c1", "zz"], "id": "q2"},
    ]
    validate_gold_ids(qa[:1], EXPECTED_CORPUS, tmp_path / "qa.jsonl")
    with pytest.raises(DataError, match="'zz'") as info:
        validate_gold_ids(qa, EXPECTED_CORPUS, tmp_path / "qa.jsonl")
    assert_names(info.value, tmp_path / "qa.jsonl", "question 2 (id 'q2')", "gold_ids")


def test_load_site_data_reads_all_three_files(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CHUNKS)
    train = write_jsonl(tmp_path / "train.jsonl", QUESTIONS)
    test = write_jsonl(tmp_path / "test.jsonl", QUESTIONS[:1])
    site = load_site_data(corpus, train, test)
    assert site == SiteData(corpus=EXPECTED_CORPUS, train=EXPECTED_QA, test=EXPECTED_QA[:1])
    assert load_site_data(corpus, train).test == []


def test_load_site_data_rejects_gold_ids_outside_the_corpus_with_line(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CHUNKS)
    train = write_jsonl(tmp_path / "train.jsonl", QUESTIONS)
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [{"query": "a", "response": "b"}, {"query": "c", "response": "d", "gold_ids": ["x"]}],
    )
    with pytest.raises(DataError, match="'x' not in the corpus file") as info:
        load_site_data(corpus, train, test)
    assert_names(info.value, test, "line 2", "gold_ids")


def test_check_files_is_empty_for_good_files(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CHUNKS)
    train = write_jsonl(tmp_path / "train.jsonl", QUESTIONS)
    assert check_files(corpus, [train]) == []
    assert check_files(corpus, train) == []


def test_check_files_lists_every_problem_with_file_line_field(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(
        b'{"id": "c1", "text": "ok"}\n{"id": "c2"}\n{"id": "c1", "text": "dup"}\n{not json\n'
    )
    qa = write_jsonl(
        tmp_path / "qa.jsonl",
        [{"query": "", "response": "r"}, {"query": "q", "response": "r", "gold_ids": ["c9"]}],
    )
    missing = tmp_path / "missing.csv"
    problems = check_files(corpus, [qa, missing])
    assert len(problems) == 6
    assert f"{corpus}, line 2, field 'text'" in problems[0]
    assert f"{corpus}, line 3, field 'id'" in problems[1] and "duplicate" in problems[1]
    assert f"{corpus}, line 4" in problems[2] and "invalid JSON" in problems[2]
    assert f"{qa}, line 1, field 'query'" in problems[3]
    assert f"{qa}, line 2, field 'gold_ids'" in problems[4] and "'c9'" in problems[4]
    assert str(missing) in problems[5] and "does not exist" in problems[5]


def test_check_files_caps_the_list_and_counts_the_rest(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": f"c{i}"} for i in range(60)])
    problems = check_files(corpus, [])
    assert len(problems) == 51
    assert problems[-1] == "... and 10 more problems"


def test_check_files_reports_a_broken_corpus_file_and_still_checks_qa(tmp_path):
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"query": "q"}])
    problems = check_files(tmp_path / "corpus.txt", [qa])
    assert len(problems) == 2
    assert "unknown data format" in problems[0]
    assert f"{qa}, line 1, field 'response'" in problems[1]


def test_missing_pyarrow_gives_an_install_hint(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow")
        return real_import(name, *args, **kwargs)

    path = tmp_path / "corpus.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(DataError, match=r"fedrag-flower\[parquet\]") as info:
        load_corpus(path)
    assert_names(info.value, path, None, None)


# --------------------------------------------------------------------------- as_rows

ROWS = [
    {"query": "q1", "response": "r1"},
    {"query": "q2", "response": "r2"},
    {"query": "q3", "response": "r3"},
]


class FakeDataset:
    """Duck-types datasets.Dataset: to_dict() gives columns."""

    def __init__(self, columns: dict):
        self.columns = columns

    def to_dict(self) -> dict:
        return self.columns


def test_as_rows_accepts_list_of_column_dicts_and_concatenates():
    dataset = [
        {"query": ["q1", "q2"], "response": ["r1", "r2"]},
        {"query": ["q3"], "response": ["r3"]},
    ]
    assert as_rows(dataset) == ROWS


def test_as_rows_accepts_one_column_dict_and_keeps_gold_ids():
    dataset = {"query": ["q1", "q2"], "response": ["r1", "r2"], "gold_ids": [["a"], "b|c"]}
    assert as_rows(dataset) == [
        {"query": "q1", "response": "r1", "gold_ids": ["a"]},
        {"query": "q2", "response": "r2", "gold_ids": ["b", "c"]},
    ]


def test_as_rows_accepts_row_dicts_and_keeps_id_category_gold_ids():
    dataset = [{"query": "q", "response": "r", "gold_ids": ["a"], "id": 7, "category": "x"}]
    assert as_rows(dataset) == [
        {"query": "q", "response": "r", "gold_ids": ["a"], "id": "7", "category": "x"}
    ]
    assert as_rows(ROWS) == ROWS
    assert as_rows(tuple(ROWS)) == ROWS


def test_as_rows_accepts_a_dataset_like_object():
    columns = {"query": ["q1", "q2", "q3"], "response": ["r1", "r2", "r3"], "other": [1, 2, 3]}
    assert as_rows(FakeDataset(columns)) == ROWS


def test_as_rows_accepts_an_iterable_of_row_dicts():
    assert as_rows(row for row in ROWS) == ROWS


def test_as_rows_round_trips_loaded_qa_rows():
    assert as_rows(EXPECTED_QA) == EXPECTED_QA


def test_as_rows_rejects_unequal_columns_naming_the_keys():
    with pytest.raises(ValueError, match=r"train_dataset\[1\].*'query' has 2.*'response' has 1"):
        as_rows([{"query": ["q"], "response": ["r"]}, {"query": ["a", "b"], "response": ["c"]}])


def test_as_rows_rejects_missing_column_naming_the_key():
    with pytest.raises(ValueError, match="no 'response' column"):
        as_rows({"query": ["q1"]})


def test_as_rows_rejects_missing_or_empty_values_naming_index_and_key():
    with pytest.raises(ValueError, match=r"row 1 .*missing key 'response'"):
        as_rows([{"query": "q", "response": "r"}, {"query": "q2"}])
    with pytest.raises(ValueError, match=r"row 2 .*position 1.*'query' must be a non-empty"):
        as_rows(
            [{"query": ["a"], "response": ["b"]}, {"query": ["c", " "], "response": ["d", "e"]}]
        )
    with pytest.raises(ValueError, match="'response' must be a non-empty string"):
        as_rows([{"query": "q", "response": None}])


def test_as_rows_rejects_empty_and_wrong_types():
    with pytest.raises(ValueError, match="empty"):
        as_rows([])
    with pytest.raises(ValueError, match="string"):
        as_rows("query,response")
    with pytest.raises(ValueError, match=r"train_dataset\[0\] is a int"):
        as_rows([1])
    with pytest.raises(ValueError, match="not supported"):
        as_rows(42)


# --------------------------------------------------------------------------- default data


def test_default_corpus_has_503_unique_chunks_titled_by_category():
    corpus = default_corpus()
    assert len(corpus) == 503
    assert len({chunk["id"] for chunk in corpus}) == 503
    assert all(chunk["text"].strip() and chunk["title"] for chunk in corpus)
    assert len({chunk["title"] for chunk in corpus}) == 39


def test_default_split_is_402_101_disjoint_with_gold_ids_in_corpus():
    train, test = default_qa("train"), default_qa("test")
    assert (len(train), len(test)) == (402, 101)
    assert not {row["id"] for row in train} & {row["id"] for row in test}
    corpus_ids = {chunk["id"] for chunk in default_corpus()}
    for row in train + test:
        assert row["gold_ids"] == [row["id"]]
        assert set(row.keys()) == {"id", "category", "query", "response", "gold_ids"}
    assert {gid for row in train + test for gid in row["gold_ids"]} == corpus_ids
    assert len(default_qa("all")) == 503


def test_default_qa_rejects_unknown_split():
    with pytest.raises(ValueError, match="'train', 'test' or 'all'"):
        default_qa("validation")


def test_default_data_mutation_does_not_leak_into_later_calls():
    default_corpus()[0]["text"] = "changed"
    default_qa()[0]["gold_ids"].append("x")
    assert default_corpus()[0]["text"] != "changed"
    assert default_qa()[0]["gold_ids"] == [default_qa()[0]["id"]]


def test_missing_default_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(default_data.importlib.util, "find_spec", lambda name: None)
    default_data._default_rows.cache_clear()
    try:
        with pytest.raises(
            DataError, match=r"pip install --no-deps zaragoza-construction-faq==1\.2\.1"
        ):
            default_corpus()
    finally:
        default_data._default_rows.cache_clear()


def _check_partition_covers_split(sites: list[SiteData]) -> None:
    for name, split in (("train", default_qa("train")), ("test", default_qa("test"))):
        ids = [row["id"] for site in sites for row in getattr(site, name)]
        assert sorted(ids) == sorted(row["id"] for row in split)
    for site in sites:
        corpus_ids = {chunk["id"] for chunk in site.corpus}
        assert site.train and site.test
        for row in site.train + site.test:
            assert set(row["gold_ids"]) <= corpus_ids


def test_category_partition_is_disjoint_balanced_and_covers_every_row():
    sites = [partition_default(i, 3) for i in range(3)]
    _check_partition_covers_split(sites)
    categories = [{row["category"] for row in site.train + site.test} for site in sites]
    assert not (categories[0] & categories[1] or categories[0] & categories[2])
    assert not categories[1] & categories[2]
    # a site's corpus is exactly the chunks of its categories
    for site, cats in zip(sites, categories, strict=True):
        assert {chunk["title"] for chunk in site.corpus} == cats
    sizes = [len(site.corpus) for site in sites]
    assert sum(sizes) == 503 and max(sizes) - min(sizes) <= 30


def test_category_partition_is_deterministic():
    assert partition_default(1, 4) == partition_default(1, 4)
    assert partition_default(0, 1).corpus == default_corpus()


def test_iid_partition_covers_every_row_and_depends_on_seed():
    sites = [partition_default(i, 3, scheme="iid", seed=0) for i in range(3)]
    _check_partition_covers_split(sites)
    corpus_ids = [chunk["id"] for site in sites for chunk in site.corpus]
    assert sorted(corpus_ids) == sorted(chunk["id"] for chunk in default_corpus())
    assert [len(site.train) for site in sites] == [134, 134, 134]
    assert partition_default(0, 3, "iid", seed=0) == sites[0]
    assert partition_default(0, 3, "iid", seed=1) != sites[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((3, 3), r"partition_id must be in \[0, 3\)"),
        ((-1, 3), "partition_id"),
        ((0, 0), "num_partitions must be at least 1"),
        ((0, 40), "num_partitions <= 39"),
        ((0, 3, "dirichlet"), "'category', 'iid'"),
        ((0, 102, "iid"), "num_partitions <= 101"),
    ],
)
def test_partition_default_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        partition_default(*args)
