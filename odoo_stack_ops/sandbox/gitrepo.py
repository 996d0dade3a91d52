"""A bare git repository standing for the remote that code deploys and config backups push to."""

from __future__ import annotations

import subprocess
from pathlib import Path


def bare_repo(path: Path) -> Path:
    """Create an empty bare repository at `path` whose default branch is main; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], check=True,
                   capture_output=True)
    return path
