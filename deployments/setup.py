"""What an operator runs once per Prefect server (idempotent): work pools, concurrency limits, Secret
blocks from the environment, and the automation that posts Failed/Crashed runs to Mattermost.

    uv run python -m deployments.setup            # then: prefect --no-prompt deploy --all
"""

from __future__ import annotations

import logging
import os
import sys
from urllib.parse import urlparse

from prefect.blocks.notifications import MattermostWebhook
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

log = logging.getLogger("deployments.setup")

PROCESS_POOL = "ops-process"
DOCKER_POOL = "ops-docker"
WORKER_IMAGE = "odoo-stack-ops-worker:latest"
# The per-stack writer limit (`stack-writes-<stack>`, odoo_stack_ops.locks) is created by its first holder.
CONCURRENCY_LIMITS = {"backup-nightly": 1}
FLOWS = ("backup", "restore", "restore-drill", "n8n-export", "n8n-import", "config-backup", "log-shipping",
         "health-sweep", "diagnose", "module-upgrade")
AUTOMATION = "odoo-stack-ops: failed run to Mattermost"
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


def save_secret_blocks(env: dict[str, str]) -> list[str]:
    """A Secret block for each secret variable present in the environment (values never printed)."""
    saved = []
    for var, block in SECRET_BLOCKS.items():
        if env.get(var):
            Secret(value=env[var]).save(block, overwrite=True)
            saved.append(block)
    return saved


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


def ensure_failure_automation(client: object, block_id: object) -> bool:
    """Failed or Crashed runs of any of our flows post to Mattermost through the notification block."""
    if client.read_automations_by_name(AUTOMATION):  # type: ignore[attr-defined]
        return False
    automation = AutomationCore(
        name=AUTOMATION,
        description="Posts every Failed or Crashed run of the odoo-stack-ops flows to Mattermost",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(FLOWS)},
            posture=Posture.Reactive, threshold=1,
        ),
        actions=[SendNotification(
            block_document_id=block_id,
            subject="{{ flow.name }} run {{ flow_run.name }} is {{ flow_run.state.name }}",
            body="Flow {{ flow.name }}, run {{ flow_run.name }}: {{ flow_run.state.name }}\n"
                 "{{ flow_run.state.message }}\nOpen it in the Prefect UI to see logs and retries.",
        )],
    )
    client.create_automation(automation)  # type: ignore[attr-defined]
    return True


def main(env: dict[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = dict(os.environ if env is None else env)
    with get_client(sync_client=True) as client:
        log.info("work pools created: %s", ensure_work_pools(client) or "none (already there)")
        log.info("concurrency limits created: %s", ensure_concurrency_limits(client) or "none (already there)")
        log.info("Secret blocks saved: %s", save_secret_blocks(env) or "none (no secret variables set)")
        if env.get("MATTERMOST_WEBHOOK_URL"):
            block_id = mattermost_block(env["MATTERMOST_WEBHOOK_URL"]).save(NOTIFY_BLOCK, overwrite=True)
            created = ensure_failure_automation(client, block_id)
            log.info("failure automation: %s", "created" if created else "already there")
        else:
            log.info("MATTERMOST_WEBHOOK_URL not set: no failure automation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
