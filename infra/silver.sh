#!/usr/bin/env bash
# The silver streaming query: infra/silver.sh start|stop|status|health (see streaming.sh).
exec "$(dirname "$0")/streaming.sh" silver "$@"
