"""Run the comparison: every arm for every seed, one result file each, then the report.

A result file is written when its arm finishes, and a rerun with the same options skips
it; a round loop also saves its state after every round and resumes from there. So a run
cut short continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedrag_flower.cache import cache_dir
from fedrag_flower.comparison.arms import (
    FEDERATED,
    UNTRAINED,
    Arm,
    SeedModels,
    aggregation_label,
    comparison_arms,
    pooled_site,
    train_arm,
)
from fedrag_flower.comparison.evaluation import evaluate_on_sites
from fedrag_flower.comparison.report import write_report
from fedrag_flower.data import SiteData, default_qa
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site, simulation_site
from fedrag_flower.rag.knowledge_store import KnowledgeStore


@dataclass
class ComparisonOptions:
    """What the comparison runs, beside the run config's ``settings``.

    Attributes:
        settings: the federation's settings (rounds, pairs per round, mode, learning
            rates, top-k, ...): every arm trains with them, as the main job does.
        seeds: one full comparison per seed (``settings.seed`` replaced): adapter
            initialisation, pairs per round and batch order.
        num_sites: simulated sites (``settings.partitioning`` of the default data).
        output_dir: where ``runs/``, ``comparison.json``, ``comparison.md`` and the plots go.
        test_per_site: if > 0, each site's first N test questions only, and the test set
            is their union (small runs, tests).
        pairs_per_site: if > 0, each site keeps only its first N training pairs.
        arms: arms to run (default: all): ``untrained``, ``local``, ``federated``,
            ``centralized``.
    """

    settings: FederationSettings = field(default_factory=FederationSettings)
    seeds: tuple[int, ...] = (0, 1, 2)
    num_sites: int = 3
    output_dir: Path = Path("outputs/comparison")
    test_per_site: int = 0
    pairs_per_site: int = 0
    arms: tuple[str, ...] = ("untrained", "local", "federated", "centralized")

    def identity(self) -> dict:
        """What a result file must have been made with to be reused."""
        document = asdict(self)
        for key in ("seeds", "output_dir", "arms"):
            document.pop(key)
        document["settings"].pop("seed")
        document["settings"].pop("output_dir")
        return json.loads(json.dumps(document, default=str))


def run_comparison(options: ComparisonOptions, log=print) -> dict:
    """Run (or resume) every arm for every seed; write and return the report."""
    runs = Path(options.output_dir) / "runs"
    results: dict[str, dict[int, dict]] = {}
    for seed in options.seeds:
        settings = dataclasses.replace(options.settings, seed=seed)
        sites = _sites(options, settings)
        test_rows = _test_rows(sites)
        eval_site = _evaluation_site(sites, test_rows, settings)
        arms = [arm for arm in comparison_arms(sites, settings) if _selected(arm, options)]
        # The untrained system does not depend on the seed (LoRA's B starts at zero, so
        # its output is the base models'): it is evaluated once, with the first seed.
        first = seed == options.seeds[0]
        names = ([UNTRAINED] if "untrained" in options.arms and first else []) + [
            arm.name for arm in arms
        ]
        todo = [n for n in names if _load(runs, n, seed, options) is None]
        models = SeedModels(settings) if todo else None
        for name in names:
            result = _load(runs, name, seed, options)
            if result is None:
                log(f"compare: seed {seed}, {name} ...")
                arm = next((a for a in arms if a.name == name), None)
                result = _run_arm(arm, name, models, settings, sites, test_rows, runs, eval_site)
                result["identity"] = options.identity()
                _write_json(_result_path(runs, name, seed), result)
                log(f"compare: seed {seed}, {name}: {_brief(result)}")
            else:
                log(f"compare: seed {seed}, {name}: done before, {_brief(result)}")
            results.setdefault(name, {})[seed] = result
    return write_report(results, options, [s.name for s in sites])


def _sites(options: ComparisonOptions, settings: FederationSettings) -> list[Site]:
    """The simulated sites, their training pairs cut to ``pairs_per_site`` and their test
    questions to ``test_per_site``."""
    sites = []
    for i in range(options.num_sites):
        site = simulation_site(i, options.num_sites, settings)
        train = site.data.train[: options.pairs_per_site or None]
        test = site.data.test[: options.test_per_site or None]
        sites.append(Site(f"site{i}", SiteData(site.data.corpus, train, test), site.store_dir))
    return sites


def _test_rows(sites: list[Site]) -> list[dict]:
    """The held-out questions of every arm: all sites' test questions, in the default
    split's order (the whole default test split unless ``test_per_site`` cuts it)."""
    order = {row["id"]: i for i, row in enumerate(default_qa("all"))}
    rows = [row for site in sites for row in site.data.test]
    return sorted(rows, key=lambda row: order[row["id"]])


