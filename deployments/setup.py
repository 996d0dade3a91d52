"""What an operator runs once per Prefect server (idempotent): work pools, concurrency limits, Secret
blocks from the environment, and the automations that post Failed/Crashed runs to Mattermost.

    uv run python -m deployments.setup            # then: prefect --no-prompt deploy --all
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from prefect.blocks.notifications import MattermostWebhook
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
)
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound

from deployments import stacks
from odoo_stack_ops import inventory
from odoo_stack_ops.config import STACK_FILE_VAR, load_config
from odoo_stack_ops.notify import ALERTED

log = logging.getLogger("deployments.setup")
ROOT = Path(__file__).resolve().parent.parent

PROCESS_POOL = "ops-process"
DOCKER_POOL = "ops-docker"
WORKER_IMAGE = "odoo-stack-ops-worker:latest"
# The per-stack writer limit (`stack-writes-<stack>`, odoo_stack_ops.locks) is created by its first holder.
CONCURRENCY_LIMITS = {"backup-nightly": 1}
FLOWS = ("backup", "restore", "restore-drill", "n8n-export", "n8n-import", "config-backup", "log-shipping",
         "health-sweep", "diagnose", "module-upgrade", "report", "stack-update", "stack-restart")
AUTOMATION = "odoo-stack-ops: failed run to Mattermost"
REPEATING = ("health-sweep", "log-shipping")  # every minute, every 5 minutes: a failure repeats until fixed
REPEAT_AUTOMATION = "odoo-stack-ops: failing frequent run to Mattermost, once per window"
REPEAT_AFTER_S = 3600
ZOMBIE_AUTOMATION = "odoo-stack-ops: crash runs whose heartbeat stopped"
ZOMBIE_AFTER_S = 90  # three missed heartbeats at PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 (prefect.yaml)
NOTIFY_BLOCK = "ops-mattermost"

# environment variable -> Secret block name (the names stack.example.yaml refers to)
SECRET_BLOCKS = {
    "DB_PASSWORD": "db-password", "ODOO_ADMIN_PASSWORD": "odoo-admin-password",
    "SPACES_ACCESS_KEY_ID": "spaces-access-key-id", "SPACES_SECRET_ACCESS_KEY": "spaces-secret-access-key",
    "SUPABASE_SERVICE_ROLE_KEY": "supabase-service-role-key", "MATTERMOST_WEBHOOK_URL": "mattermost-webhook-url",
    "N8N_API_KEY": "n8n-api-key", "N8N_ENCRYPTION_KEY": "n8n-encryption-key", "DIGITALOCEAN_TOKEN": "digitalocean-token",
    "GIT_TOKEN": "git-token", "SSH_PRIVATE_KEY": "ssh-private-key", "BACKUP_AGE_IDENTITY": "backup-age-identity", "SMTP_PASSWORD": "smtp-password",
}


def ensure_work_pools(client: object) -> list[str]:
    """A process pool (default) and a Docker pool running the worker image built from ./Dockerfile."""
    from prefect_docker.worker import DockerWorker  # noqa: PLC0415

    made = []
    docker_template = DockerWorker.get_default_base_job_template()
    docker_template["variables"]["properties"]["image"]["default"] = WORKER_IMAGE
    for name, kind, template in ((PROCESS_POOL, "process", None), (DOCKER_POOL, "docker", docker_template)):
        try:
            client.read_work_pool(name)  # type: ignore[attr-defined]
            continue
        except ObjectNotFound:
            pass
        pool = WorkPoolCreate(name=name, type=kind, **({"base_job_template": template} if template else {}))
        client.create_work_pool(pool)  # type: ignore[attr-defined]
        made.append(name)
    return made


def ensure_concurrency_limits(client: object) -> list[str]:
    """Global limits, created only when missing (a limit that does not exist silently limits nothing)."""
    made = []
    for name, limit in CONCURRENCY_LIMITS.items():
        try:
            client.read_global_concurrency_limit_by_name(name)  # type: ignore[attr-defined]
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))  # type: ignore[attr-defined]
            made.append(name)
    return made


def save_secret_blocks(env: dict[str, str], stacks: list[str] = ()) -> list[str]:
    """A Secret block for each secret variable present in the environment (values never printed); for each
    stack of an inventory, `<stack>-<block>` from its prefixed variable (PROD__DB_PASSWORD → prod-db-password)."""
    saved = []
    for var, block in SECRET_BLOCKS.items():
        for prefix, name in [("", block)] + [(inventory.env_prefix(s), f"{s}-{block}") for s in stacks]:
            if env.get(prefix + var):
                Secret(value=env[prefix + var]).save(name, overwrite=True)
                saved.append(name)
    return saved


def write_stack_deployments(env: dict[str, str], source: str, names: list[str]) -> dict[str, int]:
    """prefect.stacks.yaml: every deployment once per stack of the inventory; returns the clusters' dump limits."""
    configs = {name: load_config(source, stack=name, env=env) for name in names}
    if fixed := stacks.unspread(configs):
        log.warning("backup.schedule_cron of %s is not spread over backup.window_minutes (it names its days, or "
                    "its day of month or month, and would cross midnight; or its minute or hour is not a plain "
                    "number): these nightlies start at the cron's own time", ", ".join(fixed))
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (ROOT / stacks.GENERATED).write_text("# generated by `python -m deployments.setup` from the inventory "
                                         f"{source}: do not edit\n" + yaml.safe_dump(stacks.per_stack(doc, configs),
                                                                                       sort_keys=False))
    return stacks.cluster_limits(configs)


