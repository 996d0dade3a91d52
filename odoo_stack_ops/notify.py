"""Mattermost incoming-webhook messages. A failed notification is logged as a warning, never raised:
an alert that cannot be delivered must not fail the backup it reports on."""

from __future__ import annotations

import logging
from typing import Any

import requests

from odoo_stack_ops.config import MattermostConfig
from odoo_stack_ops.redact import redact

log = logging.getLogger(__name__)

COLOURS = {"good": "#2eb886", "warning": "#daa038", "danger": "#a30200", "info": "#439fe0"}


def build_message(cfg: MattermostConfig, title: str, text: str, *, level: str = "danger",
                  fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The webhook payload: one attachment with a colour bar, a title, the text and short fields."""
    attachment: dict[str, Any] = {
        "fallback": redact(f"{title}: {text}")[:500],
        "color": COLOURS.get(level, level),
        "title": redact(title),
        "text": redact(text)[:15000],
    }
    if fields:
        attachment["fields"] = [{"short": True, "title": k, "value": redact(str(v))} for k, v in fields.items()]
    payload: dict[str, Any] = {"username": cfg.username, "attachments": [attachment]}
    if cfg.channel:
        payload["channel"] = cfg.channel
    return payload


def post(cfg: MattermostConfig, payload: dict[str, Any], timeout: float = 10.0) -> bool:
    """POST the payload to the webhook; True when Mattermost accepted it. Never raises."""
    if cfg.webhook_url is None:
        log.info("no Mattermost webhook configured; message not sent: %s", payload.get("attachments", [{}])[0].get("title"))
        return False
    try:
        resp = requests.post(cfg.webhook_url.get_secret_value(), json=payload, timeout=timeout)
    except requests.RequestException as exc:
        log.warning("Mattermost notification failed (%s); the run itself is unaffected", type(exc).__name__)
        return False
    if resp.status_code != 200:
        log.warning("Mattermost refused the notification: HTTP %s %s", resp.status_code, redact(resp.text[:200]))
        return False
    return True


def notify(cfg: MattermostConfig, title: str, text: str, *, level: str = "danger",
           fields: dict[str, Any] | None = None) -> bool:
    """Build and send one message; True when delivered."""
    return post(cfg, build_message(cfg, title, text, level=level, fields=fields))


ALERTED = "(already alerted on Mattermost)"


def alerted(message: str, sent: bool) -> str:
    """The message of the error a run raises after posting its own alert. The failure automation
    (deployments/setup.py) skips Failed runs whose state message ends so: one failure, one post."""
    return f"{message} {ALERTED}" if sent else message
