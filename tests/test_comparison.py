"""The comparison of training regimes: its round loop, budgets, report, and an end-to-end
run of every arm on the real models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fedrag_flower.comparison.arms import (
    Arm,
    SeedModels,
    aggregation_label,
    centralized_settings,
    comparison_arms,
    pooled_site,
    round_loop_settings,
    train_arm,
)
from fedrag_flower.comparison.evaluation import METRICS
from fedrag_flower.comparison.report import markdown, spread, summarize, write_report
from fedrag_flower.comparison.run import ComparisonOptions
from fedrag_flower.data import SiteData
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site
from tests.conftest import TINY_CORPUS, TINY_QA
from tests.conftest import TINY_FEDERATION_SETTINGS as TINY_SETTINGS


def tiny_sites(tmp_path, sizes=(3, 3)) -> list[Site]:
    sites, start = [], 0
    for i, n in enumerate(sizes):
        train = [dict(row, id=f"q{start + j}") for j, row in enumerate(TINY_QA[start : start + n])]
        data = SiteData(TINY_CORPUS, train, [])
        sites.append(Site(f"site{i}", data, tmp_path / f"site{i}" / "knowledge_store"))
        start += n
    return sites


def test_centralized_trains_as_many_pairs_and_steps_per_round_as_all_sites_together(tmp_path):
    sites = tiny_sites(tmp_path, sizes=(4, 1))
    settings = FederationSettings(pairs_per_round=2, local_steps=3)
    pooled = centralized_settings(sites, settings)
    assert pooled.pairs_per_round == 2 + 1  # min(2, 4) + min(2, 1)
    assert pooled.local_steps == 6
    assert centralized_settings(sites, FederationSettings(pairs_per_round=0)).pairs_per_round == 0
    site = pooled_site(sites, settings)
    assert len(site.data.train) == 5
    assert [c["id"] for c in site.data.corpus] == [c["id"] for c in TINY_CORPUS]  # no repeats
    names = [arm.name for arm in comparison_arms(sites, settings)]
    assert names == ["local-site0", "local-site1", "federated", "centralized"]


def test_only_the_federated_arm_takes_the_strategy_and_dp_the_one_site_arms_stay_fedavg(
    tmp_path,
):
    sites = tiny_sites(tmp_path, sizes=(2, 2))
    settings = FederationSettings(strategy="fedprox", proximal_mu=0.1, dp="client-fixed",
                                  dp_noise=0.3, dp_clip=0.5)  # fmt: skip
    arms = {arm.name: arm for arm in comparison_arms(sites, settings)}
    assert arms["federated"].settings == settings
    for name in ("local-site0", "local-site1", "centralized"):
        assert (arms[name].settings.strategy, arms[name].settings.dp) == ("fedavg", "none")
    assert aggregation_label(settings) == (
        "fedprox (proximal-mu=0.1), dp client-fixed (dp-noise=0.3 dp-clip=0.5 dp-delta=1e-05)"
    )
    assert aggregation_label(arms["centralized"].settings) == "fedavg"
    loop = round_loop_settings(arms["federated"])  # every site, every round; no site eval
    assert (loop.min_sites, loop.fraction_evaluate, loop.dp_sampled_sites) == (2, 0.0, 0)


@pytest.mark.parametrize(
    "aggregation",
    [
        {},
        {"strategy": "fedadam"},  # the server's Adam moments are saved and restored
        {"dp": "client-fixed", "dp_noise": 0.5, "dp_clip": 0.01},  # the noise and accountant
    ],
    ids=["fedavg", "fedadam", "client-fixed-dp"],
)
def test_an_interrupted_arm_resumes_after_its_last_round_to_the_same_adapters(
    tiny_generator_dir, tmp_path, aggregation
):
    base = dict(TINY_SETTINGS, generator_model=str(tiny_generator_dir), lora_r=4, lora_alpha=8)
    base |= aggregation
    sites = tiny_sites(tmp_path)
    two_rounds = FederationSettings(**base, num_server_rounds=2)
    whole, history = train_arm(
        Arm("federated", sites, two_rounds), SeedModels(two_rounds), tmp_path / "a.pt"
    )
    # Cut after round 1, then run again with the full number of rounds.
    one_round = FederationSettings(**base, num_server_rounds=1)
    checkpoint = tmp_path / "b.pt"
    train_arm(Arm("federated", sites, one_round), SeedModels(one_round), checkpoint)
    resumed, resumed_history = train_arm(
        Arm("federated", sites, two_rounds), SeedModels(two_rounds), checkpoint
    )
    assert [h["round"] for h in resumed_history] == [1, 2]
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value)
    for key in ("ralt-loss", "lsr-loss", "num-examples"):
        assert resumed_history[1]["train"][key] == pytest.approx(history[1]["train"][key])
    assert resumed_history[1].get("privacy") == history[1].get("privacy")
    if "dp" in aggregation:
        assert resumed_history[1]["privacy"]["releases"] == 2
    # Each round records every site's update and the global step.
    assert [u["site"] for u in history[1]["updates"]] == ["site0", "site1"]
    assert history[1]["global_update"]["norm"] > 0


def test_a_federation_that_adapts_chunks_reindexes_each_sites_store_for_the_global_adapter(
    tiny_generator_dir, tmp_path
):
    import numpy as np

    settings = FederationSettings(
        **TINY_SETTINGS, generator_model=str(tiny_generator_dir), lora_r=4, lora_alpha=8,
        adapt_chunks=True, lr_retriever=3e-3, num_server_rounds=2,
    )  # fmt: skip
    sites = tiny_sites(tmp_path)
    models = SeedModels(settings)
    assert models.retriever.adapt_chunks
    state, history = train_arm(Arm("federated", sites, settings), models, tmp_path / "a.pt")
    assert history[1]["train"]["lsr-loss"] > 0
    for site in sites:
        system = models.system(site)
        system.load_adapter_state_dict(state)
        base = system.knowledge_store.embeddings.copy()
        system.retrieve(["Who may remove asbestos?"])  # re-encodes for the global adapter
        store = system.knowledge_store
        adapted = models.retriever.encode_chunks(store.texts, adapted=True)
        np.testing.assert_allclose(store.embeddings, adapted, atol=1e-6)
        assert np.abs(store.embeddings - base).max() > 1e-5, site.name


def _result(arm: str, seed: int, level: float, sites=("site0", "site1")) -> dict:
    figures = {m: level for m in METRICS}
    result = {"arm": arm, "seed": seed, "test": {"all": figures, "sites": {}}}
    result["test"]["sites"] = {
        s: {m: level + 0.01 * i for m in METRICS} for i, s in enumerate(sites)
    }
    if arm == "federated":
        result["rounds"] = [
            {"round": 1, "test": {"all": {m: level / 2 for m in METRICS}}},
            {"round": 2, "test": {"all": figures}},
        ]
    return result


def synthetic_results() -> dict:
    levels = {"local-site0": 0.3, "local-site1": 0.35, "federated": 0.5, "centralized": 0.6}
    results = {"untrained": {0: _result("untrained", 0, 0.2)}}
    for arm, level in levels.items():
        results[arm] = {seed: _result(arm, seed, level + 0.02 * seed) for seed in (0, 1)}
    return results


def test_summary_gives_mean_and_spread_and_judges_the_claims():
    assert spread([1.0, 3.0]) | {"values": None} == {
        "mean": 2.0,
        "std": math.sqrt(2.0),
        "min": 1.0,
        "max": 3.0,
        "n": 2,
        "values": None,
    }
    summary = summarize(synthetic_results(), ["site0", "site1"])
    assert summary["arms"]["federated"]["all"]["f1"]["mean"] == pytest.approx(0.51)
    assert summary["arms"]["federated"]["sites"]["site1"]["f1"]["mean"] == pytest.approx(0.52)
    assert [r["round"] for r in summary["federated_rounds"]] == [0, 1, 2]
    assert summary["federated_rounds"][0]["f1"]["mean"] == 0.2
    claims = {c["claim"]: c for c in summary["claims"]}
    assert claims["federated beats local-site1 on site1's own questions (F1)"]["holds"]
    share = claims["federated reaches >= 90% of the centralized gain (F1)"]
    assert share["share"] == pytest.approx((0.51 - 0.2) / (0.61 - 0.2))
    assert not share["holds"]  # 76 %


def test_report_writes_json_markdown_and_both_plots(tmp_path):
    options = ComparisonOptions(seeds=(0, 1), num_sites=2, output_dir=tmp_path)
    results = synthetic_results()
    for seed, result in results["federated"].items():
        result["privacy"] = {"epsilon": 1.5 + seed, "delta": 1e-5, "releases": 2}
    document = write_report(results, options, ["site0", "site1"])
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["summary"]["arms"].keys() == document["summary"]["arms"].keys()
    assert saved["results"]["federated"]["1"]["seed"] == 1
    text = (tmp_path / "comparison.md").read_text()
    assert text == markdown(document, ["federated_rounds.png", "sites_own_questions.png"])
    for arm in ("untrained", "local-site0", "local-site1", "federated", "centralized"):
        assert f"| {arm} |" in text
    assert "| site1 | local-site1 |" in text and "does NOT hold" in text
    assert "Federated arm: `fedavg`; local-only and centralized arms: `fedavg`" in text
    assert "epsilon 1.500, 2.500 at delta 1e-05 after 2 rounds (per seed)" in text
    for name in ("federated_rounds.png", "sites_own_questions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_made_with_other_options_are_not_reused(tmp_path):
    from fedrag_flower.comparison.run import _load, _result_path, _write_json

    options = ComparisonOptions(output_dir=tmp_path)
    path = _result_path(tmp_path, "federated", 0)
    _write_json(path, {"arm": "federated", "identity": options.identity()})
    assert _load(tmp_path, "federated", 0, options)["arm"] == "federated"
    other = ComparisonOptions(output_dir=tmp_path, pairs_per_site=5)
    with pytest.raises(ValueError, match="federated.json was made with other options"):
        _load(tmp_path, "federated", 0, other)
    # The seed and the output folder are not part of what a result depends on.
    same = ComparisonOptions(seeds=(7,), output_dir=tmp_path / "x")
    assert same.identity() == options.identity()


def test_a_result_made_before_a_setting_existed_is_reused_while_that_setting_is_default(tmp_path):
    from fedrag_flower.comparison.run import _load, _result_path, _write_json

    options = ComparisonOptions(output_dir=tmp_path)
    older = options.identity()
    del older["settings"]["ralt_supported_only"]  # as written by code from before the key
    _write_json(_result_path(tmp_path, "federated", 0), {"arm": "f", "identity": older})
    assert _load(tmp_path, "federated", 0, options)["arm"] == "f"
    changed = ComparisonOptions(
        output_dir=tmp_path, settings=FederationSettings(ralt_supported_only=True)
    )
    with pytest.raises(ValueError, match="made with other options"):
        _load(tmp_path, "federated", 0, changed)


@pytest.mark.parametrize("key", ["lora_freeze_a", "adapt_chunks", "lsr_gold_candidate"])
def test_a_result_made_before_a_key_whose_default_changed_counts_as_its_old_default(tmp_path, key):
    """These keys were added off and are on by default now: a result written before the
    key existed was made with it off, and is reused only where it is off."""
    from fedrag_flower.comparison.run import _load, _result_path, _write_json

    off = ComparisonOptions(output_dir=tmp_path, settings=FederationSettings(**{key: False}))
    older = off.identity()
    del older["settings"][key]
    _write_json(_result_path(tmp_path, "federated", 0), {"arm": "f", "identity": older})
    assert _load(tmp_path, "federated", 0, off)["arm"] == "f"
    assert getattr(FederationSettings(), key)  # the default now
    with pytest.raises(ValueError, match="made with other options"):
        _load(tmp_path, "federated", 0, ComparisonOptions(output_dir=tmp_path))


@pytest.mark.slow
def test_compare_command_runs_every_arm_end_to_end_and_resumes(tmp_path, capsys):
    """The real packaged models and data, 2 sites, 1 seed, 1 round, 4 pairs and 2 test
    questions per site: every arm writes its metrics and every output file appears; a
    second run reuses them all."""
    from fedrag_flower.cli import main

    argv = [
        "compare",
        "--run-config",
        "num-server-rounds=1 pairs-per-round=4 local-steps=1 batch-size=4 "
        "lsr-batch-size=4 lsr-top-k=4",
        "--seeds",
        "0",
        "--sites",
        "2",
        "--pairs-per-site",
        "4",
        "--test-per-site",
        "2",
        "--output",
        str(tmp_path),
    ]
    assert main(argv) == 0
    arms = ["untrained", "local-site0", "local-site1", "federated", "centralized"]
    for arm in arms:
        result = json.loads((tmp_path / "runs" / "seed-0" / f"{arm}.json").read_text())
        assert set(result["test"]["sites"]) == {"site0", "site1"}, arm
        for scope in [result["test"]["all"], *result["test"]["sites"].values()]:
            assert all(math.isfinite(scope[m]) for m in METRICS), arm
        if arm != "untrained":
            assert len(result["rounds"]) == 1 and result["rounds"][0]["train"]["num-examples"]
    federated = json.loads((tmp_path / "runs" / "seed-0" / "federated.json").read_text())
    assert federated["rounds"][0]["test"] == federated["test"]
    assert [s["site"] for s in federated["rounds"][0]["site_train"]] == ["site0", "site1"]
    centralized = json.loads((tmp_path / "runs" / "seed-0" / "centralized.json").read_text())
    assert centralized["train_pairs"] == [8] and centralized["settings"]["pairs_per_round"] == 8
    assert not list((tmp_path / "runs").rglob("*.partial.pt"))
    document = json.loads((tmp_path / "comparison.json").read_text())
    assert set(document["summary"]["arms"]) == set(arms)
    table = (tmp_path / "comparison.md").read_text()
    assert all(f"| {arm} |" in table for arm in arms)
    for name in ("federated_rounds.png", "sites_own_questions.png"):
        assert (tmp_path / name).stat().st_size > 1000
    capsys.readouterr()

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.json")}
    assert main(argv) == 0
    assert capsys.readouterr().out.count("done before") == len(arms)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_strategy_table_gathers_each_folders_federated_arm_with_its_epsilon(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "strategy_table.py"
    spec = importlib.util.spec_from_file_location("strategy_table", path)
    strategy_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strategy_table)

    files = []
    for name, extra in (("fedavg", {}), ("dp", {"epsilon": 2.5, "delta": 1e-5, "releases": 2})):
        results = {arm: synthetic_results()[arm] for arm in ("untrained", "federated")}
        for result in results["federated"].values():
            result |= {"aggregation": name, "seconds": 10.0}
            if extra:
                result["privacy"] = extra
        options = ComparisonOptions(seeds=(0, 1), num_sites=2, output_dir=tmp_path / name)
        write_report(results, options, ["site0", "site1"])
        files.append(tmp_path / name / "comparison.json")
    lines = strategy_table.markdown(files).splitlines()
    assert lines[0].startswith("| system | F1 | EM | recall@1 | recall@3 | NLL/token | epsilon")
    assert lines[2].startswith("| untrained | 0.200 |")
    assert lines[3].startswith("| federated: fedavg | 0.510 ± 0.014 |")
    assert lines[3].endswith("|  | 10 |")
    assert lines[4].startswith("| federated: dp |")
    assert "| 2.50, 2.50 (delta 1e-05) | 10 |" in lines[4]
    assert lines[-1].startswith("Same budget for every row: `num-server-rounds=2")
