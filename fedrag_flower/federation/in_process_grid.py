"""A Flower ``Grid`` whose nodes are sites in this process: the server's real round loop
(``run_rounds``) and strategies (``build_strategy``: any Flower strategy, DP wrappers
included) drive sites that run one after another, without Ray, a SuperLink or processes.

    grid = InProcessGrid([(site, rag_system), ...], settings)
    arrays = run_rounds(build_strategy(settings), grid, initial_arrays, num_rounds=2)

Each message reaches its site's ``ClientApp``, built like the app's ``client_app.py``:
the same mods (``SITE_MODS``: client-side DP clipping when the server asks for it) around
the same ``train_reply`` / ``evaluate_reply``, which load the message's global adapters
first. So the sites may share one set of models: each starts from the message's tensors.
A site that raises answers with an error reply (Flower's ``CLIENT_APP_RAISED_EXCEPTION``),
as a ClientApp does; the traceback goes to the log.

Messages are delivered in node-id order (site ``i`` is node ``FIRST_NODE_ID + i``) and the
replies come back in that order, whatever order the strategy sampled them in, so float
sums in the aggregation are the same from run to run. ``timeout`` is ignored: every site
finishes before ``send_and_receive`` returns.

``updates`` records each training reply's update norm ``||theta_site - theta_global||_2``
over the adapter tensors it sent, as trained (``norm``) and as sent after the mods
(``sent-norm``: clipped to ``dp-clip`` under client-side DP).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Sequence
from uuid import uuid4

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedrag_flower.federation.adapters import received_arrays, reply_layout, unpack_sides
from fedrag_flower.federation.node import SITE_NAME_KEY
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site
from fedrag_flower.federation.site_replies import (
    SITE_MODS,
    evaluate_reply,
    server_round,
    train_reply,
)
from fedrag_flower.federation.update_checks import update_norm
from fedrag_flower.rag.system import RAGSystem

log = logging.getLogger("flwr.fedrag")

FIRST_NODE_ID = 1001
"""Node id of the first site (Flower gives the server node id 1)."""
SERVER_NODE_ID = 1


class InProcessGrid(Grid):
    """Sites in this process as the nodes of a Flower Grid.

    Args:
        site_systems: each site with its RAG system (its own knowledge store; the models
            may be shared between sites).
        settings: the run's settings, as each site's ClientApp reads them from its run
            config.
        run_id: the run id the messages carry.
    """

    def __init__(
        self,
        site_systems: Sequence[tuple[Site, RAGSystem]],
        settings: FederationSettings,
        run_id: int = 1,
    ) -> None:
        _set_server_identity(run_id)
        self._run = Run.create_empty(run_id)
        self.sites: dict[int, Site] = {}
        self._apps: dict[int, ClientApp] = {}
        self._contexts: dict[int, Context] = {}
        self.settings = settings
        self._trained_norm: dict[int, float] = {}
        self._replies: dict[str, Message] = {}  # message id -> its site's reply, until pulled
        self.updates: list[dict] = []
        for i, (site, rag_system) in enumerate(site_systems):
            node = FIRST_NODE_ID + i
            self.sites[node] = site
            self._apps[node] = self._site_app(node, site, rag_system, settings)
            self._contexts[node] = Context(
                run_id=run_id,
                node_id=node,
                node_config={SITE_NAME_KEY: site.name},
                state=RecordDict(),
                run_config={},
            )

    # -- Flower's Grid interface ----------------------------------------------------------

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.sites)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its site now (node-id order); its reply waits to be
        pulled under the message's id."""
        ids = []
        for message in sorted(messages, key=lambda m: m.metadata.dst_node_id):
            message.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's grids do
            self._replies[message.metadata.message_id] = self._deliver(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    # -- the sites ------------------------------------------------------------------------

    def _deliver(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        if node not in self._apps:
            reason = f"no site is node {node} (nodes: {sorted(self._apps)})"
            return Message(Error(ErrorCode.NODE_UNAVAILABLE, reason), reply_to=message)
        try:
            reply = self._apps[node](message, self._contexts[node])
        except Exception as error:  # a ClientApp that raises answers with an error reply
            log.error("site %s: %s", self.sites[node].name, traceback.format_exc())
            reason = f"{type(error).__name__}: {error}"
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message)
        if message.metadata.message_type == MessageType.TRAIN and not reply.has_error():
            self._record_update(node, message, reply)
        return reply

    def _site_app(
        self, node: int, site: Site, rag_system: RAGSystem, settings: FederationSettings
    ) -> ClientApp:
        """The site's ClientApp: ``client_app.py``'s functions and mods, bound to ``site``,
        with one more mod, innermost, that measures the update as trained."""

        def measure_trained_update(msg: Message, context: Context, call_next) -> Message:
            reply = call_next(msg, context)
            if msg.metadata.message_type == MessageType.TRAIN and not reply.has_error():
                self._trained_norm[node] = _update_norm(msg, reply, settings)
            return reply

        app = ClientApp(mods=[*SITE_MODS, measure_trained_update])

        @app.train()
        def train(msg: Message, context: Context) -> Message:
            return train_reply(msg, site, rag_system, settings)

        @app.evaluate()
        def evaluate(msg: Message, context: Context) -> Message:
            return evaluate_reply(msg, site, rag_system, settings)

        return app

    def _record_update(self, node: int, message: Message, reply: Message) -> None:
        self.updates.append(
            {
                "round": server_round(message),
                "site": self.sites[node].name,
                "node": node,
                "norm": self._trained_norm.pop(node, float("nan")),
                "sent-norm": _update_norm(message, reply, self.settings),
            }
        )


def _update_norm(message: Message, reply: Message, settings: FederationSettings) -> float:
    """``||reply - sent||`` over the tensors the reply carries, both taken by key (unpacked
    from the wire form the way the server unpacks them)."""
    sent = received_arrays(message.content)
    record = next(iter(reply.content.array_records.values()))
    got = unpack_sides(record, reply_layout(sent, settings.lora_freeze_a))
    sent_np = {k: v.numpy() for k, v in sent.items()}
    got_np = {k: v.numpy() for k, v in got.items()}
    return update_norm(sent_np, list(got_np), got_np)


def _set_server_identity(run_id: int) -> None:
    """What a ServerApp process has set before its ``main`` runs; Messages read it. Left
    alone when this process already has one (a real ServerApp, or an earlier grid)."""
    if TaskIdentity._run_id is None:
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SERVER_NODE_ID
