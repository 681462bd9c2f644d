"""The in-process Grid: the server's round loop and Flower strategies driving real sites
(tiny random generator, packaged MiniLM retriever) through the ClientApp's own functions
and mods, in one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrag_flower.data import SiteData
from fedrag_flower.federation.adapters import adapter_arrays, adapter_state
from fedrag_flower.federation.in_process_grid import FIRST_NODE_ID, InProcessGrid
from fedrag_flower.federation.rounds import run_rounds
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site, train_site
from fedrag_flower.federation.strategies import build_strategy
from tests.conftest import TINY_CORPUS, TINY_FEDERATION_SETTINGS, TINY_QA

TINY_SETTINGS = TINY_FEDERATION_SETTINGS | dict(fraction_evaluate=0.0)


def tiny_sites(tmp_path, sizes=(2, 1), test=0) -> list[Site]:
    sites, start = [], 0
    for i, n in enumerate(sizes):
        rows = [dict(row, id=f"q{start + j}") for j, row in enumerate(TINY_QA[start : start + n])]
        data = SiteData(TINY_CORPUS, rows, rows[:test])
        sites.append(Site(f"site{i}", data, tmp_path / f"site{i}" / "knowledge_store"))
        start += n
    return sites


@pytest.fixture
def rag(tiny_rag):
    """The tiny system without retriever dropout (LSR trains in train mode), so a site
    trained alone and the same site behind the grid draw alike."""
    for module in tiny_rag.retriever.query_model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return tiny_rag


def each_site_alone(rag, sites, settings, initial):
    """Each site's (adapters, metrics) after one round from ``initial``: the hand reference."""
    out = []
    for site in sites:
        rag.load_adapter_state_dict(initial)
        out.append(train_site(rag, site, settings, server_round=1))
    return out


def run(rag, sites, settings, initial, rounds=1):
    """``rounds`` rounds through the grid; returns (arrays after each round, reports, grid,
    strategy)."""
    grid = InProcessGrid([(site, rag) for site in sites], settings)
    strategy = build_strategy(settings)
    after, reports = [], []

    def hook(report, arrays):
        reports.append(report)
        after.append(adapter_state(arrays))

    run_rounds(strategy, grid, adapter_arrays(initial), num_rounds=rounds, hooks=[hook],
               train_config={"mode": settings.mode})  # fmt: skip
    return after, reports, grid, strategy


def test_fedavg_through_the_grid_is_the_weighted_average_of_each_site_training_alone(rag, tmp_path):
    settings = FederationSettings(**TINY_SETTINGS, min_sites=2)
    sites = tiny_sites(tmp_path, sizes=(2, 1))
    initial = rag.adapter_state_dict()
    (s0, m0), (s1, m1) = each_site_alone(rag, sites, settings, initial)

    after, reports, grid, _ = run(rag, sites, settings, initial)
    state = after[0]
    n0, n1 = m0["num-examples"], m1["num-examples"]
    assert (n0, n1) == (2.0, 1.0)
    assert set(state) == set(initial)
    for key in s0:
        expected = (n0 * s0[key] + n1 * s1[key]) / (n0 + n1)
        torch.testing.assert_close(state[key], expected, rtol=1e-5, atol=1e-7)
    assert not torch.equal(state[key], initial[key])  # it trained
    report = reports[0]
    assert report.train["ralt-loss"] == pytest.approx(
        (n0 * m0["ralt-loss"] + n1 * m1["ralt-loss"]) / 3
    )
    # Proper replies: from each site's node, named by the ClientApp's site record.
    assert [(s["node"], s["site"]) for s in report.site_train] == [
        (FIRST_NODE_ID, "site0"),
        (FIRST_NODE_ID + 1, "site1"),
    ]
    assert report.failures == [] and report.privacy is None
    # Each site's update norm as trained is ||theta_site - theta_global||, sent unclipped.
    for update, trained in zip(grid.updates, (s0, s1)):
        by_hand = sum(float(((trained[k] - initial[k]) ** 2).sum()) for k in trained) ** 0.5
        assert update["norm"] == pytest.approx(by_hand, rel=1e-5)
        assert update["sent-norm"] == pytest.approx(update["norm"], rel=1e-9)


def test_one_site_fedavg_through_the_grid_is_that_sites_own_adapters(rag, tmp_path):
    settings = FederationSettings(**TINY_SETTINGS, min_sites=1)
    sites = tiny_sites(tmp_path, sizes=(2,))
    initial = rag.adapter_state_dict()
    [(alone, _)] = each_site_alone(rag, sites, settings, initial)
    after, _, _, _ = run(rag, sites, settings, initial)
    for key, value in alone.items():
        torch.testing.assert_close(after[0][key], value, rtol=0, atol=0)


