"""The log-shipping flow's parameters (a pydantic model, so the Prefect UI renders a form)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LogShippingOptions(BaseModel):
    """What to ship and when to alert; defaults suit a run every 5 minutes."""

    model_config = ConfigDict(extra="forbid")

    services: list[str] | None = Field(None, description="Compose services to ship (default: every configured container)")
    batch_size: int = Field(20_000, ge=1, le=100_000, description="Rows per transaction (bounds memory: ~10 MB at 20,000)")
    max_seconds: float = Field(240, gt=0, description="Time budget of one run; a bigger backlog continues next run")
    settle_s: float = Field(5.0, ge=0, description="Hold back an Odoo entry younger than this (a traceback may still grow)")
    critical_levels: list[str] = Field(["CRITICAL", "ERROR"], description="Levels posted to Mattermost")
    critical_patterns: list[str] = Field(default_factory=list,
                                         description="Regular expressions; a matching message is critical too")
    alert_interval_minutes: float = Field(15, ge=0, description="At most one message per container/logger per interval")
    alert_samples: int = Field(5, ge=0, le=50, description="Sample lines per Mattermost message")

    @field_validator("critical_levels")
    @classmethod
    def _upper(cls, levels: list[str]) -> list[str]:
        return [lv.upper() for lv in levels]

    @field_validator("critical_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"critical pattern {p!r} is not a regular expression: {exc}") from exc
        return patterns
