"""What a SuperNode's node config says about its site beyond its files: the site's name,
and how many compute threads each of its ClientApp processes uses.

- ``site-name`` (text): shown beside the node id in the coordinator's log and in
  metrics.json (``site_train`` / ``site_evaluate`` entries, key ``site``). Only the name
  travels: each reply carries it in a ConfigRecord ``"site"`` = ``{"name": ...}`` next to
  the reply's one ArrayRecord and one MetricRecord (a MetricRecord holds numbers only,
  and FedAvg requires exactly one of each, so the name cannot go there).
- ``threads`` (integer >= 1): ``torch.set_num_threads(threads)`` in every ClientApp
  process of the site. Without it PyTorch starts one thread per core in every process,
  so two sites on one host oversubscribe it. ``fedrag-flower supernode-command`` writes
  ``threads`` = the CPUs this host gives one site (:func:`fedrag_flower.deployment.site_threads`).
- ``store-url`` (text): the site's own Qdrant server. When a run sets
  ``store-backend = "qdrant"``, the site keeps its index there (it overrides the run
  config's ``store-url``: each hospital knows where its server is, the coordinator does
  not); with any other backend it is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from fedrag_flower.federation.settings import FederationSettings

SITE_NAME_KEY = "site-name"
THREADS_KEY = "threads"
STORE_URL_KEY = "store-url"
# The reply's ConfigRecord that names the site.
SITE_RECORD = "site"


def site_name(node_config: Mapping, default: str) -> str:
    """The node config's ``site-name``, else ``default``."""
    name = str(node_config.get(SITE_NAME_KEY, "")).strip()
    return name or default


def compute_threads(node_config: Mapping) -> int | None:
    """The node config's ``threads`` (validated), or ``None`` when it sets none."""
    if THREADS_KEY not in node_config:
        return None
    value = node_config[THREADS_KEY]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(
            f"this SuperNode's --node-config has {THREADS_KEY}={value!r}: give a whole "
            f'number of threads, e.g. --node-config "... {THREADS_KEY}=2"'
        )
    if value < 1:
        raise ValueError(
            f"this SuperNode's --node-config has {THREADS_KEY}={value}: give at least 1"
        )
    return int(value)


def apply_compute_threads(node_config: Mapping) -> int:
    """Set this process' PyTorch compute threads from the node config (if it sets them);
    returns the number of threads PyTorch now uses."""
    threads = compute_threads(node_config)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def site_settings(node_config: Mapping, settings: FederationSettings) -> FederationSettings:
    """The run's settings as this site applies them: with ``store-backend = "qdrant"``, the
    node config's ``store-url`` (the site's own server) replaces the run config's."""
    url = str(node_config.get(STORE_URL_KEY, "")).strip()
    if url and settings.store_backend == "qdrant":
        return replace(settings, store_url=url)
    return settings


def site_record(name: str):
    """The ConfigRecord a reply carries under ``"site"`` to name its site."""
    from flwr.app import ConfigRecord  # here: the rest of this module works without Flower

    return ConfigRecord({"name": name})


def reply_site_name(content) -> str | None:
    """The site name a reply's content (a RecordDict) carries, if any."""
    record = content.config_records.get(SITE_RECORD)
    return None if record is None else str(record.get("name", "")) or None
