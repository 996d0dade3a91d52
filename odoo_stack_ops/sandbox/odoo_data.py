"""An Odoo-like database and filestore for the sandbox and tests.

Not Odoo's schema, but the parts our flows read (ir_module_module, ir_cron, ir_mail_server,
ir_config_parameter, ir_model_data, res_*) plus content that breaks naive backups: unicode, bytea, large
objects, several schemas and hundreds of tables.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import psycopg

MODULES = {"base": "18.0.1.3", "web": "18.0.1.0", "mail": "18.0.1.15", "contacts": "18.0.1.0",
           "account": "18.0.1.2", "ipai_finance_ppm": "18.0.1.0.4"}

CORE_SQL = """
CREATE TABLE ir_module_module (id serial PRIMARY KEY, name varchar NOT NULL UNIQUE, state varchar NOT NULL,
    latest_version varchar, write_date timestamp DEFAULT now());
CREATE TABLE ir_module_module_dependency (id serial PRIMARY KEY, module_id int REFERENCES ir_module_module(id),
    name varchar NOT NULL);
CREATE TABLE ir_model (id serial PRIMARY KEY, model varchar NOT NULL UNIQUE, name jsonb);
CREATE TABLE ir_model_data (id serial PRIMARY KEY, module varchar, name varchar, model varchar, res_id int);
CREATE TABLE ir_config_parameter (id serial PRIMARY KEY, key varchar NOT NULL UNIQUE, value text NOT NULL);
CREATE TABLE ir_cron (id serial PRIMARY KEY, cron_name varchar, active boolean DEFAULT true);
CREATE TABLE ir_mail_server (id serial PRIMARY KEY, name varchar, smtp_host varchar, active boolean DEFAULT true);
CREATE TABLE fetchmail_server (id serial PRIMARY KEY, name varchar, active boolean DEFAULT true);
CREATE TABLE ir_ui_view (id serial PRIMARY KEY, key varchar, active boolean DEFAULT false);
CREATE TABLE res_company (id serial PRIMARY KEY, name varchar NOT NULL, logo bytea);
CREATE TABLE res_partner (id serial PRIMARY KEY, name varchar, email varchar, comment text, data jsonb,
    company_id int REFERENCES res_company(id));
CREATE TABLE res_users (id serial PRIMARY KEY, login varchar UNIQUE, password varchar, partner_id int
    REFERENCES res_partner(id));
CREATE TABLE ir_attachment (id serial PRIMARY KEY, name varchar, store_fname varchar, checksum varchar(40),
    file_size int, mimetype varchar, db_datas bytea, res_model varchar, res_id int);
