"""The passages variant of the default data: answers joined into passages of 3-5."""

from __future__ import annotations

from collections import Counter

import pytest

from fedrag_flower.data import default_corpus, default_qa, partition_default
from fedrag_flower.data.passages import passage_corpus, passage_sizes


@pytest.mark.parametrize("n", range(0, 40))
def test_a_category_is_cut_into_passages_of_three_to_five_answers(n):
    sizes = passage_sizes(n)
    assert sum(sizes) == n
    if n >= 3:
        assert all(3 <= size <= 5 for size in sizes), sizes
    assert max(sizes, default=0) - min(sizes, default=0) <= 1


def test_every_answer_is_in_exactly_one_passage_and_gold_ids_point_to_it():
    passages = {chunk["id"]: chunk for chunk in default_corpus("passages")}
    faq = default_corpus("faq")
    assert len(passages) < len(faq) / 3
    texts = Counter(answer for chunk in passages.values() for answer in chunk["text"].split("\n\n"))
    assert sorted(texts) == sorted(chunk["text"] for chunk in faq)
    questions = default_qa("all", "passages")
    assert len(questions) == 503
    for row in questions:
        (gold,) = row["gold_ids"]
        assert row["response"] in passages[gold]["text"].split("\n\n")
        assert passages[gold]["title"] == row["category"]
    # Same questions and split as the plain FAQ; only the gold chunk differs.
    plain = default_qa("test")
    assert [r["id"] for r in default_qa("test", "passages")] == [r["id"] for r in plain]


def test_passages_are_the_same_on_every_call_and_change_with_the_seed():
    from fedrag_flower.data.default import _default_rows

    rows = _default_rows()
    assert passage_corpus(rows) == passage_corpus(rows) == default_corpus("passages")
    assert passage_corpus(rows, seed=1) != passage_corpus(rows)


def test_category_partition_is_unchanged_and_sites_hold_their_categories_passages():
    sites = [partition_default(i, 3, "category", data="passages") for i in range(3)]
    plain = [partition_default(i, 3, "category") for i in range(3)]
    for site, faq_site in zip(sites, plain):
        assert [r["id"] for r in site.train] == [r["id"] for r in faq_site.train]
        assert [r["id"] for r in site.test] == [r["id"] for r in faq_site.test]
        own = {chunk["id"] for chunk in site.corpus}
        assert all(r["gold_ids"][0] in own for r in site.train + site.test)
        assert {c["title"] for c in site.corpus} == {c["title"] for c in faq_site.corpus}
    ids = [chunk["id"] for site in sites for chunk in site.corpus]
    assert sorted(ids) == sorted(chunk["id"] for chunk in default_corpus("passages"))


def test_unknown_default_data_names_the_run_config_key():
    with pytest.raises(ValueError, match="default-data"):
        default_corpus("paragraphs")
    with pytest.raises(ValueError, match="'faq', 'passages'"):
        partition_default(0, 3, data="sentences")
