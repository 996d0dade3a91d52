"""Restore bench: a full restore (database + filestore) through the product's restore path against the bare
tools on the same data. Writes bench/results/restore.json.

    python -m bench restore [--gb 1.0] [--fs-files 130000] [--repeat 3]

The backup is made by the product (database leg and filestore leg) into the checking HTTPS S3 endpoint
(odoo_stack_ops/sandbox/s3_checking.py). The product's restore is odoo_stack_ops/backup/restore.py, the code
tasks/restore.py calls, run with the local executor: download the dump and check both SHA-256s while
decompressing into a local file (fetch_dump), create a new database and `pg_restore -j2` that file into it
(restore_copy); meanwhile, as restore_as runs them, the filestore's packs are fetched (PREFETCH ahead), each
blob hash-checked and unpacked through `tar -x` into a new directory (restore_filestore). The baseline is `createdb` + bare `pg_restore -j2` of the same plaintext dump file
plus `tar -x` of a tar of the same files (made beforehand, untimed). `restore_ratio` = product / baseline, medians.
The filestore is the Odoo-like generated one of bench/filestore_scale.py with `fs_files` files (~2 GiB).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench import filestore_scale as fsb
from bench.backup import GB, generate

# The committed figures before the filestore was packed (one object per file, 130,000 GETs) and before the two
# legs ran at the same time; the baseline is unchanged. Measured at load ~15 on the shared machine.
BEFORE_PACKS = {"restore_ratio": 8.1, "restore_s": 848.74, "baseline_s": 104.78, "restore_filestore_s": 759.11,
                "filestore_ratio": 12.641, "database_ratio": 2.004, "measured": "2026-12-01, per-file objects"}


def run(gb: float = 1.0, fs_files: int = 130_000, repeat: int = 3) -> dict[str, Any]:
    from odoo_stack_ops.backup import database as dbleg
    from odoo_stack_ops.backup import filestore as fs
    from odoo_stack_ops.backup import restore
    from odoo_stack_ops.backup.manifest import DumpRecord
    from odoo_stack_ops.backup.spaces import Bucket, client
    from odoo_stack_ops.executors.local import LocalExecutor
    from odoo_stack_ops.sandbox.postgres import PgCluster
    from odoo_stack_ops.sandbox.s3_checking import CheckingS3

    tmp = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    pg = PgCluster()
    pg.start()
    srv = CheckingS3(tmp / "s3").start()
    try:
        pg.createdb("bench")
        t = time.monotonic()
        with psycopg.connect(**pg.conninfo("bench")) as conn:
            db_bytes = generate(conn, int(gb * GB))
        print(f"generated {db_bytes / GB:.2f} GiB in {time.monotonic() - t:.0f} s")
        tree, facts = fsb.tree(fs_files)
        print(f"filestore tree: {facts}")
        db = pg.database_config("bench", sslmode="disable")
        server = pg.database_config("postgres", sslmode="disable")
        env = {**os.environ, **{k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
                                for k, v in server.libpq_env("postgres").items()}}
        srv.create_bucket("bench")
        cfg = srv.spaces_config("bench", prefix="bench")
        bucket = Bucket(client(cfg), "bench", "bench")
        ex = LocalExecutor()
        t = time.monotonic()
        with dbleg.exported_snapshot(db, "bench") as (snap, _facts):
            d = dbleg.dump_to_spaces(ex, db, "bench", snap, s3=bucket.s3, bucket="bench", key="bench/db.zst",
                                     pg_dump_version="bench")
        dump = DumpRecord(key=d.key, raw_bytes=d.raw_bytes, raw_sha256=d.raw_sha256, stored_bytes=d.stored_bytes,
                          stored_sha256=d.stored_sha256)
        files, st = fs.backup_filestore(ex, str(tree), s3=bucket.s3, bucket="bench", prefix="bench",
                                        database="bench", st="n1", previous=fs.NOTHING)
        print(f"backed up in {time.monotonic() - t:.0f} s: dump {d.stored_bytes / 2**20:.0f} MiB stored, "
              f"{st.files} filestore files")
        fs_tar = tmp / "filestore.tar"
        subprocess.run(["tar", "-cf", str(fs_tar), "-C", str(tree), "."], check=True)
        data_dir = tmp / "odoo"
        runs: dict[str, list[float]] = {k: [] for k in ("product", "product_fetch", "product_db", "product_fs",
                                                        "base", "base_db", "base_fs")}
        load: list[float] = []
        for i in range(repeat):
            load.append(round(os.getloadavg()[0], 1))
            work = tmp / f"work{i}"
            work.mkdir()
            t0 = time.monotonic()
            dump_file = work / "dump.custom"
            name = restore.copy_name("restored", "restoring", f"r{i}")
            # as tasks/restore.restore_as runs them: the filestore unpacks while the database leg runs
            with ThreadPoolExecutor(1) as pool:
                def unpack(name: str = name) -> tuple[str, float]:
                    root = restore.restore_filestore(ex, str(data_dir), name, restore.object_members(bucket, files))
                    return root, time.monotonic()

                unpacking = pool.submit(unpack)
                restore.fetch_dump(restore.dump_chunks(bucket, dump), dump_file)
                t1 = time.monotonic()
                restore.restore_copy(ex, server, "restored", f"r{i}", dump_file, jobs=2)
                t2 = time.monotonic()
                root, fs_done = unpacking.result()
            t3 = time.monotonic()
            runs["product"].append(t3 - t0)
            runs["product_fetch"].append(t1 - t0)
            runs["product_db"].append(t2 - t1)
            runs["product_fs"].append(fs_done - t0)  # the filestore leg alone, from the start (concurrent)
            n = sum(1 for p in Path(root).rglob("*") if p.is_file())
            assert n == len(files), f"restored {n} files, expected {len(files)}"
            pg.dropdb(name)
            shutil.rmtree(root)
            # baseline: the same plaintext dump file and the same files, bare tools
            base_dir = tmp / "base"
            t0 = time.monotonic()
            subprocess.run(["createdb", "base_restored"], env=env, check=True)
            subprocess.run(["pg_restore", "-j2", "--no-owner", "--no-acl", "-d", "base_restored", str(dump_file)],
                           env=env, check=True)
            t1 = time.monotonic()
            base_dir.mkdir()
            subprocess.run(["tar", "-xf", str(fs_tar), "-C", str(base_dir)], check=True)
            t2 = time.monotonic()
            runs["base"].append(t2 - t0)
            runs["base_db"].append(t1 - t0)
            runs["base_fs"].append(t2 - t1)
            pg.dropdb("base_restored")
            shutil.rmtree(base_dir)
            shutil.rmtree(work)
            print(f"run {i + 1}: product {runs['product'][-1]:.1f} s (fetch {runs['product_fetch'][-1]:.1f}, "
                  f"database {runs['product_db'][-1]:.1f}, filestore {runs['product_fs'][-1]:.1f}); bare "
                  f"{runs['base'][-1]:.1f} s (pg_restore -j2 {runs['base_db'][-1]:.1f}, tar -x "
                  f"{runs['base_fs'][-1]:.1f})")
        med = {k: statistics.median(v) for k, v in runs.items()}
        result = {
            "db_bytes": db_bytes, "dump_raw_bytes": d.raw_bytes, "dump_stored_bytes": d.stored_bytes,
            "filestore_files": st.files, "filestore_bytes": st.bytes, "repeat": repeat,
            "restore_s": round(med["product"], 2), "baseline_s": round(med["base"], 2),
            "restore_ratio": round(med["product"] / med["base"], 3),
            "restore_fetch_s": round(med["product_fetch"], 2), "restore_db_s": round(med["product_db"], 2),
            "restore_filestore_s": round(med["product_fs"], 2), "baseline_pg_restore_s": round(med["base_db"], 2),
            "baseline_tar_x_s": round(med["base_fs"], 2),
            "database_ratio": round((med["product_fetch"] + med["product_db"]) / med["base_db"], 3),
            "filestore_ratio": round(med["product_fs"] / med["base_fs"], 3),
            "s3_tls": True, "s3_requests": srv.requests(), "load_avg_1m": load,
            "runs": {k: [round(x, 2) for x in v] for k, v in runs.items()},
            "before_packs": BEFORE_PACKS,
        }
    finally:
        srv.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return result
