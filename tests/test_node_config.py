"""A site's node config beyond its files: its name (carried in replies, shown in the
coordinator's log and metrics.json), its compute threads and its data size limits."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedrag_flower.data import DataError, DataLimits
from fedrag_flower.federation.node import (
    compute_threads,
    data_limits,
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


@pytest.mark.parametrize(
    "key, value",
    [("max-file-mb", 0), ("max-file-mb", -2.5), ("max-file-mb", "big"), ("max-file-mb", True),
     ("max-chunk-chars", 0), ("max-chunk-chars", 99.5), ("max-chunk-chars", "100")],
)  # fmt: skip
def test_data_limits_from_the_node_config_must_be_positive_numbers(key, value):
    with pytest.raises(ValueError, match=f"--node-config has {key}="):
        data_limits({key: value})


def test_data_limits_default_to_datalimits_and_take_the_node_config_values():
    assert data_limits({}) == DataLimits()
    limits = data_limits({"max-file-mb": 0.5, "max-chunk-chars": 200})
    assert limits == DataLimits(max_file_bytes=500_000, max_chunk_chars=200)


def _site_files(tmp_path, chunk_chars: int) -> dict:
    import json

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        json.dumps({"id": "c1", "text": "x" * chunk_chars})
        + "\n"
        + json.dumps({"id": "c2", "text": "A permit takes six weeks."})
        + "\n"
    )
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps({"query": "How long?", "response": "Six weeks.", "gold_ids": ["c2"]}) + "\n"
    )
    return {"corpus-path": str(corpus), "train-path": str(train), "data-dir": str(tmp_path)}


def test_a_site_refuses_a_chunk_over_its_node_config_limit_and_names_the_limit(tmp_path):
    from fedrag_flower.federation.site import deployment_site

    node_config = _site_files(tmp_path, chunk_chars=500)
    assert len(deployment_site(node_config).data.corpus) == 2  # the default limit: 50,000
    with pytest.raises(DataError) as caught:
        deployment_site(node_config | {"max-chunk-chars": 200})
    message = str(caught.value)
    assert "corpus.jsonl, line 1, field 'text'" in message
    assert "500 characters, over the limit of 200 per chunk" in message
    assert "node config `max-chunk-chars`" in message
    with pytest.raises(DataError, match=r"over the limit of 100 bytes per file .*max-file-mb"):
        deployment_site(node_config | {"max-file-mb": 0.0001})


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
