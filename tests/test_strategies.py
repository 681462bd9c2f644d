"""Each strategy from the run config: its aggregate on a small example equals a hand
computation, and a round that trains only the generator keeps the retriever bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from fedrag_flower.federation.rounds import run_rounds
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.strategies import build_strategy
from tests.fake_grid import FakeGrid, record_of

G = np.array([1.0, 1.0, 1.0], np.float32)  # the global generator tensor
R = np.array([7.0, -7.0], np.float32)  # the global retriever tensor (not trained: mode ralt)
# Four sites' trained generator tensors and their num-examples.
W = {
    1: (np.array([1, 2, 3], np.float32), 1.0),
    2: (np.array([2, 0, 6], np.float32), 1.0),
    3: (np.array([6, 4, 0], np.float32), 2.0),
    4: (np.array([1, 1, 1], np.float32), 1.0),
}


def replying(values, weight):
    def site(content, kind, server_round):
        metrics = MetricRecord({"num-examples": weight, "nll": 1.0})
        if kind == "evaluate":
            return RecordDict({"metrics": metrics})
        return RecordDict({"arrays": record_of({"generator.a": values}), "metrics": metrics})

    return site


def run(strategy_name: str, rounds: int = 1, **keys):
    settings = FederationSettings(mode="ralt", strategy=strategy_name, min_sites=4, **keys)
    grid = FakeGrid({node: replying(v, n) for node, (v, n) in W.items()})
    final = run_rounds(
        build_strategy(settings),
        grid,
        record_of({"generator.a": G, "retriever.c": R}),
        num_rounds=rounds,
        train_config={"mode": "ralt"},
    )
    generator, retriever = final["generator.a"].numpy(), final["retriever.c"].numpy()
    assert np.array_equal(retriever, R)  # the untrained side keeps its global tensors
    assert generator.dtype == np.float32
    return generator, grid


WEIGHTED_MEAN = (W[1][0] + W[2][0] + 2 * W[3][0] + W[4][0]) / 5  # [16, 11, 10] / 5
MEAN = (W[1][0] + W[2][0] + W[3][0] + W[4][0]) / 4  # [10, 7, 10] / 4


def test_fedavg_is_the_example_weighted_mean():
    generator, _ = run("fedavg")
    np.testing.assert_allclose(generator, [3.2, 2.2, 2.0], rtol=1e-6)
    np.testing.assert_allclose(WEIGHTED_MEAN, [3.2, 2.2, 2.0], rtol=1e-6)


def test_fedprox_averages_like_fedavg_and_sends_its_mu_to_the_sites():
    generator, grid = run("fedprox", proximal_mu=0.3)
    np.testing.assert_allclose(generator, WEIGHTED_MEAN, rtol=1e-6)
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert train and all(m.content["config"]["proximal-mu"] == 0.3 for m in train)


def test_fedavgm_applies_server_learning_rate_and_momentum():
    # Each round the sites send the same tensors, so the mean is WEIGHTED_MEAN = m.
    # Round 1: p1 = G - m, v1 = p1, x1 = G - lr v1. Round 2: p2 = x1 - m,
    # v2 = mu v1 + p2, x2 = x1 - lr v2 (lr 0.5, mu 0.9).
    generator, _ = run("fedavgm", rounds=2, server_lr=0.5, server_momentum=0.9)
    m = np.array([3.2, 2.2, 2.0])
    v1 = G - m
    x1 = G - 0.5 * v1
    v2 = 0.9 * v1 + (x1 - m)
    np.testing.assert_allclose(generator, x1 - 0.5 * v2, rtol=1e-5)


def test_fedadam_round_one_follows_its_formula():
    # d = m - G; m1 = (1 - b1) d; v1 = (1 - b2) d^2;
    # x = G + eta sqrt(1 - b2^2) / (1 - b1^2) * m1 / (sqrt(v1) + tau)  (Flower: t + 1 = 2)
    generator, _ = run("fedadam", fedopt_eta=0.1, fedopt_beta_1=0.9, fedopt_beta_2=0.99)
    d = np.array([3.2, 2.2, 2.0]) - 1.0
    eta_t = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    expected = 1.0 + eta_t * (0.1 * d) / (np.sqrt(0.01 * d**2) + 1e-3)
    np.testing.assert_allclose(generator, expected, rtol=1e-5)


def test_fedyogi_round_one_follows_its_formula():
    # v1 = 0 - (1 - b2) d^2 sign(0 - d^2) = (1 - b2) d^2; x = G + eta m1 / (sqrt(v1) + tau)
    generator, _ = run("fedyogi", fedopt_eta=0.05)
    d = np.array([2.2, 1.2, 1.0])
    expected = 1.0 + 0.05 * (0.1 * d) / (np.sqrt(0.01 * d**2) + 1e-3)
    np.testing.assert_allclose(generator, expected, rtol=1e-5)


def test_fedadagrad_round_one_follows_its_formula():
    # no momentum: m1 = d; v1 = d^2; x = G + eta d / (|d| + tau)
    generator, _ = run("fedadagrad", fedopt_eta=0.05)
    d = np.array([2.2, 1.2, 1.0])
    np.testing.assert_allclose(generator, 1.0 + 0.05 * d / (np.abs(d) + 1e-3), rtol=1e-5)


def test_fedmedian_is_the_coordinate_wise_median():
    generator, _ = run("fedmedian")
    # sorted per coordinate: [1,1,2,6] [0,1,2,4] [0,1,3,6] -> middle pairs' means
    np.testing.assert_allclose(generator, [1.5, 1.5, 2.0], rtol=1e-6)


def test_fedtrimmedavg_cuts_each_end_then_averages_unweighted():
    generator, _ = run("fedtrimmedavg", trimmed_beta=0.25)  # int(0.25 * 4) = 1 cut per end
    np.testing.assert_allclose(generator, [1.5, 1.5, 2.0], rtol=1e-6)
    generator, _ = run("fedtrimmedavg", trimmed_beta=0.0)  # nothing cut: the plain mean
    np.testing.assert_allclose(generator, MEAN, rtol=1e-6)


def test_krum_and_multikrum_pick_the_updates_closest_to_their_neighbours():
    # Squared distances: d12=14 d13=38 d14=5 d23=68 d24=27 d34=35; with f=0 each score is
    # the sum over its n-f-2 = 2 nearest: s1=19, s2=41, s3=73, s4=32.
    generator, _ = run("krum")
    np.testing.assert_allclose(generator, W[1][0], rtol=1e-6)  # lowest score: site 1
    generator, _ = run("multikrum", krum_select=2)  # sites 1 and 4, weights 1 and 1
    np.testing.assert_allclose(generator, (W[1][0] + W[4][0]) / 2, rtol=1e-6)


def test_bulyan_without_assumed_attackers_is_the_plain_mean():
    # f=0: theta = beta = n, every update selected, the n closest to the median = all.
    generator, _ = run("bulyan")
    np.testing.assert_allclose(generator, MEAN, rtol=1e-6)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("strategy", "fedsgd", "'strategy' must be one of"),
        ("trimmed-beta", 0.5, "'trimmed-beta' must be in [0, 0.5)"),
        ("server-momentum", 1.0, "'server-momentum' must be in [0, 1)"),
        ("min-sites", 0, "'min-sites' must be >= 1"),
        ("dp-delta", 1.5, "'dp-delta' must be in (0, 1)"),
        ("norm-factor", 0.5, "'norm-factor' must be 0 (off) or > 1"),
        ("dp", "local", "'dp' must be one of"),
    ],
)
def test_bad_server_run_config_values_name_the_key_and_what_is_allowed(key, value, message):
    with pytest.raises(ValueError) as caught:
        FederationSettings.from_run_config({key: value})
    assert message in str(caught.value)
    assert repr(value) in str(caught.value)


def test_dp_is_refused_with_a_strategy_its_noise_calibration_does_not_fit():
    with pytest.raises(ValueError, match="'dp' = 'client-fixed' needs strategy 'fedavg'"):
        FederationSettings.from_run_config({"dp": "client-fixed", "strategy": "krum"})


# -- every strategy on real replies: RALT on a tiny real RAG system -------------------------


@pytest.fixture(scope="module")
def real_replies(tmp_path_factory):
    """Four sites' real RALT replies (one step each on their own two QA pairs) from the
    same starting adapters, on the tiny Llama + MiniLM system."""
    from fedrag_flower.rag import Generator, KnowledgeStore, RAGConfig, RAGSystem, Retriever
    from fedrag_flower.trainers.huggingface.ralt import (
        HuggingFaceTrainerForRALT,
        RALTTrainingArgs,
    )
    from tests.conftest import TINY_CORPUS, TINY_LORA, TINY_QA, char_tokenizer, tiny_llama

    path = tmp_path_factory.mktemp("tiny-generator")
    tiny_llama().save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    retriever = Retriever()
    rag = RAGSystem(retriever, KnowledgeStore.from_corpus(TINY_CORPUS, retriever),
                    Generator(str(path), TINY_LORA, bf16=False),
                    RAGConfig(top_k=2, max_length=160, max_new_tokens=8))  # fmt: skip
    start = {k: v.clone() for k, v in rag.adapter_state_dict().items()}
    replies = []
    for site in range(4):
        rag.load_adapter_state_dict(start)
        pairs = [TINY_QA[(site + i) % len(TINY_QA)] for i in range(2)]
        args = RALTTrainingArgs(learning_rate=0.05, batch_size=4, max_steps=1, seed=site,
                                progress=False)  # fmt: skip
        HuggingFaceTrainerForRALT(rag, pairs, args).train()
        trained = {f"generator.{k}": v.numpy().copy()
                   for k, v in rag.generator.adapter_state_dict().items()}  # fmt: skip
        replies.append((trained, float(site + 1)))
    return {k: v.numpy().copy() for k, v in start.items()}, replies


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi",
                                  "fedadagrad", "fedmedian", "fedtrimmedavg", "krum",
                                  "multikrum", "bulyan"])  # fmt: skip
def test_each_strategy_aggregates_a_round_of_real_replies(real_replies, name):
    start, replies = real_replies
    settings = FederationSettings(mode="ralt", strategy=name, min_sites=4, server_momentum=0.5,
                                  lora_freeze_a=False)  # fmt: skip  # the replies train A too
    sites = {i + 1: replying_state(state, n) for i, (state, n) in enumerate(replies)}
    strategy = build_strategy(settings)
    reports = []
    final = run_rounds(strategy, FakeGrid(sites), record_of(start), num_rounds=1,
                       hooks=[lambda report, arrays: reports.append(report)])  # fmt: skip
    assert reports[0].failures == []  # real updates pass every check
    changed = 0
    for key, value in start.items():
        out = final[key].numpy()
        assert out.shape == value.shape and out.dtype == value.dtype and np.isfinite(out).all()
        if key.startswith("retriever."):
            assert np.array_equal(out, value)  # not trained this round: kept
        else:
            changed += not np.array_equal(out, value)
    assert changed > 0
    if name == "fedavg":  # the example-weighted mean (weights 1..4), by hand
        for key in (k for k in start if k.startswith("generator.")):
            expected = sum(n * state[key].astype(np.float64) for state, n in replies) / 10
            np.testing.assert_allclose(final[key].numpy(), expected, rtol=1e-5, atol=1e-7)


def replying_state(state, weight):
    def site(content, kind, server_round):
        metrics = MetricRecord({"num-examples": weight, "nll": 1.0})
        if kind == "evaluate":
            return RecordDict({"metrics": metrics})
        return RecordDict({"arrays": record_of(state), "metrics": metrics})

    return site
