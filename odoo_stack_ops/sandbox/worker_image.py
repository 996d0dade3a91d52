"""The `ops-docker` pool's worker image, built from the project's Dockerfile with `podman build`.

No registry can be pulled here, so the Dockerfile's `BASE` is a local Debian bookworm image: a minbase rootfs
made by mmdebstrap from this machine's Debian mirror (python3, pip and the packages the Dockerfile installs,
so its apt step is skipped), imported with `podman import`, plus this machine's CA bundle (PyPI is reached
through it during the build). Both the rootfs and the built image are cached under ~/.cache/odoo-stack-ops,
the image keyed by a hash of everything the Dockerfile copies, so a session pays `podman load`, not a build.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.sandbox.podman import PodmanService

PROJECT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "odoo-stack-ops"
BASE_TAG = "localhost/debian:bookworm"
WORKER_REPO = "localhost/odoo-stack-ops-worker"
BASE_PACKAGES = ("python3", "python3-pip", "passwd", "ca-certificates", "postgresql-client-15", "git",
                 "openssh-client", "age", "zstd")
# what the Dockerfile copies (with .dockerignore keeping caches out): a change to any of it rebuilds the image
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md", "odoo_stack_ops", "flows", "tasks",
           "deployments")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def debian_mirror(sources: str) -> str:
    """The first Debian archive URI of an apt sources text, deb822 or one-line format (pure)."""
    for line in sources.splitlines():
        match = re.match(r"\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", line)
        if match and "security" not in match.group(1) and re.search(r"/debian/?$", match.group(1)):
            return match.group(1)
    return "http://deb.debian.org/debian"


def _apt_sources() -> str:
    paths = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    return "\n".join(p.read_text(errors="replace") for p in paths if p.is_file())


def context_hash(root: Path = PROJECT) -> str:
    """sha256 over the paths and bytes of the build context the Dockerfile uses (caches excluded)."""
    h = hashlib.sha256()
    for name in CONTEXT:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def debian_rootfs() -> Path:
    """The cached minbase rootfs tar, made by mmdebstrap when missing (minutes, once per machine)."""
    key = hashlib.sha256(" ".join(BASE_PACKAGES).encode()).hexdigest()[:10]
    tar = CACHE / f"debian-bookworm-{key}.tar"
    if tar.is_file():
        return tar
    if tar.is_dir():  # left by a version that let mmdebstrap guess the format from a name without `.tar`
        shutil.rmtree(tar)
    if not shutil.which("mmdebstrap"):
        raise OpsError("mmdebstrap missing: apt-get install mmdebstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tar.with_suffix(f".{os.getpid()}.partial")
    proc = subprocess.run(["mmdebstrap", "--variant=minbase", "--format=tar", "--include=" + ",".join(BASE_PACKAGES), "bookworm",
                           str(partial), debian_mirror(_apt_sources())], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise OpsError(f"mmdebstrap failed: {proc.stderr.strip()[-800:]}")
    partial.rename(tar)
    return tar


def _has_image(podman: PodmanService, tag: str) -> bool:
    return subprocess.run(["podman", "--root", str(podman.base / "root"), "--runroot", str(podman.base / "runroot"),
                           "image", "exists", tag], env=podman.env(), check=False).returncode == 0


def _podman(podman: PodmanService, *args: str, cwd: Path | None = None) -> None:
    try:
        podman.podman(*args, cwd=cwd)
    except subprocess.CalledProcessError as exc:
        out = (exc.stdout or b"").decode(errors="replace")[-1500:] + (exc.stderr or b"").decode(errors="replace")[-1500:]
        raise OpsError(f"`podman {args[0]}` failed ({exc.returncode}):\n{out}") from None


def base_image(podman: PodmanService) -> str:
    """localhost/debian:bookworm: the rootfs imported, with this machine's CA bundle on top."""
    if _has_image(podman, BASE_TAG):
        return BASE_TAG
    _podman(podman, "import", str(debian_rootfs()), "localhost/debian-rootfs:bookworm")
    with tempfile.TemporaryDirectory(prefix="base-", dir=podman.base / "tmp") as ctx:
        shutil.copy(CA_BUNDLE, Path(ctx) / "ca-certificates.crt")
        (Path(ctx) / "Containerfile").write_text(
            "FROM localhost/debian-rootfs:bookworm\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
            "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\nCMD [\"/bin/bash\"]\n")
        _podman(podman, "build", "-t", BASE_TAG, ctx)
    return BASE_TAG


def build_worker_image(podman: PodmanService) -> tuple[str, dict[str, float]]:
    """The worker image's tag, from this podman's storage, the cache, or a build; with the seconds each step took."""
    tag = f"{WORKER_REPO}:{context_hash()}"
    timings: dict[str, float] = {}
    if _has_image(podman, tag):
        return tag, timings
    archive = CACHE / f"worker-{tag.rsplit(':', 1)[1]}.tar"
    start = time.monotonic()
    if archive.exists():
        _podman(podman, "load", "-i", str(archive))
        timings["load_s"] = time.monotonic() - start
        return tag, timings
    base_image(podman)
    timings["base_s"] = time.monotonic() - start
    start = time.monotonic()
    _podman(podman, "build", "--network", "host", "--build-arg", f"BASE={BASE_TAG}", "-t", tag, str(PROJECT),
            cwd=PROJECT)
    timings["build_s"] = time.monotonic() - start
    start = time.monotonic()
    for old in CACHE.glob("worker-*.tar"):  # one image kept: each is most of a gigabyte
        old.unlink(missing_ok=True)
    partial = archive.with_suffix(f".{os.getpid()}.partial")
    try:
        _podman(podman, "save", "-o", str(partial), tag)
        partial.rename(archive)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    timings["save_s"] = time.monotonic() - start
    return tag, timings


def image_size_mb(podman: PodmanService, tag: str) -> float:
    out = podman.podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.decode().strip()
    return int(out) / 1e6
