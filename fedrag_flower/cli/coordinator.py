"""Commands for the coordinator of a fedrag-flower federation, on a machine without Docker.

    fedrag-flower coordinator-credentials --out ~/fedrag-coordinator/credentials \\
        --name fl.example.org
    fedrag-flower coordinator-command --credentials ~/fedrag-coordinator/credentials \\
        --workdir ~/fedrag-coordinator --app /path/to/fedrag-flower \\
        --site st-mary-hospital=st-mary.pub --site city-clinic=city-clinic.pub

The second prints, in order, the SuperLink, the ServerApp's SuperExec, one ``flwr
supernode register`` per site, ``flwr supernode list`` and ``flwr run``, each runnable as
printed from a fresh shell; it writes the ``flwr`` CLI's connection into
``WORKDIR/flwr-home/config.toml``. The SuperLink listens on 127.0.0.1 unless ``--host``
says otherwise. The same builders (:mod:`fedrag_flower.deployment`) give the commands of
``docker-compose.yml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedrag_flower import deployment

CONNECTION = "fedrag"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``coordinator-credentials`` and ``coordinator-command`` to ``subparsers``."""
    creds = subparsers.add_parser(
        "coordinator-credentials",
        help="generate the coordinator's CA, SuperLink certificate and SuperExec secret",
        description="Write a certificate authority (give ca.crt to every site), the "
        "SuperLink's TLS certificate and the ServerApp SuperExec's secret into a folder.",
    )
    creds.add_argument("--out", required=True, type=Path, help="folder to write them into")
    creds.add_argument(
        "--name",
        action="append",
        default=[],
        help="a DNS name or IP address sites dial to reach the SuperLink; repeat",
    )
    creds.add_argument("--force", action="store_true", help="replace existing credentials")
    creds.set_defaults(func=coordinator_credentials)

    command = subparsers.add_parser(
        "coordinator-command",
        help="print the coordinator's commands (SuperLink, ServerApp SuperExec, flwr)",
        description="Print the coordinator's commands, each runnable as printed from a "
        "fresh shell, and write the flwr CLI's connection into WORKDIR/flwr-home.",
    )
    command.add_argument(
        "--credentials", required=True, type=Path, help="the coordinator-credentials folder"
    )
    command.add_argument(
        "--workdir",
        required=True,
        type=Path,
        help="the coordinator's folder: SuperLink state, Flower's home, results in outputs/",
    )
    command.add_argument(
        "--app",
        type=Path,
        default=Path("."),
        help="the fedrag-flower project folder `flwr run` submits (default: the current one)",
    )
    command.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the SuperLink listens on (default: %(default)s, this machine only); "
        "e.g. 0.0.0.0 behind a firewall or proxy that lets only the sites in",
    )
    command.add_argument("--port", type=int, default=deployment.SUPERLINK_PORT)
    command.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="NAME=NODE.KEY.PUB",
        help="a site's name and the public key it sent; repeat",
    )
    command.add_argument(
        "--run-config", default="", help="extra run config for the printed `flwr run`"
    )
    command.set_defaults(func=coordinator_command)


def coordinator_credentials(args: argparse.Namespace) -> int:
    """Generate the coordinator's credentials; say which file goes where."""
    names = [*deployment.SUPERLINK_NAMES, *args.name]
    try:
        creds = deployment.generate_coordinator_credentials(
            args.out.expanduser().resolve(), names, force=args.force
        )
    except FileExistsError as err:
        print(f"error: {err}")
        return 1
    print(f"CA certificate (send it to every site): {creds.ca_cert}")
    print(f"CA key (keep it offline): {creds.ca_key}")
    print(f"SuperLink certificate for: {', '.join(names)}")
    print(f"SuperExec secret (stays on this machine): {creds.superexec_secret}")
    return 0


def coordinator_command(args: argparse.Namespace) -> int:
    """Print the coordinator's commands; write the flwr connection file they use."""
    creds = deployment.CoordinatorCredentials(args.credentials.expanduser().resolve())
    for needed in (creds.ca_cert, creds.superlink_cert, creds.superexec_secret):
        if not needed.exists():
            print(
                f"error: {needed} not found: --credentials must be the folder written by "
                "`fedrag-flower coordinator-credentials`."
            )
            return 1
    site_keys = {}
    for entry in args.site:
        name, sep, key = entry.partition("=")
        if not sep or not name or not key:
            print(f"error: --site {entry!r}: write it as NAME=PATH/TO/node.key.pub")
            return 1
        site_keys[name] = str(Path(key).expanduser().resolve())
    layout = deployment.CoordinatorLayout(args.workdir.expanduser().resolve())
    app = args.app.expanduser().resolve()
    if not (app / "pyproject.toml").exists():
        print(f"error: {app} has no pyproject.toml: --app must be the project folder")
        return 1
    commands = deployment.coordinator_commands(
        credentials=creds,
        layout=layout,
        bin_dir=deployment.environment_bin_dir(),
        app=app,
        host=args.host,
        port=args.port,
        connection=CONNECTION,
        site_keys=site_keys,
        run_config=args.run_config,
    )
    for folder in (layout.database.parent, layout.flwr_home, layout.outputs):
        folder.mkdir(parents=True, exist_ok=True)
    local = "127.0.0.1" if args.host in deployment.LOOPBACK_HOSTS else args.host
    (layout.flwr_home / "config.toml").write_text(
        deployment.superlink_connection_toml(CONNECTION, f"{local}:{args.port}", str(creds.ca_cert))
    )
    print(f"# Wrote the flwr CLI's connection {CONNECTION!r}: {layout.flwr_home}/config.toml")
    print(f"# Results of every run: {layout.outputs}/run-<time>/ (final/, metrics.json)")
    for number, (what, line) in enumerate(commands, start=1):
        print(f"# {number}. {what}")
        print(line)
    return 0
