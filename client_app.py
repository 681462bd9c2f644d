"""ClientApp: one site's local RALT/LSR round and evaluation on its own data."""

# ruff: noqa: E402 - the startup clock's first mark goes before the heavy imports

from fedrag_flower.federation.startup import mark

# Imports below this mark are timed as the "imports" phase of the process' startup.
mark("flower")  # Python and Flower's ClientApp process up, message and app fetched

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrag_flower.federation.adapters import adapter_arrays, adapter_state
from fedrag_flower.federation.faults import raise_if_fault_injected
from fedrag_flower.federation.node import apply_compute_threads, site_record
from fedrag_flower.federation.privacy import site_clipping_mod
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import (
    deployment_site,
    evaluate_site,
    simulation_site,
    site_rag_system,
    train_site,
)

mark("imports")  # a deployment ClientApp process pays this once per message

app = ClientApp(mods=[site_clipping_mod])  # clips updates only when the server asks (DP)


def _site(context: Context, settings: FederationSettings):
    node_config = context.node_config
    if "partition-id" in node_config:  # simulation: a share of the embedded default data
        return simulation_site(
            int(node_config["partition-id"]), int(node_config["num-partitions"]), settings
        )
    return deployment_site(node_config)  # deployment: the site's own files


def _prepare(msg: Message, context: Context):
    apply_compute_threads(context.node_config)  # before any model runs in this process
    settings = FederationSettings.from_run_config(context.run_config)
    site = _site(context, settings)
    mark("data")
    rag_system = site_rag_system(site, settings)
    rag_system.load_adapter_state_dict(adapter_state(msg.content["arrays"]))
    mark("adapters")
    return settings, site, rag_system


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings, site, rag_system = _prepare(msg, context)
    server_round = int(msg.content["config"]["server-round"])
    raise_if_fault_injected(context.node_config, server_round)  # test-only, off unless set
    state, metrics = train_site(rag_system, site, settings, server_round)
    content = RecordDict(
        {
            "arrays": adapter_arrays(state),
            "metrics": MetricRecord(metrics),
            "site": site_record(site.name),  # the site's name, beside its node id
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    settings, site, rag_system = _prepare(msg, context)
    metrics = evaluate_site(rag_system, site, settings)
    content = RecordDict({"metrics": MetricRecord(metrics), "site": site_record(site.name)})
    return Message(content=content, reply_to=msg)
