#!/usr/bin/env bash
# Start, stop and report the local services as one stack.
#   infra/services.sh up [SERVICE...]     start in order (default: all), each awaited healthy
#   infra/services.sh down [SERVICE...]   stop in reverse order, only what we started
#   infra/services.sh status              one screen: processes, topics, lag, tables, producer;
#                                         exit 1 if any process is down or a section failed
# Services: kafka minio prometheus producer bronze silver gold, and, only reported when
# they run, replay (the exchange of `make demo`) and spark-cluster (`make cluster-up`).
source "$(dirname "$0")/lib.sh"

ALL=(kafka minio prometheus spark-cluster replay producer bronze silver gold)
OPTIONAL=" spark-cluster replay "
INFRA="$ROOT/infra"

port_of() {
  case $1 in
    kafka) echo "$LAKE_HOST:$KAFKA_PORT" ;;
    minio) echo "$LAKE_HOST:$MINIO_PORT" ;;
    prometheus) echo "$LAKE_HOST:$PROMETHEUS_PORT" ;;
    spark-cluster) echo "$LAKE_HOST:$CLUSTER_MASTER_PORT" ;;
    replay) echo "$LAKE_HOST:$REPLAY_PORT" ;;
    producer) echo "$LAKE_HOST:$PRODUCER_METRICS_PORT" ;;
    bronze) echo "$LAKE_HOST:$(cut -d' ' -f1 <<<"$SPARK_UI_PORTS")" ;;
    silver) echo "$LAKE_HOST:$(cut -d' ' -f2 <<<"$SPARK_UI_PORTS")" ;;
    gold) echo "$LAKE_HOST:$(cut -d' ' -f3 <<<"$SPARK_UI_PORTS")" ;;
  esac
}

check_names() {
  local name known
  for name in "$@"; do
    known=0
    for s in "${ALL[@]}"; do [[ $s == "$name" ]] && known=1; done
    ((known)) || { echo "unknown service '$name' (known: ${ALL[*]})" >&2; exit 2; }
  done
}

cmd=${1:-}
shift || true
check_names "$@"
case "$cmd" in
  up)
    services=("$@")
    [[ $# -gt 0 ]] || services=(kafka minio prometheus producer bronze silver gold)
    for s in "${services[@]}"; do
      if ! "$INFRA/$s.sh" start; then
        echo "up: $s failed to start (log: $(log_path "$s")); stopping what was started" >&2
        "$0" down "${services[@]}" >/dev/null 2>&1 || true
        exit 1
      fi
    done
    ;;
  down)
    services=("$@")
    [[ $# -gt 0 ]] || services=("${ALL[@]}")
    rc=0
    for ((i = ${#services[@]} - 1; i >= 0; i--)); do
      "$INFRA/${services[i]}.sh" stop || rc=1
    done
    exit $rc
    ;;
  status)
    down=0
    printf '%-11s %-10s %-8s %-10s %-9s %-22s %s\n' SERVICE STATE PID UPTIME RESTARTS ADDRESS LOG
    for s in "${ALL[@]}"; do
      state=down pid=- uptime=- restarts=-
      if [[ $OPTIONAL == *" $s "* ]] && ! "$INFRA/$s.sh" status >/dev/null 2>&1; then
        continue
      fi
      if pid=$("$INFRA/$s.sh" status 2>/dev/null); then
        uptime=$(ps -o etime= -p "$pid" | tr -d ' ')
        if "$INFRA/$s.sh" health >/dev/null 2>&1; then state=up; else state=sick; fi
        # Supervised jobs: restarts so far, and "restarting" while in backoff.
        if restarts=$(supervised_field "$s" restarts); then
          [[ $(supervised_field "$s" state) == backoff ]] && state=restarting
        else
          restarts=-
        fi
      else
        pid=-
      fi
      [[ $state == up ]] || down=1
      printf '%-11s %-10s %-8s %-10s %-9s %-22s %s\n' "$s" "$state" "$pid" "$uptime" "$restarts" \
        "$(port_of "$s")" "$(log_path "$s")"
    done
    echo
    # Topics, each query's lag, tables, the producer's metrics, data quality.
    (cd "$ROOT" && "$PY" -m streaming_jobs.common.progress) || down=1
    exit $down
    ;;
  *) echo "usage: $0 up|down|status [SERVICE...]" >&2; exit 2 ;;
esac
