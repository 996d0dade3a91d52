"""`stack-ops` command line: check-config (validate + probe), fetch-ca, and the flows run directly for operators."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from odoo_stack_ops.config import STACK_FILE_VAR, StackConfig, load_config
from odoo_stack_ops.errors import OpsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack-ops", description=__doc__)
    parser.add_argument("--stack-file", help="stack file (default: $STACK_OPS_FILE, else the environment only)")
    parser.add_argument("--stack", help="the stack's name, when the file is an inventory (default: every stack)")
    parser.add_argument("--env-file", help="a .env file with the seed's variables")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-config", help="validate the configuration and probe every endpoint")
    fetch = sub.add_parser("fetch-ca", help="write the managed cluster's CA certificate (DigitalOcean API) where "
                           "database.sslrootcert points, for sslmode verify-full")
    fetch.add_argument("--out", help="write it here instead of database.sslrootcert")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from odoo_stack_ops import inventory  # noqa: PLC0415

    source = args.stack_file or os.environ.get(STACK_FILE_VAR)
    names: list[str | None] = [args.stack]
    try:
        if args.stack is None and source:
            inv = inventory.read(source)
            names = [None] if inv.single else sorted(inv.stacks)
        configs = [load_config(source, stack=name, dotenv=args.env_file) for name in names]
    except OpsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if args.command == "check-config":
        from odoo_stack_ops.probe import probe_all, render  # noqa: PLC0415

        if len(configs) == 1:
            rows = probe_all(configs[0])
            sys.stdout.write(f"configuration valid: stack {configs[0].name}\n{render(rows)}\n")
        else:
            per_stack = [(cfg.name, row) for cfg in configs for row in probe_all(cfg)]
            rows = [row for _, row in per_stack]
            sys.stdout.write(f"configuration valid: {len(configs)} stacks ({', '.join(c.name for c in configs)})\n"
                             f"{render(rows, [name for name, _ in per_stack])}\n")
        return 1 if any(r.ok is False for r in rows) else 0
    if args.command == "fetch-ca":
        return max(_fetch_ca(cfg, args.out) for cfg in configs)
    return 2


def _fetch_ca(cfg: StackConfig, out: str | None) -> int:
    from odoo_stack_ops import digitalocean  # noqa: PLC0415 - pydo only for this command

    target = Path(out) if out else cfg.database.sslrootcert
    if target is None:
        sys.stderr.write("set database.sslrootcert (DB_SSLROOTCERT) to where the CA should go, or pass --out\n")
        return 2
    try:
        pem = digitalocean.fetch_ca(digitalocean.Api(cfg.digitalocean), cfg.digitalocean)
    except OpsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    changed = digitalocean.write_ca(pem, target)
    sys.stdout.write(f"{'wrote' if changed else 'unchanged:'} {target.expanduser()} (CA of cluster "
                     f"{cfg.digitalocean.database_cluster}); use it with sslmode verify-full\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
