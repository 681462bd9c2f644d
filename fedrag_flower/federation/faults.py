"""Test-only fault injection: a site that raises, a server that dies after a checkpoint.

Off unless an environment variable below is set; nothing in a normal run sets them. The
tests use them to show that a run survives a failing site and resumes after a crash.

- ``FEDRAG_TEST_SITE_FAILS="P:R[,P:R...]"``: the simulated site with partition id ``P``
  raises in training round ``R``.
- ``FEDRAG_TEST_SERVER_EXITS_AFTER_ROUND="R"``: the server stops with an exception right
  after round ``R``'s checkpoint and report are written, leaving the run folder as a kill
  at that moment would (an exception rather than ``os._exit`` lets the simulation runtime
  stop its own worker processes).
"""

from __future__ import annotations

import os

SITE_FAILS = "FEDRAG_TEST_SITE_FAILS"
SERVER_EXITS = "FEDRAG_TEST_SERVER_EXITS_AFTER_ROUND"


class InjectedServerStop(RuntimeError):
    """Raised by the server on purpose (``FEDRAG_TEST_SERVER_EXITS_AFTER_ROUND``)."""


class InjectedSiteFault(RuntimeError):
    """Raised by a site on purpose (``FEDRAG_TEST_SITE_FAILS``)."""


def raise_if_fault_injected(node_config, server_round: int) -> None:
    spec = os.environ.get(SITE_FAILS)
    if not spec or "partition-id" not in node_config:
        return
    partition = int(node_config["partition-id"])
    for item in spec.split(","):
        p, r = (int(x) for x in item.split(":"))
        if (p, r) == (partition, server_round):
            raise InjectedSiteFault(
                f"injected test fault ({SITE_FAILS}): site {partition} fails round {server_round}"
            )


def server_exit_hook():
    """A round hook that stops the server after the named round, or None when unset."""
    spec = os.environ.get(SERVER_EXITS)
    if not spec:
        return None
    stop_after = int(spec)

    def hook(report, arrays) -> None:
        if report.round == stop_after:
            raise InjectedServerStop(f"{SERVER_EXITS}={stop_after}: the server stops here")

    return hook
