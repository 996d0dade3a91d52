"""Filestore at scale: a generated 200,000-file Odoo-like filestore, first night against the limit
`tar -cf - | zstd -T2 -3 > /dev/null` on the same tree, then second nights with 0.5 % new files.

The tree is generated once and cached outside git (BENCH_DATA_DIR, default ~/.cache/odoo-stack-ops-bench):
sizes are lognormal (median 4 KB, 99 % under 100 KB: thumbnails, small PDFs, mail parts) plus a 0.2 % tail of
1 to 5 MB files (scans, big PDFs), about 3 GiB; a third of the files are text-like (compressible), the rest random
(images). Files are named as Odoo names them (`<sha1[:2]>/<sha1>`). Uploads go to the checking HTTPS endpoint
(odoo_stack_ops/sandbox/s3_checking.py), which counts the requests. A second night must open only the new
files: the executor records every command, and the paths handed to `tar` (the only reader of file contents)
must be exactly the new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

FILES = 200_000
NEW_FRACTION = 0.005
VERSION = "v1"


def data_dir() -> Path:
    return Path(os.environ.get("BENCH_DATA_DIR", Path.home() / ".cache" / "odoo-stack-ops-bench"))


def sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    s = np.exp(rng.normal(np.log(4000), 1.4, n)).clip(100, 900_000).astype(np.int64)
    tail = rng.random(n) < 0.002
    s[tail] = rng.integers(1 << 20, 5 << 20, int(tail.sum()))
    return s


class Pools:
    """Random (image-like) and word (text-like) byte pools that files are cut from: fast to generate."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.random = rng.bytes(64 << 20)
        words = [bytes(rng.integers(97, 123, int(k)).astype(np.uint8)) for k in rng.integers(2, 10, 5000)]
        idx = np.minimum(rng.zipf(1.3, 3_000_000), 5000) - 1
        self.text = b" ".join(words[i] for i in idx)[: 16 << 20]

    def content(self, i: int, size: int) -> bytes:
        pool = self.text if i % 3 == 0 else self.random
        if size >= len(pool):
            return (pool * (size // len(pool) + 1))[:size - 12] + b"%012d" % i
        off = int(self.rng.integers(0, len(pool) - size))
        return pool[off: off + size - 12] + b"%012d" % i


def write_files(root: Path, pools: Pools, sizes_: np.ndarray, start: int) -> list[str]:
    """Write files named as Odoo names them; returns their relative paths."""
    paths = []
    for j, size in enumerate(sizes_):
        data = pools.content(start + j, int(size))
        sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        d = root / sha[:2]
        d.mkdir(exist_ok=True)
        (d / sha).write_bytes(data)
        paths.append(f"{sha[:2]}/{sha}")
    return paths


def tree(files: int = FILES) -> tuple[Path, dict[str, Any]]:
    """The cached tree (generated on first use); returns its root and facts."""
    base = data_dir() / f"filestore-{files}-{VERSION}"
    done = base / "complete.json"
    if done.exists():
        return base / "filestore", json.loads(done.read_text())
    shutil.rmtree(base, ignore_errors=True)
    root = base / "filestore"
    root.mkdir(parents=True)
    rng = np.random.default_rng(42)
    t = time.monotonic()
    s = sizes(rng, files)
    write_files(root, Pools(rng), s, 0)
    facts = {"files": files, "bytes": int(s.sum()), "under_100k": round(float((s < 100_000).mean()), 4),
             "over_1m": int((s >= 1 << 20).sum()), "generated_s": round(time.monotonic() - t, 1)}
    done.write_text(json.dumps(facts))
    return root, facts


def limit_s(root: Path) -> float:
    t = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", f"tar -cf - -C {root} . | zstd -q -T2 -3 > /dev/null"],
                   check=True)
    return time.monotonic() - t


def recording_executor() -> Any:
    from odoo_stack_ops.executors.local import LocalExecutor

    class Recording(LocalExecutor):
        """Records every command run, to see which files were handed to a reader."""

        def __init__(self) -> None:
            super().__init__()
            self.argvs: list[list[str]] = []

        def _popen(self, command: Any) -> Any:
            self.argvs.append(list(command.argv))
            return super()._popen(command)

        def read_paths(self) -> list[str]:
            out = []
            for argv in self.argvs:
                if argv[0] == "tar":
                    out += argv[argv.index("--") + 1:]
                elif argv[0] != "find":
                    raise AssertionError(f"unexpected command during a filestore night: {argv[:3]}")
            return out

    return Recording()


def run(s3srv: Any, repeat: int = 3, files: int = FILES) -> dict[str, Any]:
    """First night (once) against the tar|zstd limit (median of `repeat`), then `repeat` second
    nights, each after adding 0.5 % new files (removed from the cached tree afterwards)."""
    from odoo_stack_ops.backup import filestore as fs
    from odoo_stack_ops.backup import spaces

    root, facts = tree(files)
    print(f"filestore tree: {facts}")
    bucket = "fsbench" + os.urandom(3).hex()
    s3srv.create_bucket(bucket)
    s3 = spaces.client(s3srv.spaces_config(bucket, prefix="fs"))
    limits, load = [], [round(os.getloadavg()[0], 1)]
    for _ in range(repeat):
        limits.append(limit_s(root))
    print(f"limit tar | zstd -T2 -3: {[round(x, 1) for x in limits]}")
    s3srv.reset_requests()
    ex = recording_executor()
    t = time.monotonic()
    stored, st1 = fs.backup_filestore(ex, str(root), s3=s3, bucket=bucket, prefix="fs", database="bench",
                                      st="night1", previous=fs.NOTHING)
    first_s = time.monotonic() - t
    first_requests = s3srv.reset_requests()
    print(f"first night: {first_s:.1f} s, {st1.new_objects} blobs in {st1.packs} packs, requests {first_requests}")
    rng = np.random.default_rng(7)
    pools = Pools(rng)
    added: list[str] = []
    seconds, requests, reads = [], [], []
    try:
        for night in range(repeat):
            load.append(round(os.getloadavg()[0], 1))
            n_new = int(files * NEW_FRACTION)
            new = write_files(root, pools, sizes(rng, n_new), 10_000_000 + night * n_new)
            added += new
            ex = recording_executor()
            s3srv.reset_requests()
            t = time.monotonic()
            stored, st = fs.backup_filestore(ex, str(root), s3=s3, bucket=bucket, prefix="fs", database="bench",
                                             st=f"night{night + 2}", previous=fs.Previous.of(stored))
            seconds.append(time.monotonic() - t)
            counted = s3srv.reset_requests()
            requests.append(counted)
            read = ex.read_paths()
            assert sorted(read) == sorted(new), "a second night read files other than the new ones"
            assert st.new_objects == len(new) and st.read_files == len(new)
            reads.append(len(read))
            print(f"second night {night + 1}: {seconds[-1]:.1f} s, {len(read)} files read, requests {counted}")
    finally:
        for p in added:
            (root / p).unlink(missing_ok=True)
    total_requests = [sum(r.values()) for r in requests]
    med_limit = statistics.median(limits)
    return {
        "filestore_files": files, "filestore_bytes": facts["bytes"], "filestore_under_100k": facts["under_100k"],
        "filestore_over_1mib": facts["over_1m"],
        "filestore_first_s": round(first_s, 1), "filestore_first_limit_s": round(med_limit, 2),
        "filestore_first_limit_ratio": round(first_s / med_limit, 2),
        "filestore_first_requests": sum(first_requests.values()),
        "filestore_second_new_files": int(files * NEW_FRACTION),
        "filestore_second_s": round(statistics.median(seconds), 2),
        "filestore_second_requests": int(statistics.median(total_requests)),
        "filestore_second_requests_by_op": requests[-1],
        "filestore_second_files_read": int(statistics.median(reads)),
        "filestore_load_avg_1m": load,
        "filestore_runs": {"limit": [round(x, 2) for x in limits], "second": [round(x, 2) for x in seconds]},
    }


if __name__ == "__main__":
    import sys
    import tempfile

    from odoo_stack_ops.sandbox.s3_checking import CheckingS3

    n = int(sys.argv[1]) if len(sys.argv) > 1 else FILES
    with CheckingS3(Path(tempfile.mkdtemp(prefix="fs-s3-"))) as srv:
        print(json.dumps(run(srv, files=n), indent=2))
