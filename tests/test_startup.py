"""A ClientApp process' startup cost: measured from the process' creation, reported by
its first train reply only, with the same keys (zeros) afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

from fedrag_flower.data import SiteData
from fedrag_flower.federation import startup
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site, train_site
from tests.conftest import TINY_CORPUS, TINY_QA

KEYS = {"startup-seconds", *(f"startup-{phase}-seconds" for phase in startup.PHASES)}

_PROCESS = """
import json, time
time.sleep(0.3)  # 'imports'
from fedrag_flower.data import SiteData
from fedrag_flower.federation import startup
startup.mark("imports")
time.sleep(0.2)
startup.mark("data")
startup.mark("models")
time.sleep(0.4)
startup.mark("index")
startup.mark("index")  # a second mark of a phase does not move it
startup.mark("adapters")
print(json.dumps([startup.startup_metrics(), startup.startup_metrics()]))
"""


def test_startup_phases_are_timed_from_process_creation_and_reported_once():
    out = subprocess.run(
        [sys.executable, "-c", _PROCESS], capture_output=True, text=True, check=True, timeout=60
    )
    first, second = json.loads(out.stdout)
    assert set(first) == set(second) == KEYS
    assert first["startup-flower-seconds"] < 1.0  # Python's own start
    assert 0.3 <= first["startup-imports-seconds"] < 0.5
    assert 0.2 <= first["startup-data-seconds"] < 0.5
    assert first["startup-models-seconds"] < 0.1
    assert 0.4 <= first["startup-index-seconds"] < 0.7
    phases = sum(first[f"startup-{p}-seconds"] for p in startup.PHASES)
    assert phases <= first["startup-seconds"] < phases + 0.1
    assert all(v == 0.0 for v in second.values())


def test_train_site_reports_the_startup_in_the_first_round_of_a_process_only(
    tiny_rag, tmp_path, monkeypatch
):
    monkeypatch.setattr(startup, "_reported", False)  # as in a fresh ClientApp process
    settings = FederationSettings(
        mode="ralt", local_steps=1, pairs_per_round=2, batch_size=2, top_k=2, max_length=160
    )
    site = Site("site0", _site_data(), tmp_path / "knowledge_store")
    _, first = train_site(tiny_rag, site, settings, server_round=1)
    _, second = train_site(tiny_rag, site, settings, server_round=2)
    assert KEYS <= set(first) and set(first) == set(second)  # FedAvg needs equal keys
    assert first["startup-seconds"] > 0
    assert all(second[key] == 0.0 for key in KEYS)


def _site_data() -> SiteData:
    return SiteData(TINY_CORPUS, [dict(row, id=f"q{i}") for i, row in enumerate(TINY_QA)], [])
