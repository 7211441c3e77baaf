#!/usr/bin/env bash
# Kafka broker (KRaft, one node) from the Maven artifacts in .tools/kafka/libs.
#   infra/kafka.sh start|stop|status|health
# start formats the storage once, starts the broker, waits until it answers
# metadata requests (deadline, no fixed sleep) and creates the topics from
# conf/pipeline.yaml.
source "$(dirname "$0")/lib.sh"

NAME=kafka
PATTERN=kafka.Kafka
KLIB="$TOOLS_DIR/kafka/libs"
KDIR="$STATE_DIR/kafka"
PROPS="$KDIR/server.properties"
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}

healthy() { (cd "$ROOT" && "$PY" -m producer.topics ping); }

render_config() {
  mkdir -p "$KDIR/data"
  sed -e "s|@HOST@|$LAKE_HOST|g" -e "s|@PORT@|$KAFKA_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$KDIR/data|g" \
      "$ROOT/infra/kafka/server.properties.in" >"$PROPS"
}

format_once() {
  [[ -f "$KDIR/data/meta.properties" ]] && return 0
  local id
  id=$(java -cp "$KLIB/*" kafka.tools.StorageTool random-uuid 2>>"$(log_path $NAME)")
  java -cp "$KLIB/*" kafka.tools.StorageTool format -t "$id" -c "$PROPS" --ignore-formatted \
    >>"$(log_path $NAME)" 2>&1
}

case "${1:-}" in
  start)
    if pid_of $NAME $PATTERN >/dev/null; then echo "$NAME: already running"; exit 0; fi
    [[ -d "$KLIB" ]] || { echo "$NAME: $KLIB missing: run 'make setup'" >&2; exit 1; }
    require_port_free $NAME "$LAKE_HOST" "$KAFKA_PORT"
    require_port_free $NAME "$LAKE_HOST" "$KAFKA_CONTROLLER_PORT"
    render_config
    format_once
    KAFKA_HEAP=${KAFKA_HEAP:--Xmx512m -Xms128m}
    # shellcheck disable=SC2086
    start_bg $NAME java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$ROOT/infra/kafka/log4j.properties" \
      -cp "$KLIB/*" kafka.Kafka "$PROPS"
    wait_healthy $NAME $PATTERN "$START_TIMEOUT" healthy
    (cd "$ROOT" && "$PY" -m producer.topics ensure) >>"$(log_path $NAME)" 2>&1 || {
      echo "$NAME: creating topics failed; see $(log_path $NAME)" >&2; exit 1; }
    echo "$NAME: up on $LAKE_HOST:$KAFKA_PORT (log $(log_path $NAME))"
    ;;
  stop) stop_pid $NAME $PATTERN 30 ;;
  status) pid_of $NAME $PATTERN ;;
  health) healthy ;;
  *) echo "usage: $0 start|stop|status|health" >&2; exit 2 ;;
esac
