"""The multi-node deployment: docker-compose.yml, credentials, and the same topology run
as processes on loopback (SuperLink with TLS and SuperNode authentication, a ServerApp
SuperExec, two SuperNodes in process isolation with their ClientApp SuperExecs)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import zlib
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from deployment_topology import (
    COMPOSE_SITES,
    LoopbackDeployment,
    SiteSpec,
    compose_commands,
    compose_secret,
    free_port,
    tail,
)

from fedrag_flower import deployment as dep

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TINY_APP = Path(__file__).parent / "fixtures" / "tiny_app"
TINY_SITES = [SiteSpec("hospital-a", {"site": "hospital-a"}),
              SiteSpec("hospital-b", {"site": "hospital-b"})]  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


# --------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------


def test_compose_commands_equal_the_loopback_topology_commands(compose):
    expected = compose_commands()
    services = compose["services"]
    assert set(expected) <= set(services)
    for name, args in expected.items():
        assert services[name]["command"] == args, f"service {name}"


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
        corpus="/data/my corpus.jsonl", train="C:\\data\\train.jsonl", data_dir="/idx"
    )
    parsed = parse_config_args([dep.format_node_config(config)])
    assert parsed == config
    with pytest.raises(ValueError, match="single quote"):
        dep.format_node_config({"corpus-path": "/data/o'brien.jsonl"})


def test_supernode_command_prints_the_topology_commands(tmp_path, capsys):
    from fedrag_flower.cli import site

    parser = argparse.ArgumentParser()
    site.register(parser.add_subparsers())
    args = parser.parse_args(["node-key", "--out", str(tmp_path / "node")])
    assert args.func(args) == 0
    assert "flwr supernode register node.key.pub" in capsys.readouterr().out

    args = parser.parse_args([
        "supernode-command", "--superlink", "fl.example.org:9191",
        "--root-cert", str(tmp_path / "ca.crt"), "--key", str(tmp_path / "node" / "node.key"),
        "--corpus", str(tmp_path / "c.jsonl"), "--train", str(tmp_path / "t.jsonl"),
        "--data-dir", str(tmp_path / "index"),
    ])  # fmt: skip
    assert args.func(args) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")]
    creds = dep.SiteCredentials(tmp_path / "node")
    expected = dep.supernode_args(
        superlink="fl.example.org:9191",
        root_cert=str(tmp_path / "ca.crt"),
        node_key=str(creds.node_key),
        node_config=dep.site_node_config(
            corpus=str(tmp_path / "c.jsonl"),
            train=str(tmp_path / "t.jsonl"),
            data_dir=str(tmp_path / "index"),
        ),
        runtime_cert=str(creds.runtime_cert),
        runtime_key=str(creds.runtime_key),
        runtime_ca=str(creds.runtime_ca),
    )
    assert lines[0] == dep.command_line("flower-supernode", expected)
    assert lines[1].endswith(
        dep.command_line(
            "flower-superexec",
            dep.superexec_args(runtime_address="127.0.0.1:9094", root_cert=str(creds.runtime_ca)),
        )
    )


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
        assert any(outputs.rglob("*")), "the ServerApp saved nothing"


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
