"""Generate the credentials of a fedrag-flower deployment into one folder.

    python deploy/generate_credentials.py deploy/credentials \\
        --site hospital-a --site hospital-b [--name superlink.example.org] [--force]

writes

    ca.crt ca.key                      certificate authority (keep ca.key offline)
    superlink.crt superlink.key        SuperLink TLS, valid for superlink, localhost,
                                       127.0.0.1 and every --name
    superexec.secret                   shared by the SuperLink and the ServerApp SuperExec
    <site>/node.key node.key.pub       the site's SuperNode key pair (ECDSA P-384, OpenSSH)
    <site>/runtime*.crt runtime.key    TLS of the site's loopback Runtime API
    <site>/superexec.secret            shared by the site's SuperNode and its SuperExec

the layout docker-compose.yml mounts. Existing files are never overwritten without
--force; running it again with a new --site adds that site only (and a missing
superexec.secret to an existing site). In a real deployment a hospital generates its own
node key (``fedrag-flower node-key``) and sends only the public key; ``--site`` is for the
compose demo and tests. Without Docker, ``fedrag-flower coordinator-credentials`` writes
the coordinator's part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from fedrag_flower import deployment
except ModuleNotFoundError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fedrag_flower import deployment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to write the credentials")
    parser.add_argument(
        "--site", action="append", default=[], help="a site (hospital) name; repeat"
    )
    parser.add_argument(
        "--name",
        action="append",
        default=[],
        help="another DNS name or IP address of the SuperLink, as sites dial it; repeat",
    )
    parser.add_argument("--days", type=int, default=365, help="certificate validity")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)

    coordinator = deployment.CoordinatorCredentials(args.folder)
    try:
        if args.force or not coordinator.ca_cert.exists():
            names = [*deployment.SUPERLINK_NAMES, *args.name]
            deployment.generate_coordinator_credentials(
                args.folder, names, force=args.force, days=args.days
            )
            print(f"coordinator: {args.folder} (SuperLink names: {', '.join(names)})")
        else:
            print(f"coordinator: keeping the existing credentials in {args.folder}")
        for site in args.site:
            creds = deployment.SiteCredentials(args.folder / site)
            if creds.node_key.exists() and not args.force:
                print(f"{site}: keeping the existing key {creds.node_key}")
                if deployment.add_site_superexec_secret(creds):
                    print(f"{site}: added the SuperExec secret {creds.superexec_secret}")
                continue
            deployment.generate_site_credentials(creds.folder, site, force=args.force)
            print(f"{site}: public key {creds.node_public_key}")
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
