"""The server's guard around any Flower strategy: records what each site did, rejects bad
updates, keeps the untrained side, and stops a round that has too few usable replies.

``AdapterStrategy`` wraps a Flower 1.42 Message-API strategy (FedAvg, FedAdam, Krum, a
DP wrapper, ...) the way Flower's own DP wrappers do, and adds, per round:

- **site records**: every sampled site that answered with an error, left, did not answer
  within the round's timeout, or sent an update that ``update_checks`` rejected, as
  ``{"round", "stage", "node", "site", "kind", "reason"}`` in ``events`` and in the log.
  ``kind``: ``error`` (the site's ClientApp raised or crashed), ``left`` (the SuperLink
  reports the node unavailable: it stopped sending heartbeats, i.e. its SuperNode
  stopped or lost its connection), ``timeout`` (no reply within ``round-timeout`` while
  the SuperLink still counted the node as connected: a slow site, or one that left less
  than Flower's heartbeat patience, 2 x 30 s, before the deadline), ``rejected``.
  ``site`` is the name the site's replies carry (node config ``site-name``), else the
  name its node was registered under (``flwr supernode register --name``), else null;
- **validation** of each training reply (keys, shapes, dtypes, NaN/Inf, norm; see
  ``update_checks``) before the wrapped strategy sees it;
- **the one-side-trained rule**: a round that trains only one side (RALT: ``generator.*``,
  LSR: ``retriever.*``) gets replies completed with the global tensors of the other side
  (so every Flower strategy sees whole models, and a site's update there is exactly 0),
  and the aggregate's untrained side is then replaced by the global tensors, bit for bit;
- **min-sites**: fewer than ``min_sites`` accepted training replies raises
  ``TooFewSitesError`` before anything is aggregated or saved;
- **the wire form**: the messages it sends carry each side's adapter as one flat array
  (``adapters.pack_sides``: Flower sends every array as its own object); replies are
  unpacked to the global tensors' keys and shapes before anything else looks at them;
- **a fixed order**: the wrapped strategy gets the accepted replies sorted by site name,
  then node id, not in the order they arrived. Float addition is not associative, so
  FedAvg's ``sum_i n_i theta_i`` in arrival order can differ in the last bits between two
  runs of the same sites; sorted, the same replies always give the same aggregate (and a
  resumed run the same final adapters as an uninterrupted one). Names first: node ids are
  drawn anew each time a SuperNode (or simulation) starts, site names are not.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedrag_flower.federation.adapters import (
    is_sent_key,
    merge_into,
    pack_content,
    reply_layout,
    unpack_sides,
)
from fedrag_flower.federation.node import reply_site_name
from fedrag_flower.federation.update_checks import DEFAULT_NORM_FACTOR, check_updates

log = logging.getLogger("flwr.fedrag")  # through Flower's log handler

WEIGHT_KEY = "num-examples"


@dataclass(frozen=True)
class SiteEvent:
    """Something that went wrong with one site in one round."""

    round: int
    stage: str  # "train" or "evaluate"
    node: int
    kind: str  # "error", "left", "timeout" or "rejected"
    reason: str
    site: str | None = None  # the site's name, where known

    def as_dict(self) -> dict:
        return asdict(self)


class TooFewSitesError(RuntimeError):
    """A training round ended with fewer usable replies than ``min-sites``."""

    def __init__(self, server_round: int, accepted: int, min_sites: int, events: list[SiteEvent]):
        self.server_round, self.accepted, self.min_sites = server_round, accepted, min_sites
        self.events = events
        lines = (
            "; ".join(f"{e.site or 'site'} (node {e.node}): {e.kind}: {e.reason}" for e in events)
            or "none"
        )
        super().__init__(
            f"round {server_round}: only {accepted} site(s) sent a usable update, fewer than "
            f"min-sites={min_sites}; the run stops here. Site problems this round: {lines}"
        )


class AdapterStrategy(Strategy):
    """Wraps ``strategy`` (a Flower strategy) with site records, update validation, the
    one-side-trained rule and the min-sites stop.

    Args:
        strategy: the Flower strategy that aggregates (possibly a DP wrapper around one).
        trained_prefixes: the sides the sites train, e.g. ``("generator.",)`` for RALT.
        min_sites: fewest accepted training replies a round may aggregate.
        norm_factor: the update-norm outlier factor (0 turns the norm check off).
        equal_weights: aggregate with every site weighing the same (``num-examples`` set
            to 1 in the copy the wrapped strategy sees): what DP's noise calibration
            ``sigma = z * C / n`` assumes. Each site's own figure stays in its record.
        frozen_a: the LoRA A matrices are frozen (``lora-freeze-a``): sites send B alone,
            and every A stays the global one, bit for bit.
    """

    def __init__(
        self,
        strategy: Strategy,
        trained_prefixes: tuple[str, ...],
        min_sites: int,
        norm_factor: float = DEFAULT_NORM_FACTOR,
        equal_weights: bool = False,
        frozen_a: bool = False,
    ) -> None:
        self.strategy = strategy
        self.frozen_a = frozen_a
        self.trained_prefixes = trained_prefixes
        self.min_sites = min_sites
        self.norm_factor = norm_factor
        self.equal_weights = equal_weights
        self.events: list[SiteEvent] = []
        self.site_train: dict[int, list[dict]] = {}
        self.site_evaluate: dict[int, list[dict]] = {}
        self.site_names: dict[int, str] = {}  # node id -> the name its node config gives
        self.registered_names: dict[int, str] = {}  # node id -> its registration name
        self._global: ArrayRecord | None = None
        self._sent: dict[tuple[str, int], list[Message]] = {}

    # -- Flower's Strategy interface -------------------------------------------------------

    def summary(self) -> None:
        log.info(
            "AdapterStrategy: validation (norm factor %g), min-sites %d, trains %s",
            self.norm_factor,
            self.min_sites,
            self.trained_prefixes,
        )
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        self._learn_registered_names(grid)
        messages = _packed(self.strategy.configure_train(server_round, arrays, config, grid))
        # The Message objects themselves: the Grid gives them their ids when it sends them,
        # and a reply the SuperLink writes for a vanished node is known only by that id.
        self._sent[("train", server_round)] = messages
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.site_train[server_round] = self._summaries("train", server_round, replies)
        events = self._failures("train", server_round, replies)
        answered = [m for m in replies if not m.has_error()]
        accepted, rejected = self._validated(server_round, answered)
        events = self._record(events + rejected)
        if len(accepted) < self.min_sites:
            raise TooFewSitesError(server_round, len(accepted), self.min_sites, events)
        accepted.sort(key=_reply_order)  # before completion: it drops the site's record
        for message in accepted:
            message.content = self._completed(message.content)
        arrays, metrics = self.strategy.aggregate_train(server_round, accepted)
        if arrays is None:
            log.warning("round %d: the strategy returned no aggregate; weights kept", server_round)
            return None, metrics
        trained = ArrayRecord(
            {k: _as_dtype(arrays[k], self._global[k]) for k in self._trained_keys()}
        )
        return merge_into(self._global, trained), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = _packed(self.strategy.configure_evaluate(server_round, arrays, config, grid))
        self._sent[("evaluate", server_round)] = messages
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        self.site_evaluate[server_round] = self._summaries("evaluate", server_round, replies)
        self._record(self._failures("evaluate", server_round, replies))
        answered = [m for m in replies if not m.has_error()]
        if not answered:
            return None
        return self.strategy.aggregate_evaluate(server_round, answered)

    # -- the guard ------------------------------------------------------------------------

    def round_events(self, server_round: int) -> list[dict]:
        return [e.as_dict() for e in self.events if e.round == server_round]

    def _trained_keys(self) -> list[str]:
        """The global keys the sites send back: the trained sides' (B's alone when A is
        frozen)."""
        return [
            k for k in self._global.keys() if is_sent_key(k, self.trained_prefixes, self.frozen_a)
        ]

    def _failures(self, stage: str, server_round: int, replies: list[Message]) -> list[SiteEvent]:
        node_of = self._reply_nodes(stage, server_round)
        events = []
        for m in replies:
            if not m.has_error():
                continue
            node = node_of(m)
            if m.error.code == ErrorCode.NODE_UNAVAILABLE:
                reason = (
                    "the SuperLink reports this site's node unavailable: it stopped sending "
                    f"heartbeats (its SuperNode stopped or lost its connection) (error code "
                    f"{m.error.code})"
                )
                events.append(SiteEvent(server_round, stage, node, "left", reason))
            else:
                events.append(SiteEvent(server_round, stage, node, "error", _error_text(m)))
        answered = {node_of(m) for m in replies}
        events += [
            SiteEvent(
                server_round,
                stage,
                m.metadata.dst_node_id,
                "timeout",
                "no reply within the round timeout (round-timeout); the SuperLink still "
                "counted the node as connected",
            )
            for m in self._sent.get((stage, server_round), [])
            if m.metadata.dst_node_id not in answered
        ]
        return events

    def _reply_nodes(self, stage: str, server_round: int):
        """A function: reply -> the node it answers for. A reply the SuperLink writes
        itself (the node is unavailable) comes from the SuperLink's own node id, so it is
        matched to the message it answers instead."""
        sent = {
            m.metadata.message_id: m.metadata.dst_node_id
            for m in self._sent.get((stage, server_round), [])
            if m.metadata.message_id
        }

        def node_of(reply: Message) -> int:
            return sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

        return node_of

    def _learn_registered_names(self, grid: Grid) -> None:
        """Remember the names nodes were registered under, so that a site that never
        replies (it left in round 1) is still named in the records. Grids without
        registrations (simulation, test grids) give none."""
        get_nodes = getattr(grid, "get_nodes", None)
        if get_nodes is None:
            return
        for node in get_nodes():
            name = str(getattr(node, "name", "") or "")
            if name:
                self.registered_names[node.node_id] = name

    def _site_name(self, node: int) -> str | None:
        return self.site_names.get(node) or self.registered_names.get(node)

    def _validated(
        self, server_round: int, answered: list[Message]
    ) -> tuple[list[Message], list[SiteEvent]]:
        structural, candidates = [], []
        layout = reply_layout(self._global, self.frozen_a)
        for message in answered:
            problem = _structure_problem(message.content) or _unpack(message.content, layout)
            if problem:
                structural.append((message, problem))
            else:
                candidates.append(message)
        global_np = {k: v.numpy() for k, v in self._global.items()}
        tensors = [{k: v.numpy() for k, v in _arrays(m.content).items()} for m in candidates]
        rejections = check_updates(global_np, self._trained_keys(), tensors, self.norm_factor)
        reasons = {r.index: r.reason for r in rejections}
        events = [
            SiteEvent(server_round, "train", m.metadata.src_node_id, "rejected", problem)
            for m, problem in structural
        ]
        events += [
            SiteEvent(server_round, "train", candidates[i].metadata.src_node_id, "rejected", r)
            for i, r in reasons.items()
        ]
        accepted = [m for i, m in enumerate(candidates) if i not in reasons]
        return accepted, events

    def _completed(self, content: RecordDict) -> RecordDict:
        """The reply with every global key, in the global order (the untrained side
        carries the global tensors), and a copy of its metrics."""
        arrays = _arrays(content)
        whole = ArrayRecord({k: arrays[k] if k in arrays else v for k, v in self._global.items()})
        metrics = MetricRecord(dict(_metrics(content)))
        if self.equal_weights:
            metrics[WEIGHT_KEY] = 1.0
        return RecordDict({"arrays": whole, "metrics": metrics})

    def _summaries(self, stage: str, server_round: int, replies: list[Message]) -> list[dict]:
        """Each reply's summary; sites are named in the log beside their node id."""
        node_of = self._reply_nodes(stage, server_round)
        summaries = [reply_summary(m, node_of(m)) for m in replies]
        for summary in summaries:
            if summary.get("site"):
                self.site_names[summary["node"]] = summary["site"]
            elif self._site_name(summary["node"]):  # an error reply: its registered name
                summary["site"] = self._site_name(summary["node"])
            if "metrics" in summary:
                log.info(
                    "round %d: site %s (node %d): %s",
                    server_round,
                    summary.get("site"),
                    summary["node"],
                    {k: round(v, 4) for k, v in summary["metrics"].items()},
                )
        return summaries

    def _record(self, events: list[SiteEvent]) -> list[SiteEvent]:
        """Name each event's site where known, log it and keep it; returns the events."""
        events = [replace(e, site=e.site or self._site_name(e.node)) for e in events]
        for event in events:
            name = event.site
            site = f"site {name} (node {event.node})" if name else f"site node {event.node}"
            log.warning(
                "round %d %s: %s %s: %s", event.round, event.stage, site, event.kind, event.reason
            )
        self.events += events
        return events


