"""The chart renderer on real bars: Binance's official BTCUSDT 1m klines of 2020-01-01.

The bars are the archive's rows as silver would hold them (decimals as in the
CSV) and the indicator columns are TA-Lib's, so the chart is drawn from real
prices and independently computed indicators. The archive has no trade-less
minute, so no bar here is marked `is_filled`.
"""

from __future__ import annotations

import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from streaming_jobs.cli.chart import DOWN_COLOUR, UP_COLOUR, render_chart
from streaming_jobs.common.settings import PROJECT_ROOT
from tests.support import archive_rows, talib_reference

TITLE = "BTCUSDT 1m & indicators, 2020-01-01"
INDICATORS = ("sma_20", "ema_12", "ema_26", "rsi_14", "macd", "macd_signal", "macd_hist")
INDICATORS += ("bb_upper", "bb_middle", "bb_lower")


def silver_bars(count: int) -> list[dict[str, Any]]:
    """The archive's first `count` minutes as silver_ohlcv rows, indicators from TA-Lib."""
    rows = archive_rows()[:count]
    indicators = talib_reference(np.array([float(r[4]) for r in rows]))
    bars = []
    for i, (open_ms, o, h, low, c, volume, _, _, trades, *_) in enumerate(rows):
        bar: dict[str, Any] = {
            "symbol": "BTCUSDT",
            "interval": "1m",
            "open_time": datetime.fromtimestamp(int(open_ms) / 1000, UTC).replace(tzinfo=None),
            "open": Decimal(o),
            "high": Decimal(h),
            "low": Decimal(low),
            "close": Decimal(c),
            "volume": Decimal(volume),
            "trade_count": int(trades),
            "is_filled": Decimal(volume) == 0,
            "is_final": True,
            "ingested_at": "extra keys are ignored",
        }
        for name, values in indicators.items():
            bar[name] = None if np.isnan(values[i]) else float(values[i])
        bars.append(bar)
    return bars


@pytest.fixture(scope="module")
def bars() -> list[dict[str, Any]]:
    return silver_bars(240)


def test_png_is_1600x1000_with_candles_in_both_colours(
    bars: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = render_chart(bars, tmp_path / "chart.png", TITLE)

    assert out == tmp_path / "chart.png"
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (1600, 1000)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64).reshape(-1, 3)
    colours = set(np.unique(pixels @ [1 << 16, 1 << 8, 1]).tolist())  # 0xRRGGBB
    assert len(colours) > 1000  # about 4,000 observed; a blank or broken figure has a few
    assert int(UP_COLOUR[1:], 16) in colours
    assert int(DOWN_COLOUR[1:], 16) in colours
    assert out.stat().st_size > 100_000  # about 210 kB observed


def test_svg_parses_and_html_embeds_it_with_the_last_bar(
    bars: list[dict[str, Any]], tmp_path: Path
) -> None:
    svg = render_chart(bars, tmp_path / "chart.svg", TITLE)
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"

    page = render_chart(bars, tmp_path / "chart.html", TITLE).read_text(encoding="utf-8")
    assert "<svg" in page
    assert "<title>BTCUSDT 1m &amp; indicators, 2020-01-01</title>" in page
    last_close = archive_rows()[239][4]  # "7225.01000000" in the CSV
    assert f"<td>{last_close.rstrip('0').rstrip('.')}</td>" in page
    assert "<td>2020-01-01 03:59</td>" in page


def test_order_and_timezone_of_the_input_do_not_change_the_image(
    bars: list[dict[str, Any]], tmp_path: Path
) -> None:
    shuffled = random.Random(7).sample(bars, len(bars))
    aware = [{**bar, "open_time": bar["open_time"].replace(tzinfo=UTC)} for bar in shuffled]

    sorted_png = render_chart(bars, tmp_path / "sorted.png", TITLE).read_bytes()
    assert render_chart(shuffled, tmp_path / "shuffled.png", TITLE).read_bytes() == sorted_png
    assert render_chart(aware, tmp_path / "aware.png", TITLE).read_bytes() == sorted_png


def test_no_bars_and_unknown_formats_are_refused(
    bars: list[dict[str, Any]], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no bars to chart"):
        render_chart([], tmp_path / "chart.png", TITLE)
    with pytest.raises(ValueError, match=r"'chart\.jpg'.*\.png, \.svg, \.html"):
        render_chart(bars, tmp_path / "chart.jpg", TITLE)
    assert list(tmp_path.iterdir()) == []


def test_a_series_too_short_for_any_indicator_still_renders(tmp_path: Path) -> None:
    short = silver_bars(10)
    assert all(bar[name] is None for bar in short for name in INDICATORS)

    png = render_chart(short, tmp_path / "short.png", "ten minutes")
    page = render_chart(short, tmp_path / "short.html", "ten minutes").read_text()

    with Image.open(png) as image:
        assert image.size == (1600, 1000)
    assert page.count("<td>n/a</td>") == 2  # RSI and MACD of the last bar


def test_rendering_never_imports_pyplot(tmp_path: Path) -> None:
    # pyplot would set a process-wide backend under the caller's feet. A fresh
    # interpreter, since this session's other tests may import pyplot themselves.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.unit.test_chart import silver_bars\n"
        "from streaming_jobs.cli.chart import render_chart\n"
        f"render_chart(silver_bars(40), Path({str(tmp_path / 'c.png')!r}), 'probe')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, check=True)
