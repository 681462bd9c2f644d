"""The multi-node deployment: docker-compose.yml, credentials, and the same topology run
as processes on loopback (SuperLink with TLS and SuperNode authentication, a ServerApp
SuperExec, two SuperNodes in process isolation with their ClientApp SuperExecs)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from fedrag_flower import deployment as dep
from fedrag_flower.allocator import ENVIRONMENT, ONEDNN_ENVIRONMENT, mimalloc_library
from fedrag_flower.loopback import (
    COMPOSE_SITES,
    LoopbackDeployment,
    SiteSpec,
    compose_commands,
    compose_secret,
    free_port,
    tail,
    wait_for_port,
)
from fedrag_flower.processes import stop_process_tree

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TINY_APP = Path(__file__).parent / "fixtures" / "tiny_app"
TINY_SITES = [SiteSpec("hospital-a", {"site-name": "hospital-a"}),
              SiteSpec("hospital-b", {"site-name": "hospital-b"})]  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


# --------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------


# Services of docker-compose.yml that are not Flower processes built by
# fedrag_flower/deployment.py. Any other service must run a builder's command.
OTHER_COMPOSE_SERVICES = {
    "superlink-state-init",  # chowns the SuperLink's state volume, then exits
    # each hospital's optional vector store (profile qdrant); not a Flower process
    *(f"qdrant-{site}" for site in COMPOSE_SITES),
}


def test_compose_commands_equal_the_loopback_topology_commands(compose):
    expected = compose_commands()
    services = compose["services"]
    assert set(expected) <= set(services)
    for name, args in expected.items():
        assert services[name]["command"] == args, f"service {name}"
    unexplained = set(services) - set(expected) - OTHER_COMPOSE_SERVICES
    assert not unexplained, f"services neither built by deployment.py nor listed: {unexplained}"


def test_compose_sites_have_a_name_and_a_superexec_secret(compose):
    from flwr.common.config import parse_config_args

    for site in COMPOSE_SITES:
        supernode = compose["services"][f"supernode-{site}"]["command"]
        superexec = compose["services"][f"superexec-{site}"]["command"]
        config = parse_config_args([supernode[supernode.index("--node-config") + 1]])
        assert config["site-name"] == site
        secret = compose_secret(f"{site}-superexec-secret")
        for command in (supernode, superexec):
            assert command[command.index("--superexec-auth-secret-file") + 1] == secret


def test_compose_services_use_the_pinned_images_and_the_app_image(compose):
    services = compose["services"]
    assert services["superlink"]["image"] == "flwr/superlink:1.42.0"
    app_services = ["superexec-serverapp", *(f"superexec-{s}" for s in COMPOSE_SITES)]
    for site in COMPOSE_SITES:
        assert services[f"supernode-{site}"]["image"] == "flwr/supernode:1.42.0"
    for name in app_services:
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services[name]["image"] == services["superexec-serverapp"]["image"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "FROM flwr/superexec:1.42.0" in dockerfile
    assert "RUN fedrag-flower prepare" in dockerfile


def test_the_app_image_preloads_the_mimalloc_that_setup_installs():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    pin = re.search(r"cmeel-mimalloc==[\d.]+", setup).group()
    assert pin in dockerfile  # the same build as the simulation's
    link = re.search(r'ln -s "\$lib" (\S+)', dockerfile).group(1)
    assert re.search(rf"ENV LD_PRELOAD={re.escape(link)}\b", dockerfile)
    for name, value in (ENVIRONMENT | ONEDNN_ENVIRONMENT).items():  # as the simulation's
        assert f"{name}={value}" in dockerfile


def test_compose_file_is_a_valid_compose_structure(compose):
    assert set(compose) <= {"name", "services", "networks", "volumes", "secrets", "configs"} | {
        key for key in compose if key.startswith("x-")
    }
    networks, volumes, secrets = compose["networks"], compose["volumes"], compose["secrets"]
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
        assert isinstance(service.get("command", []), list), name
        assert all(isinstance(arg, str) for arg in service.get("command", [])), name
        for network in service.get("networks", []):
            assert network in networks, f"{name}: unknown network {network}"
        mode = service.get("network_mode")
        if mode and mode.startswith("service:"):
            assert mode.removeprefix("service:") in compose["services"], name
        for source in _mounts(service).values():
            if not source.startswith(("$", ".", "/")):
                assert source in volumes, f"{name}: unknown volume {source}"
        for secret in service.get("secrets", []):
            assert secret in secrets, f"{name}: unknown secret {secret}"
            assert compose_secret(secret).startswith("/run/secrets/")
        for dependency in service.get("depends_on", []):
            assert dependency in compose["services"], f"{name}: depends on {dependency}"
    for secret in secrets.values():
        assert set(secret) == {"file"}


def test_compose_deployment_is_secure_by_default(compose):
    text = COMPOSE_FILE.read_text()
    commands = [" ".join(s.get("command", [])) for s in compose["services"].values()]
    assert all("--insecure" not in c for c in commands)
    assert "--insecure" not in "\n".join(
        line.split("#")[0] for line in text.splitlines()
    )  # not even outside commands
    superlink = compose["services"]["superlink"]
    assert "--enable-supernode-auth" in superlink["command"]
    assert "--disable-runtime-dependency-installation" in superlink["command"]
    assert superlink["volumes"] == ["superlink-state:/app/state"]
    # The SuperLink port (Control API included) is published on the host's loopback only.
    assert all(p.startswith("127.0.0.1:") for p in superlink.get("ports", []))
    for name, service in compose["services"].items():
        if name.startswith(("superlink", "supernode", "superexec")) and "init" not in name:
            env = service["environment"]
            assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1", name
            assert "--allow-runtime-dependency-installation" not in service["command"], name
    assert compose["networks"]["coordinator"]["internal"] is True


def test_compose_gives_each_hospital_its_own_data_volume_and_index(compose):
    seen = set()
    for site in COMPOSE_SITES:
        superexec = compose["services"][f"superexec-{site}"]
        assert superexec["network_mode"] == f"service:supernode-{site}"
        mounts = _mounts(superexec)
        assert mounts["/app/index"] == f"{site}-index"
        assert site.replace("-", "_").upper() in mounts["/data"]  # ${HOSPITAL_A_DATA:-...}
        seen.add(mounts["/data"])
        # Only this hospital's secrets reach its containers.
        for name in (f"supernode-{site}", f"superexec-{site}"):
            for secret in compose["services"][name]["secrets"]:
                assert secret == "ca-cert" or secret.startswith(site), (name, secret)
    assert len(seen) == len(COMPOSE_SITES)


def _active_services(compose: dict, profiles: set[str]) -> dict[str, dict]:
    """The services ``docker compose --profile ...`` starts: those without profiles, and
    those with one of ``profiles``."""
    return {
        name: service
        for name, service in compose["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & profiles
    }


@pytest.mark.parametrize("profiles", [set(), {"qdrant"}], ids=["default", "profile-qdrant"])
def test_compose_model_is_whole_with_and_without_the_qdrant_profile(compose, profiles):
    """Compose refuses a model in which an active service needs one that is off: every
    dependency of an active service is active or not required, every shared namespace
    active."""
    active = _active_services(compose, profiles)
    assert {f"qdrant-{s}" in active for s in COMPOSE_SITES} == {bool(profiles)}
    for name, service in active.items():
        depends = service.get("depends_on", {})
        for dependency in depends:
            spec = depends[dependency] if isinstance(depends, dict) else {}
            assert dependency in active or spec.get("required") is False, (name, dependency)
        mode = service.get("network_mode", "")
        assert not mode.startswith("service:") or mode.removeprefix("service:") in active


def test_compose_qdrant_profile_gives_each_hospital_its_own_store_server(compose):
    from flwr.common.config import parse_config_args

    services, volumes, networks = compose["services"], compose["volumes"], compose["networks"]
    for site in COMPOSE_SITES:
        qdrant = services[f"qdrant-{site}"]
        assert qdrant["image"] == dep.QDRANT_IMAGE and qdrant["profiles"] == ["qdrant"]
        assert qdrant["environment"] == dep.QDRANT_ENV  # no telemetry leaves the hospital
        assert _mounts(qdrant) == {dep.QDRANT_STORAGE: f"{site}-qdrant"}
        assert f"{site}-qdrant" in volumes
        assert "ports" not in qdrant  # nothing published on the host
        # On the hospital's own internal network, which only its SuperNode's namespace
        # (shared by its SuperExec and ClientApps) also joins.
        assert qdrant["networks"] == [site] and networks[site]["internal"] is True
        members = {n for n, s in services.items() if site in s.get("networks", [])}
        assert members == {f"qdrant-{site}", f"supernode-{site}"}
        assert services[f"superexec-{site}"]["network_mode"] == f"service:supernode-{site}"
        # The hospital's ClientApps are told its URL: the service's name on that network.
        supernode = services[f"supernode-{site}"]["command"]
        config = parse_config_args([supernode[supernode.index("--node-config") + 1]])
        assert config["store-url"] == dep.qdrant_url(f"qdrant-{site}")
        assert config["store-url"] == f"http://qdrant-{site}:{dep.QDRANT_HTTP_PORT}"
        # Started before the ClientApps' SuperExec when on, not needed when off.
        depends = services[f"superexec-{site}"]["depends_on"]
        assert depends[f"qdrant-{site}"]["required"] is False


# --------------------------------------------------------------------------------------
# Credentials and command lines (no processes)
# --------------------------------------------------------------------------------------


def test_credentials_are_generated_once_and_not_overwritten_without_force(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    coordinator = dep.generate_coordinator_credentials(tmp_path)
    cert = x509.load_pem_x509_certificate(coordinator.superlink_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.DNSName)} | {
        str(v) for v in sans.get_values_for_type(x509.IPAddress)
    }
    assert names == {"superlink", "localhost", "127.0.0.1"}
    site = dep.generate_site_credentials(tmp_path / "hospital-a", "hospital-a")
    public = load_ssh_public_key(site.node_public_key.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
    assert site.node_public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert oct(site.node_key.stat().st_mode & 0o777) == "0o600"

    before = site.node_key.read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        dep.generate_site_credentials(site.folder, "hospital-a")
    with pytest.raises(FileExistsError):
        dep.generate_coordinator_credentials(tmp_path)
    assert site.node_key.read_bytes() == before
    dep.generate_site_credentials(site.folder, "hospital-a", force=True)
    assert site.node_key.read_bytes() != before


def test_generate_credentials_script_is_idempotent(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "generate_credentials", ROOT / "deploy" / "generate_credentials.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path), "--site", "hospital-a"]) == 0
    key = (tmp_path / "hospital-a" / "node.key").read_bytes()
    ca = (tmp_path / "ca.crt").read_bytes()
    assert script.main([str(tmp_path), "--site", "hospital-a", "--site", "hospital-b"]) == 0
    assert (tmp_path / "hospital-a" / "node.key").read_bytes() == key
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert (tmp_path / "hospital-b" / "node.key.pub").exists()


def test_node_config_is_parsed_back_by_flower():
    from flwr.common.config import parse_config_args

    config = dep.site_node_config(
        corpus="/data/my corpus.jsonl",
        train="C:\\data\\train.jsonl",
        data_dir="/idx",
        name="st-mary's hospital",
        threads=3,
        store_url=dep.qdrant_url("127.0.0.1"),
    )
    parsed = parse_config_args([dep.format_node_config(config)])
    assert parsed == config and parsed["store-url"] == "http://127.0.0.1:6333"
    assert set(parsed) == set(dep.NODE_CONFIG_KEYS) - {"test-path"}
    assert parsed["train-path"] == "C:\\data\\train.jsonl" and parsed["threads"] == 3
    with pytest.raises(ValueError, match="double quote"):
        dep.format_node_config({"corpus-path": '/data/a"b.jsonl'})
    with pytest.raises(ValueError, match="at least 1"):
        dep.site_node_config(corpus="c", train="t", data_dir="d", threads=0)


def test_site_threads_share_the_cpus_between_the_sites_of_a_host():
    cpus = dep.site_threads(1)
    assert cpus >= 1
    assert dep.site_threads(2) == max(1, cpus // 2)
    assert dep.site_threads(10_000) == 1


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from fedrag_flower.cli import build_parser

    args = build_parser().parse_args(argv)
    status = args.func(args)
    return status, capsys.readouterr().out


def _commands(printed: str) -> list[str]:
    """The command lines of printed output (comment lines start with #)."""
    return [line for line in printed.splitlines() if line and not line.startswith("#")]


def test_supernode_command_prints_the_topology_commands(tmp_path, capsys):
    status, out = _cli(["node-key", "--out", str(tmp_path / "node"), "--name", "st-mary"], capsys)
    assert status == 0 and "flwr supernode register node.key.pub" in out
    creds = dep.SiteCredentials(tmp_path / "node")
    assert creds.superexec_secret.stat().st_size == 64  # 32 random bytes, hex

    port = free_port()
    status, out = _cli([
        "supernode-command", "--superlink", "fl.example.org:9191",
        "--root-cert", str(tmp_path / "ca.crt"), "--key", str(creds.node_key),
        "--corpus", str(tmp_path / "c.jsonl"), "--train", str(tmp_path / "t.jsonl"),
        "--data-dir", str(tmp_path / "index"), "--runtime-port", str(port),
        "--sites-on-host", "2", "--store-url", "http://127.0.0.1:6333",
    ], capsys)  # fmt: skip
    assert status == 0, out
    node_config = dep.site_node_config(
        corpus=str(tmp_path / "c.jsonl"),
        train=str(tmp_path / "t.jsonl"),
        data_dir=str(tmp_path / "index"),
        name="st-mary",  # from the public key node-key wrote
        threads=dep.site_threads(2),
        store_url="http://127.0.0.1:6333",
    )
    expected = dep.site_commands(
        superlink="fl.example.org:9191",
        root_cert=str(tmp_path / "ca.crt"),
        credentials=creds,
        node_config=node_config,
        data_dir=tmp_path / "index",
        bin_dir=dep.environment_bin_dir(),
        runtime_port=port,
    )
    assert _commands(out) == [line for _, line in expected]
    supernode, superexec = _commands(out)
    bin_dir = str(dep.environment_bin_dir())
    # Runnable from a fresh shell: absolute program, its bin first on PATH, FLWR_HOME set.
    assert f"{bin_dir}/flower-supernode " in supernode
    assert f"PATH={bin_dir}:" in superexec and f"{bin_dir}/flower-superexec " in superexec
    assert f"FLWR_HOME={tmp_path / 'index' / 'flwr-home'}" in supernode
    assert supernode.count("--superexec-auth-secret-file") == 1
    assert superexec.count("--superexec-auth-secret-file") == 1
    # Its ClientApps train under the same memory settings as the site image's
    assert f"LD_PRELOAD={mimalloc_library()}" in superexec
    assert "MIMALLOC_PURGE_DELAY=10000" in superexec
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY=64" in superexec


def test_supernode_command_refuses_a_runtime_port_already_in_use(tmp_path, capsys):
    import socket

    _cli(["node-key", "--out", str(tmp_path / "node")], capsys)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        status, out = _cli([
            "supernode-command", "--superlink", "x:9191", "--root-cert", "ca.crt",
            "--key", str(tmp_path / "node" / "node.key"), "--corpus", "c", "--train", "t",
            "--data-dir", str(tmp_path / "i"), "--runtime-port", str(busy.getsockname()[1]),
        ], capsys)  # fmt: skip
    assert status == 1 and "own --runtime-port" in out


def test_coordinator_command_prints_loopback_commands_from_the_same_builders(tmp_path, capsys):
    status, _ = _cli(["coordinator-credentials", "--out", str(tmp_path / "creds")], capsys)
    assert status == 0
    _cli(["node-key", "--out", str(tmp_path / "a"), "--name", "hospital-a"], capsys)
    status, out = _cli([
        "coordinator-command", "--credentials", str(tmp_path / "creds"),
        "--workdir", str(tmp_path / "coord"), "--app", str(ROOT),
        "--site", f"hospital-a={tmp_path / 'a' / 'node.key.pub'}",
    ], capsys)  # fmt: skip
    assert status == 0, out
    superlink, superexec, register, listing, run = _commands(out)
    creds = dep.CoordinatorCredentials(tmp_path / "creds")
    layout = dep.CoordinatorLayout(tmp_path / "coord")
    expected_superlink = dep.superlink_args(
        host="127.0.0.1",  # loopback unless --host says otherwise
        port=dep.SUPERLINK_PORT,
        ca_cert=str(creds.ca_cert),
        cert=str(creds.superlink_cert),
        key=str(creds.superlink_key),
        database=str(layout.database),
        superexec_secret=str(creds.superexec_secret),
    )
    assert superlink.endswith(dep.command_line("flower-superlink", expected_superlink))
    assert superexec.endswith(
        dep.command_line(
            "flower-superexec",
            dep.superexec_args(
                runtime_address=f"127.0.0.1:{dep.SUPERLINK_PORT}",
                root_cert=str(creds.ca_cert),
                superexec_secret=str(creds.superexec_secret),
            ),
        )
    )
    for line in (superlink, superexec, register, listing, run):
        assert line.startswith(f"cd {layout.workdir} && FLWR_HOME={layout.flwr_home} ")
    assert "supernode register" in register and "--name hospital-a" in register
    assert f'output-dir="{layout.outputs}"' in run and str(ROOT) in run
    toml = (layout.flwr_home / "config.toml").read_text()
    assert f'address = "127.0.0.1:{dep.SUPERLINK_PORT}"' in toml

    _, out = _cli([
        "coordinator-command", "--credentials", str(tmp_path / "creds"),
        "--workdir", str(tmp_path / "coord"), "--app", str(ROOT), "--host", "0.0.0.0",
    ], capsys)  # fmt: skip
    assert "--host 0.0.0.0" in _commands(out)[0]


def test_deployment_module_does_not_import_flwr():
    source = (ROOT / "fedrag_flower" / "deployment.py").read_text()
    assert "import flwr" not in source and "from flwr" not in source


# --------------------------------------------------------------------------------------
# The topology on loopback
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_deployment(tmp_path_factory):
    """The topology with two registered hospitals, shared by the process tests."""
    with LoopbackDeployment(tmp_path_factory.mktemp("deployment"), TINY_SITES) as deployment:
        deployment.start()
        yield deployment


def _run_supernode_to_exit(deployment, name, args, timeout=60):
    proc = deployment.spawn(name, dep.SUPERNODE_PROGRAM, args)
    try:
        returncode = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        deployment.processes = [p for p in deployment.processes if p.popen is not proc]
    return returncode, tail(deployment.log_dir / f"{name}.log")


def test_supernode_with_unregistered_key_is_refused(tiny_deployment):
    stranger = SiteSpec("stranger")
    dep.generate_site_credentials(tiny_deployment.credentials / "stranger", "stranger")
    online_before = len(tiny_deployment.online_nodes())
    args = tiny_deployment.supernode_args(stranger, runtime_port=free_port(), max_retries=1)
    returncode, log = _run_supernode_to_exit(tiny_deployment, "supernode-stranger", args)
    assert returncode != 0
    assert "Failed to activate SuperNode" in log
    assert len(tiny_deployment.online_nodes()) == online_before


def test_supernode_without_tls_is_refused(tiny_deployment):
    site = TINY_SITES[0]
    args = tiny_deployment.supernode_args(site, runtime_port=free_port(), max_retries=1)
    # Plain HTTP instead of TLS, no node key: the SuperLink's port only speaks TLS.
    args = _without_option(args, "--root-certificates")
    args = _without_option(args, "--auth-supernode-private-key") + ["--insecure"]
    returncode, log = _run_supernode_to_exit(tiny_deployment, "supernode-plaintext", args)
    assert returncode != 0
    assert "could not establish a connection" in log
    # With its registered key but without TLS, the SuperNode itself refuses to connect.
    args = _without_option(tiny_deployment.supernode_args(site, free_port(), max_retries=1),
                           "--root-certificates") + ["--insecure"]  # fmt: skip
    returncode, log = _run_supernode_to_exit(tiny_deployment, "supernode-plaintext-key", args)
    assert returncode != 0
    assert "requires a secure TLS connection" in log


def test_superexec_without_the_site_secret_cannot_take_its_task(tmp_path):
    """Site A's only SuperExec lacks A's secret: A's SuperNode refuses it, A's task stays
    untaken and the run cannot finish; A's own SuperExec (with the secret) then takes it."""
    site_a = TINY_SITES[0]
    with LoopbackDeployment(tmp_path / "deployment", TINY_SITES) as deployment:
        deployment.start()
        # Stop A's SuperExec: from now on only a SuperExec without the secret serves A.
        own = next(p for p in deployment.processes if p.name == f"superexec-{site_a.name}")
        stop_process_tree(own.popen.pid)
        deployment.processes.remove(own)
        port = deployment.runtime_ports[site_a.name]
        args = deployment.clientapp_superexec_args(site_a, port, superexec_secret=False)
        assert "--superexec-auth-secret-file" not in args
        stranger = deployment.spawn("superexec-no-secret", dep.SUPEREXEC_PROGRAM, args)
        run_id = deployment.submit(TINY_APP, run_config="num-server-rounds=1")
        time.sleep(8)  # the SuperNodes poll every 3 s: B has long answered by now
        assert deployment.run_status(run_id) == "running"
        assert stranger.wait(timeout=30) is not None  # refused, it gives up
        refused = tail(deployment.log_dir / f"supernode-{site_a.name}.log", 200)
        assert "SuperExec authentication failed" in refused
        assert "ClientApp" not in tail(deployment.log_dir / "superexec-no-secret.log", 200)
        deployment.processes = [p for p in deployment.processes if p.popen is not stranger]
        # A's own SuperExec, with the secret, takes the waiting task and the run finishes.
        deployment.spawn(
            f"superexec-{site_a.name}",
            dep.SUPEREXEC_PROGRAM,
            deployment.clientapp_superexec_args(site_a, port),
        )
        assert deployment.wait_for_run(run_id, timeout=120) == "finished:completed"


# --------------------------------------------------------------------------------------
# A full run: the tiny app (seconds) and the real project app (slow: it loads the
# packaged models in every ClientApp process)
# --------------------------------------------------------------------------------------


def write_hospital_data(folder: Path, sites: list[str], qa_rows: int = 40) -> dict:
    """Per-site corpus / train / test files from the packaged Zaragoza FAQ, split by
    category (non-IID); returns each site's node config."""
    spec = importlib.util.find_spec("zaragoza_construction_faq")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("zaragoza-construction-faq is not installed")
    faq = Path(next(iter(spec.submodule_search_locations))) / "data" / "faq-en.jsonl"
    rows = [json.loads(line) for line in faq.read_text().splitlines() if line.strip()]
    by_category = defaultdict(list)
    for row in rows:
        by_category[row["category"]].append(row)
    assignment = defaultdict(list)
    for i, category in enumerate(sorted(by_category)):
        assignment[sites[i % len(sites)]] += by_category[category]
    configs = {}
    for site in sites:
        site_rows = assignment[site][:qa_rows]
        n_test = max(1, qa_rows // 5)
        qa = [{"query": r["q"], "response": r["a"], "gold_ids": [str(r["id"])]}
              for r in site_rows]  # fmt: skip
        site_dir = folder / site
        site_dir.mkdir(parents=True)
        _write_jsonl(site_dir / "corpus.jsonl",
                     [{"id": str(r["id"]), "text": r["a"]} for r in assignment[site]])  # fmt: skip
        _write_jsonl(site_dir / "train.jsonl", qa[:-n_test])
        _write_jsonl(site_dir / "test.jsonl", qa[-n_test:])
        configs[site] = dep.site_node_config(
            corpus=str(site_dir / "corpus.jsonl"),
            train=str(site_dir / "train.jsonl"),
            test=str(site_dir / "test.jsonl"),
            data_dir=str(site_dir / "index"),
            name=site,
        )
    return configs


@pytest.mark.parametrize("app", ["tiny", pytest.param("project", marks=pytest.mark.slow)])
def test_app_completes_two_rounds_in_the_loopback_deployment(app, tmp_path):
    result_path = tmp_path / "result.json"
    outputs = tmp_path / "outputs"
    if app == "tiny":
        sites, app_dir = TINY_SITES, TINY_APP
        run_config = f"num-server-rounds=2 result-path='{result_path}'"
    else:
        configs = write_hospital_data(tmp_path / "data", list(COMPOSE_SITES))
        sites = [SiteSpec(name, config) for name, config in configs.items()]
        app_dir = ROOT
        run_config = (
            # Training only: this checks the deployment, not the model (evaluation is
            # covered by the simulation tests).
            "num-server-rounds=2 local-steps=1 pairs-per-round=4 fraction-evaluate=0.0 "
            f"output-dir='{outputs}'"
        )
    with LoopbackDeployment(tmp_path / "deployment", sites) as deployment:
        deployment.start()
        result = deployment.run_app(app_dir, run_config=run_config, timeout=1800)
        assert result.status == "finished:completed", result.logs + str(deployment)
    print(f"\n{app}: 2 rounds in {result.wall_seconds:.1f}s; {result.details['compute-time']}")

    if app == "tiny":
        result_json = json.loads(result_path.read_text())
        assert result_json["final"] == [2.0, 2.0, 2.0]  # two rounds of +1
        # Each site's ClientApps got that site's node config: the mean of a checksum of it.
        crc = sum(zlib.crc32(s.name.encode()) for s in TINY_SITES) / len(TINY_SITES)
        assert result_json["train_metrics"]["2"]["site-crc"] == pytest.approx(crc)
    else:
        _assert_saved_run(outputs, rounds=2, sites=COMPOSE_SITES)


def _assert_saved_run(outputs: Path, rounds: int, sites) -> None:
    """One run folder in ``outputs`` with the final system and metrics.json of ``rounds``
    rounds, in which each round's train replies name every site beside its node id."""
    runs = sorted(outputs.glob("run-*"))
    assert len(runs) == 1, f"expected one run folder in {outputs}: {runs}"
    final = runs[0] / "final"
    assert (final / "rag_system.json").exists() and (final / "generator_adapter").is_dir()
    history = json.loads((runs[0] / "metrics.json").read_text())["history"]
    assert [entry["round"] for entry in history] == list(range(1, rounds + 1))
    for entry in history:
        assert sorted(r["site"] for r in entry["site_train"]) == sorted(sites)
        assert all(isinstance(r["node"], int) for r in entry["site_train"])


# --------------------------------------------------------------------------------------
# The guide's path without Docker: only the commands `fedrag-flower` prints, each run as
# printed by a shell whose PATH lacks the project's executables
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("app", ["tiny", pytest.param("project", marks=pytest.mark.slow)])
def test_printed_commands_bring_up_a_federation_from_a_fresh_shell(app, tmp_path):
    bin_dir = Path(sys.executable).parent
    fedrag = str(bin_dir / "fedrag-flower")
    home = tmp_path / "home"
    home.mkdir()
    from fedrag_flower.models import cache_dir

    # A fresh shell: the system PATH only, no activated environment, no FLWR_HOME, an
    # empty home (Flower must not write into ~/.flwr); the converted models are shared.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PATH", "VIRTUAL_ENV", "FLWR_HOME", "PYTHONHOME")}  # fmt: skip
    env |= {"PATH": "/usr/bin:/bin", "HOME": str(home), "FEDRAG_CACHE_DIR": str(cache_dir())}
    assert shutil.which("flower-superexec", path=env["PATH"]) is None
    assert shutil.which("flwr-serverapp", path=env["PATH"]) is None
    steps: dict[str, float] = {}

    def cli(*args: str) -> str:
        start = time.monotonic()
        proc = subprocess.run([fedrag, *args], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        steps[args[0]] = steps.get(args[0], 0.0) + time.monotonic() - start
        return proc.stdout

    def shell(line: str, timeout: float) -> str:
        proc = subprocess.run(["/bin/bash", "-c", line], env=env, capture_output=True,
                              text=True, cwd=tmp_path, timeout=timeout)  # fmt: skip
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    sites = list(COMPOSE_SITES)
    if app == "tiny":
        app_dir, run_config = TINY_APP, "num-server-rounds=1"
        data = {name: dep.site_node_config(corpus="c.jsonl", train="t.jsonl", test=None,
                                           data_dir="unused") for name in sites}  # fmt: skip
    else:
        app_dir = ROOT
        data = write_hospital_data(tmp_path / "data", sites)
        # Tiny budget: one step on two pairs per site, no evaluation.
        run_config = "num-server-rounds=1 local-steps=1 pairs-per-round=2 fraction-evaluate=0.0"

    coordinator = tmp_path / "coordinator"
    cli("coordinator-credentials", "--out", str(coordinator / "credentials"))
    for name in sites:
        cli("node-key", "--out", str(tmp_path / name / "node"), "--name", name)
    superlink_port = free_port()
    printed = _commands(cli(
        "coordinator-command", "--credentials", str(coordinator / "credentials"),
        "--workdir", str(coordinator), "--app", str(app_dir), "--port", str(superlink_port),
        *(f"--site={n}={tmp_path / n / 'node' / 'node.key.pub'}" for n in sites),
        "--run-config", run_config,
    ))  # fmt: skip
    superlink, superexec, *registers, listing, run = printed
    assert len(registers) == len(sites)

    with LoopbackDeployment(tmp_path / "processes", []) as deployment:
        start = time.monotonic()
        deployment.spawn("superlink", "/bin/bash", ["-c", superlink], env=env)
        wait_for_port(superlink_port, 60, deployment.processes[-1])
        deployment.spawn("superexec-serverapp", "/bin/bash", ["-c", superexec], env=env)
        steps["coordinator up"] = time.monotonic() - start
        start = time.monotonic()
        for line in registers:
            shell(line, timeout=60)
        steps["register sites"] = time.monotonic() - start
        start = time.monotonic()
        for name in sites:
            port = free_port()
            files = data[name]
            site_lines = _commands(cli(
                "supernode-command", "--superlink", f"127.0.0.1:{superlink_port}",
                "--root-cert", str(coordinator / "credentials" / "ca.crt"),
                "--key", str(tmp_path / name / "node" / "node.key"),
                "--corpus", files["corpus-path"], "--train", files["train-path"],
                *(["--test", files["test-path"]] if "test-path" in files else []),
                "--data-dir", str(tmp_path / name / "index"), "--runtime-port", str(port),
                "--sites-on-host", str(len(sites)),
            ))  # fmt: skip
            deployment.spawn(f"supernode-{name}", "/bin/bash", ["-c", site_lines[0]], env=env)
            wait_for_port(port, 60, deployment.processes[-1])
            deployment.spawn(f"superexec-{name}", "/bin/bash", ["-c", site_lines[1]], env=env)
        deadline = time.monotonic() + 60
        while shell(listing, timeout=30).count("online") < len(sites):
            assert time.monotonic() < deadline, shell(listing, timeout=30) + str(deployment)
            deployment.check_alive()
            time.sleep(1.0)
        steps["sites online"] = time.monotonic() - start
        start = time.monotonic()
        try:
            log = shell(run, timeout=1500)
        except (AssertionError, subprocess.TimeoutExpired) as error:
            raise AssertionError(f"{error}\n{deployment}") from error
        steps["flwr run (1 round)"] = time.monotonic() - start
    print("\n" + app + ": " + ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))

    # Where the guide says results land: WORKDIR/outputs of the coordinator.
    outputs = coordinator / "outputs"
    if app == "tiny":
        result = json.loads((outputs / "result.json").read_text())
        assert result["final"] == [1.0, 1.0, 1.0]
        crc = sum(zlib.crc32(name.encode()) for name in sites) / len(sites)
        assert result["train_metrics"]["1"]["site-crc"] == pytest.approx(crc)
    else:
        _assert_saved_run(outputs, rounds=1, sites=sites)
        for name in sites:
            assert f"site {name} (node " in log  # the ServerApp's log names the sites
    assert not (home / ".flwr").exists()
    for name in sites:
        assert (tmp_path / name / "index" / "flwr-home").is_dir()


# --------------------------------------------------------------------------------------


def _mounts(service: dict) -> dict[str, str]:
    """A service's short-syntax volume mounts as {container path: source}."""
    mounts = {}
    for mount in service.get("volumes", []):
        parts = mount.rsplit(":", 2)
        source, target = parts[:2] if len(parts) == 3 else mount.rsplit(":", 1)
        mounts[target] = source
    return mounts


def _without_option(args: list[str], option: str) -> list[str]:
    i = args.index(option)
    return args[:i] + args[i + 2 :]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
