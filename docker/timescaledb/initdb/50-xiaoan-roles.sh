#!/bin/sh
# Runs once, when the TimescaleDB volume is first initialised (docker-entrypoint-initdb.d).
# Creates the read-only role Grafana uses; its password comes from a secret file.
# The schema itself is created by Xiaoan's migrations when `xiaoan ingest` first starts.
set -eu
pw_file=/run/secrets/grafana_db_password
if [ ! -r "$pw_file" ]; then
  echo "xiaoan: $pw_file missing; Grafana's read-only role not created" >&2
  exit 0
fi
psql -v ON_ERROR_STOP=1 -v pw="$(cat "$pw_file")" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT format('CREATE ROLE grafana_reader LOGIN PASSWORD %L', :'pw') \gexec
GRANT CONNECT ON DATABASE xiaoan TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE xiaoan IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
