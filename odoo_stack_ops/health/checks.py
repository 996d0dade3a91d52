"""Health checks (I/O). Each returns CheckResult(s) and never raises: an error is a failed check with its
evidence. `run_all` runs them concurrently, each with its own timeout; checks that need history (CPU rates,
network rates, restart counts) take the previous readings and return new ones in a Reading."""

from __future__ import annotations

import concurrent.futures as cf
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import requests

from odoo_stack_ops.config import DatabaseConfig, DigitalOceanConfig, StackConfig, Thresholds
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.health import facts
from odoo_stack_ops.health import freshness as F  # noqa: N812 - as T above
from odoo_stack_ops.health import thresholds as T  # noqa: N812 - short, used everywhere here
from odoo_stack_ops.redact import redact

SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: status ok/warn/fail, what was seen, against what, why, and how long it took."""

    name: str
    status: T.Status
    value: str = ""
    threshold: str = ""
    evidence: str = ""
    duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Reading:
    """Results plus the readings to keep for the next sweep (merged into the state under their keys)."""

    results: list[CheckResult]
    samples: dict[str, Any] = field(default_factory=dict)


Finding = CheckResult | list[CheckResult] | Reading


@dataclass(frozen=True)
class Probe:
    """A check group to run: a zero-argument callable and the time it may take."""

    name: str
    fn: Callable[[], Finding]
    timeout_s: float = 10.0


def _err(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return redact(" | ".join(line for line in text.splitlines() if line.strip())[:500])


def _verdict(name: str, v: T.Verdict, evidence: str = "", started: float | None = None) -> CheckResult:
    took = time.monotonic() - started if started is not None else 0.0
    return CheckResult(name, v.status, v.value, v.threshold, redact(evidence), round(took, 4))


def _as_reading(found: Finding) -> Reading:
    if isinstance(found, Reading):
        return found
    return Reading([found] if isinstance(found, CheckResult) else list(found))


def run_all(probes: list[Probe], max_workers: int = 32) -> Reading:
    """Run every probe at once; one past its own timeout (counted from its start) becomes a failed check
    and the sweep goes on without waiting for it. Results come back in probe order."""
    if not probes:
        return Reading([])
    started: dict[int, float] = {}

    def call(i: int) -> Finding:
        started[i] = time.monotonic()
        return probes[i].fn()

    pool = cf.ThreadPoolExecutor(max_workers=min(max_workers, len(probes)), thread_name_prefix="health-check")
    futures = {pool.submit(call, i): i for i in range(len(probes))}
    outcome: dict[int, Reading] = {}
    pending = set(futures)
    try:
        while pending:
            now = time.monotonic()
            for fut in [f for f in pending if futures[f] in started]:
                i = futures[fut]
                if now - started[i] > probes[i].timeout_s and not fut.done():
                    pending.discard(fut)
                    outcome[i] = Reading([CheckResult(probes[i].name, "fail", "timeout", f"answer within "
                                                      f"{probes[i].timeout_s:g} s", "no answer in time",
                                                      round(now - started[i], 4))])
            if not pending:
                break
            deadlines = [started[futures[f]] + probes[futures[f]].timeout_s for f in pending if futures[f] in started]
            wait_s = max(0.005, min(deadlines) - now) if deadlines else 0.05
            done, pending = cf.wait(pending, timeout=wait_s, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                i = futures[fut]
                try:
                    outcome[i] = _as_reading(fut.result())
                except Exception as exc:  # noqa: BLE001 - a crashed check is a failed check, not a failed sweep
                    outcome[i] = Reading([CheckResult(probes[i].name, "fail", "error", "", _err(exc),
                                                      round(time.monotonic() - started.get(i, now), 4))])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    results: list[CheckResult] = []
    samples: dict[str, Any] = {}
    for i in range(len(probes)):
        results += outcome[i].results
        samples.update(outcome[i].samples)
    return Reading(results, samples)


# --- HTTP endpoints -------------------------------------------------------------------------------------------

def service_urls(cfg: StackConfig, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The Service Discovery endpoints to probe, by service: an explicit URL wins; Odoo's and n8n's come from
    their sections; others from the container's port and health_path on the droplet's address."""
    overrides = overrides or {}
    host = cfg.ssh.host if cfg.ssh else "127.0.0.1"
    urls: dict[str, str] = {}
    for service, spec in cfg.containers.items():
        if service in overrides:
            urls[service] = overrides[service]
        elif service == "odoo-core":
            urls[service] = cfg.odoo.health_url
        elif service == "n8n" and spec.health_path:
            urls[service] = cfg.n8n.url.rstrip("/") + spec.health_path
        elif spec.health_path and spec.ports:
            urls[service] = f"http://{host}:{spec.ports[0]}{spec.health_path}"
    urls.update({k: v for k, v in overrides.items() if k not in urls})
    return urls


