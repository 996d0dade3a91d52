"""Local images and the four seed containers for the sandbox (no registry can be pulled here).

One small image built with `podman import` from a rootfs we assemble: busybox-static (sh, httpd, tar, find…),
the real PostgreSQL 15 client binaries with the libraries `ldd` lists, the `odoo` stand-in, and the health
paths. Each service runs it with its compose labels, on the host network, as on the droplet.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from odoo_stack_ops.prefect_local import free_port
from odoo_stack_ops.sandbox.podman import PodmanService

HERE = Path(__file__).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_TOOLS = ("pg_dump", "pg_restore", "psql")
SERVICES = ("odoo-core", "nginx-proxy", "n8n", "mattermost")
HEALTH = {"odoo-core": "/web/health", "nginx-proxy": "/", "n8n": "/healthz", "mattermost": "/api/v4/system/ping"}


def _libraries(binary: Path) -> set[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = set()
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.add(Path(parts[2]))
        elif parts and parts[0].startswith("/"):
            libs.add(Path(parts[0]))
    return libs


def build_rootfs(root: Path) -> None:
    for d in ("usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "etc", "tmp", "var/lib/odoo", "var/www/web",
              "var/www/api/v4/system", "mnt/extra-addons/ipai", "mnt/extra-addons/oca", "root", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, root / link)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "usr/bin/busybox")
    applets = subprocess.run([str(root / "usr/bin/busybox"), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if not (root / "usr/bin" / applet).exists():
            os.symlink("busybox", root / "usr/bin" / applet)
    libs: set[Path] = set()
    for tool in PG_TOOLS:
        shutil.copy2(PG_BIN / tool, root / "usr/bin" / tool)
        libs |= _libraries(PG_BIN / tool)
    for lib in libs:
        dest = root / "usr" / lib.relative_to("/").as_posix().removeprefix("usr/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib.resolve(), dest)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nodoo:x:101:101:odoo:/var/lib/odoo:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nodoo:x:101:\n")
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "var/www/web/health").write_text('{"status": "pass"}\n')
    (root / "var/www/healthz").write_text('{"status": "ok"}\n')
    (root / "var/www/api/v4/system/ping").write_text('{"status": "OK"}\n')
    (root / "var/www/index.html").write_text("<html>nginx-proxy stand-in</html>\n")
    for name, dest in (("odoo_standin.sh", "usr/bin/odoo"), ("entry.sh", "usr/bin/sandbox-entry")):
        shutil.copy2(HERE / name, root / dest)
        (root / dest).chmod(0o755)
    os.chown(root / "var/lib/odoo", 101, 101)


def image_tag() -> str:
    """Content hash of what goes into the image, so a changed script rebuilds it."""
    h = hashlib.sha256()
    for name in ("odoo_standin.sh", "entry.sh", "images.py"):
        h.update((HERE / name).read_bytes())
    for tool in PG_TOOLS:
        h.update(str((PG_BIN / tool).stat().st_size).encode())
    return "localhost/odoo-stack-ops-sandbox:" + h.hexdigest()[:12]


def build_image(podman: PodmanService) -> str:
    tag = image_tag()
    c = podman.client()
    try:
        if any(tag in (img.tags or []) for img in c.images.list()):
            return tag
    finally:
        c.close()
    work = Path(tempfile.mkdtemp(prefix="rootfs-"))
    try:
        build_rootfs(work / "root")
        subprocess.run(["tar", "--numeric-owner", "-C", str(work / "root"), "-cf", str(work / "rootfs.tar"), "."],
                       check=True)
        podman.podman("import", "--change", 'CMD ["/bin/sh"]', str(work / "rootfs.tar"), tag)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag


def start_stack(podman: PodmanService, image: str, *, project: str = "sandbox",
                env: dict[str, str] | None = None, addons_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Run the four seed containers; returns {service: {"container": …, "image": …, "port": …, "health_url": …}}.

    odoo-core mounts its addons as the seed does (`./addons/*` → /mnt/extra-addons/*): `addons_dir` from this
    machine when given (git checkouts a code deploy moves), else a named volume."""
    out: dict[str, dict[str, Any]] = {}
    c = podman.client()
    with contextlib.closing(c):
        for service in SERVICES:
            port = free_port()
            addons = str(addons_dir) if addons_dir else f"{project}-odoo-addons"
            volumes = {f"{project}-odoo-web-data": {"bind": "/var/lib/odoo", "mode": "rw"},
                       addons: {"bind": "/mnt/extra-addons", "mode": "rw"}} if service == "odoo-core" else {}
            ctr = c.containers.run(
                image, ["/usr/bin/sandbox-entry", service, str(port)], name=f"{project}-{service}-1", detach=True,
                labels={"com.docker.compose.service": service, "com.docker.compose.project": project},
                network_mode="host", init=True, volumes=volumes,
                environment={"HEALTH_PORT": str(port), **(env or {})},
            )
            out[service] = {"container": ctr.id, "name": ctr.name, "image": image, "port": port,
                            "health_url": f"http://127.0.0.1:{port}{HEALTH[service]}",
                            **({"addons_dir": str(addons_dir)} if addons_dir and service == "odoo-core" else {})}
        if "odoo-core" in out:  # the named volume starts root-owned; Odoo runs as uid 101
            odoo = c.containers.get(out["odoo-core"]["container"])
            odoo.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/filestore && chown -R 101:101 /var/lib/odoo"])
    return out


def write_files(container: Any, root: str, files: dict[str, bytes], uid: int = 101) -> None:
    """Put files (relative path → bytes) under `root` in the container, via the Docker archive API."""
    from odoo_stack_ops.backup.restore import tar_stream  # noqa: PLC0415 - the one tar builder

    members = ((rel, len(data), 1700000000, [data]) for rel, data in files.items())
    container.exec_run(["mkdir", "-p", root])
    container.put_archive(root, b"".join(tar_stream(members, uid, uid)))
