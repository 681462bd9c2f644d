"""A site's answer to the server's messages: Message in, Message out, around ``train_site``
and ``evaluate_site``.

``client_app.py`` (a SuperNode's ClientApp) and ``InProcessGrid`` (the comparison's sites
in one process) both answer with these functions behind the same mods, so a site replies
alike wherever it runs:

- a train message's ``arrays`` are loaded as the site's adapters first (the global model
  of the round), then one round of local training runs; the reply holds the trained
  sides' adapter tensors (``"arrays"``), the site's scalar metrics with ``num-examples``
  (``"metrics"``) and the site's name (``"site"``);
- an evaluate message's ``arrays`` are loaded, then the site's test questions answered;
  the reply holds ``"metrics"`` and ``"site"``.
"""

from __future__ import annotations

from flwr.app import Message, MetricRecord, RecordDict

from fedrag_flower.allocator import release_free_memory
from fedrag_flower.federation.adapters import (
    SIDES,
    adapter_arrays,
    adapter_layout,
    adapter_state,
    is_packed,
    layout_mismatch,
    pack_sides,
    received_arrays,
)
from fedrag_flower.federation.node import site_record
from fedrag_flower.federation.privacy import site_clipping_mod
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site, evaluate_site, train_site
from fedrag_flower.federation.startup import mark
from fedrag_flower.rag.system import RAGSystem

SITE_MODS = [site_clipping_mod]
"""The mods every site's ClientApp runs its functions behind (outermost first): client-side
DP clipping, a no-op unless the server's train config asks for it."""


def server_round(msg: Message) -> int:
    """The round a server message belongs to (Flower's strategies put it in the config)."""
    return int(msg.content["config"]["server-round"])


def train_reply(
    msg: Message, site: Site, rag_system: RAGSystem, settings: FederationSettings
) -> Message:
    """Load the message's global adapters into ``rag_system``, train one local round on
    ``site``'s pairs, and reply with the trained adapters and metrics."""
    packed = load_global_adapters(msg, rag_system)
    mark("adapters")
    state, metrics = train_site(rag_system, site, settings, server_round(msg))
    release_free_memory()  # the round's activations: the next site starts from the base
    arrays = adapter_arrays(state)
    content = RecordDict(
        {
            "arrays": pack_sides(arrays) if packed else arrays,  # as the server sent them
            "metrics": MetricRecord(metrics),
            "site": site_record(site.name),  # the site's name, beside its node id
        }
    )
    return Message(content=content, reply_to=msg)


def evaluate_reply(
    msg: Message, site: Site, rag_system: RAGSystem, settings: FederationSettings
) -> Message:
    """Load the message's global adapters into ``rag_system`` and reply with the metrics
    of ``site``'s test questions."""
    load_global_adapters(msg, rag_system)
    metrics = evaluate_site(rag_system, site, settings)
    release_free_memory()
    content = RecordDict({"metrics": MetricRecord(metrics), "site": site_record(site.name)})
    return Message(content=content, reply_to=msg)


def load_global_adapters(msg: Message, rag_system: RAGSystem) -> bool:
    """Load the message's adapters into ``rag_system`` (unpacked with the layout the
    message carries, once it is checked against the system's own); returns whether the
    server sent them packed, so that the reply goes back the same way."""
    packed = is_packed(msg.content["arrays"])
    arrays = received_arrays(msg.content)
    if packed:
        own = adapter_layout(rag_system.adapter_state_dict())
        sides = [side for side in SIDES if side in msg.content["arrays"]]
        problem = layout_mismatch(adapter_layout(arrays), own, sides)
        if problem:
            raise ValueError(problem)
    rag_system.load_adapter_state_dict(adapter_state(arrays))
    return packed
