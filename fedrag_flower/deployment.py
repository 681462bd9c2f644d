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
(``tests/deployment_topology.py``) and the hospital command ``fedrag-flower site
supernode-command`` all use it, and ``tests/test_deployment.py`` checks that the compose
file's commands equal what these functions return, so the three cannot drift apart.

It also generates the credentials: a certificate authority, the SuperLink's TLS
certificate, a shared secret for the ServerApp SuperExec, and per site an ECDSA P-384 key
pair in OpenSSH format (what ``flwr supernode register`` and ``flower-supernode
--auth-supernode-private-key`` accept) plus a TLS certificate for the site's loopback
Runtime API, so that no process in the deployment runs with ``--insecure``.

It does not import ``flwr``; ``cryptography`` (a dependency of ``flwr``) is imported only
by the functions that generate credentials.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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

# Keys of a SuperNode's node config that the ClientApp reads in deployment mode.
NODE_CONFIG_KEYS = ("corpus-path", "train-path", "test-path", "data-dir")


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
    runtime_port: int = SUPERNODE_RUNTIME_PORT,
    max_retries: int | None = None,
) -> list[str]:
    """Arguments of ``flower-supernode`` for one site.

    ``superlink`` is the SuperLink's Fleet address (``host:port``), ``root_cert`` the CA
    that signed its certificate, ``node_key`` the site's private key (its public half
    registered by the coordinator). ClientApps run in a separate SuperExec (``--isolation
    process``) that reaches this node's Runtime API on 127.0.0.1:``runtime_port`` over
    TLS (``runtime_*``). ``max_retries`` bounds reconnection attempts (default: forever).
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
    if max_retries is not None:
        args += ["--max-retries", str(max_retries)]
    return args


def site_node_config(
    *, corpus: str, train: str, data_dir: str, test: str | None = None
) -> dict[str, str]:
    """The node config of a site in deployment mode: its corpus and QA files, and a
    writable folder for its index (``corpus-path``, ``train-path``, ``test-path``,
    ``data-dir``)."""
    config = {"corpus-path": corpus, "train-path": train}
    if test is not None:
        config["test-path"] = test
    config["data-dir"] = data_dir
    return config


def format_node_config(config: Mapping[str, str | int | float | bool]) -> str:
    """``--node-config`` text for ``config``: space-separated ``key=value`` pairs with
    TOML values; strings become TOML literal strings (single quotes) so that Windows
    paths keep their backslashes."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            value = str(value)
            if "'" in value or "\n" in value:
                raise ValueError(
                    f"node config {key}={value!r}: a value may not contain a single quote "
                    "or a newline; rename the file or folder."
                )
            text = f"'{value}'"
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
    """Write one site's node key pair (ECDSA P-384, OpenSSH format, comment ``name``)
    and a TLS certificate for its loopback Runtime API, signed by a throwaway CA whose key
    is not kept, into ``folder``. Refuses to overwrite existing files unless ``force``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    creds = SiteCredentials(Path(folder))
    files = [creds.node_key, creds.node_public_key, creds.runtime_ca, creds.runtime_cert,
             creds.runtime_key]  # fmt: skip
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
    return creds


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