def _evaluation_site(sites: list[Site], test_rows: list[dict], settings) -> Site:
    """Every system answers from one store: the union of the sites' corpora (the whole
    default corpus under either partitioning)."""
    corpus = pooled_site(sites, settings).data.corpus
    name = "comparison-eval-" + KnowledgeStore.fingerprint(corpus, "")[:12]
    return Site(name, SiteData(corpus, [], test_rows), cache_dir() / "sites" / name)


def _selected(arm: Arm, options: ComparisonOptions) -> bool:
    kind = "local" if arm.name.startswith("local-") else arm.name
    return kind in options.arms


def _run_arm(
    arm: Arm | None,
    name: str,
    models: SeedModels,
    settings: FederationSettings,
    sites: list[Site],
    test_rows: list[dict],
    runs: Path,
    eval_site: Site,
) -> dict:
    eval_system = models.system(eval_site)
    site_rows = {site.name: site.data.test for site in sites}

    def evaluate(state) -> dict:
        eval_system.load_adapter_state_dict(state)
        return evaluate_on_sites(eval_system, test_rows, site_rows)

    start = time.perf_counter()
    if arm is None:  # the untrained system: the initial adapters (a zero LoRA update)
        return {"arm": name, "seed": settings.seed, "test": evaluate(models.initial_state)}
    checkpoint = _result_path(runs, name, settings.seed).with_suffix(".partial.pt")
    per_round = evaluate if arm.name == FEDERATED else None
    state, history = train_arm(arm, models, checkpoint, per_round)
    seconds = time.perf_counter() - start
    test = history[-1]["test"] if per_round else evaluate(state)
    result = {
        "arm": name,
        "seed": settings.seed,
        "aggregation": aggregation_label(arm.settings),
        "settings": asdict(arm.settings),
        "sites": [site.name for site in arm.sites],
        "train_pairs": [len(site.data.train) for site in arm.sites],
        "seconds": seconds,
        "test": test,
        "rounds": history,
    }
    if "privacy" in history[-1]:
        result["privacy"] = history[-1]["privacy"]
    checkpoint.unlink(missing_ok=True)
    return result


def _result_path(runs: Path, name: str, seed: int) -> Path:
    return runs / f"seed-{seed}" / f"{name}.json"


def _load(runs: Path, name: str, seed: int, options: ComparisonOptions) -> dict | None:
    path = _result_path(runs, name, seed)
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    if not _same_identity(result.get("identity"), options.identity()):
        raise ValueError(
            f"{path} was made with other options or run config; use another --output "
            "folder, or delete the file to recompute it"
        )
    return result


# Keys whose default changed after they were added: the behaviour a result written before
# the key existed was made with.
ADDED_WITH = {"lora_freeze_a": False, "adapt_chunks": False, "lsr_gold_candidate": False}


def _same_identity(stored: dict | None, current: dict) -> bool:
    """Whether a result made with the identity ``stored`` may be reused under ``current``.

    A run-config key that ``stored`` lacks (added to the settings after the result was
    made) counts as equal when ``current`` has the value the key was added with (its
    default then, ``ADDED_WITH``, or else its default now): a new setting that kept the
    old behaviour does not throw earlier results away.
    """
    if stored is None:
        return False
    defaults = json.loads(json.dumps(asdict(FederationSettings()), default=str))
    defaults |= ADDED_WITH
    stored_settings = dict(stored.get("settings", {}))
    for key, value in current.get("settings", {}).items():
        if key not in stored_settings and key in defaults and value == defaults[key]:
            stored_settings[key] = value
    return dict(stored, settings=stored_settings) == current


def _write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


def _brief(result: dict) -> str:
    overall = result["test"]["all"]
    return ", ".join(f"{k} {overall[k]:.3f}" for k in ("f1", "recall@1", "nll"))