def upsert_limits(client: object, limits: dict[str, int]) -> None:
    """Create each limit, or set its size to the configured one."""
    for name, limit in limits.items():
        try:
            client.read_global_concurrency_limit_by_name(name)  # type: ignore[attr-defined]
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit))  # type: ignore[attr-defined]
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))  # type: ignore[attr-defined]


def mattermost_block(url: str) -> MattermostWebhook:
    """Prefect's Mattermost notification block from an incoming-webhook URL (https://host[:port]/hooks/TOKEN)."""
    parsed = urlparse(url)
    path, _, token = parsed.path.rpartition("/hooks/")
    if not token or not parsed.hostname:
        raise ValueError("MATTERMOST_WEBHOOK_URL must look like https://host/hooks/TOKEN")
    secure = parsed.scheme == "https"
    return MattermostWebhook(hostname=parsed.hostname, token=token, secure=secure,
                             port=parsed.port or (443 if secure else 80), path=path or None,
                             botname="odoo-stack-ops", notify_type="failure")


def failure_automations(block_id: object, repeat_after_s: float) -> list[AutomationCore]:
    """Failed or Crashed runs of our flows, posted to Mattermost through the notification block: every run of the
    flows an operator starts or that run daily or weekly; the flows that run every few minutes (REPEATING) once per
    run name (`health-sweep-<stack>`: tasks.common.stack_run_name) and `repeat_after_s`, else a sweep that cannot
    start (its stack file gone) would post every minute; their runs that never started (still randomly named) once
    per deployment and window. Prefect's reactive trigger fires at the first event, then lets the window pass
    before counting again."""
    def automation(name: str, flows: list[str], note: str, run_names: list[str] | None = None,
                   **bucket: Any) -> AutomationCore:
        # a run that posted its own alert (with what to do) says so in its state message: not posted twice
        match = {"prefect.resource.id": "prefect.flow-run.*", "prefect.state-message": f"!*{ALERTED}*"}
        if run_names:  # fnmatch patterns, "!" negates
            match["prefect.resource.name"] = run_names
        return AutomationCore(
            name=name,
            description=f"Posts Failed or Crashed runs of the odoo-stack-ops flows {', '.join(flows)} to Mattermost",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                match=match,
                match_related={"prefect.resource.role": "flow", "prefect.resource.name": flows},
                posture=Posture.Reactive, threshold=1, **bucket,
            ),
            actions=[SendNotification(
                block_document_id=block_id,
                subject="{{ flow.name }} run {{ flow_run.name }} is {{ flow_run.state.name }}",
                # the run's page (server-side PREFECT_UI_URL, else derived from the API URL) has its logs and retries
                body="Flow {{ flow.name }}, run {{ flow_run.name }}: {{ flow_run.state.name }}\n"
                     "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}" + note,
            )],
        )

    window = f"{repeat_after_s / 3600:g} h" if repeat_after_s >= 3600 else f"{repeat_after_s:g} s"
    within = timedelta(seconds=repeat_after_s)
    # a run that never started (its worker could not launch it, its flow cannot be imported) keeps Prefect's random
    # name: such runs of one deployment are counted together, else each would post
    unnamed = [automation(f"{REPEAT_AUTOMATION}: {f} runs that never started", [f],
                          f"\n(this run never started, so it has no stack name; further such failures of deployment "
                          f"{{{{ deployment.name }}}} in the next {window} are not posted: see its runs in the Prefect UI)",
                          run_names=[f"!{f}*"], for_each={"related:deployment:prefect.resource.id"}, within=within)
               for f in REPEATING]
    return [automation(AUTOMATION, [f for f in FLOWS if f not in REPEATING], ""),
            automation(REPEAT_AUTOMATION, list(REPEATING),
                       f"\n(further failures of {{{{ flow_run.name }}}} in the next {window} are not posted: "
                       "see its runs in the Prefect UI)",
                       run_names=[f"{f}*" for f in REPEATING],  # tasks.common.stack_run_name: <flow>[-<stack>]
                       for_each={"prefect.resource.name"}, within=within),
            *unnamed]


