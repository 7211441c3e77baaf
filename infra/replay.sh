#!/usr/bin/env bash
# The replay exchange (python -m producer.replay): Binance's protocol served
# from recorded captures, for `make demo`.
#   infra/replay.sh start|stop|status|health
# CAPTURE=<file>[,<file>...] (default: the capture shipped in
# producer/replay/captures/), SPEED=<factor>|max (default 1), LOOPS (default 1,
# 0 = forever; POST /control/finish ends it after the current loop),
# PING_INTERVAL and PONG_TIMEOUT in seconds (default 20 and 60, as on Binance).
source "$(dirname "$0")/lib.sh"

NAME=replay
PATTERN="-m producer.replay"
START_TIMEOUT=${REPLAY_START_TIMEOUT:-60}
URL="http://$LAKE_HOST:$REPLAY_PORT"
DEFAULT_CAPTURE="$ROOT/producer/replay/captures/spot_btcusdt_20240808.gz,$ROOT/producer/replay/captures/spot_ethusdt_20240808.gz"

healthy() { http_ok "$URL/api/v3/ping"; }

case "${1:-}" in
  start)
    if pid_of $NAME "$PATTERN" >/dev/null; then echo "$NAME: already running"; exit 0; fi
    require_port_free $NAME "$LAKE_HOST" "$REPLAY_PORT"
    (cd "$ROOT" && start_bg $NAME "$PY" -m producer.replay --capture "${CAPTURE:-$DEFAULT_CAPTURE}" \
      --host "$LAKE_HOST" --port "$REPLAY_PORT" --speed "${SPEED:-1}" --loops "${LOOPS:-1}" \
      --ping-interval "${PING_INTERVAL:-20}" --pong-timeout "${PONG_TIMEOUT:-60}")
    wait_healthy $NAME "$PATTERN" "$START_TIMEOUT" healthy
    echo "$NAME: up on ws://$LAKE_HOST:$REPLAY_PORT (speed ${SPEED:-1}, loops ${LOOPS:-1}; log $(log_path $NAME))"
    ;;
  stop) stop_pid $NAME "$PATTERN" 20 ;;
  status) pid_of $NAME "$PATTERN" ;;
  health) healthy ;;
  *) echo "usage: $0 start|stop|status|health" >&2; exit 2 ;;
esac
