"""Command lines and credentials of a multi-node Flower deployment.

One deployment is a coordinator running a SuperLink and a SuperExec for the ServerApp, and
one or more sites (hospitals), each running a SuperNode and a SuperExec for its ClientApps::

    coordinator                                hospital (one per site)
    ┌───────────────────────────────┐          ┌───────────────────────────────┐
    │ flower-superlink   :9191 TLS  │◀──Fleet──│ flower-supernode               │
    │   ▲ Runtime API (same port)   │  (HTTPS, │   ▲ Runtime API 127.0.0.1:9094 │
    │ flower-superexec  (ServerApp) │  node    │ flower-superexec  (ClientApps) │
    └───────────────────────────────┘  auth)   └───────────────────────────────┘

This module is the single place that builds those processes' argument lists. The
``docker-compose.yml`` at the repository root, the loopback deployment tests
(``fedrag_flower/loopback.py``) and the commands ``fedrag-flower supernode-command``
(a hospital) and ``fedrag-flower coordinator-command`` (the coordinator, without Docker)
all use it, and ``tests/test_deployment.py`` checks that the compose file's commands equal
what these functions return, so they cannot drift apart. :func:`shell_command` turns an
argument list into a line that runs as printed from a fresh shell: absolute executable,
the environment's ``bin`` on ``PATH`` (a SuperExec starts ``flwr-serverapp`` /
``flwr-clientapp`` by name), ``FLWR_HOME`` and the working directory set explicitly.

It also generates the credentials: a certificate authority, the SuperLink's TLS
certificate, a shared secret for the ServerApp SuperExec, and per site an ECDSA P-384 key
pair in OpenSSH format (what ``flwr supernode register`` and ``flower-supernode
--auth-supernode-private-key`` accept), a TLS certificate for the site's loopback
Runtime API and a shared secret of the site's SuperNode and SuperExec (only a SuperExec
that presents it may take the site's tasks), so that no process in the deployment runs
with ``--insecure`` and no other process on a site's host can pick up its ClientApp tasks.

It does not import ``flwr``; ``cryptography`` (a dependency of ``flwr``) is imported only
by the functions that generate credentials.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shlex
import shutil
import socket
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedrag_flower.allocator import allocator_environment

# Flower 1.42 serves the Fleet, Control and Runtime APIs of a SuperLink on one HTTPS port.
SUPERLINK_PORT = 9191
# The SuperNode's Runtime API, which its ClientApp SuperExec polls (Flower's default).
SUPERNODE_RUNTIME_PORT = 9094
# Names the SuperLink certificate is valid for: the compose service name and loopback.
SUPERLINK_NAMES = ("superlink", "localhost", "127.0.0.1")
# A site's Runtime API is only ever reached over its own loopback interface.
RUNTIME_NAMES = ("localhost", "127.0.0.1")

# The executables; the Docker images use them as their entrypoints.
SUPERLINK_PROGRAM = "flower-superlink"
SUPEREXEC_PROGRAM = "flower-superexec"
SUPERNODE_PROGRAM = "flower-supernode"

# Keys of a SuperNode's node config that the ClientApp reads in deployment mode: the
# site's files, its index folder, its name (shown beside its node id in the coordinator's
# log and metrics.json) and the compute threads of each of its ClientApp processes.
NODE_CONFIG_KEYS = (
    "corpus-path", "train-path", "test-path", "data-dir", "site-name", "threads", "store-url"
)  # fmt: skip

# A site's own Qdrant server (docker-compose.yml, profile "qdrant": one per hospital, on that
# hospital's internal network), used when a run sets store-backend = "qdrant".
QDRANT_IMAGE = "qdrant/qdrant:v1.19.1"
QDRANT_HTTP_PORT = 6333
QDRANT_STORAGE = "/qdrant/storage"  # where the image keeps collections: put it on a volume
QDRANT_ENV = {"QDRANT__TELEMETRY_DISABLED": "true"}  # a hospital's server reports nothing out

# Environment of every Flower process here: never pip-install an app's dependencies.
RUNTIME_ENV = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}


# --------------------------------------------------------------------------------------
# Argument lists
# --------------------------------------------------------------------------------------


def superlink_args(
    *,
    host: str,
    port: int,
    ca_cert: str,
    cert: str,
    key: str,
    database: str,
    superexec_secret: str,
) -> list[str]:
    """Arguments of ``flower-superlink`` for the coordinator.

    TLS on all three APIs, SuperNode authentication (only keys registered with ``flwr
    supernode register`` may join), state in a SQLite file (put it on a volume), the
    ServerApp run by a separate SuperExec (``--isolation process``) that must present
    ``superexec_secret``, and no installation of app dependencies at run time.
    """
    return [
        "--ssl-ca-certfile", ca_cert,
        "--ssl-certfile", cert,
        "--ssl-keyfile", key,
        "--enable-supernode-auth",
        "--isolation", "process",
        "--superexec-auth-secret-file", superexec_secret,
        "--database", database,
        "--disable-runtime-dependency-installation",
        "--host", host,
        "--port", str(port),
    ]  # fmt: skip


def superexec_args(
    *, runtime_address: str, root_cert: str, superexec_secret: str | None = None
) -> list[str]:
    """Arguments of ``flower-superexec``, which starts a ServerApp or ClientApp process
    for each task it pulls from the Runtime API at ``runtime_address`` (a SuperLink's
    port for the ServerApp, a SuperNode's ``--port`` for ClientApps; Flower 1.42 picks the
    kind from the task). ``root_cert`` verifies that API's TLS certificate.
    """
    args = ["--runtime-api-address", runtime_address, "--root-certificates", root_cert]
    if superexec_secret is not None:
        args += ["--superexec-auth-secret-file", superexec_secret]
    return args


def supernode_args(
    *,
    superlink: str,
    root_cert: str,
    node_key: str,
    node_config: Mapping[str, str | int | float | bool],
    runtime_cert: str,
    runtime_key: str,
    runtime_ca: str,
    superexec_secret: str | None,
    runtime_port: int = SUPERNODE_RUNTIME_PORT,
    max_retries: int | None = None,
) -> list[str]:
    """Arguments of ``flower-supernode`` for one site.

    ``superlink`` is the SuperLink's Fleet address (``host:port``), ``root_cert`` the CA
    that signed its certificate, ``node_key`` the site's private key (its public half
    registered by the coordinator). ClientApps run in a separate SuperExec (``--isolation
    process``) that reaches this node's Runtime API on 127.0.0.1:``runtime_port`` over
    TLS (``runtime_*``) and must present ``superexec_secret`` to take a task (``None``
    only to show what happens without it). ``max_retries`` bounds reconnection attempts
    (default: forever).
    """
    args = [
        "--superlink", superlink,
        "--root-certificates", root_cert,
        "--auth-supernode-private-key", node_key,
        "--isolation", "process",
        "--host", "127.0.0.1",
        "--port", str(runtime_port),
        "--ssl-certfile", runtime_cert,
        "--ssl-keyfile", runtime_key,
        "--ssl-ca-certfile", runtime_ca,
        "--node-config", format_node_config(node_config),
    ]  # fmt: skip
    if superexec_secret is not None:
        args += ["--superexec-auth-secret-file", superexec_secret]
    if max_retries is not None:
        args += ["--max-retries", str(max_retries)]
    return args


def site_node_config(
    *,
    corpus: str,
    train: str,
    data_dir: str,
    test: str | None = None,
    name: str | None = None,
    threads: int | None = None,
    store_url: str | None = None,
) -> dict[str, str | int]:
    """The node config of a site in deployment mode: its corpus and QA files, a writable
    folder for its index (``corpus-path``, ``train-path``, ``test-path``, ``data-dir``),
    its name (``site-name``: shown beside its node id in the coordinator's log and
    metrics.json; nothing of the data), the compute threads of each of its ClientApp
    processes (``threads``; absent: PyTorch's default, all cores) and the site's own Qdrant
    server (``store-url``, e.g. :func:`qdrant_url`), which its index goes to when a run sets
    ``store-backend = "qdrant"`` (other backends ignore it)."""
    config: dict[str, str | int] = {"corpus-path": corpus, "train-path": train}
    if test is not None:
        config["test-path"] = test
    config["data-dir"] = data_dir
    if name:
        config["site-name"] = name
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads}: give at least 1 compute thread per site")
        config["threads"] = threads
    if store_url:
        config["store-url"] = store_url
    return config


def qdrant_url(host: str, port: int = QDRANT_HTTP_PORT) -> str:
    """A site's ``store-url``: the HTTP API of its Qdrant server at ``host``."""
    return f"http://{host}:{port}"


def site_threads(sites_on_host: int = 1) -> int:
    """Compute threads one site process gets by default: the CPUs this process may use
    (its affinity, else the machine's count) shared evenly by ``sites_on_host`` sites,
    at least 1. Without it every process starts as many threads as there are cores, and
    two sites on one host slow each other down."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, sites_on_host))


def format_node_config(config: Mapping[str, str | int | float | bool]) -> str:
    """``--node-config`` text for ``config``: space-separated ``key=value`` pairs with
    TOML values; strings become TOML basic strings (``"..."``, backslashes escaped, so
    Windows paths survive). Flower's parser cuts a value at its next double quote, so a
    value may not contain one (nor a newline)."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            value = str(value)
            if '"' in value or "\n" in value:
                raise ValueError(
                    f"node config {key}={value!r}: a value may not contain a double quote "
                    "or a newline; rename the file or folder."
                )
            text = _toml_str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def superlink_connection_toml(name: str, address: str, root_cert: str) -> str:
    """A ``[superlink.NAME]`` section for ``$FLWR_HOME/config.toml``, which ``flwr run``,
    ``flwr supernode register`` and the other ``flwr`` commands read (``$FLWR_HOME``
    defaults to ``~/.flwr``)."""
    return (
        f"[superlink]\ndefault = {_toml_str(name)}\n\n"
        f"[superlink.{name}]\naddress = {_toml_str(address)}\n"
        f"root-certificates = {_toml_str(root_cert)}\n"
    )


def register_args(public_key: str, connection: str, name: str) -> list[str]:
    """``flwr`` arguments the coordinator runs to let a site's SuperNode join."""
    return ["supernode", "register", public_key, connection, "--name", name]


def command_line(program: str, args: Sequence[str]) -> str:
    """A copy-pasteable shell command."""
    return shlex.join([program, *args])


def environment_bin_dir() -> Path:
    """The folder of this Python environment's executables (``flower-superlink``,
    ``flwr``, ``flwr-serverapp``, ``fedrag-flower``, ...)."""
    candidates = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    which = shutil.which(SUPEREXEC_PROGRAM)
    if which:
        candidates.append(Path(which).parent)
    for folder in candidates:
        if (folder / SUPEREXEC_PROGRAM).exists() or (folder / f"{SUPEREXEC_PROGRAM}.exe").exists():
            return folder.absolute()
    raise FileNotFoundError(
        f"{SUPEREXEC_PROGRAM} not found next to {sys.executable}: install fedrag-flower "
        "(it brings Flower) into this environment."
    )


def shell_command(
    program: str,
    args: Sequence[str],
    *,
    bin_dir: str | os.PathLike,
    flwr_home: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] = RUNTIME_ENV,
) -> str:
    """A POSIX shell line that runs ``program args`` from a fresh shell: ``cd`` into
    ``cwd``, then ``program`` by its absolute path in ``bin_dir`` with ``bin_dir`` first
    on ``PATH`` (a SuperExec starts ``flwr-serverapp`` / ``flwr-clientapp`` by name),
    ``FLWR_HOME`` set (Flower's own files; otherwise ``~/.flwr`` of whoever runs it) and
    ``env``."""
    bin_dir = Path(bin_dir)
    assignments = [f"{key}={shlex.quote(value)}" for key, value in env.items()]
    if flwr_home is not None:
        assignments.insert(0, f"FLWR_HOME={shlex.quote(str(flwr_home))}")
    assignments.append(f'PATH={shlex.quote(str(bin_dir))}:"$PATH"')
    line = " ".join([*assignments, command_line(str(bin_dir / program), args)])
    if cwd is not None:
        line = f"cd {shlex.quote(str(cwd))} && {line}"
    return line


