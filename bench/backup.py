"""Backup bench: the database leg against the seed's way and the local limit, peak memory, and the
filestore's second night against its first. Writes bench/results/backup.json.

    python -m bench backup [--gb 1.0] [--repeat 5]
    python -m bench backup --prune-only 1     only the retention leg, merged into the existing results

Retention's leg (`prune_peak_rss_mb`, target <= 150 MB): planning over 30 nights x 200,000 filestore objects
(2 % new a night), in a child process against a generated bucket (bench/prune_leg.py).

Everything runs in one process tree on this machine: a throwaway PostgreSQL 15 and two S3 endpoints. The
headline legs upload to bench/s3_lean.py (its own process: receives, stores and MD5s each part, as S3 does);
the same leg against moto is reported beside it (`limit_ratio_moto`): moto's server needs ~6 CPU-s per
256 MB, taken here from pg_dump and zstd on the same 2 cores, which Spaces does not take from the worker.
Every lean upload is checked byte for byte (SHA-256 of the stored object against the leg's own).
Medians of --repeat runs; ratios are computed from medians measured in the same run.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

GB = 1 << 30
VOCAB_SIZE = 20000


def vocabulary(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    lengths = rng.integers(2, 11, VOCAB_SIZE)
    words = ["".join(rng.choice(letters, n, p=None)) for n in lengths]
    return np.array(words, dtype=object)


def generate(conn: psycopg.Connection[Any], target_bytes: int, seed: int = 1) -> int:
    """Fill a table with Zipf-distributed words and small jsonb: text that compresses about 3:1."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    conn.execute("CREATE TABLE IF NOT EXISTS docs (id bigint PRIMARY KEY, title text, body text, meta jsonb)")
    conn.execute("CREATE TABLE IF NOT EXISTS notes (id bigint, note text)")
    written, row = 0, 0
    with conn.cursor() as cur:
        while written < target_bytes:
            n_rows = 5000
            idx = np.minimum(rng.zipf(1.3, n_rows * 80), VOCAB_SIZE) - 1
            words = vocab[idx]
            with cur.copy("COPY docs (id, title, body, meta) FROM STDIN") as copy:
                for i in range(n_rows):
                    w = words[i * 80:(i + 1) * 80]
                    body = " ".join(w)
                    meta = json.dumps({"partner": int(idx[i * 80]), "state": "posted" if i % 3 else "draft",
                                       "tags": [w[0], w[1]], "amount": round(float(idx[i * 80 + 2]) * 1.17, 2)})
                    copy.write_row((row, " ".join(w[:6]), body, meta))
                    row += 1
                    written += len(body) + len(meta) + 40
    conn.commit()
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


LEG_SCRIPT = r"""
import json, sys, time
from bench import peak_rss_mb
from odoo_stack_ops.backup import database as dbleg, spaces
from odoo_stack_ops.config import DatabaseConfig, SpacesConfig
from odoo_stack_ops.executors.local import LocalExecutor
args = json.loads(sys.argv[1])
db = DatabaseConfig.model_validate(args["db"])
sp = SpacesConfig.model_validate(args["spaces"])
wrap = None
if args.get("null"):  # same pipeline, uploads replaced by a discarding writer: our cost without the S3 server's
    class NullWriter:
        def __init__(self, *a, **k):
            self.size = 0
        def write(self, b):
            self.size += len(b)
            return len(b)
        def writable(self):
            return True
        def flush(self):
            pass
        def close(self):
            from odoo_stack_ops.backup.spaces import Uploaded
            return Uploaded("null", self.size, "0" * 64, 0)
        def __enter__(self):
            return self
        def __exit__(self, *e):
            pass
    dbleg.MultipartWriter = NullWriter
if args.get("recipient"):
    from odoo_stack_ops.backup.crypto import encrypting_writer
    wrap = encrypting_writer([args["recipient"]])
with dbleg.exported_snapshot(db, db.name) as (snap, facts):
    r = dbleg.dump_to_spaces(LocalExecutor(), db, db.name, snap, s3=spaces.client(sp), bucket=sp.bucket,
                             key=args["key"], pg_dump_version="bench", wrap=wrap)
print(json.dumps({"seconds": r.duration_s, "raw": r.raw_bytes, "stored": r.stored_bytes, "sha256": r.stored_sha256,
                  "rss_mb": peak_rss_mb()}))
"""


