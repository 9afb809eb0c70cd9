#!/usr/bin/env bash
# Start the machine's PostgreSQL (Debian's cluster) for the lake tests, and make sure a role named
# after the current OS user exists (socket logins use peer authentication). Idempotent: a running
# cluster and an existing role are left as they are. Prints nothing on success.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || true
    fi
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "start_postgres: PostgreSQL is not installed (apt-get install postgresql); lake tests will be skipped" >&2
    exit 0
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online" {found=1} END {exit !found}'; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 1 50); do
    pg_isready -q -h /var/run/postgresql && break
    sleep 0.2
done
user=$(id -un)
if [ "$user" = postgres ]; then exit 0; fi
if ! psql -h /var/run/postgresql -d postgres -Atc "SELECT 1" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        su postgres -c "createuser -s $user" 2>/dev/null || true
    else
        echo "start_postgres: no PostgreSQL role '$user' (run as root, or: sudo -u postgres createuser -s $user)" >&2
    fi
fi
