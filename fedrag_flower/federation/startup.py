"""The fixed cost of a ClientApp process: from its creation to the start of its first
round of training, by phase.

In deployment a SuperNode's SuperExec starts a fresh ClientApp process for every message,
so each message pays Python start, imports, model and index loads and the adapter load
before any training. The phases are marked as they end (wall clock, ``time.time()``),
and the first train reply of the process carries them as metrics::

    startup-seconds           process creation -> training starts (all of the below)
    startup-flower-seconds    process creation -> the ClientApp module starts importing
                              (Python, Flower's ClientApp process fetching message and app)
    startup-imports-seconds   -> the ClientApp module imported (torch, transformers, peft,
                              sentence-transformers, faiss)
    startup-data-seconds      -> the site's data files read
    startup-models-seconds    -> retriever and generator loaded (0 if already loaded)
    startup-index-seconds     -> the site's index loaded (or built, the first time)
    startup-adapters-seconds  -> the round's global adapters loaded

Each phase figure is the time since the previous mark, so the phases add up to
``startup-seconds`` but for the moments between the last mark and training. Only the
first message a process handles has a startup: later ones (a simulation worker serves
many) report 0 for every key, since Flower's FedAvg skips aggregating replies whose
metric keys differ.
In simulation the process is the worker, created when the simulation starts, so its
figure also holds the wait for the first message.
"""

from __future__ import annotations

import os
import time

PHASES = ("flower", "imports", "data", "models", "index", "adapters")

_marks: dict[str, float] = {}
_reported = False


def mark(phase: str) -> None:
    """Note the end of ``phase`` (one of :data:`PHASES`), once per process."""
    _marks.setdefault(phase, time.time())


def startup_metrics() -> dict[str, float]:
    """The startup metrics above, measured on the first call in this process; all 0 on
    later calls (and where the process' creation time cannot be read)."""
    global _reported
    keys = ["startup-seconds", *(f"startup-{phase}-seconds" for phase in PHASES)]
    created = _process_created()
    if _reported or created is None:
        return dict.fromkeys(keys, 0.0)
    _reported = True
    metrics = {"startup-seconds": time.time() - created}
    previous = created
    for phase in PHASES:
        at = max(_marks.get(phase, previous), previous)
        metrics[f"startup-{phase}-seconds"] = at - previous
        previous = at
    return metrics


def _process_created() -> float | None:
    """This process' creation time on the ``time.time()`` clock. On Linux from its age in
    clock ticks since boot (``/proc``), exact to 10 ms; psutil's ``create_time()`` adds the
    boot time, which the kernel gives in whole seconds, so it can be off by up to 1 s."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22
            seconds_up = float(uptime.read().split()[0])
        return time.time() - (seconds_up - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - no figure rather than a failed round
        return None