def training_environment() -> dict[str, str]:
    """The memory settings for a site's ClientApps, as a fresh shell needs them (only
    ``FEDRAG_ALLOCATOR`` is taken from this environment: ``system`` keeps glibc's malloc)."""
    choice = {k: v for k, v in os.environ.items() if k == "FEDRAG_ALLOCATOR"}
    return allocator_environment(choice)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something on this host already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------------------
# Commands as printed for people (``fedrag-flower coordinator-command`` and
# ``supernode-command``): the builders above, made runnable from a fresh shell
# --------------------------------------------------------------------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::")


@dataclass(frozen=True)
class CoordinatorLayout:
    """Where the coordinator's processes keep their files, all under ``workdir``: the
    SuperLink's state (``state/superlink.db``), Flower's home for the coordinator's
    processes and its ``flwr`` CLI (``flwr-home/``, with the connection in
    ``config.toml``), and the runs' results (``outputs/run-<time>/``)."""

    workdir: Path

    @property
    def database(self) -> Path:
        return self.workdir / "state" / "superlink.db"

    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

    @property
    def outputs(self) -> Path:
        """What the printed ``flwr run`` passes as the run config's ``output-dir``; also
        where the default ``output-dir = "outputs"`` lands (the ServerApp's SuperExec runs
        in ``workdir``)."""
        return self.workdir / "outputs"


