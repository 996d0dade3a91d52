"""One benchmark entry point: `python -m bench [area ...]` runs each area, prints its table and writes
bench/results/<area>.json. Areas: backup, logs, health, report, update, restore, prefect, fleet. Options such as `--repeat 5` go to every area named."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

AREAS = ("backup", "logs", "health", "report", "update", "restore", "prefect", "fleet")
RESULTS = Path(__file__).parent / "results"


def options(argv: list[str]) -> tuple[list[str], dict[str, float]]:
    """Areas, and `--name number` options passed to each area's run() (e.g. `backup --repeat 5 --gb 1.5`)."""
    areas, opts, it = [], {}, iter(argv)
    for arg in it:
        if arg.startswith("--"):
            value = float(next(it))
            opts[arg[2:].replace("-", "_")] = int(value) if value.is_integer() else value
        else:
            areas.append(arg)
    return areas, opts


def main(argv: list[str]) -> int:
    areas, opts = options(argv)
    areas = areas or list(AREAS)
    failed = []
    for area in areas:
        if area not in AREAS:
            print(f"unknown area {area}; choose from {AREAS}")
            return 2
        try:
            module = importlib.import_module(f"bench.{area}")
        except ModuleNotFoundError as exc:
            print(f"[{area}] not available: {exc}")
            failed.append(area)
            continue
        print(f"\n=== {area} ===")
        result = module.run(**opts)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{area}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"written {RESULTS / f'{area}.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
