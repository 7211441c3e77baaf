"""The whole-market load of `make bench`: real trades, klines that agree with them, loopable."""

from __future__ import annotations

import collections
import json
from decimal import Decimal
from pathlib import Path

from producer.replay.captures import Capture, plan_shifts, read_capture
from tests.bench import market
from tests.demo import CAPTURES

START_MS = 1_723_161_600_000  # a whole minute


def frames(symbols: int = 5, rate: float = 40, minutes: int = 2) -> list[tuple[int, dict]]:
    return [
        (ns, json.loads(raw))
        for ns, raw in market.generate(CAPTURES, symbols, rate, minutes, START_MS)
    ]


def test_rates_ids_and_order() -> None:
    got = frames()
    assert [ns for ns, _ in got] == sorted(ns for ns, _ in got)
    trades = [f["data"] for _, f in got if f["stream"].endswith("@trade")]
    klines = [f["data"] for _, f in got if f["stream"].endswith("@kline_1m")]
    assert 0.8 * 40 * 119 < len(trades) < 1.2 * 40 * 119
    assert 5 * 59 < len(klines) <= 5 * 60  # every symbol every 2 s, phases spread
    real = {(t.price, t.qty) for ts in market.real_trades(CAPTURES).values() for t in ts}
    ids = collections.defaultdict(list)
    for t in trades:
        assert (t["p"], t["q"]) in real  # real strings, never made up
        assert t["s"] == t["s"].upper() and t["T"] // 60_000 >= START_MS // 60_000
        ids[t["s"]].append(t["t"])
    for symbol_ids in ids.values():
        assert symbol_ids == list(range(1, len(symbol_ids) + 1))
    assert max(len(v) for v in ids.values()) > 2 * min(len(v) for v in ids.values())  # Zipf


def test_closing_klines_equal_their_minute_of_trades() -> None:
    got = frames()
    bars: dict[tuple[str, int], list[dict]] = collections.defaultdict(list)
    closes = {}
    for _, f in got:
        d = f["data"]
        if d["e"] == "trade":
            bars[(d["s"], d["T"] - d["T"] % 60_000)].append(d)
        elif d["k"]["x"]:
            closes[(d["s"], d["k"]["t"])] = d["k"]
    assert len(closes) == 5  # the first minute of each symbol closed, the last still open
    for key, k in closes.items():
        trades = bars[key]
        price = [Decimal(t["p"]) for t in trades]
        qty = [Decimal(t["q"]) for t in trades]
        assert k["n"] == len(trades) and (k["f"], k["L"]) == (trades[0]["t"], trades[-1]["t"])
        assert Decimal(k["o"]) == price[0] and Decimal(k["c"]) == price[-1]
        assert (Decimal(k["h"]), Decimal(k["l"])) == (max(price), min(price))
        assert Decimal(k["v"]) == sum(qty)
        assert Decimal(k["q"]) == sum(p * q for p, q in zip(price, qty, strict=True))
        taker = [(p, q) for p, q, t in zip(price, qty, trades, strict=True) if not t["m"]]
        assert Decimal(k["V"]) == sum(q for _, q in taker)


def test_a_minute_without_trades_repeats_the_close_and_loops_continue(tmp_path: Path) -> None:
    path = tmp_path / "market.gz"
    count = market.write(path, market.generate(CAPTURES, 50, 0.5, 3, START_MS))
    capture = read_capture(path)
    assert len(capture.frames) == count
    quiet = [
        json.loads(f.raw)["data"]["k"]
        for f in capture.frames
        if f.stream.endswith("kline_1m") and json.loads(f.raw)["data"]["k"]["n"] == 0
    ]
    assert quiet
    assert all(k["o"] == k["c"] == k["h"] == k["l"] and k["v"] == "0.00000000" for k in quiet)
    plan = plan_shifts(Capture(capture.frames))
    assert plan.time_span_ms == 3 * 60_000  # loop 1 starts on the next whole minute


BUSY_CHILD = """
import os, pathlib, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time\\nend = time.process_time() + 1.5\\nwhile time.process_time() < end: pass"])
child.wait()
time.sleep(0.5)  # the sampler sees the child gone and its CPU in this process's count
t = os.times()
pathlib.Path(sys.argv[1]).write_text(str(t.user + t.system + t.children_user + t.children_system))
sys.stdin.read()  # held until the last sample is taken
"""


def test_cores_count_a_child_that_ended_once(tmp_path: Path) -> None:
    """CPU of a process whose child ended between samples: counted once, as the kernel
    counted it for the parent (os.times: its own and its reaped child's)."""
    import os
    import subprocess
    import sys
    import time

    from tests.bench.market_bench import cores, cpu_pids

    result = tmp_path / "kernel"
    env = {**os.environ, "STATE_DIR": str(tmp_path)}
    parent = subprocess.Popen(
        [sys.executable, "-c", BUSY_CHILD, str(result)], env=env, stdin=subprocess.PIPE
    )
    samples = []
    start = time.time()
    try:
        while True:
            done = result.exists()  # sampled after: the last sample holds the whole run
            samples.append(
                {"t_s": time.time() - start, "wall_s": time.time(), "cpu_pids": cpu_pids(tmp_path)}
            )
            if done:
                break
            time.sleep(0.05)
    finally:
        parent.communicate(b"")
    kernel = float(result.read_text())
    assert kernel > 1.4  # the child burnt its 1.5 s
    measured = cores(samples, 0.0)["stack"] * (samples[-1]["wall_s"] - samples[0]["wall_s"])
    # Ticks are 10 ms; the first sample may come after the interpreter's start-up.
    assert abs(measured - kernel) < 0.15, (measured, kernel)
