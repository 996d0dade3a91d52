"""Pure parts of the backup: key layout, pg tool rules, filestore planning, manifests, neutralize, tar."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime

import pytest
import zstandard

from odoo_stack_ops.backup import filestore as fs
from odoo_stack_ops.backup import layout, pgdump
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.backup.restore import neutralize_statements, odoo_manifest, pick_backup, tar_stream
from odoo_stack_ops.backup.verify import compare_facts, sample_files, scratch_name
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.streams import IterReader, checked, zstd_decompressed

SHA = "ab" + "c" * 38


def test_layout_round_trip():
    st = layout.stamp(datetime(2026, 11, 25, 2, 0, 5, tzinfo=UTC))
    assert st == "20261125T020005Z"
    key = layout.manifest_key("pre", "odoo_core", st)
    assert key == "pre/manifests/odoo_core/20261125T020005Z.json"
    assert layout.parse_manifest_key(key) == ("odoo_core", st)
    assert layout.object_key("pre", "sha1", SHA) == f"pre/objects/sha1/ab/{SHA}"
    assert layout.dump_key("pre", "db", st, encrypted=True).endswith(".dump.zst.age")
    with pytest.raises(ValueError):
        layout.parse_manifest_key("pre/manifests/odoo_core/yesterday.json")


@pytest.mark.parametrize(("out", "major"), [
    ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", 15), ("pg_dump (PostgreSQL) 16.4", 16),
    ("pg_dump (PostgreSQL) 9.6.24", 9)])
def test_tool_major(out, major):
    assert pgdump.tool_major(out) == major


def test_version_rule_refuses_older_pg_dump():
    assert pgdump.dump_compatible(15, 15)
    assert pgdump.dump_compatible(16, 15)
    assert not pgdump.dump_compatible(15, 16)
    assert pgdump.server_major(150010) == 15


def test_pg_dump_argv_quotes_nothing_and_refuses_injection():
    argv = pgdump.pg_dump_argv("odoo_core", "00000003-0000001B-1")
    assert argv == ["pg_dump", "--format=custom", "--compress=0", "--no-password", "--dbname=odoo_core",
                    "--snapshot=00000003-0000001B-1"]
    for bad in ["odoo; rm -rf /", "odoo core", "$(id)", "a" * 64, "'x'"]:
        with pytest.raises(ValueError):
            pgdump.pg_dump_argv(bad)
    with pytest.raises(ValueError):
        pgdump.pg_dump_argv("odoo", "1; drop")
    with pytest.raises(ValueError):
        pgdump.pg_restore_argv("x", jobs=4)  # parallel restore needs a file


def test_parse_listing_and_odoo_names():
    text = f"12 1700000000 /var/lib/odoo/filestore/db/ab/{SHA}\n5 1700000001 /var/lib/odoo/filestore/db/x/y z.txt\n"
    entries = fs.parse_listing(text, "/var/lib/odoo/filestore/db")
    assert [e.path for e in entries] == [f"ab/{SHA}", "x/y z.txt"]
    assert fs.odoo_sha1(f"ab/{SHA}") == SHA
    assert fs.odoo_sha1(f"cd/{SHA}") is None  # directory must match the hash prefix
    assert fs.odoo_sha1("x/y z.txt") is None
    with pytest.raises(OpsError):
        fs.parse_listing("1 1 /etc/passwd\n", "/var/lib/odoo/filestore/db")


def test_plan_uploads_reads_only_files_no_present_pack_holds():
    entries = [fs.FileEntry(f"ab/{SHA}", 10, 1), fs.FileEntry("notes.txt", 3, 5), fs.FileEntry("new.txt", 1, 1)]
    pack, gone = "1" * 64, "2" * 64
    prev = fs.Previous.of([fs.StoredFile(f"cd/{SHA}", 10, 9, "sha1", SHA, pack, 0, 10),  # same content, other path
                           fs.StoredFile("notes.txt", 3, 5, "sha256", "f" * 64, pack, 10, 3)])
    known, to_read = fs.plan_uploads(entries, {pack}, prev)
    assert known == [fs.StoredFile(f"ab/{SHA}", 10, 1, "sha1", SHA, pack, 0, 10),
                     fs.StoredFile("notes.txt", 3, 5, "sha256", "f" * 64, pack, 10, 3)]
    assert [e.path for e in to_read] == ["new.txt"]
    # a changed mtime means the old digest cannot be trusted
    known, to_read = fs.plan_uploads([fs.FileEntry("notes.txt", 3, 6)], {pack}, prev)
    assert not known and [e.path for e in to_read] == ["notes.txt"]
    # a pack missing from the bucket: re-read even when the name promises the content
    known, to_read = fs.plan_uploads(entries[:2], {gone}, prev)
    assert not known and len(to_read) == 2
    # version-1 files (one object each, no pack) are never pointed at: the first packed night reads everything
    known, to_read = fs.plan_uploads(entries[:1], {pack}, fs.Previous.of([fs.StoredFile(f"ab/{SHA}", 10, 1, "sha1",
                                                                                        SHA)]))
    assert not known and len(to_read) == 1


def test_sparse_packs_are_those_tonight_needs_less_than_half_of():
    full, half, thin, v1 = "1" * 64, "2" * 64, "3" * 64, None
    sizes = {full: 100, half: 100, thin: 100, "4" * 64: 100}  # the fourth: tonight needs none of it

    def f(path: str, pack: str | None, offset: int, length: int) -> fs.StoredFile:
        return fs.StoredFile(path, length, 1, "sha256", path * 64, pack, offset, length)

    known = [f("a", full, 0, 60), f("b", full, 60, 40), f("c", half, 0, 50), f("d", v1, 0, -1),
             f("e", thin, 10, 30), f("e2", thin, 10, 30),  # two files, one blob: counted once
             f("g", thin, 40, 19)]
    assert fs.sparse_packs(known, sizes) == {thin}  # 49 of 100; exactly half is kept as it is
    assert fs.sparse_packs(known, sizes, below=0.51) == {half, thin}
    assert fs.sparse_packs(known[:1], sizes) == set()  # 60 of 100


def test_tar_batches_split_and_validate():
    entries = [fs.FileEntry(f"d/{i:05d}" + "x" * 200, 1, 1) for i in range(700)]
    batches = list(fs.tar_batches("/root", entries))
    assert len(batches) > 1
    assert sum(len(b) - 6 for b in batches) == 700
    assert all(b[:6] == ["tar", "-cf", "-", "-C", "/root", "--"] for b in batches)
    for bad in ["../etc/passwd", "a/$(id)", "a;b", "/abs", "a\nb"]:
        with pytest.raises(OpsError):
            list(fs.tar_batches("/root", [fs.FileEntry(bad, 1, 1)]))


def test_filestore_manifest_round_trip():
    files = [fs.StoredFile(f"ab/{SHA}", 10, 1, "sha1", SHA, "1" * 64, 0, 10),
             fs.StoredFile("n é.txt", 3, 5, "sha256", "f" * 64, "1" * 64, 10, 190)]
    assert fs.decode_manifest(fs.encode_manifest("db", "st", "/r", files)) == sorted(files, key=lambda f: f.path)
    # a version-1 manifest (one object per file) still decodes: its files have no pack
    v1 = zstandard.ZstdCompressor().compress(json.dumps({"version": 1, "files": [[f"ab/{SHA}", 10, 1, "sha1", SHA]]}
                                                        ).encode())
    (old,) = fs.decode_manifest(v1)
    assert old.pack is None and old.location("p", None) == (layout.object_key("p", "sha1", SHA), 0, -1)
    assert files[1].location("p", "tag") == (f"p/packs/11/{'1' * 64}", 10, 190)


def _manifest(**over):
    facts = {"server_version": "15.10", "odoo_version": "18.0", "modules": {"base": "18.0.1.3"}, "tables": 10,
             "schemas": 2, "large_objects": 1, "row_counts": {"res_users": 3}}
    dump = mf.DumpRecord(key="k", stored_bytes=100, raw_bytes=300, duration_s=1.0, stored_sha256="s", raw_sha256="r")
    fsd = mf.FilestoreRecord(manifest_key="f", bytes=10, new_bytes=5, duration_s=0.5)
    doc = mf.build_manifest(stack="s", database="odoo_core", st="20261125T020000Z",
                            started_at=datetime(2026, 11, 25, tzinfo=UTC), finished_at=datetime(2026, 11, 25, 0, 1, tzinfo=UTC),
                            facts=facts, dump=dump, filestore=fsd, verification=mf.Verification(ok=True, duration_s=2.5),
                            encryption=None)
    return doc.model_copy(update=over)


def test_manifest_encode_decode_and_summary():
    doc = _manifest()
    assert mf.decode(mf.encode(doc)) == doc
    assert doc.verified is True and doc.duration_s == 60
    rows = mf.summary_rows(doc)
    assert rows[0]["item"] == "database dump" and rows[2]["key"] == "ok" and rows[2]["seconds"] == 2.5
    with pytest.raises(ValueError):
        mf.decode(b'{"format": "other"}')
    with pytest.raises(ValueError):
        mf.decode(b'[1, 2]')


def test_manifest_reads_documents_written_by_older_and_newer_writers():
    """A night written before the typed model (no mode, no problems) and one with keys this reader does not
    know both load; unknown keys are carried through when re-encoded."""
    import json

    doc = json.loads(mf.encode(_manifest()))
    del doc["verification"]["mode"], doc["verification"]["problems"]
    doc["dump"]["future_field"] = 7
    back = mf.decode(json.dumps(doc).encode())
    assert back.verified and json.loads(mf.encode(back))["dump"]["future_field"] == 7


def test_compare_facts_reports_every_difference():
    doc = _manifest()
    same = {"tables": 10, "schemas": 2, "large_objects": 1, "row_counts": {"res_users": 3}, "modules": {"base": "18.0.1.3"}}
    assert compare_facts(doc, same) == []
    bad = {"tables": 9, "schemas": 2, "large_objects": 0, "row_counts": {"res_users": 2}, "modules": {}}
    problems = compare_facts(doc, bad)
    assert len(problems) == 4 and any("res_users" in p for p in problems)


def test_pick_backup_prefers_newest_verified():
    refs = [mf.ManifestRef.from_key(f"p/manifests/db/2026112{d}T020000Z.json") for d in range(1, 5)]
    manifests = {r.key: _manifest(verified=r.stamp != "20261124T020000Z") for r in refs}
    assert pick_backup(refs, manifests, database="db").stamp == "20261123T020000Z"
    assert pick_backup(refs, manifests, database="db", key="20261124T020000Z").stamp == "20261124T020000Z"
    day = datetime(2026, 11, 22, tzinfo=UTC).date()
    assert pick_backup(refs, manifests, database="db", on_date=day).stamp == "20261122T020000Z"
    with pytest.raises(OpsError):
        pick_backup(refs, manifests, database="other")


def test_neutralize_statements_only_for_present_tables():
    assert neutralize_statements(set()) == []
    stmts = neutralize_statements({"ir_cron", "ir_mail_server", "ir_config_parameter"})
    assert any("ir_cron" in s and "autovacuum_job" in s for s in stmts)
    assert any("ir_mail_server SET active = false" in s for s in stmts)
    assert not any("fetchmail" in s for s in stmts)


def test_odoo_manifest_shape():
    m = odoo_manifest(_manifest(), "odoo_core")
    assert m["odoo_dump"] == "1" and m["version"] == "18.0" and m["pg_version"] == "15.10"
    assert m["modules"] == {"base": "18.0.1.3"}


def test_tar_stream_is_a_valid_archive():
    data = {"ab/one": b"x" * 1000, "deep/er/two": b"", "three": b"y" * 512}
    stream = b"".join(tar_stream((n, len(d), 1700000000, [d]) for n, d in data.items()))
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    assert got == data


def test_stream_helpers():
    import zstandard

    blob = zstandard.ZstdCompressor().compress(b"hello " * 1000)
    assert b"".join(zstd_decompressed([blob[:7], blob[7:]])) == b"hello " * 1000
    assert IterReader([b"ab", b"cd", b"e"]).read(3) == b"abc"
    with pytest.raises(RuntimeError):
        list(checked([b"x"], "0" * 64, RuntimeError))


def test_scratch_names_and_sampling():
    assert scratch_name("odoo_core", "20261125T020000Z") == "verify_odoo_core_20261125t020000z"
    files = [fs.StoredFile(str(i), 1, 1, "sha1", "a") for i in range(100)]
    picked = [f.path for f in sample_files(files, 10, "seed")]
    assert len(picked) == len(set(picked)) == 10 and set(picked) <= {f.path for f in files}
    # The stamp seeds the sample: a fresh list of the same files (another run) picks the same ones,
    # another stamp other ones, and neither is simply the head of the list.
    again = [fs.StoredFile(str(i), 1, 1, "sha1", "a") for i in range(100)]
    assert [f.path for f in sample_files(again, 10, "seed")] == picked
    assert [f.path for f in sample_files(files, 10, "other")] != picked
    assert picked != [f.path for f in files[:10]]
    assert sample_files(files[:7], 10, "seed") == files[:7]  # fewer than asked: all of them


def test_lifecycle_plan_adds_only_an_abort_rule_and_keeps_the_others():
    from odoo_stack_ops.backup import lifecycle as lc

    logs = {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}}
    first = lc.plan([logs], "odoo-erp-prod/", 3)
    assert first.dangers == [] and first.rules == [logs, lc.our_rule("odoo-erp-prod/", 3)]
    assert not any(k in first.rules[1] for k in lc.EXPIRING)  # ours never deletes an object
    assert lc.plan(first.rules, "odoo-erp-prod/", 3).rules is None  # already right: nothing to put
    assert lc.plan(first.rules, "odoo-erp-prod/", 5).rules == [logs, lc.our_rule("odoo-erp-prod/", 5)]
    assert lc.plan(first.rules, "odoo-erp-prod/", 0).rules == [logs]  # 0 takes ours away, keeps theirs
    assert lc.plan([logs], "odoo-erp-prod/", 0).rules is None


@pytest.mark.parametrize(("rule", "dangerous"), [
    ({"ID": "all", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 30}}, True),
    ({"ID": "legacy", "Status": "Enabled", "Prefix": "", "Expiration": {"Days": 30}}, True),
    ({"ID": "objs", "Status": "Enabled", "Filter": {"Prefix": "odoo-erp-prod/objects/"}, "Expiration": {"Days": 9}},
     True),
    ({"ID": "and", "Status": "Enabled", "Filter": {"And": {"Prefix": "odoo", "ObjectSizeGreaterThan": 1}},
      "Expiration": {"Days": 9}}, True),
    ({"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": "odoo-erp-prod/"},
      "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}, True),
    ({"ID": "off", "Status": "Disabled", "Filter": {}, "Expiration": {"Days": 1}}, False),
    ({"ID": "tagged", "Status": "Enabled", "Filter": {"Tag": {"Key": "tmp", "Value": "1"}},
      "Expiration": {"Days": 1}}, False),
    ({"ID": "other", "Status": "Enabled", "Filter": {"Prefix": "n8n/"}, "Expiration": {"Days": 1}}, False),
    ({"ID": "parts", "Status": "Enabled", "Filter": {},
      "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}, False),
])
def test_lifecycle_plan_names_rules_that_would_delete_backups(rule, dangerous):
    from odoo_stack_ops.backup import lifecycle as lc

    dangers = lc.plan([rule], "odoo-erp-prod/", 3).dangers
    assert bool(dangers) is dangerous
    if dangerous:
        assert rule["ID"] in dangers[0] and "remove it" in dangers[0]


@pytest.mark.parametrize("seed", range(20))
def test_iter_reader_returns_the_stream_whatever_the_chunks_and_reads(seed):
    import random

    rnd = random.Random(seed)
    data = rnd.randbytes(rnd.randint(0, 50_000))
    cuts = sorted(rnd.sample(range(len(data) + 1), min(len(data) + 1, rnd.randint(0, 30))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]  # empty chunks too
    reader, out = IterReader(chunks), []
    while True:
        if rnd.random() < 0.05:
            out.append(reader.read())  # the rest at once
            break
        piece = reader.read(rnd.choice([1, 7, 512, 10_240, 40_000]))
        if not piece:
            break
        out.append(piece)
    assert b"".join(out) == data and reader.read(5) == b""


def test_copy_names_fit_postgres_and_stale_copies_spare_live_and_recent_ones():
    from odoo_stack_ops.backup.restore import copy_name, stale_copies

    long = "d" * 63
    assert len(copy_name(long, "restoring", "20261201T010000Z")) <= 63
    assert copy_name("odoo_core", "before", "20261201T010000Z") == "odoo_core__before_20261201t010000z"
    names = ["odoo_core", "odoo_core__restoring_20261201t010000z", "odoo_core__restoring_20261201t020000z",
             "odoo_core__before_20261130t010000z", "odoo_core__before_20261201t013000z", "odoo_core__notes",
             "odoo_core_x__restoring_20261101t010000z"]
    now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    confirmed = {"odoo_core__before_20261130t010000z", "odoo_core__before_20261201t013000z"}
    doomed = stale_copies(names, {"odoo_core__restoring_20261201t020000z"}, "odoo_core", now, 12, confirmed)
    # a killed restore's copy goes, the one in use stays; a confirmed before-copy goes only past keep_before_h;
    # the live database, unknown names and another target's copies are never touched
    assert doomed == ["odoo_core__before_20261130t010000z", "odoo_core__restoring_20261201t010000z"]
    assert stale_copies(names, set(), "odoo_core", now, 0, confirmed) == [
        "odoo_core__before_20261130t010000z", "odoo_core__before_20261201t013000z",
        "odoo_core__restoring_20261201t010000z", "odoo_core__restoring_20261201t020000z"]


def test_a_before_copy_no_passed_gate_confirmed_is_never_dropped_however_old():
    """A restore killed in its gate (or between its renames) leaves the database it replaced as a `__before_`
    copy nothing confirmed: maybe the only copy of production. No age and no keep_previous_h dooms it."""
    from odoo_stack_ops.backup.restore import stale_copies, unconfirmed_copies

    names = ["odoo_core__before_20251201t010000z", "odoo_core__before_20261130t010000z",
             "odoo_core__restoring_20261130t010000z"]
    now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert stale_copies(names, set(), "odoo_core", now, 0) == ["odoo_core__restoring_20261130t010000z"]
    confirmed = {"odoo_core__before_20261130t010000z"}
    assert stale_copies(names, set(), "odoo_core", now, 0, confirmed) == [
        "odoo_core__before_20261130t010000z", "odoo_core__restoring_20261130t010000z"]
    assert unconfirmed_copies(names, "odoo_core", confirmed) == ["odoo_core__before_20251201t010000z"]


def test_a_failed_copy_goes_by_age_alone_once_its_gate_failed():
    """A gate that fails swaps the previous database back and sets the restored one aside as `__failed_`: a copy
    of a backup still in Spaces, so the next restore drops it once keep_previous_h old (nothing did before)."""
    from odoo_stack_ops.backup.restore import stale_copies

    names = ["odoo_core__failed_20261130t010000z", "odoo_core__failed_20261201t013000z",
             "odoo_core__failed_20261201t014500z"]
    now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert stale_copies(names, set(), "odoo_core", now, 0) == names
    assert stale_copies(names, {"odoo_core__failed_20261201t014500z"}, "odoo_core", now, 0.5) == [
        "odoo_core__failed_20261130t010000z", "odoo_core__failed_20261201t013000z"]


def test_swapping_a_filestore_back_sets_the_restored_one_aside_under_its_copy_name(tmp_path):
    """With the copy's own name the next restore's sweep finds it (it was `<target>.failed`, swept by nothing);
    a swap whose second move fails puts the live directory back."""
    from odoo_stack_ops.backup.restore import swap_back_filestore, swap_filestore
    from odoo_stack_ops.executors.local import LocalExecutor

    root = tmp_path / "filestore"
    for name, content in {"db": "live", "db__restoring_s": "restored"}.items():
        (root / name).mkdir(parents=True)
        (root / name / "f").write_text(content)
    ex = LocalExecutor()
    swap_filestore(ex, str(tmp_path), "db__restoring_s", "db", "db__before_s")
    assert (root / "db" / "f").read_text() == "restored" and (root / "db__before_s" / "f").read_text() == "live"
    swap_back_filestore(ex, str(tmp_path), "db", "db__before_s", "db__failed_s")
    assert sorted(p.name for p in root.iterdir()) == ["db", "db__failed_s"]
    assert (root / "db" / "f").read_text() == "live" and (root / "db__failed_s" / "f").read_text() == "restored"
    with pytest.raises(Exception, match="exit"):  # the restored directory is not there: the live one stays
        swap_filestore(ex, str(tmp_path), "db__restoring_t", "db", "db__before_t")
    assert sorted(p.name for p in root.iterdir()) == ["db", "db__failed_s"]


@pytest.mark.parametrize("check", ["identifier", "stamp", "module", "ref"])
def test_validators_refuse_a_trailing_newline(check):
    """`$` matches before a final newline: a name from a bucket or a request ending in one passed every check."""
    from odoo_stack_ops.command import ensure_identifier
    from odoo_stack_ops.upgrade import plan

    calls = {"identifier": lambda v: ensure_identifier(v, "database"), "stamp": layout.parse_stamp,
             "module": lambda v: plan.check_modules([v]), "ref": plan.check_ref}
    good = {"identifier": "odoo_core", "stamp": "20261201T010000Z", "module": "sale", "ref": "v1"}
    assert calls[check](good[check])
    with pytest.raises((ValueError, OpsError)):
        calls[check](good[check] + "\n")


def test_a_filestore_restore_must_leave_odoo_its_free_space():
    from odoo_stack_ops.backup.restore import space_problem

    mib = 1 << 20
    assert space_problem(100 * mib, 1200 * mib, 1024 * mib) is None
    problem = space_problem(300 * mib, 1200 * mib, 1024 * mib)
    assert "needs 300 MiB" in problem and "1024 MiB must stay free" in problem and "1200 MiB free" in problem
