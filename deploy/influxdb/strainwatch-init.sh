#!/bin/bash
# strainwatch's InfluxDB 2.x layout: two buckets, their InfluxQL mappings (DBRP) and three tokens.
#
# In docker compose this runs once, as an init script of the influxdb:2.7 image
# (/docker-entrypoint-initdb.d), right after DOCKER_INFLUXDB_INIT_MODE=setup has created the org,
# the main bucket and the operator token; the `influx` CLI is then already configured. Elsewhere
# (Kubernetes, an existing InfluxDB) run it by hand with the operator token:
#
#   INFLUX_HOST=https://influx.example:8086 INFLUX_TOKEN=<operator token> \
#   DOCKER_INFLUXDB_INIT_ORG=strainwatch DOCKER_INFLUXDB_INIT_BUCKET=strainwatch \
#   TOKEN_DIR=./tokens  bash deploy/influxdb/strainwatch-init.sh
#
# What it creates (docs/deploy.md, "InfluxDB"):
#   <bucket>            long retention (DOCKER_INFLUXDB_INIT_RETENTION, e.g. 1826d = 5 years):
#                       hourly rollups, alerts, prompts, outcomes, incidents, pipeline health
#   <bucket>/windows    short retention (WINDOWS_BUCKET_RETENTION, default 35d): the
#                       10-second `exposure` windows
#   DBRP db=<bucket> rp=autogen -> <bucket> (default), db=<bucket> rp=windows -> <bucket>/windows,
#                       so InfluxQL reads `"windows"."exposure"` and everything else as before
#   a write-only token for the strainwatch services (both buckets), a read-only token for
#   Grafana and reports (both buckets) and a read-write token for operators' imports and erasures,
#   written to $TOKEN_DIR/{services-write,grafana-read,operations-readwrite}.token
#
# InfluxDB 2.x cannot create a token with a chosen value, so the tokens are generated here and
# handed over as files; the operator token stays with the influxdb container and the operators.
# Re-running it is safe: what exists is kept, and a token file is only replaced when its token is no
# longer listed (from InfluxDB 2.9 on, which stores tokens hashed, that means a new token each run).
set -euo pipefail

org="${DOCKER_INFLUXDB_INIT_ORG:?set DOCKER_INFLUXDB_INIT_ORG to the org}"
bucket="${DOCKER_INFLUXDB_INIT_BUCKET:?set DOCKER_INFLUXDB_INIT_BUCKET to the main bucket}"
windows_retention="${WINDOWS_BUCKET_RETENTION:-35d}"
token_dir="${TOKEN_DIR:-/etc/influxdb2/strainwatch}"
windows_bucket="${bucket}/windows"

log() { echo "strainwatch-init: $*" >&2; }

bucket_id() {
    # the id of bucket $1 in the org, empty if there is none
    influx bucket list --org "$org" --name "$1" --hide-headers 2>/dev/null | awk -F '\t' 'NR==1 {print $1}'
}

main_id="$(bucket_id "$bucket")"
[ -n "$main_id" ] || { log "bucket $bucket not found in org $org (run the setup first)"; exit 1; }

windows_id="$(bucket_id "$windows_bucket")"
if [ -z "$windows_id" ]; then
    influx bucket create --org "$org" --name "$windows_bucket" --retention "$windows_retention" \
        --description "strainwatch: 10-second exposure windows (InfluxQL \"windows\".\"exposure\")" >/dev/null
    windows_id="$(bucket_id "$windows_bucket")"
    log "created bucket $windows_bucket (retention $windows_retention)"
fi

dbrp() {
    # db=$bucket rp=$1 -> bucket id $2 ($3: --default or empty)
    if influx v1 dbrp list --org "$org" --db "$bucket" --rp "$1" --hide-headers 2>/dev/null | grep -q .; then
        return 0
    fi
    # shellcheck disable=SC2086
    influx v1 dbrp create --org "$org" --db "$bucket" --rp "$1" --bucket-id "$2" $3 >/dev/null
    log "mapped InfluxQL $bucket.$1 to bucket id $2"
}
dbrp autogen "$main_id" --default
dbrp windows "$windows_id" ""

install -d -m 0755 "$token_dir"

token() {
    # $1 file name, $2 description, remaining: permission flags. Keeps a token that still exists.
    local file="$token_dir/$1" description="$2"
    shift 2
    if [ -s "$file" ] && influx auth list --json 2>/dev/null | grep -qF "\"$(cat "$file")\""; then
        return 0
    fi
    local value
    value="$(influx auth create --org "$org" --description "$description" "$@" --json \
        | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')"
    [ -n "$value" ] || { log "could not create the token $description"; exit 1; }
    # readable by the containers that mount the directory (the strainwatch image runs as uid 10001)
    (umask 022 && printf '%s' "$value" >"$file.tmp" && mv "$file.tmp" "$file")
    log "created token '$description' in $file"
}
token services-write.token "strainwatch services: write ${bucket} and ${windows_bucket}" \
    --write-bucket "$main_id" --write-bucket "$windows_id"
token grafana-read.token "strainwatch Grafana: read ${bucket} and ${windows_bucket}" \
    --read-bucket "$main_id" --read-bucket "$windows_id"
# operators' commands that read what they change: `strainwatch incidents import` (reads the stored
# cases to plan an import) and `strainwatch privacy erase` (deletes a worker's points); reports and
# dashboards need only grafana-read.token (docs/security.md)
token operations-readwrite.token "strainwatch operations: read and write ${bucket} and ${windows_bucket}" \
    --read-bucket "$main_id" --read-bucket "$windows_id" --write-bucket "$main_id" --write-bucket "$windows_id"
