"""Test bed wiring: real services as session fixtures, a secret-leak guard, start-up costs in the summary."""

from __future__ import annotations

import logging
import os

import pytest

from odoo_stack_ops import redact

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.docker",
    "tests.fixtures.stack",
    "tests.fixtures.n8n",
]


class _Collector(logging.Handler):
    """Keeps every formatted log line of the run (Prefect's included) for the leak guard."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1])
        self.lines.append(text)


COLLECTOR = _Collector()
logging.getLogger().addHandler(COLLECTOR)
logging.getLogger().setLevel(logging.INFO)
logging.getLogger("odoo_stack_ops").setLevel(logging.DEBUG)


def find_leaks(texts: list[str]) -> list[str]:
    """Secret values (masked in the report) found in any of the texts."""
    secrets = redact.registered()
    hits = []
    for text in texts:
        for s in secrets:
            if s in text:
                hits.append(f"{s[:2]}… in {text[:120].replace(s, '***')!r}")
    return hits


@pytest.fixture(autouse=True)
def leak_guard():
    """Fails a test when any configured secret value reached a log record during it."""
    start = len(COLLECTOR.lines)
    yield
    leaks = find_leaks(COLLECTOR.lines[start:])
    del COLLECTOR.lines[start:]
    if leaks:
        pytest.fail(f"secret value(s) leaked into logs: {leaks[:3]}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests.fixtures import docker as docker_fx
    from tests.fixtures import services as services_fx
    from tests.fixtures import stack as stack_fx

    costs = {**getattr(services_fx, "STARTUP_SECONDS", {}), **getattr(docker_fx, "STARTUP_SECONDS", {}),
             **getattr(stack_fx, "STARTUP_SECONDS", {})}
    if costs:
        terminalreporter.section("test bed start-up (seconds)")
        for name, seconds in sorted(costs.items()):
            terminalreporter.write_line(f"{name:<24} {seconds:7.2f}")


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test means a missing service: fail the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped and session.exitstatus == 0:
        reporter.write_line(f"FAILING: {skipped} test(s) skipped in CI; every service must be available", red=True)
        session.exitstatus = 1
