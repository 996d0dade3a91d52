"""Health checks (I/O): each returns CheckResult(s) and never raises; the sweep runs them concurrently."""

from __future__ import annotations

import socket
import time
from typing import Any

import psycopg
import requests

from odoo_stack_ops.config import DatabaseConfig, StackConfig, Thresholds
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.health import facts
from odoo_stack_ops.health.evaluate import CheckResult, keep_samples, sustained_above
from odoo_stack_ops.redact import redact


def _err(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def http(name: str, url: str, timeout: float = 10.0) -> CheckResult:
    """200 within the timeout is ok; the response time is the value."""
    start = time.monotonic()
    try:
        resp = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return CheckResult(name, "fail", "unreachable", "HTTP 200", _err(exc), time.monotonic() - start)
    took = time.monotonic() - start
    status = "ok" if resp.status_code == 200 else "fail"
    return CheckResult(name, status, f"HTTP {resp.status_code} in {took:.2f} s", "HTTP 200",
                       "" if status == "ok" else redact(resp.text[:300]), took)


def database(db: DatabaseConfig, timeout: float = 10.0) -> list[CheckResult]:
    """TCP reachable; TLS as sslmode demands + credentials + SELECT 1; connections against the pool size."""
    out = []
    start = time.monotonic()
    try:
        with socket.create_connection((db.host, db.port), timeout=timeout):
            pass
        out.append(CheckResult("db.tcp", "ok", f"{db.host}:{db.port} open", "reachable", "",
                               time.monotonic() - start))
    except OSError as exc:
        return [CheckResult("db.tcp", "fail", f"{db.host}:{db.port} closed", "reachable", _err(exc),
                            time.monotonic() - start)]
    start = time.monotonic()
    try:
        kw = db.connect_kwargs() | {"connect_timeout": max(1, int(timeout))}
        with psycopg.connect(**kw, autocommit=True) as conn:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(int(timeout * 1000)),))
            conn.execute("SELECT 1").fetchone()
            tls = conn.pgconn.ssl_in_use
            used = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname IS NOT NULL").fetchone()[0]
    except psycopg.Error as exc:
        return [*out, CheckResult("db.select1", "fail", "no answer", f"sslmode={db.sslmode}, SELECT 1", _err(exc),
                                  time.monotonic() - start)]
    needs_tls = db.sslmode in ("require", "verify-ca", "verify-full")
    out.append(CheckResult("db.select1", "ok" if tls or not needs_tls else "fail",
                           f"SELECT 1 in {time.monotonic() - start:.2f} s, TLS {'on' if tls else 'off'}",
                           f"sslmode={db.sslmode}", "", time.monotonic() - start))
    share = used / db.pool_size
    out.append(CheckResult("db.connections", "ok" if share < 0.8 else ("warn" if share < 1 else "fail"),
                           f"{used}/{db.pool_size}", "< 80 % of the pool"))
    return out


def containers(client: Any, expected: list[str], project: str | None) -> list[CheckResult]:
    """Each expected compose service has a running container (healthy if it has a healthcheck)."""
    out = []
    labels = ["com.docker.compose.project=" + project] if project else []
    found: dict[str, Any] = {}
    for c in client.containers.list(all=True, filters={"label": labels} if labels else None):
        service = c.labels.get("com.docker.compose.service")
        if service and (service not in found or c.status == "running"):
            found[service] = c
    for service in expected:
        c = found.get(service)
        if c is None:
            out.append(CheckResult(f"container.{service}", "fail", "missing", "running", "no such container"))
            continue
        state = c.attrs.get("State", {})
        health = (state.get("Health") or {}).get("Status")
        restarts = int(c.attrs.get("RestartCount") or 0)
        ok = c.status == "running" and health in (None, "", "healthy")
        value = c.status + (f", {health}" if health else "") + f", {restarts} restarts"
        evidence = "" if ok else f"exit code {state.get('ExitCode')}, finished {state.get('FinishedAt')}"
        out.append(CheckResult(f"container.{service}", "ok" if ok else "fail", value, "running", evidence))
    return out


RESOURCE_SCRIPT = "cat /proc/stat; echo @@; cat /proc/meminfo; echo @@; cat /proc/net/dev; echo @@; df -P"