def coordinator_commands(
    *,
    credentials: CoordinatorCredentials,
    layout: CoordinatorLayout,
    bin_dir: str | os.PathLike,
    app: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = SUPERLINK_PORT,
    connection: str = "fedrag",
    site_keys: Mapping[str, str] | None = None,
    run_config: str = "",
) -> list[tuple[str, str]]:
    """The coordinator's commands without Docker, in order, as ``(what, shell line)``:
    the SuperLink on ``host:port`` (loopback unless another address is given), the
    ServerApp's SuperExec (with the SuperExec secret), ``flwr supernode register`` for
    each of ``site_keys`` (site name -> its ``node.key.pub``; a template line if none),
    ``flwr supernode list`` and ``flwr run`` of ``app`` with ``output-dir`` set to
    ``layout.outputs`` plus ``run_config``. The ``flwr`` lines need
    :func:`superlink_connection_toml` written to ``layout.flwr_home / "config.toml"``.
    """
    c, home, cwd = credentials, layout.flwr_home, layout.workdir
    local = "127.0.0.1" if host in LOOPBACK_HOSTS else host
    superlink = superlink_args(
        host=host,
        port=port,
        ca_cert=str(c.ca_cert),
        cert=str(c.superlink_cert),
        key=str(c.superlink_key),
        database=str(layout.database),
        superexec_secret=str(c.superexec_secret),
    )
    superexec = superexec_args(
        runtime_address=f"{local}:{port}",
        root_cert=str(c.ca_cert),
        superexec_secret=str(c.superexec_secret),
    )

    def flwr(args: Sequence[str]) -> str:
        return shell_command("flwr", args, bin_dir=bin_dir, flwr_home=home, cwd=cwd)

    commands = [
        (
            f"The SuperLink on {host}:{port} (keep it running)",
            shell_command(SUPERLINK_PROGRAM, superlink, bin_dir=bin_dir, flwr_home=home, cwd=cwd),
        ),
        (
            "The ServerApp's SuperExec (keep it running); each run writes into "
            f"{layout.outputs}/run-<time>/",
            shell_command(SUPEREXEC_PROGRAM, superexec, bin_dir=bin_dir, flwr_home=home, cwd=cwd),
        ),
    ]
    for name, key in (site_keys or {"<site-name>": "<path/to/node.key.pub>"}).items():
        commands.append(
            (f"Let site {name} join (its public key)", flwr(register_args(key, connection, name)))
        )
    commands.append(("Which sites are online", flwr(["supernode", "list", connection])))
    # The same key=value TOML text as a node config.
    config = f"{format_node_config({'output-dir': str(layout.outputs)})} {run_config}".strip()
    commands.append(
        (
            f"Submit a run; its results: {layout.outputs}/run-<time>/",
            flwr(["run", str(app), connection, "--stream", "--run-config", config]),
        )
    )
    return commands