def ensure_failure_automations(client: object, block_id: object, repeat_after_s: float) -> bool:
    """Creates the failure automations or brings existing ones up to date (an upgrade of this project may change
    their filters or text); returns True when the first was created."""
    created = []
    for automation in failure_automations(block_id, repeat_after_s):
        existing = client.read_automations_by_name(automation.name)  # type: ignore[attr-defined]
        if existing:
            client.update_automation(existing[0].id, automation)  # type: ignore[attr-defined]
        else:
            client.create_automation(automation)  # type: ignore[attr-defined]
        created.append(not existing)
    return created[0]


def ensure_zombie_automation(client: object, after_s: float) -> bool:
    """A run whose worker died (machine lost, container evicted, worker killed) stops its heartbeats and would
    stay Running forever; Prefect's documented automation marks it Crashed after `after_s` without one, which
    the failure automation then posts. Runs emit heartbeats when the worker's environment sets
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY (prefect.yaml sets it for both pools)."""
    if client.read_automations_by_name(ZOMBIE_AUTOMATION):  # type: ignore[attr-defined]
        return False
    client.create_automation(AutomationCore(  # type: ignore[attr-defined]
        name=ZOMBIE_AUTOMATION,
        description="Marks a flow run Crashed when its heartbeats stop (its worker or machine died)",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=after_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after_s:.0f} s: its worker or machine died. The "
                                    "next run starts afresh (nothing half-written is ever listed)")],
    ))
    return True


def main(env: dict[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = dict(os.environ if env is None else env)
    with get_client(sync_client=True) as client:
        log.info("work pools created: %s", ensure_work_pools(client) or "none (already there)")
        log.info("concurrency limits created: %s", ensure_concurrency_limits(client) or "none (already there)")
        source = env.get(STACK_FILE_VAR)
        # an inventory of many gets per-stack deployments; a stack file (or none yet) keeps prefect.yaml's
        inv = inventory.read(source) if source and Path(source).expanduser().exists() else None
        names = sorted(inv.stacks) if inv and not inv.single else []
        log.info("Secret blocks saved: %s", save_secret_blocks(env, names) or "none (no secret variables set)")
        if names:
            limits = write_stack_deployments(env, source, names)
            upsert_limits(client, limits)
            log.info("inventory %s: %d stacks (%s); wrote %s with %d deployments per stack; dump limits: %s. Next: "
                     "prefect --no-prompt deploy --all --prefect-file %s", source, len(names), ", ".join(names),
                     stacks.GENERATED, len(yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]),
                     limits, stacks.GENERATED)
        zombie = ensure_zombie_automation(client, float(env.get("ZOMBIE_AFTER_S", ZOMBIE_AFTER_S)))
        log.info("crashed-run detection (no heartbeat): %s", "created" if zombie else "already there")
        if env.get("MATTERMOST_WEBHOOK_URL"):
            block_id = mattermost_block(env["MATTERMOST_WEBHOOK_URL"]).save(NOTIFY_BLOCK, overwrite=True)
            created = ensure_failure_automations(client, block_id,
                                                 float(env.get("ALERT_REPEAT_AFTER_S", REPEAT_AFTER_S)))
            log.info("failure automation: %s", "created" if created else "updated")
        else:
            log.info("MATTERMOST_WEBHOOK_URL not set: no failure automation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
