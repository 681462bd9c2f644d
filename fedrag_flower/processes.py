"""Stopping the processes a run starts, by PID: the one clean-up used by the tests, the
scripts and the benchmarks.

Flower starts processes of its own under the ones we start: a SuperExec starts a ServerApp
or ClientApp process per task, ``flwr run`` on a local connection starts a background
SuperLink (with its SuperExec and the simulation runtime). Stopping only the PID we hold
would leave those behind, so everything here works on process *trees*::

    stop_process_tree(popen.pid)           # SIGTERM the tree, wait, SIGKILL what is left
    stop_local_superlink(flwr_home)        # the SuperLink `flwr run` started for FLWR_HOME

From a shell (``scripts/simulate.sh``)::

    python -m fedrag_flower.processes stop-local-superlink "$FLWR_HOME"

Portable (``psutil``); never matches processes by a program name alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import psutil

# Seconds a process tree gets between SIGTERM and SIGKILL.
GRACE_SECONDS = 10.0


def process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants (children first found, root last); empty if
    ``pid`` no longer exists."""
    try:
        root = psutil.Process(pid)
        return [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return []


def stop_processes(processes: Iterable[psutil.Process], grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM every process, wait up to ``grace`` seconds, SIGKILL the survivors and reap
    them. Returns the PIDs it was given (whether they were still running or not)."""
    processes = list({p.pid: p for p in processes}.values())
    for proc in processes:
        try:
            proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in processes]


def stop_process_tree(pid: int, grace: float = GRACE_SECONDS) -> list[int]:
    """Stop ``pid`` and every process under it (SIGTERM, ``grace`` s, SIGKILL); returns
    the PIDs of the tree. The tree is read before signalling, since children of a dying
    process are re-parented and can no longer be found from it."""
    return stop_processes(process_tree(pid), grace)


def local_superlink_processes(flwr_home: str | os.PathLike) -> list[psutil.Process]:
    """The processes whose command line names ``flwr_home``: the background SuperLink that
    ``flwr run`` starts for a local connection passes ``--log-file`` under it (and its
    SuperExec the same home), so this finds that SuperLink but no other run's."""
    needles = {os.path.abspath(flwr_home), str(Path(flwr_home).resolve())}
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.pid != os.getpid() and any(n in part for part in cmdline for n in needles):
            found.append(proc)
    return found


def stop_local_superlink(flwr_home: str | os.PathLike, grace: float = GRACE_SECONDS) -> list[int]:
    """Stop the background SuperLink of ``flwr_home`` and every process under it
    (SuperExec, simulation runtime, Ray workers). Returns the PIDs stopped."""
    tree: dict[int, psutil.Process] = {}
    for root in local_superlink_processes(flwr_home):
        tree |= {p.pid: p for p in process_tree(root.pid)}
    return stop_processes(tree.values(), grace)


def alive(pid: int) -> bool:
    """Whether ``pid`` is running (a zombie counts as stopped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedrag_flower.processes", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    superlink = commands.add_parser(
        "stop-local-superlink", help="stop the SuperLink `flwr run` started for FLWR_HOME"
    )
    superlink.add_argument("flwr_home", type=Path)
    tree = commands.add_parser("stop-tree", help="stop a process and its descendants")
    tree.add_argument("pid", type=int)
    args = parser.parse_args(argv)
    if args.command == "stop-local-superlink":
        stopped = stop_local_superlink(args.flwr_home)
    else:
        stopped = stop_process_tree(args.pid)
    print(f"stopped {len(stopped)} process(es)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
