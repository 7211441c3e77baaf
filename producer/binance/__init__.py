"""The exchange side: stream names and connections, WebSocket client, REST backfill."""