def http(name: str, url: str, timeout: float = 10.0, slow_s: float = 2.0,
         session: requests.Session | None = None) -> CheckResult:
    """GET the URL: HTTP 200 is ok (a warning when slower than slow_s); anything else fails with the body."""
    start = time.monotonic()
    try:
        resp = (session or requests).get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return CheckResult(name, "fail", "unreachable", "HTTP 200", _err(exc), round(time.monotonic() - start, 4))
    took = time.monotonic() - start
    v = T.response_verdict(resp.status_code, took, slow_s)
    return _verdict(name, v, "" if v.status == "ok" else f"GET {url} → {resp.text[:300]}", start)


def tcp(name: str, host: str, port: int, timeout: float = 5.0) -> CheckResult:
    """A TCP connect, as `nc -zv host port` does."""
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return CheckResult(name, "fail", f"{host}:{port} unreachable", "TCP connect", _err(exc),
                           round(time.monotonic() - start, 4))
    took = time.monotonic() - start
    return CheckResult(name, "ok", f"{host}:{port} open in {took:.3f} s", "TCP connect", "", round(took, 4))


# --- database ----------------------------------------------------------------------------------------------------

SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest packet (what `-starttls postgres` sends)
TLS_REQUIRED = ("require", "verify-ca", "verify-full")