def test_fedadam_through_the_grid_follows_its_formula_and_runs_a_second_round(rag, tmp_path):
    eta, b1, b2, tau = 0.01, 0.9, 0.99, 1e-3
    settings = FederationSettings(**TINY_SETTINGS, min_sites=2, strategy="fedadam",
                                  fedopt_eta=eta, fedopt_beta_1=b1, fedopt_beta_2=b2,
                                  fedopt_tau=tau)  # fmt: skip
    sites = tiny_sites(tmp_path, sizes=(2, 1))
    initial = rag.adapter_state_dict()
    (s0, m0), (s1, m1) = each_site_alone(rag, sites, settings, initial)

    after, reports, _, strategy = run(rag, sites, settings, initial, rounds=2)
    # Round 1 (Flower's FedAdam, t + 1 = 2): d = FedAvg(theta_i) - x0; m = (1 - b1) d;
    # v = (1 - b2) d^2; x1 = x0 + eta sqrt(1 - b2^2) / (1 - b1^2) * m / (sqrt(v) + tau).
    eta_t = eta * np.sqrt(1 - b2**2) / (1 - b1**2)
    n0, n1 = m0["num-examples"], m1["num-examples"]
    for key in s0:
        x0 = initial[key].double()
        d = (n0 * s0[key].double() + n1 * s1[key].double()) / (n0 + n1) - x0
        expected = x0 + eta_t * (1 - b1) * d / (torch.sqrt((1 - b2) * d**2) + tau)
        torch.testing.assert_close(after[0][key].double(), expected, rtol=1e-4, atol=1e-6)
        assert after[0][key].dtype == initial[key].dtype
    # FedAvg would land on the average; FedAdam's step is another one.
    fedavg = {k: (n0 * s0[k] + n1 * s1[k]) / (n0 + n1) for k in s0}
    assert any(not torch.allclose(after[0][k], fedavg[k], atol=1e-6) for k in s0)
    # Round 2 ran from round 1's adapters and moved them again, with Adam's moments kept.
    assert [r.round for r in reports] == [1, 2]
    assert any(not torch.equal(after[1][k], after[0][k]) for k in after[0])
    assert set(strategy.strategy.m_t) == set(initial)


def test_fedprox_through_the_grid_pulls_each_local_update_toward_the_global_adapters(rag, tmp_path):
    """Two local steps: the proximal term mu/2 ||w - w_global||^2 has no gradient at the
    first step (w = w_global) and pulls back at the second, so each site's update is
    shorter than under FedAvg; two rounds run."""
    base = dict(TINY_SETTINGS, local_steps=2, min_sites=2)
    sites = tiny_sites(tmp_path, sizes=(2, 2))
    initial = rag.adapter_state_dict()
    _, _, fedavg_grid, _ = run(rag, sites, FederationSettings(**base), initial)
    settings = FederationSettings(**base, strategy="fedprox", proximal_mu=1000.0)
    after, reports, grid, _ = run(rag, sites, settings, initial, rounds=2)
    assert [r.round for r in reports] == [1, 2]
    fedavg_norms = [u["norm"] for u in fedavg_grid.updates]
    fedprox_norms = [u["norm"] for u in grid.updates if u["round"] == 1]
    assert len(fedprox_norms) == len(fedavg_norms) == 2
    for prox, plain in zip(fedprox_norms, fedavg_norms):
        assert 0 < prox < 0.5 * plain
    assert any(not torch.equal(after[1][k], after[0][k]) for k in after[0])


def test_client_fixed_dp_through_the_grid_clips_each_sites_update_to_the_clip_norm(rag, tmp_path):
    settings = FederationSettings(**TINY_SETTINGS, min_sites=2, dp="client-fixed",
                                  dp_noise=0.5, dp_clip=1e-3)  # fmt: skip
    sites = tiny_sites(tmp_path, sizes=(2, 1))
    initial = rag.adapter_state_dict()
    after, reports, grid, _ = run(rag, sites, settings, initial, rounds=2)
    assert len(grid.updates) == 4
    for update in grid.updates:
        assert update["norm"] > 2 * settings.dp_clip  # trained beyond the clip ...
        # ... and left the site (through the ClientApp's mod) clipped to exactly C.
        assert update["sent-norm"] == pytest.approx(settings.dp_clip, rel=1e-4)
    privacy = [r.privacy for r in reports]
    assert [p["releases"] for p in privacy] == [1, 2]
    assert 0 < privacy[0]["epsilon"] < privacy[1]["epsilon"]
    assert privacy[0]["clipping-norm"] == 1e-3 and privacy[0]["noise-multiplier"] == 0.5
    # Noise on the mean: std z C / n = 2.5e-4 per entry, far beyond the mean clipped step.
    step = torch.cat([(after[0][k] - initial[k]).flatten() for k in initial])
    assert float(step.norm()) > 10 * settings.dp_clip


