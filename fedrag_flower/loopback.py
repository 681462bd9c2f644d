"""The docker-compose deployment, run as plain processes on loopback.

No Docker engine runs on the test machines, so the tests start the same topology as
``docker-compose.yml`` with the same flags: every argument list comes from
:mod:`fedrag_flower.deployment`, which the compose file is checked against. Only hosts,
ports and file paths differ (free ports on 127.0.0.1, files in a temporary folder).

    with LoopbackDeployment(tmp_path, sites) as deployment:
        deployment.start()                      # SuperLink, SuperExec, SuperNodes
        result = deployment.run_app(app_dir)    # flwr run <app> <connection>
        assert result.status == "finished:completed"

Each process writes its log to ``<workdir>/logs/<name>.log``. Leaving the ``with`` block,
normally or on an error, stops every process this object started, and everything they
started in turn (SuperExecs start ServerApp and ClientApp processes), by PID: SIGTERM,
then SIGKILL after a grace period (``fedrag_flower.processes``). ``flwr`` itself is run
to completion with a timeout; with a remote connection it starts no background process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedrag_flower import deployment as dep
from fedrag_flower.processes import process_tree, stop_processes

CONNECTION = "loopback"


@dataclass
class SiteSpec:
    """One site (hospital): its name and the node config its ClientApps receive."""

    name: str
    node_config: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass
class RunResult:
    """The outcome of :meth:`LoopbackDeployment.run_app`."""

    run_id: int
    status: str  # e.g. "finished:completed", "finished:failed"
    wall_seconds: float  # from `flwr run` to the run's end, as seen by the test
    details: dict  # the run's entry in `flwr list --run-id ... --format json`
    logs: str  # the ServerApp's logs (`flwr log --show`)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log_path: Path


class LoopbackDeployment:
    """Start and stop the deployment topology as processes on 127.0.0.1.

    ``workdir`` holds credentials, the SuperLink database, ``$FLWR_HOME`` and logs;
    ``sites`` name the SuperNodes and give their node configs; ``env`` adds environment
    variables for every process (``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` is
    always set, as in the compose file).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        sites: Sequence[SiteSpec],
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.sites = list(sites)
        self.log_dir = self.workdir / "logs"
        self.flwr_home = self.workdir / "flwr-home"
        self.credentials = self.workdir / "credentials"
        self.coordinator = dep.CoordinatorCredentials(self.credentials)
        self.superlink_port = free_port()
        self.superlink_address = f"127.0.0.1:{self.superlink_port}"
        self.processes: list[_Process] = []
        self.runtime_ports: dict[str, int] = {}  # site name -> its SuperNode's Runtime API
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            # SuperExecs start `flwr-serverapp` / `flwr-clientapp` from the PATH.
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }

    # ----------------------------------------------------------------------------------
    # Credentials and argument lists (the same builders as docker-compose.yml)
    # ----------------------------------------------------------------------------------

    def site_credentials(self, name: str) -> dep.SiteCredentials:
        return dep.SiteCredentials(self.credentials / name)

    def superlink_args(self) -> list[str]:
        c = self.coordinator
        return dep.superlink_args(
            host="127.0.0.1",
            port=self.superlink_port,
            ca_cert=str(c.ca_cert),
            cert=str(c.superlink_cert),
            key=str(c.superlink_key),
            database=str(self.workdir / "state" / "superlink.db"),
            superexec_secret=str(c.superexec_secret),
        )

    def serverapp_superexec_args(self) -> list[str]:
        return dep.superexec_args(
            runtime_address=self.superlink_address,
            root_cert=str(self.coordinator.ca_cert),
            superexec_secret=str(self.coordinator.superexec_secret),
        )

    def supernode_args(
        self,
        site: SiteSpec,
        runtime_port: int,
        *,
        max_retries: int | None = None,
        superexec_secret: bool = True,
    ) -> list[str]:
        creds = self.site_credentials(site.name)
        return dep.supernode_args(
            superlink=self.superlink_address,
            root_cert=str(self.coordinator.ca_cert),
            node_key=str(creds.node_key),
            node_config=site.node_config,
            runtime_cert=str(creds.runtime_cert),
            runtime_key=str(creds.runtime_key),
            runtime_ca=str(creds.runtime_ca),
            superexec_secret=str(creds.superexec_secret) if superexec_secret else None,
            runtime_port=runtime_port,
            max_retries=max_retries,
        )

    def clientapp_superexec_args(
        self, site: SiteSpec, runtime_port: int, *, superexec_secret: bool = True
    ) -> list[str]:
        creds = self.site_credentials(site.name)
        return dep.superexec_args(
            runtime_address=f"127.0.0.1:{runtime_port}",
            root_cert=str(creds.runtime_ca),
            superexec_secret=str(creds.superexec_secret) if superexec_secret else None,
        )

    # ----------------------------------------------------------------------------------
    # Lifecycle
    # ----------------------------------------------------------------------------------

    def __enter__(self) -> LoopbackDeployment:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self, *, register: bool = True, timeout: float = 60.0) -> None:
        """Generate credentials, start the SuperLink and its SuperExec, register every
        site's public key (unless ``register`` is false) and start every site's SuperNode
        and SuperExec; return once all SuperNodes are online."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "state").mkdir(parents=True, exist_ok=True)
        if not self.coordinator.ca_cert.exists():
            dep.generate_coordinator_credentials(self.credentials)
        for site in self.sites:
            if not self.site_credentials(site.name).node_key.exists():
                dep.generate_site_credentials(self.credentials / site.name, site.name)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            dep.superlink_connection_toml(
                CONNECTION, self.superlink_address, str(self.coordinator.ca_cert)
            )
        )

        self.spawn("superlink", dep.SUPERLINK_PROGRAM, self.superlink_args())
        wait_for_port(self.superlink_port, timeout, self.processes[-1])
        self.spawn("superexec-serverapp", dep.SUPEREXEC_PROGRAM, self.serverapp_superexec_args())
        if register:
            for site in self.sites:
                self.register(site.name)
        for site in self.sites:
            self.start_site(site)
        self.wait_for_nodes(len(self.sites), timeout)

    def register(self, name: str) -> None:
        """Register a site's public key with the SuperLink (the coordinator's step)."""
        public_key = str(self.site_credentials(name).node_public_key)
        self.flwr(dep.register_args(public_key, CONNECTION, name), timeout=60)

    def start_site(self, site: SiteSpec) -> None:
        """Start one site's SuperNode and its ClientApp SuperExec."""
        runtime_port = free_port()
        self.runtime_ports[site.name] = runtime_port
        self.spawn(
            f"supernode-{site.name}", dep.SUPERNODE_PROGRAM, self.supernode_args(site, runtime_port)
        )
        wait_for_port(runtime_port, 60.0, self.processes[-1])
        self.spawn(
            f"superexec-{site.name}",
            dep.SUPEREXEC_PROGRAM,
            self.clientapp_superexec_args(site, runtime_port),
            env=self.env | dep.training_environment(),  # as the site image sets them
        )

    def spawn(
        self,
        name: str,
        program: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start ``program args`` in its own session, logging to ``logs/<name>.log``
        (environment: ``env``, default this deployment's)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [program, *args],
                cwd=self.workdir,
                env=self.env if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(_Process(name, popen, log_path))
        return popen

    def stop(self, grace: float = 10.0) -> None:
        """Stop every started process and its descendants: SIGTERM, then SIGKILL
        (:mod:`fedrag_flower.processes`). All trees are read before any signal, so that
        no child is orphaned out of sight."""
        trees = [p for proc in self.processes for p in process_tree(proc.popen.pid)]
        stop_processes(trees, grace)
        for proc in self.processes:
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()

    # ----------------------------------------------------------------------------------
    # The `flwr` CLI against this deployment
    # ----------------------------------------------------------------------------------

    def flwr(self, args: Sequence[str], *, timeout: float = 120.0, check: bool = True):
        """Run ``flwr args`` with this deployment's ``$FLWR_HOME``."""
        result = subprocess.run(
            ["flwr", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"flwr {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def online_nodes(self) -> list[dict]:
        out = self.flwr(["supernode", "list", CONNECTION, "--format", "json"], timeout=30)
        return [n for n in json.loads(out.stdout)["nodes"] if n["status"] == "online"]

    def wait_for_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if len(self.online_nodes()) >= count:
                return
            time.sleep(1.0)
        raise TimeoutError(f"fewer than {count} SuperNodes online after {timeout}s\n{self}")

    def submit(self, app_dir: str | os.PathLike, *, run_config: str | None = None) -> int:
        """``flwr run <app_dir> <connection>``; returns the run id."""
        args = ["run", str(app_dir), CONNECTION, "--format", "json"]
        if run_config:
            args += ["--run-config", run_config]
        return int(json.loads(self.flwr(args, timeout=120).stdout)["run-id"])

    def run_details(self, run_id: int) -> dict:
        """The run's entry in ``flwr list --run-id ... --format json``."""
        out = self.flwr(
            ["list", CONNECTION, "--run-id", str(run_id), "--format", "json"], timeout=30
        )
        return json.loads(out.stdout)["runs"][0]

    def run_status(self, run_id: int) -> str:
        """E.g. ``running``, ``finished:completed``, ``finished:failed``."""
        return self.run_details(run_id)["status"]

    def wait_for_run(self, run_id: int, timeout: float) -> str:
        """Wait (at most ``timeout`` s) for the run to finish; returns its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            status = self.run_status(run_id)
            if status.startswith("finished"):
                return status
            time.sleep(1.0)
        logs = self.flwr(["log", str(run_id), CONNECTION, "--show"], timeout=60, check=False)
        raise TimeoutError(
            f"run {run_id} not finished after {timeout}s: {self.run_details(run_id)}\n"
            f"--- ServerApp ---\n{logs.stdout[-4000:]}\n{self}"
        )

    def run_app(
        self,
        app_dir: str | os.PathLike,
        *,
        run_config: str | None = None,
        timeout: float = 600.0,
    ) -> RunResult:
        """``flwr run <app_dir> <connection>``, then wait (at most ``timeout`` s) for the
        run to finish; returns its status, timings and ServerApp logs."""
        start = time.monotonic()
        run_id = self.submit(app_dir, run_config=run_config)
        status = self.wait_for_run(run_id, timeout)
        wall = time.monotonic() - start
        logs = self.flwr(["log", str(run_id), CONNECTION, "--show"], timeout=60).stdout
        return RunResult(run_id, status, wall, self.run_details(run_id), logs)

    def check_alive(self) -> None:
        """Raise if a long-running process has exited."""
        for proc in self.processes:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{tail(proc.log_path)}"
                )

    def __str__(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{tail(p.log_path)}" for p in self.processes)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: _Process | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{tail(proc.log_path)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------
# The same topology inside docker-compose.yml
# --------------------------------------------------------------------------------------

COMPOSE_SITES = ("hospital-a", "hospital-b")
COMPOSE_SUPERLINK = f"superlink:{dep.SUPERLINK_PORT}"


def compose_secret(name: str) -> str:
    """Where docker compose mounts the secret ``name`` in a container."""
    return f"/run/secrets/{name}"


def compose_commands() -> dict[str, list[str]]:
    """The ``command:`` each service of ``docker-compose.yml`` must have: the builders
    the loopback topology uses, with the containers' hosts, ports and paths."""
    commands = {
        "superlink": dep.superlink_args(
            host="0.0.0.0",
            port=dep.SUPERLINK_PORT,
            ca_cert=compose_secret("ca-cert"),
            cert=compose_secret("superlink-cert"),
            key=compose_secret("superlink-key"),
            database="/app/state/superlink.db",
            superexec_secret=compose_secret("superexec-secret"),
        ),
        "superexec-serverapp": dep.superexec_args(
            runtime_address=COMPOSE_SUPERLINK,
            root_cert=compose_secret("ca-cert"),
            superexec_secret=compose_secret("superexec-secret"),
        ),
    }
    for site in COMPOSE_SITES:
        commands[f"supernode-{site}"] = dep.supernode_args(
            superlink=COMPOSE_SUPERLINK,
            root_cert=compose_secret("ca-cert"),
            node_key=compose_secret(f"{site}-node-key"),
            node_config=dep.site_node_config(
                corpus="/data/corpus.jsonl",
                train="/data/train.jsonl",
                test="/data/test.jsonl",
                data_dir="/app/index",
                name=site,
                store_url=dep.qdrant_url(f"qdrant-{site}"),  # the hospital's own, profile qdrant
            ),
            runtime_cert=compose_secret(f"{site}-runtime-cert"),
            runtime_key=compose_secret(f"{site}-runtime-key"),
            runtime_ca=compose_secret(f"{site}-runtime-ca"),
            superexec_secret=compose_secret(f"{site}-superexec-secret"),
        )
        # Shares the SuperNode's network namespace: its Runtime API stays on loopback.
        commands[f"superexec-{site}"] = dep.superexec_args(
            runtime_address=f"127.0.0.1:{dep.SUPERNODE_RUNTIME_PORT}",
            root_cert=compose_secret(f"{site}-runtime-ca"),
            superexec_secret=compose_secret(f"{site}-superexec-secret"),
        )
    return commands
