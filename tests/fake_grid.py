"""An in-process Flower Grid whose sites are Python functions: the server's round loop,
strategies and guard run for real, with replies a test controls exactly."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict

from fedrag_flower.federation.adapters import received_arrays

# A site: (incoming content, message type, server round) -> reply content, an Error,
# NODE_GONE (the SuperLink answers for it: node unavailable) or None (no reply in time).
Site = Callable[[RecordDict, str, int], "RecordDict | Error | str | None"]
NODE_GONE = "node gone"


class FakeGrid:
    """``names``: node id -> the name the node was registered under (``get_nodes``)."""

    def __init__(self, sites: dict[int, Site], names: dict[int, str] | None = None):
        from flwr.supercore.task_identity import TaskIdentity

        # What a ServerApp process has set before its main() runs; Messages need it.
        for name in ("task_id", "run_id", "node_id"):
            if getattr(TaskIdentity, f"_{name}") is None:
                setattr(TaskIdentity, name, 1)
        self.sites = sites
        self.names = names or {}
        self.sent: list[Message] = []

    def get_node_ids(self):
        return list(self.sites)

    def get_nodes(self):
        from flwr.proto.node_pb2 import NodeInfo

        return [NodeInfo(node_id=n, name=self.names.get(n, "")) for n in self.sites]

    def send_and_receive(self, messages, timeout=None):
        from flwr.server.superlink.linkstate.utils import (
            create_message_error_unavailable_res_message,
        )

        replies = []
        for message in messages:
            # As Flower's grids do when they push a message: it gets its id in place.
            message.metadata.__dict__["_message_id"] = str(uuid4())
            self.sent.append(message)
            site = self.sites[message.metadata.dst_node_id]
            server_round = int(message.content["config"]["server-round"])
            out = site(unpacked(message.content), message.metadata.message_type, server_round)
            if out is NODE_GONE:  # the reply the SuperLink itself writes, as Flower does
                replies.append(
                    create_message_error_unavailable_res_message(message.metadata, "node_unavail")
                )
            elif out is not None:
                replies.append(Message(out, reply_to=message))
        return replies


def unpacked(content: RecordDict) -> RecordDict:
    """What a site function sees: the content with its adapters by key, as a real site
    unpacks them (``site_replies.load_global_adapters``)."""
    if "arrays" not in content.array_records:
        return content
    records = dict(content.items())
    records["arrays"] = received_arrays(content)
    return RecordDict(records)


def arrays_of(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def record_of(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def training_site(
    delta: Callable[[str, np.ndarray, int], np.ndarray],
    num_examples: float,
    prefixes: tuple[str, ...] = ("generator.", "retriever."),
) -> Site:
    """A site whose training adds ``delta(key, global, round)`` to the keys of the trained
    sides and replies with only those keys; it evaluates to ``loss = node-specific``."""

    def site(content: RecordDict, kind: str, server_round: int):
        incoming = arrays_of(content["arrays"])
        if kind == MessageType.EVALUATE:
            return RecordDict(
                {"metrics": MetricRecord({"num-examples": num_examples, "nll": num_examples})}
            )
        out = {
            k: (v + delta(k, v, server_round)).astype(v.dtype)
            for k, v in incoming.items()
            if k.startswith(prefixes)
        }
        metrics = MetricRecord({"num-examples": num_examples, "ralt-loss": 1.0})
        return RecordDict({"arrays": record_of(out), "metrics": metrics})

    return site
