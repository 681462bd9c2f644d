"""The aggregate does not depend on the order in which the sites' replies arrive, nor on
the node ids the sites happen to get: the guard sorts replies by site name, then node id."""

from __future__ import annotations

import itertools

import numpy as np
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedrag_flower.federation.adapter_strategy import AdapterStrategy
from fedrag_flower.federation.node import site_record
from fedrag_flower.federation.rounds import run_rounds
from tests.fake_grid import FakeGrid, arrays_of, record_of

GLOBAL = {
    "generator.a": np.zeros(256, np.float32),
    "retriever.c": np.ones(3, np.float32),
}
NAMES = ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]


def update(name: str) -> np.ndarray:
    """A site's trained tensor, spread over many magnitudes so that float32 sums depend on
    their order."""
    rng = np.random.default_rng(NAMES.index(name))
    return (rng.normal(size=256) * 10.0 ** rng.uniform(-6, 6, size=256)).astype(np.float32)


def named_site(name: str):
    weight = float(NAMES.index(name) + 3)

    def site(content, kind, server_round):
        out = {"generator.a": update(name)}
        metrics = MetricRecord({"num-examples": weight})
        return RecordDict({"arrays": record_of(out), "metrics": metrics, "site": site_record(name)})

    return site


class ArrivalOrderGrid(FakeGrid):
    """Replies come back in ``order`` (indices into the messages sent)."""

    def __init__(self, sites, order):
        super().__init__(sites)
        self.order = order

    def send_and_receive(self, messages, timeout=None):
        replies = super().send_and_receive(messages, timeout)
        return [replies[i] for i in self.order] if len(replies) == len(self.order) else replies


def aggregate_of(node_ids: list[int], order: list[int]) -> np.ndarray:
    """One FedAvg round through the guard: site ``NAMES[i]`` on node ``node_ids[i]``, its
    reply arriving in position ``order``."""
    sites = {node: named_site(name) for node, name in zip(node_ids, NAMES)}
    strategy = AdapterStrategy(
        FedAvg(fraction_evaluate=0.0, min_available_nodes=4), ("generator.",), min_sites=4
    )
    final = run_rounds(strategy, ArrivalOrderGrid(sites, order), record_of(GLOBAL), 1)
    return arrays_of(final)["generator.a"]


def test_permuted_replies_and_other_node_ids_give_a_bit_identical_aggregate():
    orders = list(itertools.permutations(range(4)))
    # The data is order-sensitive: Flower's FedAvg sum over replies in arrival order gives
    # different bits for different orders (so the test below can fail).
    replies = [
        RecordDict(
            {
                "arrays": record_of({"generator.a": update(n)}),
                "metrics": MetricRecord({"num-examples": float(NAMES.index(n) + 3)}),
            }
        )
        for n in NAMES
    ]
    unsorted = {
        aggregate_arrayrecords([replies[i] for i in order], "num-examples")["generator.a"]
        .numpy()
        .tobytes()
        for order in orders
    }
    assert len(unsorted) > 1

    reference = aggregate_of([11, 12, 13, 14], list(range(4)))
    for order in orders:
        assert np.array_equal(aggregate_of([11, 12, 13, 14], list(order)), reference), order
    # New node ids (a restarted SuperNode, a new simulation): names decide the order.
    for node_ids in ([904, 17, 5, 300], [1, 2, 3, 4]):
        assert np.array_equal(aggregate_of(node_ids, [3, 1, 0, 2]), reference), node_ids
    # And it is FedAvg: sum_i n_i theta_i / sum_i n_i (n = 3, 4, 5, 6), to float32 rounding.
    terms = [float(NAMES.index(n) + 3) * update(n).astype(np.float64) for n in NAMES]
    expected, scale = sum(terms) / 18, sum(np.abs(t) for t in terms) / 18
    assert np.all(np.abs(reference - expected) <= 1e-6 * scale)
