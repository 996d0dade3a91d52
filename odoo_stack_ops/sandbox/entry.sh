#!/bin/sh
# Entry point of the sandbox containers: a start-up line in the service's own log format, then busybox httpd
# serving the health paths (with -v its access log goes to stderr, like a real server's).
service="$1"; port="$2"
now() { date -u '+%Y-%m-%d %H:%M:%S'; }
case "$service" in
  odoo-core) echo "$(now),000 1 INFO ? odoo: Odoo version 18.0" >&2
             echo "$(now),000 1 INFO ? odoo.service.server: HTTP service (werkzeug) running on 0.0.0.0:$port" >&2 ;;
  nginx-proxy) echo "$(date -u '+%Y/%m/%d %H:%M:%S') [notice] 1#1: start worker processes" >&2 ;;
  *) echo "$service listening on $port" ;;
esac
exec httpd -f -v -p "127.0.0.1:$port" -h /var/www
