"""Charts of silver bars: candles with averages and Bollinger bands, volume, RSI 14 and MACD.

This module owns how a series of `silver_ohlcv` rows looks in a report. It is a
pure renderer, rows in and one file out (PNG, SVG or a small HTML page). It
never imports pyplot: the figure is a plain `Figure` on an Agg canvas, so no
global matplotlib state is touched and callers with another backend (a
notebook, the CLI, the tests) are unaffected. Decimals stay decimals in the
rows and become floats only for drawing; the HTML table prints them exactly.
"""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib import dates as mdates, ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch

FloatArray = npt.NDArray[np.float64]

# Without "Software"/"Date" the same bars give byte-identical files (diffable reports).
METADATA: dict[str, dict[str, Any]] = {".png": {"Software": None}, ".svg": {"Date": None}}
FORMATS = (".png", ".svg", ".html")
UP_COLOUR, DOWN_COLOUR, FILLED_COLOUR, BAND_COLOUR = "#26a69a", "#ef5350", "#9e9e9e", "#5c6bc0"
AVERAGES = {  # column -> (legend label, line colour)
    "sma_20": ("SMA 20", "#ff9800"),
    "ema_12": ("EMA 12", "#2962ff"),
    "ema_26": ("EMA 26", "#ab47bc"),
}
# bb_middle is left out on purpose: it is SMA 20, drawn once.
DRAWN = ("open", "high", "low", "close", "volume", *AVERAGES, "bb_upper", "bb_lower", "rsi_14")
DRAWN += ("macd", "macd_signal", "macd_hist")


def render_chart(bars: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Draw bars (any order) to out; its suffix picks PNG (1600x1000 px), SVG or HTML."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot chart to {out.name!r}: the suffix must be one of .png, .svg, .html"
        )
    if not bars:
        raise ValueError("no bars to chart")
    rows = sorted(bars, key=lambda row: _utc(row["open_time"]))
    fig = _figure(rows, title)
    if suffix == ".html":
        svg = io.StringIO()
        fig.savefig(svg, format="svg", metadata=METADATA[".svg"])
        out.write_text(_html_page(rows, title, svg.getvalue()), encoding="utf-8")
    else:
        fig.savefig(out, format=suffix[1:], metadata=METADATA[suffix])
    return out


def _utc(t: datetime) -> datetime:
    """Silver stores naive UTC; aware times are converted so both sort and plot alike."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _column(rows: list[dict[str, Any]], key: str) -> FloatArray:
    """One column as floats, None (an indicator still warming up) as NaN: a gap in the line."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])


def _colour(row: dict[str, Any]) -> str:
    """A trade-less (filled) bar is grey: its flat price is carried over, not traded."""
    if row["is_filled"]:
        return FILLED_COLOUR
    return UP_COLOUR if row["close"] >= row["open"] else DOWN_COLOUR


