"""What every flow run pays before its first task: the process worker starts a new interpreter per run, which
imports Prefect and the flow's modules. Without compiled bytecode in the environment it compiles them from
source every time (2.6 of the engine's 8.2 s in a profiled run here, bench/prefect.py)."""

from __future__ import annotations

from odoo_stack_ops.prefect_local import bytecode_missing


def test_the_environment_holds_compiled_bytecode_for_flow_run_processes():
    # ./ops and the README's install sync with --compile-bytecode; PYTHONDONTWRITEBYTECODE (set on this test bed)
    # or a root-owned venv under a worker user keeps Python from ever writing it itself
    assert bytecode_missing() == [], "run `uv sync --frozen --compile-bytecode` (./ops setup does)"