def reply_summary(message: Message, node: int | None = None) -> dict:
    """What the run history keeps of one reply: the node (``node``, default the reply's
    sender), the bytes of tensors it sent and its scalar metrics, or its error."""
    node = message.metadata.src_node_id if node is None else node
    if message.has_error():
        return {"node": node, "error": _error_text(message)}
    content = message.content
    return {
        "node": node,
        "site": reply_site_name(content),
        "bytes": sum(r.count_bytes() for r in content.array_records.values()),
        "metrics": {k: v for r in content.metric_records.values() for k, v in r.items()},
    }


def _reply_order(message: Message) -> tuple[bool, str, int]:
    """Sort key of an accepted reply: named sites by name first, then by node id."""
    name = reply_site_name(message.content)
    return (name is None, name or "", message.metadata.src_node_id)


def _as_dtype(value: Array, like: Array) -> Array:
    """``value`` in ``like``'s dtype: a server optimizer's float64 arithmetic must not change
    what the sites are sent (their replies are checked against it)."""
    if value.dtype == like.dtype:
        return value
    return Array(np.asarray(value.numpy(), dtype=like.numpy().dtype))


def _error_text(message: Message) -> str:
    """The error's own message, without the traceback and terminal colours a simulated
    site's error carries (its last ``Message:`` part), and its Flower error code."""
    error = message.error
    reason = re.sub(r"\x1b\[[0-9;]*m", "", str(error.reason))
    if "Message: " in reason:
        reason = reason.rsplit("Message: ", 1)[1]
    reason = reason.strip().strip("'>").strip()
    if len(reason) > 300:
        reason = reason[:300] + " ..."
    return f"{reason} (error code {error.code})"


