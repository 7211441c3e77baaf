#!/usr/bin/env bash
# One layer's long-running streaming query (./spark-submit.sh <layer>).
#   infra/streaming.sh bronze|silver|gold start|stop|status|health
# start runs it under infra/supervise.py and waits for its Spark UI to answer;
# health asks the UI whether the application runs. Progress (lag, last commits): python -m streaming_jobs.common.progress
source "$(dirname "$0")/lib.sh"

NAME=${1:-}
case "$NAME" in
  bronze) UI_PORT=$(cut -d' ' -f1 <<<"$SPARK_UI_PORTS") ;;
  silver) UI_PORT=$(cut -d' ' -f2 <<<"$SPARK_UI_PORTS") ;;
  gold) UI_PORT=$(cut -d' ' -f3 <<<"$SPARK_UI_PORTS") ;;
  *) echo "usage: $0 bronze|silver|gold start|stop|status|health" >&2; exit 2 ;;
esac
shift
# infra/supervise.py runs ./spark-submit.sh (which execs java) and restarts it
# with backoff whenever it exits; the pid file holds the supervisor's pid.
PATTERN=$(supervised_pattern "$NAME")
START_TIMEOUT=${STREAMING_START_TIMEOUT:-120}
URL="http://$LAKE_HOST:$UI_PORT"

# A busy driver (a long GC, a batch on 2 cores) may take a few seconds to answer.
healthy() { http_ok "$URL/api/v1/applications" 5; }

case "${1:-}" in
  start)
    if pid_of "$NAME" "$PATTERN" >/dev/null; then echo "$NAME: already running"; exit 0; fi
    require_port_free "$NAME" "$LAKE_HOST" "$UI_PORT"
    (cd "$ROOT" && start_supervised "$NAME" "$ROOT/spark-submit.sh" "$NAME")
    wait_healthy "$NAME" "$PATTERN" "$START_TIMEOUT" healthy || { stop_pid "$NAME" "$PATTERN" 70 >/dev/null; exit 1; }
    echo "$NAME: up, Spark UI $URL (log $(log_path "$NAME"))"
    ;;
  stop) stop_pid "$NAME" "$PATTERN" 70 ;;
  status) pid_of "$NAME" "$PATTERN" ;;
  health) healthy ;;
  *) echo "usage: $0 $NAME start|stop|status|health" >&2; exit 2 ;;
esac
