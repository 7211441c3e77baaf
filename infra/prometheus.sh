#!/usr/bin/env bash
# Prometheus server (Debian's package) scraping the producer, the Spark
# drivers and MinIO, on loopback.
#   infra/prometheus.sh start|stop|status|health|render
source "$(dirname "$0")/lib.sh"

NAME=prometheus
PROM_BIN=${PROMETHEUS_BIN:-$(command -v prometheus || echo /usr/bin/prometheus)}
PATTERN="--web.listen-address=$LAKE_HOST:$PROMETHEUS_PORT"
PDIR="$STATE_DIR/prometheus"
START_TIMEOUT=${PROMETHEUS_START_TIMEOUT:-60}
URL="http://$LAKE_HOST:$PROMETHEUS_PORT"

healthy() { http_ok "$URL/-/ready"; }

targets() {
  local list="" port
  for port in "$@"; do list+="${list:+, }\"$LAKE_HOST:$port\""; done
  echo "$list"
}

# The config and its rules into $PDIR (also `render`, for promtool in the tests).
render_config() {
  local targets
  targets=$(targets $SPARK_UI_PORTS)
  mkdir -p "$PDIR/data"
  cp "$ROOT/infra/prometheus/alerts.yml" "$PDIR/alerts.yml"
  sed -e "s|@HOST@|$LAKE_HOST|g" -e "s|@SCRAPE_INTERVAL@|$SCRAPE_INTERVAL|g" \
      -e "s|@PRODUCER_METRICS_PORT@|$PRODUCER_METRICS_PORT|g" -e "s|@MINIO_PORT@|$MINIO_PORT|g" \
      -e "s|@PROMETHEUS_PORT@|$PROMETHEUS_PORT|g" -e "s|@SPARK_TARGETS@|$targets|g" \
      -e "s|@QUERY_TARGETS@|$(targets $METRICS_PORTS)|g" \
      "$ROOT/infra/prometheus/prometheus.yml.in" >"$PDIR/prometheus.yml"
}

case "${1:-}" in
  start)
    if pid_of $NAME "$PATTERN" >/dev/null; then echo "$NAME: already running"; exit 0; fi
    [[ -x "$PROM_BIN" ]] || { echo "$NAME: prometheus missing: run 'make setup'" >&2; exit 1; }
    require_port_free $NAME "$LAKE_HOST" "$PROMETHEUS_PORT"
    render_config
    start_bg $NAME "$PROM_BIN" --config.file="$PDIR/prometheus.yml" \
      --storage.tsdb.path="$PDIR/data" --storage.tsdb.retention.time=15d \
      "$PATTERN" --web.enable-lifecycle
    wait_healthy $NAME "$PATTERN" "$START_TIMEOUT" healthy
    echo "$NAME: up on $URL (log $(log_path $NAME))"
    ;;
  render) render_config && echo "$PDIR/prometheus.yml" ;;
  stop) stop_pid $NAME "$PATTERN" 20 ;;
  status) pid_of $NAME "$PATTERN" ;;
  health) healthy ;;
  *) echo "usage: $0 start|stop|status|health|render" >&2; exit 2 ;;
esac