def run_leg(db_json: dict[str, Any], spaces_json: dict[str, Any], key: str, recipient: str | None = None,
            null: bool = False) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", LEG_SCRIPT, json.dumps(
        {"db": db_json, "spaces": spaces_json, "key": key, "recipient": recipient, "null": null})],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


class LeanS3:
    """bench/s3_lean.py as a separate process; its objects are files under `root`."""

    def __init__(self, root: Path) -> None:
        from odoo_stack_ops.prefect_local import free_port

        self.root, self.port, self.key = root, free_port(), "LEAN" + os.urandom(6).hex().upper()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.s3_lean", str(root), str(self.port), self.key],
                                     stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent,
                                     start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"

    def spaces_json(self, bucket: str) -> dict[str, Any]:
        return {"region": "sgp1", "endpoint": f"http://127.0.0.1:{self.port}", "bucket": bucket, "prefix": "bench",
                "access_key_id": self.key, "secret_access_key": os.urandom(12).hex()}

    def check_and_drop(self, bucket: str, key: str, sha256: str) -> None:
        """The stored object, read back through S3 GET, is exactly what the leg hashed; then DELETE it."""
        from odoo_stack_ops.backup import spaces
        from odoo_stack_ops.config import SpacesConfig

        s3 = spaces.client(SpacesConfig.model_validate(self.spaces_json(bucket)))
        digest = hashlib.sha256()
        for chunk in spaces.read_chunks(s3, bucket, key):
            digest.update(chunk)
        assert digest.hexdigest() == sha256, f"lean S3 stored {key} differently from what the leg hashed"
        s3.delete_object(Bucket=bucket, Key=key)

    def stop(self) -> None:
        from odoo_stack_ops.prefect_local import stop_group

        stop_group(self.proc)


def filestore_nights(tmp: Path, s3: Any, bucket: str, files: int, new_fraction: float) -> dict[str, Any]:
    """Night 1 uploads everything; night 2 after adding `new_fraction` new files uploads only those."""
    from odoo_stack_ops.backup import filestore as fs
    from odoo_stack_ops.executors.local import LocalExecutor

    root = tmp / "filestore" / "bench"
    rng = np.random.default_rng(5)

    def add(n: int, start: int) -> None:
        for i in range(start, start + n):
            data = rng.bytes(int(rng.integers(20_000, 200_000))) + str(i).encode()
            sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
            (root / sha[:2]).mkdir(parents=True, exist_ok=True)
            (root / sha[:2] / sha).write_bytes(data)

    add(files, 0)
    ex = LocalExecutor()
    t = time.monotonic()
    stored1, st1 = fs.backup_filestore(ex, str(root), s3=s3, bucket=bucket, prefix="bench", database="bench",
                                        st="night1", previous={})
    first_s = time.monotonic() - t
    add(max(1, int(files * new_fraction)), files)
    t = time.monotonic()
    _, st2 = fs.backup_filestore(ex, str(root), s3=s3, bucket=bucket, prefix="bench", database="bench",
                                 st="night2", previous={f.path: f for f in stored1})
    second_s = time.monotonic() - t
    return {"filestore_files": files, "filestore_bytes": st1.bytes, "filestore_first_s": round(first_s, 2),
            "filestore_second_s": round(second_s, 2), "filestore_first_bytes": st1.new_bytes,
            "filestore_second_bytes": st2.new_bytes,
            "filestore_second_bytes_ratio": round(st2.new_bytes / max(st1.new_bytes, 1), 4)}