def _figure(rows: list[dict[str, Any]], title: str) -> Figure:
    """Four panes on one UTC time axis, heights 5 : 1.5 : 1.5 : 1.5."""
    times = [_utc(r["open_time"]) for r in rows]
    # matplotlib.dates has no type hints, hence the ignores on its calls.
    t = np.asarray(mdates.date2num(times), dtype=np.float64)  # type: ignore[no-untyped-call]
    # The bar interval is the median spacing, robust to gaps; a lone bar may take any width.
    step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    step = step if step > 0 else 1 / 1440
    c = {key: _column(rows, key) for key in DRAWN}
    colours = [_colour(r) for r in rows]

    fig = Figure(figsize=(16, 10), dpi=100, layout=ConstrainedLayoutEngine(h_pad=0.02))
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True, height_ratios=[5, 1.5, 1.5, 1.5])
    price, volume, rsi, macd = axes
    _draw_price(price, t, step, c, colours)
    _tag_last_close(price, rows[-1]["close"], colours[-1])
    _boxes(volume, t, np.zeros_like(t), c["volume"], 0.7 * step, colours, linewidths=0)
    volume.autoscale_view()
    volume.set_ylim(bottom=0)  # as ax.bar would: no margin below zero volume
    volume.yaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    _draw_rsi(rsi, t, c["rsi_14"])
    _draw_macd(macd, t, step, c)
    for ax, label in zip(axes, ("Price", "Volume", "RSI 14", "MACD 12/26/9"), strict=True):
        _style(ax, label)

    locator = mdates.AutoDateLocator(tz=UTC, minticks=6, maxticks=14)  # type: ignore[no-untyped-call]
    macd.xaxis.set_major_locator(locator)
    concise = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    macd.xaxis.set_major_formatter(concise)
    macd.set_xlabel("time (UTC)", fontsize=10, color="0.3")
    macd.set_xlim(t[0] - 0.75 * step, t[-1] + 0.75 * step)

    fig.suptitle(title, fontsize=16, fontweight="bold", x=0.01, ha="left")
    first, last = (when.strftime("%Y-%m-%d %H:%M") for when in (times[0], times[-1]))
    subtitle = f"{rows[0]['symbol']} · {rows[0]['interval']} · {first} → {last} UTC"
    price.set_title(f"{subtitle} · {len(rows)} bars", fontsize=10, loc="left", color="0.4")
    return fig


def _style(ax: Axes, label: str) -> None:
    """Quiet frame and grid; the scale on the right, as on a trading screen."""
    ax.set_ylabel(label, fontsize=10, color="0.3")
    ax.yaxis.tick_right()
    ax.tick_params(labelsize=9, colors="0.3", length=3)
    ax.grid(color="0.92", linewidth=0.7)
    ax.set_axisbelow(True)
    for spine in ax.spines.values():
        spine.set_color("0.8")


def _boxes(
    ax: Axes, t: FloatArray, bottom: FloatArray, top: FloatArray, width: float, faces: Any,
    **style: Any,
) -> None:  # fmt: skip
    """Bars as one collection: ax.bar adds a patch per bar, seconds for a day of 1m bars."""
    left, right = t - width / 2, t + width / 2
    corners = np.stack([left, bottom, left, top, right, top, right, bottom], axis=1)
    ax.add_collection(PolyCollection(list(corners.reshape(-1, 4, 2)), facecolors=faces, **style))


def _draw_price(
    ax: Axes, t: FloatArray, step: float, c: dict[str, FloatArray], colours: list[str]
) -> None:
    """Candles over the Bollinger band and the moving averages."""
    ax.fill_between(t, c["bb_lower"], c["bb_upper"], color=BAND_COLOUR, alpha=0.07, linewidth=0)
    ax.plot(
        t, c["bb_upper"], color=BAND_COLOUR, lw=0.9, alpha=0.55, label=r"Bollinger 20, 2$\sigma$"
    )
    ax.plot(t, c["bb_lower"], color=BAND_COLOUR, lw=0.9, alpha=0.55)
    for key, (label, colour) in AVERAGES.items():
        ax.plot(t, c[key], color=colour, linewidth=1.3, label=label)
    ax.vlines(t, c["low"], c["high"], colors=colours, linewidth=1, zorder=3)
    # The edge keeps a zero-height body (open == close) visible as a line.
    faces = ["white" if k == FILLED_COLOUR else k for k in colours]
    body = np.minimum(c["open"], c["close"]), np.maximum(c["open"], c["close"])
    _boxes(ax, t, *body, 0.7 * step, faces, edgecolors=colours, linewidths=0.7, zorder=4)
    handles = ax.get_legend_handles_labels()[0]
    if FILLED_COLOUR in colours:
        handles.append(Patch(facecolor="white", edgecolor=FILLED_COLOUR, label="no trades"))
    # Above the pane, beside the subtitle: inside it would hide the candles under it.
    ax.legend(
        handles=handles, loc="lower right", bbox_to_anchor=(1, 1), ncols=len(handles),
        fontsize=9, frameon=False, borderaxespad=0.2,
    )  # fmt: skip
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)


