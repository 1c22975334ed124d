#!/usr/bin/env bash
# The PostgreSQL floor under Clarion's ingest: pgbench replays, against a
# freshly migrated Clarion schema, the statements a node sends per message
# (intake, routing worker, audit chainer), with no Go process in the way.
# What pgbench reaches on a machine is the most Clarion can reach on it.
#
#   bench/pgfloor/run.sh [postgres://…]   (default: the CI database)
#
# It prints, as messages per second: one connection, one bare row per
# transaction (no Clarion schema: what a commit's WAL flush costs on this
# disk); one connection, one message per transaction (a lock-step MLLP
# sender), alone and with routing and chaining running beside it; and
# sixteen messages per transaction (a group commit of 16 connections) on
# four connections, with routing and chaining.
set -euo pipefail
cd "$(dirname "$0")"
url=${1:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
schema=pgfloor_$$
secs=${PGFLOOR_SECONDS:-10}
psql "$url" -qc "CREATE SCHEMA $schema"
trap 'psql "$url" -qc "DROP SCHEMA $schema CASCADE" 2>/dev/null' EXIT
sep='?'; [[ $url == *\?* ]] && sep='&'
(cd ../.. && go run ./cmd/clarion migrate --database-url "${url}${sep}search_path=$schema" >/dev/null)
psql "$url" -qc "CREATE SEQUENCE $schema.floor_seq; CREATE TABLE $schema.floor_bare (payload bytea)"
export PGOPTIONS="-c search_path=$schema"

# Sealed payloads are random bytes: a sealed event (~1.2 KB) and a sealed
# raw HL7 message (~1.5 KB), as the intake stores for an ORU^R01.
payload=$(head -c 1200 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
raw=$(head -c 1500 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
gen() { sed -e "s/@N@/$1/g" -e "s/@PAYLOAD@/$payload/" -e "s/@RAW@/$raw/" "$2" > "$3"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; psql "$url" -qc "DROP SCHEMA $schema CASCADE" 2>/dev/null' EXIT
gen 1 bare.sql "$tmp/bare.sql"; gen 1 ingest.sql "$tmp/ingest1.sql"; gen 16 ingest.sql "$tmp/ingest16.sql"
gen 4 route.sql "$tmp/route4.sql"; gen 16 route.sql "$tmp/route16.sql"

rate() { # script-args…  → messages per second, from pgbench's tps × messages per transaction
  local per=$1; shift
  pgbench "$url" -n -M extended -T "$secs" "$@" 2>/dev/null | awk -v per="$per" '/^tps =/ {printf "%.0f\n", $3 * per}'
}
echo "one connection, one bare row per transaction (fsync floor):          $(rate 1 -c 1 -f "$tmp/bare.sql") msg/s"
echo "one connection, one message per transaction, alone:        $(rate 1 -c 1 -f "$tmp/ingest1.sql") msg/s"
pgbench "$url" -n -M extended -T "$secs" -c 1 -f "$tmp/route4.sql@4" -f chain.sql@1 >/dev/null 2>&1 &
echo "one connection, one message per transaction, with routing: $(rate 1 -c 1 -f "$tmp/ingest1.sql") msg/s"
wait
n0=$(psql "$url" -Atc "SELECT COUNT(*) FROM $schema.events")
pgbench "$url" -n -M extended -T "$secs" -c 4 -f "$tmp/ingest16.sql@10" -f "$tmp/route16.sql@10" -f chain.sql@2 >/dev/null 2>&1
read -r n routed chained < <(psql "$url" -Atc "SELECT (SELECT COUNT(*) FROM $schema.events), (SELECT COUNT(*) FROM $schema.events WHERE state = 'processed'), (SELECT COUNT(*) FROM $schema.audit_log)" | tr '|' ' ')
echo "16 messages per transaction on 4 connections, with routing and chaining: $(( (n - n0) / secs )) msg/s ingested ($routed routed, $chained audit records chained in all)"
