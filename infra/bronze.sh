#!/usr/bin/env bash
# The bronze streaming query: infra/bronze.sh start|stop|status|health (see streaming.sh).
exec "$(dirname "$0")/streaming.sh" bronze "$@"
