"""Small helpers shared by the tests and the benchmarks: ports, HTTP JSON, deadlines, fixtures."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Binance's official BTCUSDT 1m klines of 2020-01-01..03 (provenance: fixtures/PROVENANCE.md).
KLINES = Path(__file__).resolve().parent / "fixtures" / "klines"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    """GET url as JSON; an HTTP error's JSON body too (/health answers 503 with one)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        return json.load(err)


def await_true(what: str, condition: Callable[[], Any], deadline_s: float) -> None:
    """Poll condition until it holds; fail saying what was awaited when the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def run_to_end(queries: list[Any], timeout_s: int = 600) -> list[str]:
    """Await streaming queries started to process what is there (once): their run ids.
    Stops them in any case."""
    try:
        for query in queries:
            finished = query.awaitTermination(timeout_s)
            assert finished, f"{query.name} did not finish in {timeout_s} s"
            assert query.exception() is None
        return [str(query.runId) for query in queries]
    finally:
        for query in queries:
            query.stop()


def talib_reference(closes: Any) -> dict[str, Any]:
    """TA-Lib's values of silver's ten indicator columns over a close series."""
    import talib

    macd, signal, hist = talib.MACD(closes, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(closes, 20, 2.0, 2.0, 0)
    return {
        "sma_20": talib.SMA(closes, 20),
        "ema_12": talib.EMA(closes, 12),
        "ema_26": talib.EMA(closes, 26),
        "rsi_14": talib.RSI(closes, 14),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
    }


def archive_rows() -> list[list[str]]:
    """The BTCUSDT archive days' kline rows, as the CSV's strings, in time order."""
    rows = []
    for day in ("01", "02", "03"):
        with zipfile.ZipFile(KLINES / f"BTCUSDT-1m-2020-01-{day}.zip") as z:
            rows += list(csv.reader(io.TextIOWrapper(z.open(z.namelist()[0]))))
    return rows


def descendants(pids: set[int]) -> set[int]:
    """pids and every process below them."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found = set(pids)
    grew = True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return found


def listening_sockets(pids: set[int]) -> set[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket the processes listen on."""
    owner: dict[str, int] = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[link[8:-1]] = pid
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in owner:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            # /proc/net prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port, 16), owner[inode]))
    return found
