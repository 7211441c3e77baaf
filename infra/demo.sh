#!/usr/bin/env bash
# `make demo`: the whole pipeline offline. The replay exchange serves the real
# capture shipped in producer/replay/captures/ over Binance's protocol; the
# producer, bronze, silver and gold run as under `make up`, supervised.
#   CAPTURE=f1[,f2]  another capture;  SPEED=<factor>|max  (default 1; max with ONCE)
#   ONCE=1           play the capture once, wait until it is through bronze, silver and
#                    gold (infra/await_demo.py), report, stop what this run started, exit 0
# Services already running (a `make up` stack, the tests' Kafka) are used and
# left running.
source "$(dirname "$0")/lib.sh"

INFRA="$ROOT/infra"
STACK=(kafka minio prometheus replay producer bronze silver gold)
started=()
for s in "${STACK[@]}"; do
  "$INFRA/$s.sh" status >/dev/null 2>&1 || started+=("$s")
done

stop_started() {
  ((${#started[@]})) && "$INFRA/services.sh" down "${started[@]}"
}

if [[ -n ${ONCE:-} ]]; then
  trap 'rc=$?; stop_started >/dev/null 2>&1 || true; exit $rc' EXIT
fi
"$INFRA/services.sh" up kafka minio prometheus
SPEED=${SPEED:-$([[ -n ${ONCE:-} ]] && echo max || echo 1)} "$INFRA/replay.sh" start
PRODUCER_SOURCE=replay "$INFRA/producer.sh" start
for layer in bronze silver gold; do "$INFRA/$layer.sh" start; done
[[ -n ${ONCE:-} ]] || exit 0

"$PY" "$INFRA/await_demo.py"
trap - EXIT
stop_started
