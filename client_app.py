"""ClientApp: one site's local RALT/LSR round and evaluation on its own data."""

# ruff: noqa: E402 - the startup clock's first mark goes before the heavy imports

from fedrag_flower.federation.startup import mark

# Imports below this mark are timed as the "imports" phase of the process' startup.
mark("flower")  # Python and Flower's ClientApp process up, message and app fetched

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedrag_flower.federation.faults import raise_if_fault_injected
from fedrag_flower.federation.node import apply_compute_threads, site_settings
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import deployment_site, simulation_site, site_rag_system
from fedrag_flower.federation.site_replies import (
    SITE_MODS,
    evaluate_reply,
    server_round,
    train_reply,
)

mark("imports")  # a deployment ClientApp process pays this once per message

app = ClientApp(mods=SITE_MODS)  # clips updates only when the server asks (DP)


def _site(context: Context, settings: FederationSettings):
    node_config = context.node_config
    if "partition-id" in node_config:  # simulation: a share of the embedded default data
        return simulation_site(
            int(node_config["partition-id"]), int(node_config["num-partitions"]), settings
        )
    return deployment_site(node_config)  # deployment: the site's own files


def _prepare(context: Context):
    apply_compute_threads(context.node_config)  # before any model runs in this process
    # The run's settings, with this site's own store server if its node config names one.
    settings = site_settings(
        context.node_config, FederationSettings.from_run_config(context.run_config)
    )
    site = _site(context, settings)
    mark("data")
    return site, site_rag_system(site, settings), settings


@app.train()
def train(msg: Message, context: Context) -> Message:
    site, rag_system, settings = _prepare(context)
    raise_if_fault_injected(context.node_config, server_round(msg))  # test-only, off unless set
    return train_reply(msg, site, rag_system, settings)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return evaluate_reply(msg, *_prepare(context))
