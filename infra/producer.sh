#!/usr/bin/env bash
# The producer (python -m producer): Binance WebSocket -> Kafka.
#   infra/producer.sh start|stop|status|health
# PRODUCER_SOURCE=replay points it at the local replay exchange (make demo);
# the default is Binance's public endpoints from conf/pipeline.yaml.
# start waits until its metrics endpoint answers; health asks /health, which
# is 200 only when every connection is live.
source "$(dirname "$0")/lib.sh"

NAME=producer
PATTERN=$(supervised_pattern $NAME)  # infra/supervise.py restarts it when it exits
START_TIMEOUT=${PRODUCER_START_TIMEOUT:-60}
URL="http://$LAKE_HOST:$PRODUCER_METRICS_PORT"

healthy() { http_ok "$URL/health"; }
serving() { http_ok "$URL/metrics"; }

case "${1:-}" in
  start)
    if pid_of $NAME "$PATTERN" >/dev/null; then echo "$NAME: already running"; exit 0; fi
    require_port_free $NAME "$LAKE_HOST" "$PRODUCER_METRICS_PORT"
    if [[ ${PRODUCER_SOURCE:-binance} == replay ]]; then
      export BINANCE_WS_URL="ws://$LAKE_HOST:$REPLAY_PORT" BINANCE_REST_URL="http://$LAKE_HOST:$REPLAY_PORT"
    fi
    (cd "$ROOT" && start_supervised $NAME "$PY" -m producer)
    wait_healthy $NAME "$PATTERN" "$START_TIMEOUT" serving || { stop_pid $NAME "$PATTERN" 70 >/dev/null; exit 1; }
    echo "$NAME: up, reading $BINANCE_WS_URL, metrics $URL/metrics, health $URL/health (log $(log_path $NAME))"
    ;;
  stop) stop_pid $NAME "$PATTERN" 70 ;;
  status) pid_of $NAME "$PATTERN" ;;
  health) healthy ;;
  *) echo "usage: $0 start|stop|status|health" >&2; exit 2 ;;
esac