def resources(host: Executor, th: Thresholds, samples: dict[str, Any], now: float,
              mounts: list[str]) -> list[CheckResult]:
    """CPU (sustained), memory, disk per mount, network rate, from the host; `samples` persists across sweeps."""
    try:
        text = host.run(["sh", "-c", RESOURCE_SCRIPT], timeout=20).stdout_text
    except Exception as exc:  # noqa: BLE001 - one failed read is one failed check
        return [CheckResult("host.resources", "fail", "unreadable", "", _err(exc))]
    stat, meminfo, netdev, df = text.split("@@\n")
    out = []
    jiffies = facts.cpu_jiffies(stat)
    prev = samples.get("cpu_jiffies")
    samples["cpu_jiffies"] = list(jiffies)
    cpu_series = [tuple(s) for s in samples.get("cpu", [])]
    if prev:
        pct = facts.cpu_percent(tuple(prev), jiffies)  # type: ignore[arg-type]
        cpu_series.append((now, pct))
        cpu_series = keep_samples(cpu_series, now, th.cpu_sustained_s)
        high = sustained_above(cpu_series, th.cpu_percent, th.cpu_sustained_s, now)
        out.append(CheckResult("host.cpu", "fail" if high else ("warn" if pct > th.cpu_percent else "ok"),
                               f"{pct:.1f} %", f"> {th.cpu_percent:g} % for {th.cpu_sustained_s // 60} min"))
    samples["cpu"] = [list(s) for s in cpu_series]
    mem = facts.memory_percent(meminfo)
    out.append(CheckResult("host.memory", "fail" if mem > th.memory_percent else "ok", f"{mem:.1f} %",
                           f"> {th.memory_percent:g} %"))
    usage = facts.disk_percent(df)
    for mount in mounts:
        if mount not in usage:
            out.append(CheckResult(f"host.disk:{mount}", "fail", "not mounted", f"> {th.disk_percent:g} %"))
            continue
        out.append(CheckResult(f"host.disk:{mount}", "fail" if usage[mount] > th.disk_percent else "ok",
                               f"{usage[mount]:.0f} %", f"> {th.disk_percent:g} %"))
    total = facts.net_bytes(netdev)
    prev_net = samples.get("net")
    samples["net"] = [now, total]
    if prev_net:
        mbps = facts.net_mbps(int(prev_net[1]), total, now - float(prev_net[0]))
        out.append(CheckResult("host.network", "fail" if mbps > th.network_mbps else "ok", f"{mbps:.2f} Mbps",
                               f"> {th.network_mbps:g} Mbps"))
    return out


def do_cpu_percent(response: dict[str, Any]) -> float:
    """CPU busy % over the window from DigitalOcean's per-mode cumulative CPU seconds (pure)."""
    idle = total = 0.0
    for series in response.get("data", {}).get("result", []):
        values = series.get("values") or []
        if len(values) < 2:
            continue
        delta = float(values[-1][1]) - float(values[0][1])
        total += delta
        if series.get("metric", {}).get("mode") == "idle":
            idle += delta
    return round(100.0 * (1 - idle / total), 2) if total > 0 else 0.0


def digitalocean(cfg: StackConfig, now: float) -> list[CheckResult]:
    """Droplet CPU from DigitalOcean Monitoring (pydo) over the sustained window."""
    import pydo  # noqa: PLC0415

    do = cfg.digitalocean
    if do.token is None:
        return []
    try:
        kw: dict[str, Any] = {"endpoint": do.api_endpoint}
        if do.ca_bundle:
            kw["connection_verify"] = str(do.ca_bundle)
        client = pydo.Client(token=do.token.get_secret_value(), **kw)
        droplet_id = do.droplet_id
        if droplet_id is None:
            found = client.droplets.list(name=do.droplet_name).get("droplets", [])
            if not found:
                return [CheckResult("do.cpu", "fail", "droplet not found", "", f"no droplet named {do.droplet_name}")]
            droplet_id = found[0]["id"]
        window = cfg.thresholds.cpu_sustained_s
        resp = client.monitoring.get_droplet_cpu_metrics(host_id=str(droplet_id), start=str(int(now - window)),
                                                          end=str(int(now)))
    except Exception as exc:  # noqa: BLE001 - monitoring unreachable is a finding, not a crash
        return [CheckResult("do.cpu", "fail", "unavailable", "", _err(exc))]
    pct = do_cpu_percent(resp)
    th = cfg.thresholds.cpu_percent
    return [CheckResult("do.cpu", "fail" if pct > th else "ok", f"{pct:.1f} % avg over {window // 60} min",
                        f"> {th:g} % for {window // 60} min")]