def test_a_site_that_raises_answers_with_an_error_and_the_round_goes_on_with_the_rest(
    rag, tmp_path, monkeypatch
):
    import fedrag_flower.federation.site_replies as site_replies

    def train_or_fail(rag_system, site, settings, server_round):
        if site.name == "site1":
            raise RuntimeError("the disk of site1 is full")
        return train_site(rag_system, site, settings, server_round)

    monkeypatch.setattr(site_replies, "train_site", train_or_fail)
    settings = FederationSettings(**TINY_SETTINGS, min_sites=1)
    sites = tiny_sites(tmp_path, sizes=(2, 1))
    initial = rag.adapter_state_dict()
    [(alone, _)] = each_site_alone(rag, sites[:1], settings, initial)
    after, reports, _, _ = run(rag, sites, settings, initial)
    [failure] = reports[0].failures
    assert failure["node"] == FIRST_NODE_ID + 1 and failure["kind"] == "error"
    assert "RuntimeError: the disk of site1 is full" in failure["reason"]
    for key, value in alone.items():  # the round is site0's update alone
        torch.testing.assert_close(after[0][key], value, rtol=0, atol=0)


def test_evaluate_messages_reach_each_sites_evaluation(rag, tmp_path):
    settings = FederationSettings(**dict(TINY_SETTINGS, fraction_evaluate=1.0, mode="ralt"),
                                  min_sites=2, eval_generate=1)  # fmt: skip
    sites = tiny_sites(tmp_path, sizes=(2, 1), test=1)
    _, reports, _, _ = run(rag, sites, settings, rag.adapter_state_dict())
    evaluated = reports[0].site_evaluate
    assert [s["site"] for s in evaluated] == ["site0", "site1"]
    for summary in evaluated:
        assert summary["metrics"]["num-examples"] == 1.0
        assert np.isfinite(summary["metrics"]["nll"])
    assert np.isfinite(reports[0].evaluate["nll"])


def test_frozen_a_sites_send_b_alone_and_fedavg_is_the_exact_mean_of_their_updates(rag, tmp_path):
    """``lora-freeze-a``: every A keeps its seeded start (the sites' and the global one, bit
    for bit), a reply carries the B matrices only, and the aggregate B times the common A
    is the weighted mean of the sites' updates B_i A (plain LoRA's separate means of A and
    B do not give that)."""
    settings = FederationSettings(**TINY_SETTINGS, min_sites=2, lora_freeze_a=True)
    rag.generator.lora = settings.generator_lora()  # what site_rag_system builds
    rag.retriever.lora = settings.retriever_lora()
    sites = tiny_sites(tmp_path, sizes=(2, 1))
    initial = rag.adapter_state_dict()
    (s0, m0), (s1, m1) = each_site_alone(rag, sites, settings, initial)
    b_keys = {k for k in initial if ".lora_B." in k}
    assert set(s0) == set(s1) == b_keys
    assert all(torch.equal(v, initial[k]) for k, v in rag.adapter_state_dict().items()
               if ".lora_A." in k)  # fmt: skip

    after, reports, _, _ = run(rag, sites, settings, initial)
    state = after[0]
    n0, n1 = m0["num-examples"], m1["num-examples"]
    for key, value in state.items():
        if key in b_keys:
            expected = (n0 * s0[key] + n1 * s1[key]) / (n0 + n1)
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(value, initial[key]), key
    key = next(k for k in sorted(b_keys) if k.startswith("generator.") and "q_proj" in k)
    a = initial[key.replace(".lora_B.", ".lora_A.")]
    mean_update = (n0 * s0[key] @ a + n1 * s1[key] @ a) / (n0 + n1)
    torch.testing.assert_close(state[key] @ a, mean_update, rtol=1e-5, atol=1e-7)
    assert not torch.equal(state[key], initial[key])  # it trained
    b_bytes = sum(initial[k].numel() * 4 for k in b_keys)
    for summary in reports[0].site_train:  # B's values, plus the arrays' small headers
        assert b_bytes <= summary["bytes"] < b_bytes + 1024


def test_frozen_a_with_client_fixed_dp_sends_b_alone_clipped_and_keeps_every_a(rag, tmp_path):
    """Flower's clipping mod needs the reply's keys to be the message's: the site's mod
    completes B with the unchanged A for clipping and sends B alone again."""
    settings = FederationSettings(**TINY_SETTINGS, min_sites=2, lora_freeze_a=True,
                                  dp="client-fixed", dp_noise=0.5, dp_clip=1e-3)  # fmt: skip
    settings.check_ranges()
    rag.generator.lora = settings.generator_lora()
    rag.retriever.lora = settings.retriever_lora()
    sites = tiny_sites(tmp_path, sizes=(2, 1))
    initial = rag.adapter_state_dict()
    b_bytes = sum(v.numel() * 4 for k, v in initial.items() if ".lora_B." in k)
    after, reports, grid, _ = run(rag, sites, settings, initial)
    assert len(grid.updates) == 2
    for update in grid.updates:
        assert update["norm"] > 2 * settings.dp_clip
        assert update["sent-norm"] == pytest.approx(settings.dp_clip, rel=1e-4)
    for summary in reports[0].site_train:
        assert b_bytes <= summary["bytes"] < b_bytes + 1024  # B alone left the site
    for key, value in after[0].items():
        if ".lora_A." in key:
            assert torch.equal(value, initial[key]), key  # A: not even the noise reaches it
    assert any(not torch.equal(after[0][k], initial[k]) for k in initial if ".lora_B." in k)
