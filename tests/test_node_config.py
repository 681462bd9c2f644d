"""A site's node config beyond its files: its name (carried in replies, shown in the
coordinator's log and metrics.json) and its compute threads."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedrag_flower.federation.node import (
    compute_threads,
    reply_site_name,
    site_name,
    site_record,
)


def test_site_name_comes_from_the_node_config_else_the_default():
    assert site_name({"site-name": "st-mary"}, "index") == "st-mary"
    assert site_name({"site-name": "  "}, "index") == "index"
    assert site_name({}, "index") == "index"


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_threads_must_be_a_positive_whole_number(value):
    with pytest.raises(ValueError, match="threads"):
        compute_threads({"threads": value})


def test_threads_setting_is_applied_to_torch_in_the_process():
    code = (
        "import torch; from fedrag_flower.federation.node import apply_compute_threads as a;"
        "before = torch.get_num_threads(); print(before, a({}), a({'threads': 1}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    before, unchanged, one = map(int, out)
    assert unchanged == before  # no setting: PyTorch's own default
    assert one == 1
    assert compute_threads({"threads": 3}) == 3 and compute_threads({}) is None


def test_reply_carries_the_site_name_beside_flowers_one_array_and_one_metric_record():
    from flwr.serverapp.strategy.strategy_utils import validate_message_reply_consistency

    from fedrag_flower.federation.adapter_strategy import reply_summary

    content = RecordDict(
        {
            "arrays": ArrayRecord({}),
            "metrics": MetricRecord({"num-examples": 2.0}),
            "site": site_record("st-mary"),
        }
    )
    assert isinstance(content["site"], ConfigRecord)
    assert reply_site_name(content) == "st-mary"
    # FedAvg's checks accept the extra ConfigRecord.
    validate_message_reply_consistency([content], "num-examples", check_arrayrecord=True)
    # A reply as the strategy sees it (a real Message needs a running Flower task).
    message = SimpleNamespace(
        content=content, metadata=SimpleNamespace(src_node_id=7), has_error=lambda: False
    )
    summary = reply_summary(message)
    assert summary["node"] == 7
    assert summary["site"] == "st-mary" and summary["metrics"] == {"num-examples": 2.0}
    assert reply_site_name(RecordDict({"metrics": MetricRecord({"x": 1.0})})) is None


def test_a_sites_store_url_applies_to_qdrant_runs_only():
    from fedrag_flower.federation.node import site_settings
    from fedrag_flower.federation.settings import FederationSettings

    node = {"store-url": "http://qdrant-hospital-a:6333", "site-name": "hospital-a"}
    qdrant = FederationSettings(store_backend="qdrant", store_url="http://elsewhere:6333")
    assert site_settings(node, qdrant).store_url == "http://qdrant-hospital-a:6333"
    assert site_settings({}, qdrant).store_url == "http://elsewhere:6333"
    faiss = FederationSettings(store_backend="faiss")
    assert site_settings(node, faiss) is faiss  # ignored: this run keeps its FAISS index
