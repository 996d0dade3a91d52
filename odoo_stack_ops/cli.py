"""`stack-ops` command line: check-config (validate + probe), and the flows run directly for operators."""

from __future__ import annotations

import argparse
import logging
import sys

from odoo_stack_ops.config import load_config
from odoo_stack_ops.errors import OpsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack-ops", description=__doc__)
    parser.add_argument("--stack-file", help="stack file (default: $STACK_OPS_FILE, else the environment only)")
    parser.add_argument("--env-file", help="a .env file with the seed's variables")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-config", help="validate the configuration and probe every endpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.stack_file, dotenv=args.env_file)
    except OpsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if args.command == "check-config":
        from odoo_stack_ops.probe import probe_all, render  # noqa: PLC0415

        rows = probe_all(cfg)
        sys.stdout.write(f"configuration valid: stack {cfg.name}\n{render(rows)}\n")
        return 1 if any(r.ok is False for r in rows) else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
