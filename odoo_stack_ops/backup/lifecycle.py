"""The bucket's lifecycle rules: a safety net that never deletes what a retained backup needs.

Our one rule aborts multipart uploads left incomplete (a worker killed mid-upload) under the backup prefix; it
expires no object. Retention stays the flow's job: a rule that expired objects under the prefix by age would
delete filestore objects that retained manifests still reference (they are uploaded once and shared by every
later night), so such a rule is reported, never added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

RULE_ID = "odoo-stack-ops-abort-incomplete-uploads"
EXPIRING = ("Expiration", "NoncurrentVersionExpiration", "Transitions")


@dataclass
class LifecyclePlan:
    rules: list[dict[str, Any]] | None  # the full configuration to put, or None when it is already right
    dangers: list[str] = field(default_factory=list)


def our_rule(prefix: str, days: int) -> dict[str, Any]:
    return {"ID": RULE_ID, "Status": "Enabled", "Filter": {"Prefix": prefix},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days}}


def _scope(rule: dict[str, Any]) -> str | None:
    """The key prefix a rule applies to, or None when it needs object tags (our objects have none)."""
    flt = rule.get("Filter")
    if flt is None:
        return rule.get("Prefix", "")
    if "Tag" in flt or flt.get("And", {}).get("Tags"):
        return None
    return flt.get("Prefix", flt.get("And", {}).get("Prefix", ""))


def plan(existing: list[dict[str, Any]], prefix: str, days: int) -> LifecyclePlan:
    """Keep every other rule; add or update ours (days=0 removes it); name enabled rules that would delete backups."""
    dangers = []
    for rule in existing:
        scope = _scope(rule)
        if rule.get("Status") != "Enabled" or scope is None or not any(k in rule for k in EXPIRING):
            continue
        if prefix.startswith(scope) or scope.startswith(prefix):
            dangers.append(f"lifecycle rule {rule.get('ID') or '(unnamed)'!r} expires or moves objects under "
                           f"{scope or 'the whole bucket'!r}: it will delete filestore objects that retained "
                           "backups still reference; remove it (retention is the backup flow's job)")
    mine = [r for r in existing if r.get("ID") == RULE_ID]
    if not days:
        current = not mine
    else:
        current = len(mine) == 1 and mine[0].get("Status") == "Enabled" and _scope(mine[0]) == prefix and \
            mine[0].get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == days
    others = [r for r in existing if r.get("ID") != RULE_ID]
    wanted = others + ([our_rule(prefix, days)] if days else [])
    return LifecyclePlan(rules=None if current else wanted, dangers=dangers)


def ensure(s3: Any, bucket: str, prefix: str, days: int) -> LifecyclePlan:
    """Read the bucket's rules, put the planned ones when they differ; returns the plan (with its dangers)."""
    try:
        existing = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        existing = []
    wanted = plan(existing, prefix, days)
    if wanted.rules is not None:
        if wanted.rules:
            s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": wanted.rules})
        else:
            s3.delete_bucket_lifecycle(Bucket=bucket)
    return wanted
