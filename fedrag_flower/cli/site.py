"""Commands for a hospital joining a fedrag-flower federation.

    fedrag-flower check-data --corpus corpus.jsonl --qa train.jsonl --qa test.jsonl [--strict]
    fedrag-flower node-key --out ~/fedrag-node --name hospital-a
    fedrag-flower supernode-command --superlink fl.example.org:9191 --root-cert ca.crt \\
        --key ~/fedrag-node/node.key --corpus corpus.jsonl --train train.jsonl \\
        --test test.jsonl --data-dir ~/fedrag-index [--runtime-port 9095 --sites-on-host 2]

Each command is a function of its parsed arguments returning an exit status;
:func:`register` adds them to the ``fedrag-flower`` parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedrag_flower import deployment
from fedrag_flower.data import DataLimits, PassageWindow
from fedrag_flower.models import PACKAGED_RETRIEVER


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``check-data``, ``node-key`` and ``supernode-command`` to ``subparsers``."""
    check = subparsers.add_parser(
        "check-data",
        help="validate a site's corpus and QA files",
        description="Check a corpus file and QA files; report every problem by file, row "
        "and field. Exit status 1 if there is any.",
    )
    check.add_argument("--corpus", required=True, help="corpus file: rows {id, text}")
    check.add_argument(
        "--qa",
        action="append",
        default=[],
        help="QA file: rows {query, response, gold_ids}; repeat for train and test",
    )
    check.add_argument(
        "--max-file-mb",
        type=float,
        default=DataLimits.max_file_bytes / 1e6,
        help="largest file, in MB (default: %(default).0f)",
    )
    check.add_argument(
        "--max-chunk-chars",
        type=int,
        default=DataLimits.max_chunk_chars,
        help="longest chunk text, query or response, in characters (default: %(default)s)",
    )
    check.add_argument(
        "--retriever",
        default=PACKAGED_RETRIEVER,
        help="the retriever whose window chunks should fit in: a sentence-transformers "
        "folder (default: %(default)s); only its tokenizer is loaded",
    )
    check.add_argument(
        "--skip-window-check",
        action="store_true",
        help="do not compare chunk lengths with the retriever's window",
    )
    check.add_argument("--strict", action="store_true", help="exit status 1 on warnings too")
    check.set_defaults(func=check_data)

    key = subparsers.add_parser(
        "node-key",
        help="generate this site's SuperNode key pair",
        description="Generate this site's SuperNode credentials: an ECDSA key pair (send "
        "only the public key to the coordinator) and a TLS certificate for the SuperNode's "
        "loopback Runtime API.",
    )
    key.add_argument("--out", required=True, type=Path, help="folder to write them into")
    key.add_argument("--name", default="", help="site name (default: the folder's name)")
    key.add_argument("--force", action="store_true", help="replace existing credentials")
    key.set_defaults(func=node_key)

    command = subparsers.add_parser(
        "supernode-command",
        help="print the commands that start this site's SuperNode",
        description="Print the two commands that connect this site to the federation: "
        "the SuperNode, and the SuperExec that runs its ClientApps on this site's data.",
    )
    command.add_argument("--superlink", required=True, help="the SuperLink's HOST:PORT")
    command.add_argument(
        "--root-cert", required=True, type=Path, help="the coordinator's CA certificate"
    )
    command.add_argument(
        "--key", required=True, type=Path, help="this site's node.key (from node-key)"
    )
    command.add_argument("--corpus", required=True, type=Path, help="corpus file")
    command.add_argument("--train", required=True, type=Path, help="training QA file")
    command.add_argument("--test", type=Path, help="held-out QA file (for evaluation)")
    command.add_argument(
        "--data-dir", required=True, type=Path, help="writable folder for this site's index"
    )
    command.add_argument(
        "--runtime-port",
        type=int,
        default=deployment.SUPERNODE_RUNTIME_PORT,
        help="loopback port of the SuperNode's Runtime API; each site on one host needs "
        "its own (default: %(default)s)",
    )
    command.add_argument(
        "--name",
        default="",
        help="this site's name in the coordinator's log and metrics.json (default: the "
        "name given to node-key)",
    )
    command.add_argument(
        "--sites-on-host",
        type=int,
        default=1,
        help="how many sites share this host's CPUs (default: %(default)s)",
    )
    command.add_argument(
        "--threads",
        type=int,
        help="compute threads per ClientApp process (default: this host's CPUs divided by "
        "--sites-on-host)",
    )
    command.add_argument(
        "--store-url",
        default="",
        help="this site's own Qdrant server (e.g. http://127.0.0.1:6333), where its index "
        "goes when a run sets store-backend='qdrant' (default: none; embedded Qdrant)",
    )
    command.set_defaults(func=supernode_command)