CREATE SCHEMA reporting;
CREATE TABLE reporting.sales_summary (id serial PRIMARY KEY, month date, total numeric(16, 2), note text);
CREATE SCHEMA "Mixed Case ünï";
CREATE TABLE "Mixed Case ünï"."Tricky ""Table"" ✓" (id serial PRIMARY KEY, "weird col ✓" text, payload bytea);
CREATE TABLE lo_holder (id serial PRIMARY KEY, blob oid);
"""

NAMES = ["Ngọc Anh", "Zoë Ångström", "José Müller", "李小龍", "Ólafur Þór", "Renée O'Connor", "Søren 'quote' Kierkegaard",
         "Дмитрий", "محمد", "Emoji 🎉 Person", "Back\\slash Tab\there", "Semi;colon -- comment"]


def populate(conn: psycopg.Connection[Any], *, partners: int = 200, extra_tables: int = 300, seed: int = 7,
             extension: bool = True) -> None:
    """Create and fill the Odoo-like schema in the connected (empty) database (with an extension, when the
    server ships contrib: dumps must carry it)."""
    rnd = random.Random(seed)  # noqa: S311 - test data
    with conn.cursor() as cur:
        if extension:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        cur.execute(CORE_SQL)
        for name, version in MODULES.items():
            cur.execute("INSERT INTO ir_module_module (name, state, latest_version) VALUES (%s, 'installed', %s)",
                        (name, version))
        cur.execute("INSERT INTO ir_module_module (name, state) VALUES ('sale', 'uninstalled')")
        cur.execute("INSERT INTO ir_cron (cron_name) VALUES ('Base: Auto-vacuum internal data'), ('Mail: Fetchmail'), "
                    "('Invoice reminders')")
        cur.execute("INSERT INTO ir_model_data (module, name, model, res_id) VALUES "
                    "('base', 'autovacuum_job', 'ir.cron', 1)")
        cur.execute("INSERT INTO ir_mail_server (name, smtp_host) VALUES ('Mailgun', 'smtp.mailgun.org')")
        cur.execute("INSERT INTO fetchmail_server (name) VALUES ('support inbox')")
        cur.execute("INSERT INTO ir_ui_view (key, active) VALUES ('web.neutralize_banner', false)")
        cur.execute("INSERT INTO ir_config_parameter (key, value) VALUES ('database.uuid', gen_random_uuid()::text), "
                    "('web.base.url', 'https://erp.example.com')")
        cur.execute("INSERT INTO ir_model (model, name) VALUES ('res.partner', '{\"en_US\": \"Contact\"}')")
        cur.execute("INSERT INTO res_company (name, logo) VALUES (%s, %s)", ("InsightPulse ✓", bytes(range(256)) * 8))
        for i in range(partners):
            name = f"{rnd.choice(NAMES)} #{i}"
            cur.execute(
                "INSERT INTO res_partner (name, email, comment, data, company_id) VALUES (%s, %s, %s, %s, 1)",
                (name, f"p{i}@example.com", "line1\nline2\r\n\ttabbed \\N not null" * rnd.randint(1, 5),
                 psycopg.types.json.Jsonb({"i": i, "tags": ["ä", "b"], "nested": {"x": None}})),
            )
        cur.execute("INSERT INTO res_users (login, password, partner_id) SELECT 'user' || id, "
                    "'$pbkdf2-sha512$hash' || id, id FROM res_partner WHERE id <= 20")
        cur.execute("INSERT INTO reporting.sales_summary (month, total, note) SELECT date '2026-01-01' + g * 31, "
                    "g * 1234.56, repeat('ñ', g) FROM generate_series(1, 12) g")
        cur.execute('INSERT INTO "Mixed Case ünï"."Tricky ""Table"" ✓" ("weird col ✓", payload) VALUES '
                    "(E'null\\\\0 byte-ish', decode('00ff00ff', 'hex')), ('''; DROP TABLE res_users; --', NULL)")
        for _ in range(3):
            cur.execute("INSERT INTO lo_holder (blob) VALUES (lo_from_bytea(0, %s))", (rnd.randbytes(5000),))
        for t in range(extra_tables):
            cur.execute(f"CREATE TABLE x_custom_{t:03d} (id serial PRIMARY KEY, val text, n int)")
            if t % 10 == 0:
                cur.execute(f"INSERT INTO x_custom_{t:03d} (val, n) SELECT md5(g::text), g FROM generate_series(1, 20) g")
    conn.commit()


def make_filestore(count: int = 40, *, seed: int = 11, nested_extra: bool = True) -> dict[str, bytes]:
    """Files as Odoo writes them (`ab/ab12…` by SHA-1), plus a non-Odoo file in a nested directory."""
    rnd = random.Random(seed)  # noqa: S311 - test data
    files: dict[str, bytes] = {}
    for i in range(count):
        data = rnd.randbytes(rnd.randint(0, 4000)) + f"attachment {i}".encode()
        sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        files[f"{sha[:2]}/{sha}"] = data
    if nested_extra:
        files["checklist/deep/nested/notes with space.txt"] = "réunion ✓\n".encode()
    return files


def register_attachments(conn: psycopg.Connection[Any], files: dict[str, bytes]) -> None:
    """Rows in ir_attachment pointing at filestore files (as Odoo's store_fname does)."""
    with conn.cursor() as cur:
        for path, data in files.items():
            cur.execute("INSERT INTO ir_attachment (name, store_fname, checksum, file_size) VALUES (%s, %s, %s, %s)",
                        (path.rsplit("/", 1)[-1], path, hashlib.sha1(data, usedforsecurity=False).hexdigest(), len(data)))
    conn.commit()


TABLE_CHECKSUMS_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2
"""


def table_checksums(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """md5 of every user table's rows in a canonical order, plus large objects' contents."""
    from psycopg import sql  # noqa: PLC0415

    out = {}
    tables = conn.execute(TABLE_CHECKSUMS_SQL).fetchall()
    for schema, table in tables:
        q = sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {}.{} t").format(
            sql.Identifier(schema), sql.Identifier(table))
        out[f"{schema}.{table}"] = conn.execute(q).fetchone()[0]
    out["<large objects>"] = conn.execute(
        "SELECT md5(coalesce(string_agg(md5(lo_get(oid)), ',' ORDER BY oid), '')) FROM pg_largeobject_metadata"
    ).fetchone()[0]
    return out
