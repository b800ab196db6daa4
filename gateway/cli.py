"""``dxa-gateway``: run the daemon, check a config, make tokens (the demo is ``dxa-sim demo``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway.config import DEFAULT_CONFIG, ConfigError, load_config
from gateway.logs import setup_logging


def _config(path):
    """The validated config, or None after printing why it is not (exit 2)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    config = _config(args.config)
    if config is None:
        return 2
    setup_logging(config.logging.level)
    from gateway.app import Gateway
    from gateway.store import StoreError

    try:
        gateway = Gateway(config)
    except StoreError as exc:  # the database is unreachable, or its schema is newer than this gateway
        print(f"store error: {exc}", file=sys.stderr)
        return 3
    asyncio.run(gateway.run())
    return 0


def _check(args: argparse.Namespace) -> int:
    if _config(args.path) is None:
        return 2
    print(f"{args.path}: ok")
    return 0


def _token_new(args: argparse.Namespace) -> int:
    from gateway.config import ROLES
    from gateway.security.tokens import new_token, sha256_hex

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        print(f"--roles takes a comma-separated list of: {', '.join(ROLES)}", file=sys.stderr)
        return 2
    token = new_token()
    entry = {"name": args.name, "token_sha256": sha256_hex(token), "roles": roles}
    if args.display_name:
        entry["display_name"] = args.display_name
    if args.registration:
        entry["registration"] = args.registration
    import json

    line = "- {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in entry.items()) + "}"
    print(f"token for {args.name} (shown once; give it to the caller, it is not stored):")
    print(f"  {token}")
    print("add this line under security.tokens in the config (it holds only the token's SHA-256):")
    print(f"  {line}")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    config = _config(args.config)
    if config is None:
        return 2
    from pathlib import Path

    from gateway.priors.backfill import run_backfill
    from gateway.priors.sources import SourceDown

    setup_logging(config.logging.level)
    try:
        summary = run_backfill(config, args.since, Path(args.patients) if args.patients else None, rate=args.rate)
    except SourceDown as exc:
        print(f"backfill stopped: {exc}; the same command resumes it", file=sys.stderr)
        return 1
    return 0 if not summary.failed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dxa-gateway", description="DICOM/HL7 gateway for bone densitometry")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway daemon")
    run.add_argument("--config", default=None, help=f"config file (default: the embedded {DEFAULT_CONFIG.name})")
    run.set_defaults(func=_run)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("path")
    check.set_defaults(func=_check)
    token = sub.add_parser("token", help="HTTP identities")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    tnew = token_sub.add_parser("new", help="make a bearer token and print its config line")
    tnew.add_argument("name", help="the identity's name, as the audit trail records it")
    tnew.add_argument("--roles", required=True, help="comma-separated: orders,radiographer,reporter,admin,viewer,metrics")
    tnew.add_argument("--display-name", default="", help="for reporters: the name on signed reports")
    tnew.add_argument("--registration", default="", help='for reporters: e.g. "GMC 1234567"')
    tnew.set_defaults(func=_token_new)
    priors = sub.add_parser("priors", help="priors from the PACS")
    priors_sub = priors.add_subparsers(dest="priors_command", required=True)
    backfill = priors_sub.add_parser("backfill", help="import the results of past DXA studies from the PACS (resumable)")
    backfill.add_argument("--config", default=None, help="the daemon's config file")
    backfill.add_argument("--since", required=True, help="first study date, YYYY-MM-DD")
    backfill.add_argument("--patients", default=None, help="file of patient IDs (one a line, optional TAB issuer)")
    backfill.add_argument("--rate", type=float, default=None, help="studies per second (default priors.backfill.studies_per_second)")
    backfill.set_defaults(func=_backfill)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