def check_data(args: argparse.Namespace) -> int:
    """Print every problem, then every warning, in the corpus and QA files; 1 if there is
    any problem (or, with ``--strict``, any warning)."""
    from fedrag_flower.data import inspect_files
    from fedrag_flower.data.site_files import capped_messages

    limits = DataLimits(
        max_file_bytes=max(1, round(args.max_file_mb * 1e6)),
        max_chunk_chars=args.max_chunk_chars,
    )
    window = None if args.skip_window_check else _passage_window(args.retriever)
    report = inspect_files(args.corpus, args.qa, limits=limits, window=window)
    for problem in capped_messages(report.problems):
        print(problem)
    for warning in capped_messages(report.warnings, "warnings"):
        print(f"warning: {warning}")
    if report.problems or (args.strict and report.warnings):
        return 1
    print(f"OK: {args.corpus}" + "".join(f", {qa}" for qa in args.qa))
    return 0


def _passage_window(retriever: str) -> PassageWindow | None:
    """The retriever's window, or None (and a note saying why) where it cannot be loaded."""
    from fedrag_flower.models import resolve_retriever

    try:
        folder = Path(resolve_retriever(retriever))
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a local model folder")
        name = retriever.removeprefix("packaged:") if retriever == PACKAGED_RETRIEVER else None
        return PassageWindow.from_model_folder(folder, name)
    except (OSError, ValueError) as error:
        print(
            f"note: chunk lengths not compared with the retriever's window ({error}); "
            "pass --retriever FOLDER, or --skip-window-check"
        )
        return None


def node_key(args: argparse.Namespace) -> int:
    """Generate the site's credentials; print what to send and what the coordinator runs."""
    out = args.out.expanduser().resolve()
    name = args.name or out.name
    existing = deployment.SiteCredentials(out)
    if existing.node_key.exists() and not args.force:
        # Credentials from before the SuperExec secret existed: add it, keep the rest.
        if deployment.add_site_superexec_secret(existing):
            print(f"Added this site's SuperExec secret: {existing.superexec_secret}")
            return 0
    try:
        creds = deployment.generate_site_credentials(out, name, force=args.force)
    except FileExistsError as err:
        print(f"error: {err}")
        return 1
    register = deployment.register_args("node.key.pub", "<connection>", name)
    print(f"Private key (stays here): {creds.node_key}")
    print(f"Public key (send it to the coordinator): {creds.node_public_key}")
    print("The coordinator registers it with:")
    print(f"  {deployment.command_line('flwr', register)}")
    return 0


def supernode_command(args: argparse.Namespace) -> int:
    """Print this site's ``flower-supernode`` and ``flower-superexec`` command lines, each
    runnable as printed from a fresh shell."""
    key = _absolute(args.key)
    creds = deployment.SiteCredentials(key.parent)
    for needed in (creds.runtime_cert, creds.superexec_secret):
        if not needed.exists():
            print(
                f"error: {needed} not found: --key must be the node.key written by "
                f"`fedrag-flower node-key --out {key.parent}` (run it again to add a "
                "missing SuperExec secret), next to its runtime certificate."
            )
            return 1
    if deployment.port_in_use(args.runtime_port):
        print(
            f"error: 127.0.0.1:{args.runtime_port} is already in use on this host (another "
            "site's SuperNode?): give this site its own --runtime-port."
        )
        return 1
    data_dir = _absolute(args.data_dir)
    node_config = deployment.site_node_config(
        corpus=str(_absolute(args.corpus)),
        train=str(_absolute(args.train)),
        test=str(_absolute(args.test)) if args.test else None,
        data_dir=str(data_dir),
        name=args.name or _key_name(creds) or key.parent.name,
        threads=args.threads or deployment.site_threads(args.sites_on_host),
        store_url=args.store_url or None,
    )
    commands = deployment.site_commands(
        superlink=args.superlink,
        root_cert=str(_absolute(args.root_cert)),
        credentials=creds,
        node_config=node_config,
        data_dir=data_dir,
        bin_dir=deployment.environment_bin_dir(),
        runtime_port=args.runtime_port,
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"# Site {node_config['site-name']}: {node_config['threads']} compute thread(s) per "
          f"ClientApp, Runtime API on 127.0.0.1:{args.runtime_port}; index and Flower's "
          f"files (FLWR_HOME) under {data_dir}")  # fmt: skip
    for number, (what, line) in enumerate(commands, start=1):
        print(f"# {number}. {what}")
        print(line)
    return 0


def _key_name(creds: deployment.SiteCredentials) -> str:
    """The site name node-key wrote as the public key's comment."""
    try:
        parts = creds.node_public_key.read_text().split()
    except OSError:
        return ""
    return parts[2] if len(parts) > 2 else ""


def _absolute(path: Path) -> Path:
    return path.expanduser().resolve()
