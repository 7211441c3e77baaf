"""Command line of the replay exchange: read captures, serve them, stop cleanly on a signal.

    python -m producer.replay --capture producer/replay/captures/spot_btcusdt_20240808.gz
    python -m producer.replay --capture A.gz,B.gz --speed max --loops 0 --port 9443

Prints one line with the WebSocket and REST base URLs once it listens.
SIGTERM and SIGINT stop it with exit status 0; a bad argument or an unreadable
capture is one line on stderr and exit status 2. Listens on loopback unless
told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from producer.replay.captures import CaptureError, merge_captures
from producer.replay.exchange import ReplayExchange


def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number or 'max'") from None
    if not speed > 0:
        raise argparse.ArgumentTypeError(f"speed must be positive, got {value}")
    return speed


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def _loops(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not 0 (forever) or a positive integer")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (0-65535)")
    return int(value)


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"replay: {message}\n")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _OneLineErrors(
        prog="python -m producer.replay",
        description="Serve recorded Binance market data over WebSocket + REST on one port.",
    )
    parser.add_argument(
        "--capture",
        required=True,
        help="capture file(s), comma separated: hftbacktest/recorder .gz, cryptofeed, "
        "or data.binance.vision trades/aggTrades CSV",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=9443)
    parser.add_argument(
        "--speed", type=_speed, default=1.0, help="1 = real time, 10 = ten times, max"
    )
    parser.add_argument("--loops", type=_loops, default=1, help="0 = forever")
    parser.add_argument("--ping-interval", type=_positive, default=20.0)
    parser.add_argument("--pong-timeout", type=_positive, default=60.0)
    parser.add_argument(
        "--start-now", action="store_true", help="start the timeline without waiting for a client"
    )
    return parser.parse_args(argv)


async def _serve(exchange: ReplayExchange) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, exchange.request_stop)

    def announce(running: ReplayExchange) -> None:
        base = f"{running.host}:{running.port}"
        print(f"replay exchange: ws://{base} rest: http://{base}", flush=True)
        if not exchange.start_on_connect:
            running.start()

    await exchange.run(ready=announce)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # websockets logs every plain HTTP request at INFO; ours says what matters.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    paths = [Path(p) for p in args.capture.split(",") if p]
    try:
        if not paths:
            raise CaptureError("--capture names no file")
        capture = merge_captures(paths)
        exchange = ReplayExchange(
            capture,
            host=args.host,
            port=args.port,
            speed=args.speed,
            loops=args.loops,
            ping_interval=args.ping_interval,
            pong_timeout=args.pong_timeout,
            start_on_connect=not args.start_now,
        )
    except (CaptureError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(exchange))
    except OSError as exc:  # the port is taken, the host is not ours
        print(f"replay: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
