#!/usr/bin/env bash
# The gold streaming query: infra/gold.sh start|stop|status|health (see streaming.sh).
exec "$(dirname "$0")/streaming.sh" gold "$@"