def _tag_last_close(ax: Axes, close: Any, colour: str) -> None:
    """The last price, exact as stored, on the price scale: where the market stands now."""
    ax.axhline(float(close), color=colour, linewidth=0.8, linestyle=":", zorder=2)
    ax.annotate(
        _text(close), xy=(1, float(close)), xycoords=("axes fraction", "data"), xytext=(3, 0),
        textcoords="offset points", va="center", fontsize=9, color="white", zorder=5,
        bbox={"boxstyle": "round,pad=0.25", "facecolor": colour, "edgecolor": "none"},
    )  # fmt: skip


def _draw_rsi(ax: Axes, t: FloatArray, rsi: FloatArray) -> None:
    ax.axhspan(30, 70, color=BAND_COLOUR, alpha=0.05, linewidth=0)
    for level in (30, 70):
        ax.axhline(level, color="0.5", linewidth=0.8, linestyle=":")
    ax.plot(t, rsi, color="#7e57c2", linewidth=1.2)
    ax.set_ylim(0, 100)
    ax.set_yticks([0, 30, 50, 70, 100])
    _note_if_empty(ax, rsi)


def _draw_macd(ax: Axes, t: FloatArray, step: float, c: dict[str, FloatArray]) -> None:
    hist = c["macd_hist"]
    known = ~np.isnan(hist)
    shades = np.where(hist[known] >= 0, UP_COLOUR, DOWN_COLOUR)
    _boxes(ax, t[known], np.zeros(known.sum()), hist[known], 0.7 * step, shades, alpha=0.6)
    ax.axhline(0, color="0.6", linewidth=0.7)
    ax.plot(t, c["macd"], color="#2962ff", linewidth=1.2, label="MACD")
    ax.plot(t, c["macd_signal"], color="#ff6d00", linewidth=1.2, label="signal")
    ax.legend(loc="upper left", ncols=2, fontsize=9, framealpha=0.85)
    _note_if_empty(ax, c["macd"])


def _note_if_empty(ax: Axes, values: FloatArray) -> None:
    """Say why a pane is blank: a short series has no indicator values yet."""
    if np.isnan(values).all():
        ax.text(
            0.5, 0.5, "indicators warming up: too few bars", transform=ax.transAxes,
            ha="center", va="center", fontsize=10, color="0.55",
        )  # fmt: skip


def _text(value: Any) -> str:
    """Decimals exactly as stored (trailing zeros dropped), floats to 6 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return f"{float(value):.6g}"


def _html_page(rows: list[dict[str, Any]], title: str, svg: str) -> str:
    """A self-contained page: the chart inline (no files beside it), the last bar below."""
    last = rows[-1]
    cells = {"time (UTC)": _utc(last["open_time"]).strftime("%Y-%m-%d %H:%M")}
    cells |= {key: _text(last[key]) for key in ("open", "high", "low", "close", "volume")}
    cells |= {"RSI 14": _text(last.get("rsi_14")), "MACD": _text(last.get("macd"))}
    head = "".join(f"<th>{html.escape(k)}</th>" for k in cells)
    body = "".join(f"<td>{html.escape(v)}</td>" for v in cells.values())
    name = html.escape(title)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{name}</title>\n"
        "<style>body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222}"
        "svg{width:100%;height:auto}table{border-collapse:collapse;font-variant-numeric:"
        "tabular-nums}th,td{padding:.3em .9em;border-bottom:1px solid #ddd;text-align:right}"
        "</style>\n</head>\n<body>\n"
        f"<h1>{name}</h1>\n{svg[svg.index('<svg') :]}\n<h2>Last bar</h2>\n"
        f"<table>\n<tr>{head}</tr>\n<tr>{body}</tr>\n</table>\n</body>\n</html>\n"
    )
