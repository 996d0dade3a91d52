"""Backup bench: the database leg against the seed's way and the local limit, peak memory, and the
filestore at scale. Writes bench/results/backup.json.

    python -m bench backup [--gb 1.0] [--repeat 5]
    python -m bench backup --gb 5 --repeat 1 --rss-only 1   the leg's peak RSS at 5 GiB (peak_rss_mb_5gib), merged
    python -m bench backup --filestore-only 1               only the 200,000-file filestore (bench/filestore_scale.py)
    python -m bench backup --prune-only 1                   only the retention leg, merged into the existing results

Every leg runs in a fresh process timed from spawn to exit, as the baselines are (interpreter start, imports,
S3 client creation and the exported snapshot included; the in-process figure is kept as `leg_inner_s`).
The headline legs upload over HTTPS (a throwaway CA) to odoo_stack_ops/sandbox/s3_checking.py, its own
process, which checks what Spaces checks: the SigV4 signature with the secret key, each body against its
signed SHA-256 (and Content-MD5 when sent), part ETag = MD5 of the part, the part list on completion
(`s3_tls: true`). The same leg against moto (HTTP, nothing checked) is reported beside it (`limit_ratio_moto`):
moto's server needs ~6 CPU-s per 256 MB, taken here from pg_dump and zstd on the same 2 cores. Every upload
to the checking endpoint is read back and compared byte for byte (SHA-256 against the leg's own).

Retention's leg (`prune_peak_rss_mb`, target <= 150 MB): planning over 30 nights x 200,000 filestore objects
(2 % new a night), in a child process against a generated bucket (bench/prune_leg.py).
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


def grow(conn: psycopg.Connection[Any], target_bytes: int) -> int:
    """Copy the generated rows server-side until the database reaches `target_bytes`: a big database quickly, for
    the memory leg (whose peak must not depend on size), with the same compressibility."""
    size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    while size < target_bytes:
        top = int(conn.execute("SELECT max(id) + 1 FROM docs").fetchone()[0])
        rows = int(conn.execute("SELECT count(*) FROM docs").fetchone()[0])
        take = max(1, int(rows * min(1.0, (target_bytes - size) / size)))
        conn.execute("INSERT INTO docs SELECT id + %s, title, body, meta FROM docs WHERE id < %s", (top, take))
        conn.commit()
        size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    return size


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
    """One leg in a fresh process, timed from spawn to exit like the baselines (interpreter start, imports,
    S3 client creation and the snapshot included): `wall`; `seconds` is the dump-to-upload part alone."""
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", LEG_SCRIPT, json.dumps(
        {"db": db_json, "spaces": spaces_json, "key": key, "recipient": recipient, "null": null})],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    wall = time.monotonic() - start
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": round(wall, 3)}


class CheckedEndpoint:
    """odoo_stack_ops/sandbox/s3_checking.py as a separate process: HTTPS with a throwaway CA, SigV4 signatures
    verified with the secret key, every part's body checked and MD5'd for its ETag, the part list checked."""

    def __init__(self, root: Path) -> None:
        from odoo_stack_ops.sandbox.s3_checking import CheckingS3

        self.server = CheckingS3(root).start()

    def spaces_json(self, bucket: str) -> dict[str, Any]:
        s = self.server
        return {"region": "sgp1", "endpoint": s.endpoint, "bucket": bucket, "prefix": "bench",
                "access_key_id": s.access_key, "secret_access_key": s.secret_key, "ca_bundle": str(s.ca_bundle)}

    def check_and_drop(self, bucket: str, key: str, sha256: str) -> None:
        """The stored object, read back through S3 GET, is exactly what the leg hashed; then DELETE it."""
        from odoo_stack_ops.backup import spaces
        from odoo_stack_ops.config import SpacesConfig

        s3 = spaces.client(SpacesConfig.model_validate(self.spaces_json(bucket)))
        digest = hashlib.sha256()
        for chunk in spaces.read_chunks(s3, bucket, key):
            digest.update(chunk)
        assert digest.hexdigest() == sha256, f"checking S3 stored {key} differently from what the leg hashed"
        s3.delete_object(Bucket=bucket, Key=key)

    def stop(self) -> None:
        self.server.stop()


def prune_leg(nights: int = 30, files: int = 200_000) -> dict[str, Any]:
    """Retention planning's peak RSS in its own process (bench/prune_leg.py)."""
    out = subprocess.run([sys.executable, "-m", "bench.prune_leg", str(nights), str(files)], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


# The figures committed before the legs were timed as whole processes against the checking HTTPS endpoint
# (issue 16): kept beside the new ones so a reader sees what the change of definition did.
PREVIOUS = {
    "why": "until issue 16 the leg was timed inside its process (from the snapshot's first dump byte, no "
           "interpreter start, imports, S3 client or snapshot) and uploaded over plain HTTP to bench/s3_lean.py, "
           "which checked no signature, part MD5 or part list; the filestore nights had 1,500 files and moto",
    "leg_s": 5.19, "limit_s": 4.83, "limit_ratio": 1.074, "limit_ratio_encrypted": 1.124, "ratio": 0.186,
    "peak_rss_mb": 175.0, "leg_moto_s": 8.2, "limit_ratio_moto": 1.698,
    "filestore_files": 1500, "filestore_first_s": 5.01, "filestore_second_s": 0.35,
}


def run(gb: float = 1.0, repeat: int = 5, prune_only: int = 0, prune_nights: int = 30,
        prune_files: int = 200_000, rss_only: int = 0, filestore_only: int = 0, files: int = 200_000,
        filestore: int = 1) -> dict[str, Any]:
    """The whole bench; with prune_only / filestore_only only that leg, with rss_only (e.g. `--gb 5
    --rss-only 1`) only the leg's peak RSS at that size, each merged into bench/results/backup.json."""
    results = Path(__file__).parent / "results" / "backup.json"
    previous = json.loads(results.read_text()) if results.exists() else {}
    if prune_only:
        result = {**previous, **prune_leg(prune_nights, prune_files)}
        print(f"retention over {result['prune_nights']} nights x {result['prune_files_per_night']} files: peak RSS "
              f"{result['prune_peak_rss_mb']:.0f} MB (target <= 150), {result['prune_s']:.0f} s")
        return result
    if filestore_only:
        kept = {k: v for k, v in previous.items() if not k.startswith("filestore_")}
        return {**kept, **filestore_scale(repeat, files)}
    import pyrage

    from odoo_stack_ops.backup import spaces
    from odoo_stack_ops.sandbox.postgres import PgCluster
    from odoo_stack_ops.sandbox.s3 import S3Server

    tmp = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    pg = PgCluster()
    pg.start()
    s3srv = None if rss_only else S3Server().start()
    checked = CheckedEndpoint(tmp / "checking-s3")
    try:
        pg.createdb("bench")
        t = time.monotonic()
        with psycopg.connect(**pg.conninfo("bench")) as conn:
            db_bytes = generate(conn, int(min(gb, 1.0) * GB)) if rss_only else generate(conn, int(gb * GB))
            if rss_only:
                db_bytes = grow(conn, int(gb * GB))
        gen_s = time.monotonic() - t
        print(f"generated {db_bytes / GB:.2f} GiB in {gen_s:.0f} s")
        db = pg.database_config("bench", sslmode="disable")
        env = {**os.environ, **{k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
                                for k, v in db.libpq_env("bench").items()}}
        db_json = json.loads(db.model_dump_json())
        db_json["password"] = db.password.get_secret_value() if db.password else None
        checked.server.create_bucket("bench")
        tls_json = checked.spaces_json("bench")
        if rss_only:
            return {**previous, **rss_at_size(db_json, tls_json, checked, env, db_bytes, repeat)}
        assert s3srv is not None
        s3srv.create_bucket("bench")
        spaces_cfg = s3srv.spaces_config("bench", prefix="bench")
        sp_json = json.loads(spaces_cfg.model_dump_json())
        sp_json["access_key_id"] = spaces_cfg.access_key_id.get_secret_value()
        sp_json["secret_access_key"] = spaces_cfg.secret_access_key.get_secret_value()
        s3 = spaces.client(spaces_cfg)
        seed_file = tmp / "seed.dump"
        recipient = str(pyrage.x25519.Identity.generate().to_public())
        runs: dict[str, list[float]] = {"seed": [], "limit": [], "leg": [], "leg_inner": [], "leg_enc": [],
                                        "leg_null": [], "leg_moto": []}
        rss: list[float] = []
        load: list[float] = []
        stored = raw = 0
        for i in range(repeat):
            load.append(os.getloadavg()[0])
            runs["seed"].append(timed(["pg_dump", "-Fc", "-f", str(seed_file), "bench"], env))
            runs["limit"].append(timed(["bash", "-o", "pipefail", "-c",
                                        "pg_dump -Fc -Z0 bench | zstd -q -T2 -3 > /dev/null"], env))
            leg = run_leg(db_json, tls_json, f"bench/leg{i}.zst")
            checked.check_and_drop("bench", f"bench/leg{i}.zst", leg["sha256"])
            runs["leg"].append(leg["wall"])
            runs["leg_inner"].append(leg["seconds"])
            rss.append(leg["rss_mb"])
            stored, raw = leg["stored"], leg["raw"]
            runs["leg_null"].append(run_leg(db_json, tls_json, "null", null=True)["wall"])
            enc = run_leg(db_json, tls_json, f"bench/enc{i}.zst.age", recipient)
            checked.check_and_drop("bench", f"bench/enc{i}.zst.age", enc["sha256"])
            runs["leg_enc"].append(enc["wall"])
            rss.append(enc["rss_mb"])
            moto = run_leg(db_json, sp_json, f"bench/leg{i}.zst")
            runs["leg_moto"].append(moto["wall"])
            s3.delete_objects(Bucket="bench", Delete={"Objects": [{"Key": f"bench/leg{i}.zst"}]})
            print(f"run {i + 1}: seed {runs['seed'][-1]:.1f} s, limit {runs['limit'][-1]:.1f} s, "
                  f"leg {runs['leg'][-1]:.1f} s (inner {runs['leg_inner'][-1]:.1f}), leg+age {runs['leg_enc'][-1]:.1f}"
                  f" s, leg to moto {runs['leg_moto'][-1]:.1f} s, uploads discarded {runs['leg_null'][-1]:.1f} s; peak RSS "
                  f"{leg['rss_mb']:.0f}/{enc['rss_mb']:.0f} MB, raw {raw}, stored {stored}, load {load[-1]:.1f}")
        requests = checked.server.requests()
        med = {k: statistics.median(v) for k, v in runs.items()}
        result: dict[str, Any] = {
            **{k: v for k, v in previous.items() if k.startswith(("prune_", "peak_rss_mb_5gib", "leg_5gib",
                                                                   "limit_5gib", "filestore_"))},
            "db_bytes": db_bytes, "dump_raw_bytes": raw, "dump_stored_bytes": stored,
            "seed_dump_bytes": seed_file.stat().st_size, "repeat": repeat,
            "seed_s": round(med["seed"], 2), "limit_s": round(med["limit"], 2), "leg_s": round(med["leg"], 2),
            "leg_inner_s": round(med["leg_inner"], 2), "leg_encrypted_s": round(med["leg_enc"], 2),
            "ratio": round(med["leg"] / med["seed"], 3), "limit_ratio": round(med["leg"] / med["limit"], 3),
            "ratio_encrypted": round(med["leg_enc"] / med["seed"], 3),
            "limit_ratio_encrypted": round(med["leg_enc"] / med["limit"], 3),
            "peak_rss_mb": round(max(rss), 1), "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
            "leg_null_sink_s": round(med["leg_null"], 2),
            "pipeline_limit_ratio": round(med["leg_null"] / med["limit"], 3),
            "leg_moto_s": round(med["leg_moto"], 2), "limit_ratio_moto": round(med["leg_moto"] / med["limit"], 3),
            "leg_timing": "whole process (spawn to exit), like the baselines",
            "s3_tls": True, "s3_checks": ["sigv4", "payload-sha256", "content-md5", "part-etag-md5", "part-list"],
            "s3_endpoint": "odoo_stack_ops/sandbox/s3_checking.py over HTTPS (moto over HTTP for *_moto)",
            "s3_requests_checked": requests, "previous_definition": PREVIOUS,
            "load_avg_1m": [round(x, 1) for x in load],  # the machine is shared: its load when each repeat began
        }
        seed_file.unlink()
    finally:
        checked.stop()
        if s3srv is not None:
            s3srv.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if filestore:
        result |= filestore_scale(3, files)
    try:
        result |= prune_leg(prune_nights, prune_files)
    except subprocess.CalledProcessError as exc:  # the legs' figures above are kept; retention's stay as they were
        print(f"retention leg failed: {exc.stderr[-2000:] if exc.stderr else exc}")
        result["prune_error"] = "the retention leg failed in this run; its figures are from an earlier one"
    result["bench_process_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print_table(result)
    return result


def rss_at_size(db_json: dict[str, Any], tls_json: dict[str, Any], checked: CheckedEndpoint, env: dict[str, str],
                db_bytes: int, repeat: int) -> dict[str, Any]:
    """The leg's peak RSS (and time against the limit) on a larger database: memory must not grow with size."""
    legs, limits, rss = [], [], []
    for i in range(max(1, repeat)):
        limits.append(timed(["bash", "-o", "pipefail", "-c", "pg_dump -Fc -Z0 bench | zstd -q -T2 -3 > /dev/null"],
                            env))
        leg = run_leg(db_json, tls_json, f"bench/big{i}.zst")
        checked.check_and_drop("bench", f"bench/big{i}.zst", leg["sha256"])
        legs.append(leg["wall"])
        rss.append(leg["rss_mb"])
        print(f"{db_bytes / GB:.1f} GiB: limit {limits[-1]:.1f} s, leg {legs[-1]:.1f} s, peak RSS {rss[-1]:.0f} MB")
    gib = round(db_bytes / GB)
    return {f"peak_rss_mb_{gib}gib": round(max(rss), 1), f"leg_{gib}gib_s": round(statistics.median(legs), 2),
            f"limit_{gib}gib_s": round(statistics.median(limits), 2), f"db_bytes_{gib}gib": db_bytes}


def filestore_scale(repeat: int, files: int) -> dict[str, Any]:
    """bench/filestore_scale.py against its own checking endpoint."""
    from bench import filestore_scale as fsb
    from odoo_stack_ops.sandbox.s3_checking import CheckingS3

    tmp = Path(tempfile.mkdtemp(prefix="bench-fs-"))
    try:
        with CheckingS3(tmp) as srv:
            return fsb.run(srv, repeat, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(r: dict[str, Any]) -> None:
    def row(label: str, key: str, fmt: str, note: str = "") -> tuple[str, str, str]:
        return label, (fmt.format(r[key]) if key in r else "-"), note

    rows = [
        ("database size", f"{r['db_bytes'] / GB:.2f} GiB" if "db_bytes" in r else "-", ""),
        row("seed's way: pg_dump -Fc > file", "seed_s", "{:.1f} s"),
        row("limit: pg_dump -Z0 | zstd -T2 -3", "limit_s", "{:.1f} s"),
        row("database leg, whole process, checking HTTPS S3", "leg_s", "{:.1f} s", f"inner {r.get('leg_inner_s')} s"),
        row("database leg + age", "leg_encrypted_s", "{:.1f} s"),
        row("ratio (leg / seed), target <= 0.5", "ratio", "{:.3f}"),
        row("limit_ratio (leg / limit), target <= 1.15", "limit_ratio", "{:.3f}"),
        row("limit_ratio_encrypted", "limit_ratio_encrypted", "{:.3f}"),
        row("same leg to moto (HTTP, no checks)", "leg_moto_s", "{:.1f} s", f"ratio {r.get('limit_ratio_moto')}"),
        row("same leg, uploads discarded", "leg_null_sink_s", "{:.1f} s", f"ratio {r.get('pipeline_limit_ratio')}"),
        row("peak RSS of the leg", "peak_rss_mb", "{:.0f} MB"),
        row("peak RSS of the leg at 5 GiB, target <= 200", "peak_rss_mb_5gib", "{:.0f} MB"),
        row("filestore files", "filestore_files", "{}"),
        row("filestore first night", "filestore_first_s", "{:.1f} s", f"limit {r.get('filestore_first_limit_s')} s"),
        row("filestore_first_limit_ratio", "filestore_first_limit_ratio", "{:.1f}"),
        row("filestore second night (+0.5 %), target <= 15 s", "filestore_second_s", "{:.1f} s"),
        row("filestore second night: S3 requests", "filestore_second_requests", "{}"),
        row("retention: 30 nights x 200,000 objects, peak RSS", "prune_peak_rss_mb", "{:.0f} MB", "target <= 150"),
    ]
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>10}  {c}")


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rss-only", type=int, default=0)
    p.add_argument("--filestore-only", type=int, default=0)
    a = p.parse_args()
    out = run(a.gb, a.repeat, rss_only=a.rss_only, filestore_only=a.filestore_only)
    Path(__file__).with_name("results").mkdir(exist_ok=True)
    (Path(__file__).with_name("results") / "backup.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
