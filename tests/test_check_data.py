"""Bad input at a site: each kind fails with its own message naming file, line and field,
from ``fedrag-flower check-data`` (every problem at once, exit status 1, no traceback) and
from the library (DataError, or a DataWarning for data that is usable but not as meant)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from fedrag_flower.cli import main
from fedrag_flower.data import (
    DataError,
    DataLimits,
    DataWarning,
    PassageWindow,
    inspect_files,
    load_corpus,
    load_qa,
    load_site_data,
)
from fedrag_flower.models import PACKAGED_RETRIEVER, resolve_retriever

GOOD_CORPUS = [{"id": f"c{i}", "text": f"Chunk number {i}."} for i in range(1, 8)]
GOOD_QA = [
    {"query": f"Question {i}?", "response": f"Answer {i}.", "gold_ids": [f"c{i}"]}
    for i in range(1, 8)
]
LONG_PASSAGE = "word " * 400  # 402 word pieces with [CLS] and [SEP]; all-MiniLM-L6-v2 reads 256


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def write(folder: Path, name: str, content: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def check_data(capsys, *args: str) -> tuple[int, str]:
    """Run the command in this process: an exception escaping it would be a traceback."""
    status = main(["check-data", *args])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def _non_utf8_corpus() -> bytes:
    lines = jsonl(GOOD_CORPUS).split(b"\n")
    lines[3] = b'{"id": "c4", "text": "Caf\xe9 con leche."}'  # Latin-1 e-acute
    return b"\n".join(lines)


# (name, corpus file name, corpus content, QA content or None, extra args, expected message)
BAD_INPUTS = [
    ("empty file", "corpus.jsonl", b"", None, [], "corpus.jsonl: the corpus has no chunks"),
    (
        "missing required column",
        "corpus.csv",
        "id,content\nc1,x\n",
        None,
        [],
        "corpus.csv: no column 'text'",
    ),
    (
        "empty text",
        "corpus.jsonl",
        jsonl([{"id": "c1", "text": "  "}]),
        None,
        [],
        "corpus.jsonl, line 1, field 'text': empty chunk text",
    ),
    (
        "duplicate chunk id",
        "corpus.jsonl",
        jsonl([*GOOD_CORPUS, {"id": "c2", "text": "again"}]),
        None,
        [],
        "corpus.jsonl, line 8, field 'id': duplicate chunk id 'c2' (also at line 2)",
    ),
    (
        "gold id not in corpus",
        "corpus.jsonl",
        jsonl(GOOD_CORPUS),
        jsonl([{"query": "q?", "response": "r", "gold_ids": ["zz"]}]),
        [],
        "qa.jsonl, line 1, field 'gold_ids': gold id 'zz' not in the corpus",
    ),
    (
        "wrong type of a field",
        "corpus.jsonl",
        jsonl([{"id": "c1", "text": 42}]),
        None,
        [],
        "corpus.jsonl, line 1, field 'text': chunk text must be a string, got int",
    ),
    (
        "invalid JSON line",
        "corpus.jsonl",
        b'{"id": "c1", "text": "Unterminated}\n',
        None,
        [],
        "corpus.jsonl, line 1: invalid JSON (Unterminated string starting at column 22)",
    ),
    (
        "JSON line that is not an object",
        "corpus.jsonl",
        b'["c1", "text"]\n',
        None,
        [],
        "corpus.jsonl, line 1: expected a JSON object, got list",
    ),
    (
        "non-UTF-8 bytes",
        "corpus.jsonl",
        _non_utf8_corpus(),
        jsonl(GOOD_QA),
        [],
        "corpus.jsonl, line 4: bytes that are not UTF-8 (byte 26 of the line: b'\\xe9 co')",
    ),
    (
        "UTF-16 file",
        "corpus.csv",
        "id,text\nc1,x\n".encode("utf-16"),
        None,
        [],
        "corpus.csv: the file is UTF-16 (it starts with a UTF-16 byte-order mark)",
    ),
    (
        "CSV row with more values than columns",
        "corpus.csv",
        "id,text\nc1,one, two\n",
        None,
        [],
        "corpus.csv, line 2: 3 values but the header has 2 columns",
    ),
    (
        "oversize chunk",
        "corpus.jsonl",
        jsonl([{"id": "c1", "text": "x" * 60_000}]),
        None,
        [],
        "corpus.jsonl, line 1, field 'text': 60,000 characters, over the limit of 50,000 per "
        "chunk (DataLimits.max_chunk_chars; node config `max-chunk-chars`; "
        "`check-data --max-chunk-chars`)",
    ),
    (
        "oversize file",
        "corpus.jsonl",
        jsonl(GOOD_CORPUS * 1) + b"\n" * 2000,
        None,
        ["--max-file-mb", "0.001"],
        "corpus.jsonl: the file is 2.3 kB, over the limit of 1.0 kB per file",
    ),
    (
        "gold ids that are a list written as text",
        "corpus.jsonl",
        jsonl(GOOD_CORPUS),
        "query,response,gold_ids\nq?,r,\"['c1', 'c2']\"\n",
        [],
        "qa.csv, line 2, field 'gold_ids': gold ids \"['c1', 'c2']\" look like a list written "
        "as text",
    ),
    (
        "gold ids separated by commas",
        "corpus.jsonl",
        jsonl(GOOD_CORPUS),
        'query,response,gold_ids\nq?,r,"c1,c2"\n',
        [],
        "gold id 'c1,c2' not in the corpus file {corpus}. 'c1,c2' looks like several ids "
        "separated by ','",
    ),
    (
        "question in both training and test files",
        "corpus.jsonl",
        jsonl(GOOD_CORPUS),
        jsonl(GOOD_QA),
        ["--qa", "{folder}/test.jsonl"],
        "test.jsonl, line 1, field 'query': the same question as {folder}/qa.jsonl, line 1",
    ),
    ("directory given as the corpus", "corpus", None, None, [], "corpus: is a directory"),
    ("missing file", "nothing.jsonl", None, None, [], "nothing.jsonl: does not exist"),
    (
        "unknown extension",
        "corpus.txt",
        "id,text\n",
        None,
        [],
        "corpus.txt: unknown data format '.txt'. Accepted formats: .jsonl",
    ),
    (
        "extra CSV column (--strict)",
        "corpus.csv",
        "id,text,source\nc1,x,web\n",
        None,
        ["--strict"],
        "warning: {folder}/corpus.csv, field 'source': column 'source' is not used and is "
        "ignored (used: 'id', 'text', 'title')",
    ),
]


@pytest.mark.parametrize(
    "name, corpus_name, corpus, qa, extra, expected",
    BAD_INPUTS,
    ids=[case[0] for case in BAD_INPUTS],
)
def test_check_data_names_each_kind_of_bad_input(
    tmp_path, capsys, name, corpus_name, corpus, qa, extra, expected
):
    corpus_path = tmp_path / corpus_name
    if name == "directory given as the corpus":
        corpus_path.mkdir()
        (corpus_path / "chunks.jsonl").write_bytes(jsonl(GOOD_CORPUS))
    elif corpus is not None:
        write(tmp_path, corpus_name, corpus)
    args = ["--corpus", str(corpus_path), "--skip-window-check"]
    if qa is not None:
        qa_name = "qa.csv" if isinstance(qa, str) else "qa.jsonl"
        args += ["--qa", str(write(tmp_path, qa_name, qa))]
        write(tmp_path, "test.jsonl", jsonl(GOOD_QA[:1]))
    args += [arg.format(folder=tmp_path) for arg in extra]
    status, output = check_data(capsys, *args)
    assert status == 1, output
    assert expected.format(folder=tmp_path, corpus=corpus_path) in output
    assert "Traceback" not in output
    assert "OK:" not in output


def test_one_non_utf8_line_is_one_problem_and_the_rest_is_checked(tmp_path, capsys):
    corpus = write(tmp_path, "corpus.jsonl", _non_utf8_corpus())
    qa = write(tmp_path, "qa.jsonl", jsonl([*GOOD_QA, {"query": "q?", "response": "r", "id": 5}]))
    write(tmp_path, "qa.jsonl", qa.read_bytes() + b'{"query": "", "response": "r"}\n')
    report = inspect_files(corpus, [qa])
    messages = [str(problem) for problem in report.problems]
    # the bad line, and the later empty query: no "gold id 'c4' not in the corpus"
    assert len(messages) == 2, messages
    assert "line 4: bytes that are not UTF-8" in messages[0]
    assert "qa.jsonl, line 9, field 'query': empty query" in messages[1]
    with pytest.raises(DataError, match="line 4: bytes that are not UTF-8") as info:
        load_site_data(corpus, qa)
    assert info.value.row == 4


def test_problems_in_several_files_are_listed_at_once(tmp_path, capsys):
    corpus = write(tmp_path, "corpus.jsonl", jsonl([*GOOD_CORPUS, {"id": "c8", "text": ""}]))
    qa = write(tmp_path, "qa.csv", "query,response,gold_ids\nq?,,c1\nq2?,r,zz\n")
    status, output = check_data(
        capsys, "--corpus", str(corpus), "--qa", str(qa), "--skip-window-check"
    )
    assert status == 1
    lines = output.strip().splitlines()
    assert len(lines) == 3, output
    assert "corpus.jsonl, line 8, field 'text': empty chunk text" in lines[0]
    assert "qa.csv, line 2, field 'response': empty response" in lines[1]
    assert "qa.csv, line 3, field 'gold_ids': gold id 'zz' not in the corpus" in lines[2]


# --------------------------------------------------------------------------- decisions


def test_extra_column_is_ignored_with_a_warning_naming_it(tmp_path, capsys):
    path = write(tmp_path, "corpus.csv", "id,text,titel\nc1,x,A\n")
    with pytest.warns(DataWarning, match="column 'titel' is not used and is ignored"):
        assert load_corpus(path) == [{"id": "c1", "text": "x", "title": None}]
    status, output = check_data(capsys, "--corpus", str(path), "--skip-window-check")
    assert status == 0
    assert "warning: " in output and "'titel'" in output and "OK:" in output


def test_extra_jsonl_key_warning_names_the_first_line(tmp_path):
    path = write(tmp_path, "qa.jsonl", jsonl([*GOOD_QA[:2], {**GOOD_QA[2], "gold": ["c1"]}]))
    with pytest.warns(DataWarning) as caught:
        load_qa(path)
    assert [str(w.message) for w in caught] == [
        f"{path}, line 3, field 'gold': key 'gold' is not used and is ignored (used: 'query', "
        "'response', 'gold_ids', 'gold_id', 'id', 'category'). Rename it if it was meant as "
        "one of these."
    ]


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path, "corpus.jsonl", b"\xef\xbb\xbf" + jsonl(GOOD_CORPUS[:2]))
    assert [row["id"] for row in load_corpus(path)] == ["c1", "c2"]
    csv_path = write(tmp_path, "qa.csv", "\ufeffquery,response,gold_ids\nq?,r,c1\n".encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "column '\ufeffquery' is ignored"
        assert load_qa(csv_path) == [{"query": "q?", "response": "r", "gold_ids": ["c1"]}]


def test_gold_ids_as_a_plain_string_is_one_id_or_pipe_separated_ids(tmp_path):
    rows = [
        {"query": "a?", "response": "r", "gold_ids": "c1"},
        {"query": "b?", "response": "r", "gold_ids": "c1|c2"},
    ]
    path = write(tmp_path, "qa.jsonl", jsonl(rows))
    assert [row["gold_ids"] for row in load_qa(path)] == [["c1"], ["c1", "c2"]]


def test_size_limits_are_configurable_and_named(tmp_path):
    path = write(tmp_path, "corpus.jsonl", jsonl([{"id": "c1", "text": "x" * 120}]))
    assert load_corpus(path)[0]["id"] == "c1"
    with pytest.raises(DataError, match="120 characters, over the limit of 100 per chunk") as info:
        load_corpus(path, limits=DataLimits(max_chunk_chars=100))
    assert (info.value.row, info.value.field) == (1, "text")
    with pytest.raises(DataError, match=r"over the limit of 10 bytes per file"):
        load_corpus(path, limits=DataLimits(max_file_bytes=10))
    with pytest.raises(ValueError, match="max_chunk_chars must be at least 1"):
        DataLimits(max_chunk_chars=0)


# --------------------------------------------------------------------------- retriever window


def _retriever_folder() -> Path:
    try:
        return Path(resolve_retriever(PACKAGED_RETRIEVER))
    except FileNotFoundError as error:
        pytest.fail(f"the packaged retriever is part of the test setup: {error}")


def test_passage_longer_than_the_retriever_window_is_reported(tmp_path, capsys):
    window = PassageWindow.from_model_folder(_retriever_folder(), "all-MiniLM-L6-v2")
    assert window.size == 256
    corpus = write(
        tmp_path,
        "corpus.jsonl",
        jsonl([{"id": "c1", "text": "short"}, {"id": "c2", "text": LONG_PASSAGE}]),
    )
    with pytest.warns(DataWarning) as caught:
        load_corpus(corpus, window=window)
    assert [(w.message.row, w.message.field) for w in caught] == [(2, "text")]
    assert "402 word pieces, and the retriever (all-MiniLM-L6-v2) embeds only the first 256" in (
        str(caught[0].message)
    )
    status, output = check_data(capsys, "--corpus", str(corpus))
    assert status == 0 and "warning: " in output and "line 2, field 'text'" in output
    status, output = check_data(capsys, "--corpus", str(corpus), "--strict")
    assert status == 1 and "embeds only the first 256" in output


def test_check_data_command_prints_problems_without_traceback(tmp_path):
    corpus = write(tmp_path, "corpus.jsonl", _non_utf8_corpus())
    write(
        tmp_path, "corpus.jsonl", corpus.read_bytes() + jsonl([{"id": "c9", "text": LONG_PASSAGE}])
    )
    qa = write(tmp_path, "qa.jsonl", jsonl(GOOD_QA))
    code = "import sys; from fedrag_flower.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "check-data", "--corpus", str(corpus), "--qa", str(qa)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "corpus.jsonl, line 4: bytes that are not UTF-8" in result.stdout
    assert "warning: " in result.stdout and "line 8, field 'text'" in result.stdout
    assert "not in the corpus" not in result.stdout
