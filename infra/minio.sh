#!/usr/bin/env bash
# MinIO (S3) server built from the Go module proxy, single drive, on loopback.
#   infra/minio.sh start|stop|status|health
# Credentials come from MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (the settings
# supply a documented local default for a loopback endpoint only). start
# waits for /minio/health/ready and creates the lake bucket.
source "$(dirname "$0")/lib.sh"

NAME=minio
PATTERN="$MINIO_BIN server"
DATA="$STATE_DIR/minio/data"
START_TIMEOUT=${MINIO_START_TIMEOUT:-60}
URL="http://$LAKE_HOST:$MINIO_PORT"

healthy() { http_ok "$URL/minio/health/ready"; }

case "${1:-}" in
  start)
    if pid_of $NAME "$PATTERN" >/dev/null; then echo "$NAME: already running"; exit 0; fi
    [[ -x "$MINIO_BIN" ]] || { echo "$NAME: $MINIO_BIN missing: run 'make setup'" >&2; exit 1; }
    require_port_free $NAME "$LAKE_HOST" "$MINIO_PORT"
    require_port_free $NAME "$LAKE_HOST" "$MINIO_CONSOLE_PORT"
    mkdir -p "$DATA"
    # Metrics are public on loopback so Prometheus can scrape them without a token.
    MINIO_UPDATE=off MINIO_PROMETHEUS_AUTH_TYPE=public \
      start_bg $NAME "$MINIO_BIN" server "$DATA" --quiet \
        --address "$LAKE_HOST:$MINIO_PORT" --console-address "$LAKE_HOST:$MINIO_CONSOLE_PORT"
    wait_healthy $NAME "$PATTERN" "$START_TIMEOUT" healthy
    (cd "$ROOT" && "$PY" -m streaming_jobs.common.s3 ensure-bucket) >>"$(log_path $NAME)" 2>&1 || {
      echo "$NAME: creating bucket $S3_BUCKET failed; see $(log_path $NAME)" >&2; exit 1; }
    echo "$NAME: up on $URL, bucket $S3_BUCKET (log $(log_path $NAME))"
    ;;
  stop) stop_pid $NAME "$PATTERN" 20 ;;
  status) pid_of $NAME "$PATTERN" ;;
  health) healthy ;;
  *) echo "usage: $0 start|stop|status|health" >&2; exit 2 ;;
esac