def site_commands(
    *,
    superlink: str,
    root_cert: str,
    credentials: SiteCredentials,
    node_config: Mapping[str, str | int | float | bool],
    data_dir: str | os.PathLike,
    bin_dir: str | os.PathLike,
    runtime_port: int = SUPERNODE_RUNTIME_PORT,
) -> list[tuple[str, str]]:
    """A site's two commands, as ``(what, shell line)``: its SuperNode and the SuperExec
    that runs its ClientApps, both with the site's SuperExec secret, working in
    ``data_dir`` with Flower's home in ``data_dir/flwr-home``. The SuperExec's line also
    sets the training processes' memory settings (:mod:`fedrag_flower.allocator`: mimalloc
    where installed, as in the site image), which its ClientApps inherit."""
    creds, home = credentials, Path(data_dir) / "flwr-home"
    supernode = supernode_args(
        superlink=superlink,
        root_cert=root_cert,
        node_key=str(creds.node_key),
        node_config=node_config,
        runtime_cert=str(creds.runtime_cert),
        runtime_key=str(creds.runtime_key),
        runtime_ca=str(creds.runtime_ca),
        superexec_secret=str(creds.superexec_secret),
        runtime_port=runtime_port,
    )
    superexec = superexec_args(
        runtime_address=f"127.0.0.1:{runtime_port}",
        root_cert=str(creds.runtime_ca),
        superexec_secret=str(creds.superexec_secret),
    )
    return [
        (
            "The SuperNode: connects to the federation (keep it running)",
            shell_command(
                SUPERNODE_PROGRAM, supernode, bin_dir=bin_dir, flwr_home=home, cwd=data_dir
            ),
        ),
        (
            "Its SuperExec: runs the ClientApps on this site's data (keep it running)",
            shell_command(
                SUPEREXEC_PROGRAM,
                superexec,
                bin_dir=bin_dir,
                flwr_home=home,
                cwd=data_dir,
                env=RUNTIME_ENV | training_environment(),
            ),
        ),
    ]


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoordinatorCredentials:
    """Files the coordinator's SuperLink and ServerApp SuperExec use (see
    :func:`generate_coordinator_credentials`)."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        """CA certificate: give it to every site and to the ``flwr`` CLI."""
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """CA private key: keep it offline; it is needed only to issue certificates."""
        return self.folder / "ca.key"

    @property
    def superlink_cert(self) -> Path:
        return self.folder / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.folder / "superlink.key"

    @property
    def superexec_secret(self) -> Path:
        """Shared secret of the SuperLink and the ServerApp SuperExec."""
        return self.folder / "superexec.secret"


@dataclass(frozen=True)
class SiteCredentials:
    """Files one site's SuperNode and ClientApp SuperExec use (see
    :func:`generate_site_credentials`). Only ``node_public_key`` leaves the site."""

    folder: Path

    @property
    def node_key(self) -> Path:
        """Private key for ``--auth-supernode-private-key``; never leaves the site."""
        return self.folder / "node.key"

    @property
    def node_public_key(self) -> Path:
        """Public key the coordinator registers with ``flwr supernode register``."""
        return self.folder / "node.key.pub"

    @property
    def runtime_ca(self) -> Path:
        return self.folder / "runtime-ca.crt"

    @property
    def runtime_cert(self) -> Path:
        return self.folder / "runtime.crt"

    @property
    def runtime_key(self) -> Path:
        return self.folder / "runtime.key"

    @property
    def superexec_secret(self) -> Path:
        """Shared secret of the site's SuperNode and its ClientApp SuperExec: a process
        without it cannot take this site's tasks from the SuperNode's Runtime API."""
        return self.folder / "superexec.secret"


def generate_coordinator_credentials(
    folder: str | os.PathLike,
    names: Sequence[str] = SUPERLINK_NAMES,
    *,
    force: bool = False,
    days: int = 365,
) -> CoordinatorCredentials:
    """Write a CA, a SuperLink certificate valid for ``names`` (DNS names or IP
    addresses: add the public name sites will dial), and a SuperExec secret into
    ``folder``. Refuses to overwrite existing files unless ``force``."""
    creds = CoordinatorCredentials(Path(folder))
    files = [creds.ca_cert, creds.ca_key, creds.superlink_cert, creds.superlink_key,
             creds.superexec_secret]  # fmt: skip
    _refuse_overwrite(files, force)
    creds.folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _new_ca("fedrag-flower deployment CA", days)
    key, cert = _new_server_cert(names[0], names, ca_key, ca_cert, days)
    _write(creds.ca_key, _private_pem(ca_key), private=True)
    _write(creds.ca_cert, _cert_pem(ca_cert))
    _write(creds.superlink_key, _private_pem(key), private=True)
    _write(creds.superlink_cert, _cert_pem(cert))
    _write(creds.superexec_secret, secrets.token_hex(32).encode(), private=True)
    return creds


def generate_site_credentials(
    folder: str | os.PathLike, name: str, *, force: bool = False, days: int = 365
) -> SiteCredentials:
    """Write one site's node key pair (ECDSA P-384, OpenSSH format, comment ``name``),
    a TLS certificate for its loopback Runtime API, signed by a throwaway CA whose key is
    not kept, and its SuperExec secret into ``folder``. Refuses to overwrite existing
    files unless ``force``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    creds = SiteCredentials(Path(folder))
    files = [creds.node_key, creds.node_public_key, creds.runtime_ca, creds.runtime_cert,
             creds.runtime_key, creds.superexec_secret]  # fmt: skip
    _refuse_overwrite(files, force)
    creds.folder.mkdir(parents=True, exist_ok=True)

    node_key = ec.generate_private_key(ec.SECP384R1())
    private = node_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = node_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write(creds.node_key, private, private=True)
    _write(creds.node_public_key, public + f" {name}\n".encode())

    ca_key, ca_cert = _new_ca(f"{name} runtime CA", days)
    key, cert = _new_server_cert(f"{name} runtime", RUNTIME_NAMES, ca_key, ca_cert, days)
    _write(creds.runtime_ca, _cert_pem(ca_cert))
    _write(creds.runtime_cert, _cert_pem(cert))
    _write(creds.runtime_key, _private_pem(key), private=True)
    add_site_superexec_secret(creds)
    return creds


def add_site_superexec_secret(creds: SiteCredentials) -> bool:
    """Write the site's SuperExec secret if it has none (credentials made before the
    secret existed); returns whether it wrote one."""
    if creds.superexec_secret.exists():
        return False
    _write(creds.superexec_secret, secrets.token_hex(32).encode(), private=True)
    return True


def _refuse_overwrite(files: Sequence[Path], force: bool) -> None:
    existing = [str(f) for f in files if f.exists()]
    if existing and not force:
        raise FileExistsError(
            "refusing to overwrite existing credentials: "
            + ", ".join(existing)
            + ". Keep them, or pass --force to replace them (registered node keys and "
            "distributed CA certificates then stop working)."
        )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _new_ca(common_name: str, days: int):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def _new_server_cert(common_name: str, names: Sequence[str], ca_key, ca_cert, days: int):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def _private_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)
