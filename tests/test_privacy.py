"""Opt-in DP: each site's update leaves clipped, the server adds noise, and the reported
epsilon is the RDP accountant's figure for the same parameters."""

from __future__ import annotations

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict

from fedrag_flower.federation.adapters import (
    adapter_layout,
    is_packed,
    pack_sides,
    received_arrays,
    unpack_sides,
)
from fedrag_flower.federation.privacy import site_clipping_mod
from fedrag_flower.federation.rounds import run_rounds
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.strategies import build_strategy
from fedrag_flower.federation.update_checks import update_norm
from tests.fake_grid import FakeGrid, arrays_of, record_of, unpacked

GLOBAL = {
    "generator.a": np.zeros(6, np.float32),
    "retriever.c": np.ones(3, np.float32),  # not trained (mode ralt): must not move
}


class ClientAppGrid(FakeGrid):
    """Runs each site behind the ClientApp's mod, as a SuperNode would."""

    def __init__(self, sites):
        super().__init__(sites)
        self.replies: list[tuple[dict, dict]] = []  # (sent arrays, reply arrays)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for message in messages:
            site = self.sites[message.metadata.dst_node_id]

            def app(msg, context, site=site):
                # As a real site: adapters unpacked on arrival, the reply packed if they
                # came packed (under DP the site's mod hands it the tensors by key).
                rnd = int(msg.content["config"]["server-round"])
                came_packed = "arrays" in msg.content and is_packed(msg.content["arrays"])
                out = site(unpacked(msg.content), msg.metadata.message_type, rnd)
                if "arrays" in out.array_records and came_packed:
                    out["arrays"] = pack_sides(out["arrays"])
                return Message(out, reply_to=msg)

            reply = site_clipping_mod(message, None, app)
            if message.metadata.message_type == "train":
                layout = adapter_layout(received_arrays(message.content))
                sent = arrays_of(received_arrays(message.content))
                got = arrays_of(unpack_sides(reply.content["arrays"], layout))
                self.replies.append((sent, got))
            replies.append(reply)
        return replies


def generator_site(step: float):
    """Trains only the generator: adds ``step`` to every entry (update norm step*sqrt(6))."""

    def site(content, kind, server_round):
        metrics = MetricRecord({"num-examples": 10.0 * step, "nll": 1.0})
        if kind == "evaluate":
            return RecordDict({"metrics": metrics})
        a = content["arrays"]["generator.a"].numpy() + step
        return RecordDict({"arrays": record_of({"generator.a": a}), "metrics": metrics})

    return site


def test_client_side_dp_clips_each_update_adds_noise_and_reports_the_accountants_epsilon():
    from dp_accounting import dp_event, rdp

    settings = FederationSettings(mode="ralt", dp="client-fixed", dp_noise=0.8, dp_clip=0.5,
                                  min_sites=3, dp_delta=1e-5)  # fmt: skip
    grid = ClientAppGrid({1: generator_site(1.0), 2: generator_site(2.0), 3: generator_site(0.1)})
    reports = []
    final = run_rounds(build_strategy(settings), grid, record_of(GLOBAL), num_rounds=3,
                       hooks=[lambda report, arrays: reports.append(report)])  # fmt: skip

    # Each site's update as it left the site is clipped to C = 0.5 (the small one untouched).
    norms = [update_norm(sent, list(reply), reply) for sent, reply in grid.replies]
    assert all(set(reply) == {"generator.a"} for _, reply in grid.replies)  # what it trained
    assert len(norms) == 9 and max(norms) <= 0.5 * (1 + 1e-5)
    assert min(norms) < 0.5 * 0.9  # site 3's update (0.1 * sqrt(6) = 0.245) was below C
    # Noise was added: the mean of clipped updates alone would be reproduced exactly.
    clipped_mean = (0.5 + 0.5 + 0.1 * np.sqrt(6)) / 3 / np.sqrt(6)
    assert not np.allclose(arrays_of(final)["generator.a"], 3 * clipped_mean, atol=1e-3)
    assert np.array_equal(arrays_of(final)["retriever.c"], GLOBAL["retriever.c"])

    for t, report in enumerate(reports, start=1):
        accountant = rdp.RdpAccountant()
        accountant.compose(dp_event.GaussianDpEvent(0.8), t)
        assert report.privacy["releases"] == t
        assert report.privacy["delta"] == 1e-5
        np.testing.assert_allclose(
            report.privacy["epsilon"], accountant.get_epsilon(1e-5), rtol=1e-9
        )
    assert reports[0].privacy["epsilon"] < reports[2].privacy["epsilon"]


def test_without_dp_the_mod_leaves_replies_untouched():
    grid = ClientAppGrid({1: generator_site(1.0), 2: generator_site(2.0)})
    settings = FederationSettings(mode="ralt", min_sites=2)
    final = run_rounds(build_strategy(settings), grid, record_of(GLOBAL), num_rounds=1)
    # weights 10 and 20: (10 * 1 + 20 * 2) / 30 = 5/3
    np.testing.assert_allclose(arrays_of(final)["generator.a"], np.full(6, 5 / 3), rtol=1e-6)
    assert all(set(reply) == {"generator.a"} for _, reply in grid.replies)