def _arrays(content: RecordDict) -> ArrayRecord:
    return next(iter(content.array_records.values()))


def _metrics(content: RecordDict) -> MetricRecord:
    return next(iter(content.metric_records.values()))


def _packed(messages: Iterable[Message]) -> list[Message]:
    """The messages with their adapters in the wire form (messages may share one
    RecordDict: each record is packed once)."""
    messages = list(messages)
    for message in messages:
        if message.has_content():
            pack_content(message.content)
    return messages


def _unpack(content: RecordDict, layout: dict) -> str | None:
    """Unpack the reply's adapters in place (``layout``: the global tensors' shapes);
    the reason to reject it where they do not fit."""
    key, record = next(iter(content.array_records.items()))
    try:
        content[key] = unpack_sides(record, layout)
    except ValueError as error:
        return str(error)
    return None


def _structure_problem(content: RecordDict) -> str | None:
    if len(content.array_records) != 1:
        return f"reply holds {len(content.array_records)} ArrayRecords, expected 1"
    if len(content.metric_records) != 1:
        return f"reply holds {len(content.metric_records)} MetricRecords, expected 1"
    weight = _metrics(content).get(WEIGHT_KEY)
    if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        return f"'{WEIGHT_KEY}' is {weight!r}, expected a positive number"
    return None
