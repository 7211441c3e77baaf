# shellcheck shell=bash
# Shared by every infra script: the settings (from Python, so shell and jobs
# read one config), the state layout, and process handling by pid file.
#
# State layout under $STATE_DIR (default ./.state):
#   logs/<name>.log   pids/<name>.pid   <name>/ (each service's data)
# A service is ours only if its pid file names a live process whose command
# line still matches; stop never touches anything else.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
  echo "infra: $PY missing: run 'make setup' first" >&2
  exit 1
fi
# The settings print `export KEY=value` lines (ports, paths, credentials).
# A script run by another one (services.sh -> kafka.sh) inherits them.
if [[ ${LAKE_SETTINGS_EXPORTED:-} != "${LAKE_CONF_DIR:-}|${STATE_DIR:-}|${STORAGE:-}" ]]; then
  _exports=$(cd "$ROOT" && "$PY" -m streaming_jobs.common.settings shell) || exit 78
  eval "$_exports"
  unset _exports
  export LAKE_SETTINGS_EXPORTED="${LAKE_CONF_DIR:-}|${STATE_DIR:-}|${STORAGE:-}"
fi

LOG_DIR="$STATE_DIR/logs"
PID_DIR="$STATE_DIR/pids"
mkdir -p "$LOG_DIR" "$PID_DIR"

# Where `make setup` puts what it downloads or builds (see the Makefile).
TOOLS_DIR="$ROOT/.tools"
# shellcheck source=versions.env
source "$ROOT/infra/versions.env"
MINIO_BIN="$TOOLS_DIR/minio/$MINIO_VERSION/minio"

log_path() { echo "$LOG_DIR/$1.log"; }
pid_path() { echo "$PID_DIR/$1.pid"; }

# pid_of NAME PATTERN: the pid if the pid file names a live process whose
# command line matches PATTERN, an extended regex (guards against a recycled
# pid); else nothing.
pid_of() {
  local file pid
  file=$(pid_path "$1")
  [[ -f "$file" ]] || return 1
  pid=$(<"$file")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE -- "$2" || return 1
  echo "$pid"
}

# start_bg NAME CMD...: run CMD detached in its own session, log to
# logs/NAME.log, record its pid.
start_bg() {
  local name=$1
  shift
  local log
  log=$(log_path "$name")
  echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting: $*" >>"$log"
  setsid "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$(pid_path "$name")"
}

# start_supervised NAME CMD...: start_bg under infra/supervise.py, which
# restarts CMD with backoff whenever it exits (state: supervise/NAME.json).
# The pid file holds the supervisor's pid; match it with supervised_pattern.
start_supervised() {
  local name=$1
  shift
  rm -f "$STATE_DIR/supervise/$name.json"
  start_bg "$name" "$PY" "$ROOT/infra/supervise.py" --name "$name" --state-dir "$STATE_DIR" \
    --backoff "$RESTART_BACKOFF" -- "$@"
}

supervised_pattern() { echo "supervise.py --name $1 "; }

# supervised_field NAME FIELD: a field of supervise/NAME.json (its one JSON
# line is written by infra/supervise.py), or nothing.
supervised_field() {
  local file="$STATE_DIR/supervise/$1.json"
  [[ -f "$file" ]] || return 1
  sed -n "s/.*\"$2\": \([^,}]*\).*/\1/p" "$file" | tr -d '"'
}

# stop_pid NAME PATTERN [GRACE_SECONDS]: SIGTERM, wait for exit up to the
# grace period, then SIGKILL. Removes the pid file.
stop_pid() {
  local name=$1 pattern=$2 grace=${3:-30} pid deadline
  if ! pid=$(pid_of "$name" "$pattern"); then
    rm -f "$(pid_path "$name")"
    echo "$name: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: still running after ${grace}s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$(pid_path "$name")"
  echo "$name: stopped (pid $pid)"
}

# wait_healthy NAME PATTERN DEADLINE_SECONDS CHECK...: poll CHECK until it
# succeeds; fail fast if the process died; on timeout say where the log is.
wait_healthy() {
  local name=$1 pattern=$2 timeout=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    # /proc/<pid>/cmdline reads empty for an instant while a wrapper execs
    # (spark-submit.sh -> spark-class -> java): look twice before judging.
    if ! pid_of "$name" "$pattern" >/dev/null && ! { sleep 0.5; pid_of "$name" "$pattern" >/dev/null; }; then
      echo "$name: exited during start-up; last lines of $(log_path "$name"):" >&2
      tail -n 20 "$(log_path "$name")" >&2
      return 1
    fi
    # A supervised job that exited during start-up is being restarted: say so
    # now rather than at the deadline.
    if [[ $(supervised_field "$name" last_exit 2>/dev/null) =~ ^-?[0-9]+$ ]]; then
      echo "$name: exited during start-up (the supervisor restarts it with backoff); last lines of $(log_path "$name"):" >&2
      tail -n 20 "$(log_path "$name")" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "$name: not healthy after ${timeout}s; see $(log_path "$name")" >&2
      return 1
    fi
    sleep 0.3
  done
}

# http_ok URL [TIMEOUT_SECONDS]: a 2xx answer within the timeout (default 2 s).
http_ok() { curl -sf -o /dev/null --max-time "${2:-2}" "$1"; }

port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# require_port_free NAME HOST PORT: refuse to start over somebody else's server.
require_port_free() {
  if ! port_free "$2" "$3"; then
    echo "$1: $2:$3 is already in use by another process; stop it or change the port in conf/pipeline.yaml" >&2
    return 1
  fi
}
