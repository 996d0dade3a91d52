#!/bin/sh
# Stand-in for the `odoo` binary in the sandbox's odoo-core container (busybox sh).
# Does to the database what `odoo -d DB -i/-u MODULES --stop-after-init` does to ir_module_module,
# logs in Odoo's format, and fails or hangs on demand: ODOO_STANDIN_MODE, or the file
# /var/lib/odoo/.standin/mode, holding "fail" or "hang".
set -u
db="" install="" update="" stop=0 command=server
mode="${ODOO_STANDIN_MODE:-}"
[ -z "$mode" ] && [ -f /var/lib/odoo/.standin/mode ] && mode="$(cat /var/lib/odoo/.standin/mode)"
if [ "${1:-}" = neutralize ]; then
  # Odoo >= 16: `odoo neutralize -d DB` runs every installed module's data/neutralize.sql
  [ "$mode" = no-neutralize ] && { echo "Unknown command 'neutralize'" >&2; exit 1; }
  command=neutralize; shift
  [ "${1:-}" = --help ] && { echo "Usage: odoo neutralize [-d DB] (Neutralize a production database for testing)"; exit 0; }
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --version) echo "Odoo Server 18.0"; exit 0 ;;
    -d|--database) db="$2"; shift ;;
    -i|--init) install="$2"; shift ;;
    -u|--update) update="$2"; shift ;;
    --stop-after-init) stop=1 ;;
    --db_host) export PGHOST="$2"; shift ;;
    --db_port) export PGPORT="$2"; shift ;;
    -r|--db_user) export PGUSER="$2"; shift ;;
    -w|--db_password) export PGPASSWORD="$2"; shift ;;
    -c|--config|--addons-path|--logfile|--log-level) shift ;;
    *) ;;
  esac
  shift
done
ts() { printf '%s,%03d' "$(date -u '+%Y-%m-%d %H:%M:%S')" 0; }
say() { echo "$(ts) $$ $1 ${db:-?} $2: $3" >&2; }
[ -n "$db" ] || { say ERROR odoo.service.server "no database given (-d)"; exit 2; }
case "$db" in *[!A-Za-z0-9_]*) say ERROR odoo.service.server "invalid database name"; exit 2 ;; esac
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" -c "$1"; }
say INFO odoo "Odoo version 18.0"
if [ "$command" = neutralize ]; then
  [ "$mode" = neutralize-fail ] && { say ERROR odoo.modules.neutralize "neutralize failed"; exit 1; }
  has() { [ "$(q "SELECT count(*) FROM pg_class WHERE relname = '$1' AND relkind = 'r'")" = 1 ]; }
  has ir_cron && q "UPDATE ir_cron SET active = false WHERE id NOT IN (SELECT res_id FROM ir_model_data
                    WHERE model = 'ir.cron' AND module = 'base' AND name = 'autovacuum_job')"
  has ir_mail_server && q "UPDATE ir_mail_server SET active = false"
  has fetchmail_server && q "UPDATE fetchmail_server SET active = false"
  q "INSERT INTO ir_config_parameter (key, value) VALUES ('database.is_neutralized', 'True')
     ON CONFLICT (key) DO UPDATE SET value = 'True'" || exit 1
  say INFO odoo.modules.neutralize "Neutralization finished"
  exit 0
fi
say INFO odoo.modules.loading "loading 1 modules..."
mods="$(echo "$install,$update" | tr ',' ' ')"
for m in $mods; do
  case "$m" in *[!A-Za-z0-9_]*) say ERROR odoo.modules.loading "invalid module name"; exit 2 ;; esac
  manifest=""
  for d in /mnt/extra-addons/*/"$m"; do [ -f "$d/__manifest__.py" ] && manifest="$d/__manifest__.py"; done
  known="$(q "SELECT count(*) FROM ir_module_module WHERE name = '$m'")" || exit 1
  if [ -z "$manifest" ] && [ "$known" = 0 ]; then
    say WARNING odoo.modules.graph "module $m: not installable, skipped"
    say ERROR odoo.modules.loading "Some modules are not loaded, some dependencies or manifest may be missing: ['$m']"
    exit 1
  fi
done
if [ "$mode" = hang ]; then say INFO odoo.modules.loading "loading $mods"; sleep 100000; fi
if [ "$mode" = fail ]; then
  for m in $mods; do q "UPDATE ir_module_module SET state = 'to upgrade' WHERE name = '$m'" || true; done
  say ERROR odoo.modules.registry "Failed to load registry"
  cat >&2 <<TRACE
Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/odoo/modules/registry.py", line 110, in new
    odoo.modules.load_modules(registry, force_demo, status, update_module)
  File "/usr/lib/python3/dist-packages/odoo/modules/loading.py", line 480, in load_modules
    raise ValueError("Invalid field 'x_broken' in view")
ValueError: Invalid field 'x_broken' in view
TRACE
  say CRITICAL odoo.service.server "Failed to initialize database \`$db\`."
  exit 1
fi
version_of() { sed -n "s/.*['\"]version['\"][[:space:]]*:[[:space:]]*['\"]\([^'\"]*\)['\"].*/\1/p" "$1" 2>/dev/null | head -1; }
for m in $(echo "$install" | tr ',' ' '); do
  v=""; for d in /mnt/extra-addons/*/"$m"; do [ -f "$d/__manifest__.py" ] && v="$(version_of "$d/__manifest__.py")"; done
  q "INSERT INTO ir_module_module (name, state, latest_version) VALUES ('$m', 'installed', '${v:-18.0.1.0}')
     ON CONFLICT (name) DO UPDATE SET state = 'installed', latest_version = EXCLUDED.latest_version" || exit 1
  say INFO odoo.modules.loading "module $m: installed"
done
for m in $(echo "$update" | tr ',' ' '); do
  v=""; for d in /mnt/extra-addons/*/"$m"; do [ -f "$d/__manifest__.py" ] && v="$(version_of "$d/__manifest__.py")"; done
  q "UPDATE ir_module_module SET state = 'installed', latest_version = coalesce(nullif('$v', ''), latest_version),
     write_date = now() WHERE name = '$m'" || exit 1
  say INFO odoo.modules.loading "module $m: updated"
done
say INFO odoo.modules.loading "Modules loaded."
[ "$stop" = 1 ] && say INFO odoo.service.server "Initiating shutdown" && exit 0
exec httpd -f -p "127.0.0.1:${HEALTH_PORT:-8069}" -h /var/www
