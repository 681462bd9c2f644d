"""Poisoned updates are rejected and recorded; the round averages the honest ones."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Error
from flwr.serverapp.strategy import FedAvg

from fedrag_flower.federation.adapter_strategy import AdapterStrategy, TooFewSitesError
from fedrag_flower.federation.adapters import pack_sides
from fedrag_flower.federation.rounds import run_rounds
from fedrag_flower.federation.update_checks import check_updates
from tests.fake_grid import NODE_GONE, FakeGrid, arrays_of, record_of, training_site

GLOBAL = {
    "generator.a": np.array([1.0, 2.0, 3.0], np.float32),
    "generator.b": np.array([[0.5, -0.5]], np.float32),
    "retriever.c": np.array([4.0, 4.0], np.float32),
}


def honest(scale: float):
    return lambda key, value, rnd: np.full_like(value, scale)


def poisoned(kind: str):
    """A site that trains like an honest one, then spoils its reply in one way."""
    base = training_site(honest(0.1), 10.0)

    def site(content, message_type, server_round):
        reply = base(content, message_type, server_round)
        if message_type != "train":
            return reply
        arrays = arrays_of(reply["arrays"])
        if kind == "wrong key":
            arrays["generator.extra"] = np.zeros(2, np.float32)
        elif kind == "wrong shape":
            arrays["generator.a"] = np.zeros(4, np.float32)
        elif kind == "wrong dtype":
            arrays["generator.a"] = arrays["generator.a"].astype(np.float64)
        elif kind == "NaN":
            arrays["generator.b"][0, 0] = np.nan
        elif kind == "Inf":
            arrays["retriever.c"][1] = np.inf
        elif kind == "100x norm":
            arrays = {k: v + 100 * (v - GLOBAL[k]) for k, v in arrays.items()}
        reply["arrays"] = record_of(arrays)
        if kind == "packed, wrong size":  # the wire form, one value short of the layout
            packed = pack_sides(reply["arrays"])
            reply["arrays"] = record_of({"generator": packed["generator"].numpy()[:-1]})
        return reply

    return site


KINDS = ["wrong key", "wrong shape", "wrong dtype", "NaN", "Inf", "100x norm"]
KINDS += ["packed, wrong size"]
REASONS = {
    "wrong key": "unexpected keys ['generator.extra']",
    "wrong shape": "has shape (4,), expected (3,)",
    "wrong dtype": "has dtype float64, expected float32",
    "NaN": "'generator.b' holds NaN",
    "Inf": "'retriever.c' holds Inf",
    "100x norm": "more than 10x the median",
    "packed, wrong size": "the generator adapter received holds 4 values",
}


def test_each_poisoned_kind_is_rejected_and_the_round_averages_the_honest_replies():
    # Honest sites 1-3 add 0.1, 0.2, 0.4 with weights 1, 2, 5; sites 11-16 are poisoned.
    sites = {1: training_site(honest(0.1), 1.0), 2: training_site(honest(0.2), 2.0)}
    sites[3] = training_site(honest(0.4), 5.0)
    sites |= {11 + i: poisoned(kind) for i, kind in enumerate(KINDS)}
    strategy = AdapterStrategy(FedAvg(min_available_nodes=9), ("generator.", "retriever."), 2)
    reports = []
    final = run_rounds(strategy, FakeGrid(sites), record_of(GLOBAL), num_rounds=1,
                       hooks=[lambda report, arrays: reports.append(report)])  # fmt: skip
    # Hand computation: (1*0.1 + 2*0.2 + 5*0.4) / 8 = 2.5 / 8 = 0.3125 added to every tensor.
    for key, value in arrays_of(final).items():
        np.testing.assert_allclose(value, GLOBAL[key] + 0.3125, rtol=1e-6)
    failures = {f["node"]: f for f in reports[0].failures}
    assert set(failures) == {11 + i for i in range(len(KINDS))}
    for i, kind in enumerate(KINDS):
        record = failures[11 + i]
        assert record["kind"] == "rejected" and record["round"] == 1 and record["stage"] == "train"
        assert REASONS[kind] in record["reason"], (kind, record["reason"])


def test_norm_rule_compares_with_the_median_of_the_other_sites():
    global_ = {"generator.a": np.zeros(4, np.float32)}
    replies = [{"generator.a": np.full(4, s, np.float32)} for s in (1.0, 1.2, 0.9, 11.0)]
    rejected = check_updates(global_, ["generator.a"], replies, norm_factor=10)
    assert [r.index for r in rejected] == [3]  # 11 / median(1, 1.2, 0.9) = 11 / 1.0 > 10
    replies[3] = {"generator.a": np.full(4, 9.0, np.float32)}  # 9x: kept
    assert check_updates(global_, ["generator.a"], replies, norm_factor=10) == []
    huge = [replies[0], {"generator.a": np.full(4, 1e3, np.float32)}]
    assert check_updates(global_, ["generator.a"], huge, norm_factor=0) == []  # check off


def test_a_reply_missing_a_trained_key_is_rejected_but_the_untrained_side_may_be_absent():
    replies = [{"generator.a": GLOBAL["generator.a"]}, {"generator.b": GLOBAL["generator.b"]}]
    rejected = check_updates(GLOBAL, ["generator.a", "generator.b"], replies)
    assert [(r.index, r.reason) for r in rejected] == [
        (0, "missing keys ['generator.b']"),
        (1, "missing keys ['generator.a']"),
    ]
    whole = dict(GLOBAL)
    assert check_updates(GLOBAL, ["generator.a", "generator.b"], [whole]) == []


def test_a_failing_or_silent_site_is_recorded_and_the_round_goes_on_with_the_rest():
    sites = {
        1: training_site(honest(0.1), 1.0, ("generator.",)),
        2: training_site(honest(0.3), 1.0, ("generator.",)),
        3: lambda content, kind, rnd: Error(code=2, reason="site 3 ran out of memory"),
        4: lambda content, kind, rnd: None,  # never answers
    }
    strategy = AdapterStrategy(FedAvg(min_available_nodes=4), ("generator.",), min_sites=2)
    reports = []
    final = run_rounds(strategy, FakeGrid(sites), record_of(GLOBAL), num_rounds=2,
                       hooks=[lambda report, arrays: reports.append(report)])  # fmt: skip
    # Two rounds of mean(0.1, 0.3) = 0.2 on the generator; the retriever is not trained.
    final = arrays_of(final)
    np.testing.assert_allclose(final["generator.a"], GLOBAL["generator.a"] + 0.4, rtol=1e-6)
    assert np.array_equal(final["retriever.c"], GLOBAL["retriever.c"])  # kept bit for bit
    for report in reports:
        by_node = {(f["node"], f["stage"]): f for f in report.failures}
        assert by_node[(3, "train")]["kind"] == "error"
        assert "ran out of memory" in by_node[(3, "train")]["reason"]
        assert by_node[(4, "train")]["kind"] == "timeout"
        assert by_node[(4, "evaluate")]["kind"] == "timeout"
        assert report.evaluate["nll"] == 1.0  # the two sites that answered


def test_a_site_that_left_is_told_from_one_that_timed_out_and_both_are_named():
    """The SuperLink answers for a node that stopped heartbeating (NODE_UNAVAILABLE, sent
    from the SuperLink's own node id): it is recorded as ``left`` for that node, not as an
    error of node 1 plus a timeout; a silent node is a ``timeout``. Sites that never
    replied are named by their registration name."""
    sites = {
        11: training_site(honest(0.1), 1.0, ("generator.",)),
        12: training_site(honest(0.3), 1.0, ("generator.",)),
        13: lambda content, kind, rnd: NODE_GONE,
        14: lambda content, kind, rnd: None,
    }
    names = {11: "hospital-a", 13: "hospital-c", 14: "hospital-d"}
    strategy = AdapterStrategy(FedAvg(min_available_nodes=4), ("generator.",), min_sites=2)
    reports = []
    run_rounds(strategy, FakeGrid(sites, names), record_of(GLOBAL), num_rounds=1,
               hooks=[lambda report, arrays: reports.append(report)])  # fmt: skip
    failures = {(f["node"], f["stage"]): f for f in reports[0].failures}
    assert set(failures) == {(13, "train"), (13, "evaluate"), (14, "train"), (14, "evaluate")}
    assert failures[(13, "train")]["kind"] == "left"
    assert "heartbeat" in failures[(13, "train")]["reason"]
    assert failures[(13, "train")]["site"] == "hospital-c"
    assert failures[(14, "train")]["kind"] == "timeout"
    assert failures[(14, "train")]["site"] == "hospital-d"
    # The SuperLink's reply is summarised under the node it answers for.
    gone = next(s for s in reports[0].site_train if s["node"] == 13)
    assert gone["site"] == "hospital-c" and "error" in gone
    assert sorted(s["node"] for s in reports[0].site_train) == [11, 12, 13]


def test_fewer_usable_replies_than_min_sites_stops_the_run_with_the_reasons():
    sites = {
        1: training_site(honest(0.1), 1.0),
        2: poisoned("NaN"),
        3: lambda content, kind, rnd: Error(code=2, reason="boom") if rnd == 2 else
        training_site(honest(0.2), 1.0)(content, kind, rnd),
    }  # fmt: skip
    strategy = AdapterStrategy(FedAvg(min_available_nodes=3), ("generator.",), min_sites=2)
    done = []
    with pytest.raises(TooFewSitesError, match="round 2: only 1 site") as caught:
        run_rounds(strategy, FakeGrid(sites), record_of(GLOBAL), num_rounds=3,
                   hooks=[lambda report, arrays: done.append(report.round)])  # fmt: skip
    assert done == [1]  # round 1 (two usable replies) completed; round 2 stopped the run
    kinds = {(e.node, e.kind) for e in caught.value.events}
    assert kinds == {(2, "rejected"), (3, "error")}
    assert "holds NaN" in str(caught.value) and "boom" in str(caught.value)