def _tls_context(db: DatabaseConfig) -> ssl.SSLContext:
    """As libpq does: require encrypts without verifying; verify-ca checks the chain; verify-full the name too."""
    if db.sslmode in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(cafile=str(db.sslrootcert) if db.sslrootcert else None)
        ctx.check_hostname = db.sslmode == "verify-full"
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def db_tls(db: DatabaseConfig, timeout: float = 10.0) -> CheckResult:
    """The TLS handshake sslmode demands, done by hand so the evidence shows protocol and certificate expiry."""
    from cryptography import x509  # noqa: PLC0415 - paramiko's dependency; only this check needs it

    start = time.monotonic()
    threshold = f"TLS (sslmode={db.sslmode})"
    try:
        with socket.create_connection((db.host, db.port), timeout=timeout) as sock:
            sock.sendall(SSL_REQUEST)
            answer = sock.recv(1)
            if answer != b"S":
                status: T.Status = "fail" if db.sslmode in TLS_REQUIRED else "ok"
                return CheckResult("db.tls", status, "server refuses TLS", threshold,
                                   f"the server answered {answer!r} to SSLRequest: sslmode={db.sslmode} "
                                   f"{'cannot be met' if status == 'fail' else 'allows plain connections'}",
                                   round(time.monotonic() - start, 4))
            with _tls_context(db).wrap_socket(sock, server_hostname=db.host) as tls:
                der = tls.getpeercert(binary_form=True)
                version = tls.version() or "TLS"
    except (OSError, ssl.SSLError) as exc:
        return CheckResult("db.tls", "fail", "handshake failed", threshold, _err(exc),
                           round(time.monotonic() - start, 4))
    if not der:
        return CheckResult("db.tls", "fail", f"{version}, no certificate", threshold, "", time.monotonic() - start)
    cert = x509.load_der_x509_certificate(der)
    days = (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds() / 86400
    return _verdict("db.tls", T.cert_verdict(days, version), f"subject {cert.subject.rfc4514_string()}", start)


def db_query(db: DatabaseConfig, timeout: float = 10.0) -> list[CheckResult]:
    """Credentials and liveness (SELECT 1 on the production database within the timeout, as the seed's
    `psql -d odoo_core -c "SELECT 1"`) and client connections on the cluster against the pool."""
    start = time.monotonic()
    kw = db.connect_kwargs() | {
        "connect_timeout": max(1, round(timeout)), "options": f"-c statement_timeout={int(timeout * 1000)}"}
    try:
        with psycopg.connect(**kw, autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
            took = time.monotonic() - start
            tls = conn.pgconn.ssl_in_use
            version = conn.info.server_version
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            used = int(row.fetchone()[0])  # type: ignore[index]
    except psycopg.Error as exc:
        return [CheckResult("db.select1", "fail", "no answer", f"SELECT 1 within {timeout:g} s", _err(exc),
                            round(time.monotonic() - start, 4))]
    needs_tls = db.sslmode in TLS_REQUIRED
    value = f"SELECT 1 in {took:.3f} s, TLS {'on' if tls else 'off'}, PostgreSQL {version // 10000}.{version % 10000}"
    status: T.Status = "fail" if needs_tls and not tls else "ok"
    return [CheckResult("db.select1", status, value, f"SELECT 1 within {timeout:g} s", "", round(took, 4)),
            _verdict("db.connections", T.pool_verdict(used, db.pool_size), "client backends in pg_stat_activity")]


def database(db: DatabaseConfig, timeout: float = 10.0) -> list[CheckResult]:
    """The seed's 'Database Connection Failed' steps in order: TCP, TLS, credentials. A closed port says it all."""
    reach = tcp("db.tcp", db.host, db.port, timeout)
    if reach.status == "fail":
        return [reach]
    return [reach, db_tls(db, timeout), *db_query(db, timeout)]


# --- containers --------------------------------------------------------------------------------------------------

def by_service(client: Any, project: str | None) -> dict[str, Any]:
    """Containers by compose service (all states); a running one wins over stopped leftovers."""
    filters = {"label": [f"{PROJECT_LABEL}={project}"]} if project else None
    found: dict[str, Any] = {}
    for c in client.containers.list(all=True, filters=filters):
        service = (c.labels or {}).get(SERVICE_LABEL)
        if service and (service not in found or c.status == "running"):
            found[service] = c
    return found


def containers(client: Any, expected: list[str], project: str | None, previous: dict[str, int]) -> Reading:
    """Each expected service exists, runs, and is healthy where it has a healthcheck; restarts since last time."""
    start = time.monotonic()
    found = by_service(client, project)
    results, restarts = [], {}
    for service in expected:
        c = found.get(service)
        if c is None:
            results.append(CheckResult(f"container.{service}", "fail", "missing", "running",
                                       f"no container labelled {SERVICE_LABEL}={service}"
                                       + (f" in project {project}" if project else ""), round(time.monotonic() - start, 4)))
            continue
        f = facts.docker_inspect(c.attrs)
        v = T.container_verdict(f.running, f.status, f.has_healthcheck, f.health)
        evidence = "" if v.status == "ok" else (
            f"{f.name}: exit code {f.exit_code}, finished {f.finished_at or '-'}"
            + (", OOM killed" if f.oom_killed else "") + (f", error {f.error}" if f.error else ""))
        results.append(_verdict(f"container.{service}", v, evidence, start))
        results.append(_verdict(f"container.{service}.restarts", T.restarts_verdict(previous.get(service), f.restarts),
                                f"{f.name} restart count {f.restarts}", start))
        restarts[service] = f.restarts
    return Reading(results, {"restarts": restarts})


def container_stats(client: Any, expected: list[str], project: str | None, th: Thresholds,
                    previous: dict[str, Any], now: float) -> Reading:
    """Per-container CPU (share of the host, sustained like the host's) and memory (of its limit)."""
    start = time.monotonic()
    found = by_service(client, project)
    results, kept = [], {}
    for service in expected:
        c = found.get(service)
        if c is None or c.status != "running":
            continue  # the container check already reports it
        s = facts.docker_stats(c.stats(stream=False, one_shot=True))
        prev = previous.get(service) or {}
        segments = [tuple(x) for x in prev.get("segments", [])]
        pct = None
        if prev.get("t") is not None and now - prev["t"] <= th.cpu_sustained_s:
            pct = facts.container_cpu_percent(prev["cpu_ns"], prev["system_ns"], s)
        elif s.pre_system_ns:
            pct = facts.container_cpu_percent(s.pre_cpu_ns, s.pre_system_ns, s)
        if pct is not None:
            segments.append((prev.get("t", now - 1), now, pct))
        segments = T.keep_segments(segments, now, th.cpu_sustained_s)  # type: ignore[arg-type]
        kept[service] = {"t": now, "cpu_ns": s.cpu_ns, "system_ns": s.system_ns, "segments": segments}
        results.append(_verdict(f"container.{service}.cpu", T.cpu_verdict(segments, th, now, " of the host"), "", start))
        mem = facts.memory_percent_of_limit(s)
        if mem is not None:
            v = T.above(mem, th.memory_percent, "%", f"{mem:.1f} % ({s.memory_used / 2**20:.0f} MiB of "
                                                     f"{s.memory_limit / 2**20:.0f} MiB)")
            results.append(_verdict(f"container.{service}.memory", v, "", start))
    return Reading(results, {"container_stats": kept})


# --- host resources over the host executor ----------------------------------------------------------------------

def human_kb(kb: float) -> str:
    for unit in ("KiB", "MiB", "GiB"):
        if kb < 1024:
            return f"{kb:.0f} {unit}" if unit == "KiB" else f"{kb:.1f} {unit}"
        kb /= 1024
    return f"{kb:.1f} TiB"


HOST_SCRIPT = 'cat /proc/stat; echo @@; cat /proc/meminfo; echo @@; cat /proc/net/dev; echo @@; df -P -- "$@"'


def host_resources(host: Executor, th: Thresholds, mounts: list[str], previous: dict[str, Any], now: float,
                   timeout: float = 20.0) -> Reading:
    """CPU (sustained over kept readings), memory, disk per configured path, network rate: one round trip."""
    start = time.monotonic()
    try:
        res = host.run(["sh", "-c", HOST_SCRIPT, "sh", *mounts], timeout=timeout, check=False)
        stat, mem, net, df = res.stdout_text.split("@@\n")
    except Exception as exc:  # noqa: BLE001 - an unreadable host is one failed check
        return Reading([CheckResult("host.resources", "fail", "unreadable", "", _err(exc),
                                    round(time.monotonic() - start, 4))])
    results: list[CheckResult] = []
    kept: dict[str, Any] = {}
    # CPU: a segment per pair of readings; a reading older than the window starts afresh.
    cur = facts.cpu_times(stat)
    prev = previous.get("cpu")
    segments = [tuple(s) for s in previous.get("cpu_segments", [])]
    if prev and 0 < now - prev[0] <= th.cpu_sustained_s:
        pct = facts.cpu_percent(facts.CpuTimes(prev[1], prev[2]), cur)
        if pct is not None:
            segments.append((prev[0], now, pct))
    segments = T.keep_segments(segments, now, th.cpu_sustained_s)  # type: ignore[arg-type]
    kept.update(cpu=[now, cur.busy, cur.total], cpu_segments=segments)
    results.append(_verdict("host.cpu", T.cpu_verdict(segments, th, now), "", start))
    results.append(_verdict("host.memory", T.memory_verdict(facts.memory_used_percent(facts.meminfo(mem)), th),
                            "", start))
    rows = facts.df_p(df)
    for path in mounts:
        row = facts.disk_for(path, rows)
        if row is None:
            results.append(CheckResult(f"host.disk:{path}", "fail", "not found", f"> {th.disk_percent:g} %",
                                       res.stderr_text.strip()[-300:], round(time.monotonic() - start, 4)))
            continue
        detail = f" of {human_kb(row.size_kb)} on {row.mount}"
        results.append(_verdict(f"host.disk:{path}", T.disk_verdict(row.percent, th, detail),
                                f"{row.filesystem}: {row.used_kb} kB used, {row.available_kb} kB free", start))
    rx, tx = facts.physical_bytes(facts.net_dev(net))
    kept["net"] = [now, rx, tx]
    prev_net = previous.get("net")
    rates = None
    if prev_net and now - prev_net[0] <= th.cpu_sustained_s:
        rates = (T.rate_mbps(prev_net[1], rx, now - prev_net[0]), T.rate_mbps(prev_net[2], tx, now - prev_net[0]))
    if rates and None not in rates:
        results.append(_verdict("host.network", T.network_verdict(rates[0], rates[1], th), "", start))  # type: ignore[arg-type]
    else:
        results.append(CheckResult("host.network", "ok", "first reading: no rate yet", f"> {th.network_mbps:g} Mbps"))
    return Reading(results, {"host": kept})


# --- DigitalOcean Monitoring through pydo -----------------------------------------------------------------------

def do_client(do: DigitalOceanConfig, timeout: float) -> Any:
    """A pydo client for the configured endpoint (a private CA when given); no retries of its own."""
    import pydo  # noqa: PLC0415 - only when a token is configured

    kw: dict[str, Any] = {"endpoint": do.api_endpoint, "retry_total": 0, "connection_timeout": timeout,
                          "read_timeout": timeout}
    if do.ca_bundle:
        kw["connection_verify"] = str(do.ca_bundle)
    return pydo.Client(token=do.token.get_secret_value(), **kw)  # type: ignore[union-attr]


def digitalocean(do: DigitalOceanConfig, th: Thresholds, now: float, timeout: float = 20.0,
                 known_id: int | None = None) -> Reading:
    """The droplet's CPU (sustained), memory, disks and public bandwidth as DigitalOcean Monitoring sees them.
    The droplet id found by name is kept, so later sweeps skip the lookup."""
    if do.token is None:
        return Reading([])
    start = time.monotonic()
    try:
        client = do_client(do, timeout)
        droplet_id = do.droplet_id or known_id
        if droplet_id is None:
            found = client.droplets.list(name=do.droplet_name).get("droplets") or []
            if not found:
                return Reading([CheckResult("do.droplet", "fail", "not found", do.droplet_name,
                                            f"no droplet named {do.droplet_name}", round(time.monotonic() - start, 4))])
            droplet_id = found[0]["id"]
        window = {"host_id": str(droplet_id), "start": str(int(now - max(th.cpu_sustained_s, 600))),
                  "end": str(int(now))}
        m = client.monitoring
        calls = {
            "cpu": lambda: m.get_droplet_cpu_metrics(**window),
            "mem_total": lambda: m.get_droplet_memory_total_metrics(**window),
            "mem_available": lambda: m.get_droplet_memory_available_metrics(**window),
            "fs_free": lambda: m.get_droplet_filesystem_free_metrics(**window),
            "fs_size": lambda: m.get_droplet_filesystem_size_metrics(**window),
            "bw_in": lambda: m.get_droplet_bandwidth_metrics(interface="public", direction="inbound", **window),
            "bw_out": lambda: m.get_droplet_bandwidth_metrics(interface="public", direction="outbound", **window),
        }
        with cf.ThreadPoolExecutor(max_workers=4, thread_name_prefix="do-metrics") as pool:
            futures = {k: pool.submit(fn) for k, fn in calls.items()}
            data = {k: f.result() for k, f in futures.items()}
    except Exception as exc:  # noqa: BLE001 - monitoring unreachable is a finding, not a crash
        code = getattr(exc, "status_code", None)
        return Reading([CheckResult("do.monitoring", "fail", f"HTTP {code}" if code else "unavailable",
                                    "API answers", _err(exc), round(time.monotonic() - start, 4))])
    evidence = f"droplet {droplet_id}"
    out = [_verdict("do.cpu", T.cpu_verdict(T.do_cpu_segments(data["cpu"]), th, now), evidence, start)]
    mem = T.do_memory_percent(data["mem_total"], data["mem_available"])
    if mem is not None:
        out.append(_verdict("do.memory", T.memory_verdict(mem, th), evidence, start))
    for mount, pct in sorted(T.do_disk_percent(data["fs_free"], data["fs_size"]).items()):
        out.append(_verdict(f"do.disk:{mount}", T.disk_verdict(pct, th), evidence, start))
    rx, tx = T.latest_value(data["bw_in"]), T.latest_value(data["bw_out"])
    if rx is not None or tx is not None:
        out.append(_verdict("do.network", T.network_verdict(rx or 0.0, tx or 0.0, th), evidence + ", public", start))
    return Reading(out, {"do": {"droplet_id": droplet_id}})


# --- freshness: the dead-man's switch (each job's newest product, read from the data itself) ---------------------

N8N_TAGS_CACHE = "n8n-tags.git"  # a bare fetch of the export remote's tags, apart from the export's own clone
N8N_RECHECK_S = 900.0  # a weekly product: its remote is read every 15 minutes, the age recomputed every sweep


def backup_freshness(bucket: Any, databases: list[str], max_age_h: float, now: float) -> list[CheckResult]:
    """Per database: the newest VERIFIED manifest in Spaces is younger than max_age_h (its stamp, when the dump
    began, is the point a restore returns to). Manifests are read newest first, so usually one per database."""
    from odoo_stack_ops.backup.restore import list_manifests, load_manifest  # noqa: PLC0415 - backup I/O, only here

    out = []
    for database in databases:
        start = time.monotonic()
        try:
            refs = list_manifests(bucket, database)
            ref = F.newest_verified(refs, lambda r: load_manifest(bucket, r.key).verified)
        except Exception as exc:  # noqa: BLE001 - an unreadable bucket is a failed check with its evidence
            out.append(CheckResult(f"backup.fresh.{database}", "fail", "manifests unreadable",
                                   f"verified backup younger than {max_age_h:g} h", _err(exc),
                                   round(time.monotonic() - start, 4)))
            continue
        age = now - ref.taken_at.timestamp() if ref else None
        detail = ref.stamp if ref else f"among {len(refs)} published"
        out.append(_verdict(f"backup.fresh.{database}", F.age_verdict(age, max_age_h * 3600, "verified backup", detail),
                            f"newest verified manifest {ref.key}" if ref else f"{len(refs)} manifest(s), none verified",
                            start))
    return out


def n8n_week_tags(cfg: StackConfig) -> list[tuple[str, str, float]]:
    """(name, object type, creator date) of the export remote's weekly tags, fetched into a bare cache."""
    from odoo_stack_ops.gitops import Repo  # noqa: PLC0415

    repo = Repo(cfg.state_dir.expanduser() / N8N_TAGS_CACHE, cfg.git.n8n_remote or "", cfg.git)
    if not (repo.path / "HEAD").exists():
        repo.path.mkdir(parents=True, exist_ok=True)
        repo.git("init", "-q", "--bare")
    repo.git("fetch", "-q", "--force", "--prune", "--no-tags", repo.remote, "+refs/tags/n8n-*:refs/tags/n8n-*",
             timeout=120)
    out = []
    for line in repo.git("for-each-ref", "--format=%(refname:short) %(objecttype) %(creatordate:unix)",
                         "refs/tags/").splitlines():
        name, kind, created = line.split()
        out.append((name, kind, float(created)))
    return out


def n8n_freshness(cfg: StackConfig, previous: dict[str, Any], now: float,
                  read: Callable[[StackConfig], list[tuple[str, str, float]]] = n8n_week_tags) -> Reading:
    """The newest weekly n8n tag in the export remote is younger than 8 days."""
    start = time.monotonic()
    name = "n8n.export.fresh"
    if previous.get("checked") is not None and now - previous["checked"] < N8N_RECHECK_S:
        kept = previous
    else:
        try:
            newest = F.newest_week_tag(read(cfg), cfg.backup.timezone)
        except Exception as exc:  # noqa: BLE001 - an unreachable remote is a failed check (and read again next sweep)
            return Reading([CheckResult(name, "fail", "remote unreadable", "weekly tag younger than 8 days", _err(exc),
                                        round(time.monotonic() - start, 4))])
        kept = {"checked": now, "tag": newest[0] if newest else None, "created": newest[1] if newest else None}
    age = now - kept["created"] if kept.get("created") is not None else None
    v = F.age_verdict(age, F.N8N_TAG_MAX_AGE_S, "weekly tag", kept.get("tag") or "in the export remote")
    return Reading([_verdict(name, v, f"remote read {iso_age(now - kept['checked'])} ago", start)], {"n8n_tag": kept})


def iso_age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def log_lag(client: Any, sink: Any, host: str, expected: list[str], project: str | None) -> CheckResult:
    """The shipping cursor of each container stream against the newest line the container holds."""
    import psycopg  # noqa: PLC0415

    from odoo_stack_ops.logs.parse import stamp_ns  # noqa: PLC0415

    start = time.monotonic()
    try:
        cursors = {key: cur.ns for key, cur in sink.cursors(host).items()}
    except psycopg.errors.UndefinedTable:  # ops.log_cursors not created yet: shipping never ran
        cursors = {}
    newest: dict[tuple[str, str], int] = {}
    for service, c in by_service(client, project).items():
        if service not in expected:
            continue
        for stream in ("stdout", "stderr"):
            last = c.logs(stdout=stream == "stdout", stderr=stream == "stderr", tail=1, timestamps=True)
            stamp = last.decode("utf-8", "replace").strip().split(" ", 1)[0]
            if stamp:
                newest[(c.name, stream)] = stamp_ns(stamp)
    return _verdict("logs.shipping.lag", F.lag_verdict(F.cursor_lags(newest, cursors)),
                    f"{len(newest)} stream(s) with lines, {len(cursors)} cursor(s) for {host}", start)