def prune_leg(nights: int = 30, files: int = 200_000) -> dict[str, Any]:
    """Retention planning's peak RSS in its own process (bench/prune_leg.py)."""
    out = subprocess.run([sys.executable, "-m", "bench.prune_leg", str(nights), str(files)], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(gb: float = 1.0, repeat: int = 5, files: int = 1500, prune_only: int = 0, prune_nights: int = 30,
        prune_files: int = 200_000) -> dict[str, Any]:
    """The whole bench, or with prune_only only the retention leg merged into bench/results/backup.json."""
    if prune_only:
        results = Path(__file__).parent / "results" / "backup.json"
        result = {**(json.loads(results.read_text()) if results.exists() else {}),
                  **prune_leg(prune_nights, prune_files)}
        print(f"retention over {result['prune_nights']} nights x {result['prune_files_per_night']} files: peak RSS "
              f"{result['prune_peak_rss_mb']:.0f} MB (target <= 150), {result['prune_s']:.0f} s")
        return result
    import pyrage

    from odoo_stack_ops.backup import spaces
    from odoo_stack_ops.sandbox.postgres import PgCluster
    from odoo_stack_ops.sandbox.s3 import S3Server

    tmp = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    pg = PgCluster()
    pg.start()
    s3srv = S3Server()
    s3srv.start()
    lean = LeanS3(tmp / "lean-s3")
    try:
        pg.createdb("bench")
        t = time.monotonic()
        with psycopg.connect(**pg.conninfo("bench")) as conn:
            db_bytes = generate(conn, int(gb * GB))
        gen_s = time.monotonic() - t
        print(f"generated {db_bytes / GB:.2f} GiB in {gen_s:.0f} s")
        db = pg.database_config("bench", sslmode="disable")
        env = {**os.environ, **{k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
                                for k, v in db.libpq_env("bench").items()}}
        s3srv.create_bucket("bench")
        spaces_cfg = s3srv.spaces_config("bench", prefix="bench")
        db_json = json.loads(db.model_dump_json())
        db_json["password"] = db.password.get_secret_value() if db.password else None
        sp_json = json.loads(spaces_cfg.model_dump_json())
        sp_json["access_key_id"] = spaces_cfg.access_key_id.get_secret_value()
        sp_json["secret_access_key"] = spaces_cfg.secret_access_key.get_secret_value()
        lean_json = lean.spaces_json("bench")
        s3 = spaces.client(spaces_cfg)
        seed_file = tmp / "seed.dump"
        recipient = str(pyrage.x25519.Identity.generate().to_public())
        runs: dict[str, list[float]] = {"seed": [], "limit": [], "leg": [], "leg_enc": [], "leg_null": [],
                                        "leg_moto": []}
        rss: list[float] = []
        stored = raw = 0
        for i in range(repeat):
            runs["seed"].append(timed(["pg_dump", "-Fc", "-f", str(seed_file), "bench"], env))
            runs["limit"].append(timed(["bash", "-o", "pipefail", "-c", "pg_dump -Fc -Z0 bench | zstd -q -T2 -3 > /dev/null"], env))
            leg = run_leg(db_json, lean_json, f"bench/leg{i}.zst")
            lean.check_and_drop("bench", f"bench/leg{i}.zst", leg["sha256"])
            runs["leg"].append(leg["seconds"])
            rss.append(leg["rss_mb"])
            stored, raw = leg["stored"], leg["raw"]
            runs["leg_null"].append(run_leg(db_json, lean_json, "null", null=True)["seconds"])
            enc = run_leg(db_json, lean_json, f"bench/enc{i}.zst.age", recipient)
            lean.check_and_drop("bench", f"bench/enc{i}.zst.age", enc["sha256"])
            runs["leg_enc"].append(enc["seconds"])
            rss.append(enc["rss_mb"])
            moto = run_leg(db_json, sp_json, f"bench/leg{i}.zst")
            runs["leg_moto"].append(moto["seconds"])
            s3.delete_objects(Bucket="bench", Delete={"Objects": [{"Key": f"bench/leg{i}.zst"}]})
            print(f"run {i + 1}: seed {runs['seed'][-1]:.1f} s, limit {runs['limit'][-1]:.1f} s, "
                  f"leg {runs['leg'][-1]:.1f} s, leg+age {runs['leg_enc'][-1]:.1f} s, "
                  f"leg to moto {runs['leg_moto'][-1]:.1f} s")
        med = {k: statistics.median(v) for k, v in runs.items()}
        result: dict[str, Any] = {
            "db_bytes": db_bytes, "dump_raw_bytes": raw, "dump_stored_bytes": stored,
            "seed_dump_bytes": seed_file.stat().st_size, "repeat": repeat,
            "seed_s": round(med["seed"], 2), "limit_s": round(med["limit"], 2), "leg_s": round(med["leg"], 2),
            "leg_encrypted_s": round(med["leg_enc"], 2),
            "ratio": round(med["leg"] / med["seed"], 3), "limit_ratio": round(med["leg"] / med["limit"], 3),
            "ratio_encrypted": round(med["leg_enc"] / med["seed"], 3),
            "limit_ratio_encrypted": round(med["leg_enc"] / med["limit"], 3),
            "peak_rss_mb": round(max(rss), 1), "runs": runs,
            "leg_null_sink_s": round(med["leg_null"], 2),
            "pipeline_limit_ratio": round(med["leg_null"] / med["limit"], 3),
            "leg_moto_s": round(med["leg_moto"], 2), "limit_ratio_moto": round(med["leg_moto"] / med["limit"], 3),
            "s3_endpoint": "bench/s3_lean.py (moto for *_moto and the filestore nights)",
        }
        seed_file.unlink()
        result |= filestore_nights(tmp, s3, "bench", files, 0.01)
        result |= prune_leg(prune_nights, prune_files)
        result["bench_process_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    finally:
        lean.stop()
        s3srv.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(result)
    return result


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("database size", f"{r['db_bytes'] / GB:.2f} GiB", ""),
        ("seed's way: pg_dump -Fc > file", f"{r['seed_s']:.1f} s", f"{r['seed_dump_bytes'] / 2**20:.0f} MiB"),
        ("limit: pg_dump -Z0 | zstd -T2 -3", f"{r['limit_s']:.1f} s", ""),
        ("database leg (dump→zstd→S3, lean S3)", f"{r['leg_s']:.1f} s", f"{r['dump_stored_bytes'] / 2**20:.0f} MiB"),
        ("database leg + age", f"{r['leg_encrypted_s']:.1f} s", ""),
        ("ratio (leg / seed), target <= 0.5", f"{r['ratio']:.3f}", ""),
        ("limit_ratio (leg / limit), target <= 1.15", f"{r['limit_ratio']:.3f}", ""),
        ("ratio_encrypted / limit_ratio_encrypted", f"{r['ratio_encrypted']:.3f}", f"{r['limit_ratio_encrypted']:.3f}"),
        ("same leg to moto (its server shares the cores)", f"{r['leg_moto_s']:.1f} s",
         f"limit_ratio_moto {r['limit_ratio_moto']:.3f}"),
        ("same leg, uploads discarded (our own cost)", f"{r['leg_null_sink_s']:.1f} s",
         f"ratio to limit {r['pipeline_limit_ratio']:.3f}"),
        ("peak RSS of the leg", f"{r['peak_rss_mb']:.0f} MB", ""),
        ("filestore first night", f"{r['filestore_first_s']:.1f} s", f"{r['filestore_first_bytes'] / 2**20:.0f} MiB"),
        ("filestore second night (+1 %)", f"{r['filestore_second_s']:.1f} s", f"{r['filestore_second_bytes'] / 2**20:.1f} MiB"),
        ("filestore_second_bytes_ratio, target <= 0.02", f"{r['filestore_second_bytes_ratio']:.4f}", ""),
        ("retention: 30 nights x 200,000 objects, peak RSS", f"{r['prune_peak_rss_mb']:.0f} MB", "target <= 150"),
    ]
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>10}  {c}")


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    out = run(a.gb, a.repeat)
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    (Path(__file__).with_name("results") / "backup.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
