"""Draw deploy/grafana/dashboards/realtime.json with Prometheus' answers, and a terminal, as PNG.

Used by screenshot.py. The dashboard page keeps the JSON's grid (24 columns, rows of
``gridPos.h``), its titles, units, legend formats, thresholds and value mappings, in a
dark theme like Grafana's; series are plain SVG lines, stats the last value with a
sparkline.
"""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
COLUMN = 1400 / 24
ROW = 30
GAP = 6
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a", "#56a64b"]
STYLE = """
body { margin: 0; background: #111217; color: #ccccdc; font: 13px Inter, "DejaVu Sans", sans-serif; }
header { height: 44px; display: flex; align-items: center; gap: 18px; padding: 0 12px; }
header b { font-size: 16px; color: #fff; } header span { color: #8e8e9e; }
.var { border: 1px solid #2c3235; padding: 3px 8px; border-radius: 2px; }
.grid { position: relative; margin: 0 8px; }
.panel { position: absolute; box-sizing: border-box; background: #181b1f; border: 1px solid #2c3235;
  border-radius: 2px; overflow: hidden; }
.panel h3 { margin: 0; padding: 6px 8px; font-size: 13px; font-weight: 500; color: #ccccdc; }
.row { position: absolute; font-size: 15px; font-weight: 500; color: #fff; padding-top: 8px; }
.stat { position: absolute; left: 0; right: 0; top: 26px; bottom: 0; }
.stat .value { position: absolute; width: 100%; text-align: center; font-size: 30px; font-weight: 500; top: 12px; }
.legend { position: absolute; bottom: 2px; left: 8px; right: 8px; font-size: 11px; white-space: nowrap;
  overflow: hidden; }
.legend i { display: inline-block; width: 12px; height: 3px; margin: 0 4px 3px 10px; }
.none { position: absolute; top: 45%; width: 100%; text-align: center; color: #8e8e9e; }
svg text { fill: #8e8e9e; font-size: 10px; }
"""


def format_value(value: float, unit: str | None, decimals: int | None = None) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "s":
        return f"{value * 1000:.{decimals if decimals is not None else 1}f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    suffix = " req/s" if unit == "reqps" else ""
    if decimals is not None:
        return f"{value:.{decimals}f}{suffix}"
    return f"{value:.3g}{suffix}" if abs(value) < 1000 else f"{value:,.0f}{suffix}"


def legend(target: dict[str, Any], labels: dict[str, str], names: dict[str, str]) -> str:
    shown = {key: names.get(value, value) for key, value in labels.items()}
    text: str = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: shown.get(m.group(1), ""), target.get("legendFormat", ""))
    return text or target["refId"]


def color_for(value: float, defaults: dict[str, Any]) -> str:
    for mapping in defaults.get("mappings", []):
        option = mapping.get("options", {}).get(f"{value:g}")
        if option:
            return str(option["color"])
    color = "#73bf69"
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            color = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c"}.get(step["color"], step["color"])
    return color


def mapped_text(value: float, defaults: dict[str, Any]) -> str | None:
    for mapping in defaults.get("mappings", []):
        option = mapping.get("options", {}).get(f"{value:g}")
        if option:
            return str(option["text"])
    return None


def lines_svg(
    series: list[dict[str, Any]], width: float, height: float, unit: str | None, span: tuple[float, float]
) -> str:
    """Axes, grid lines and one polyline per series."""
    left, bottom = 58.0, 18.0
    points: list[float] = [v for s in series for _, v in s["values"] if not math.isnan(v)]
    low = min([0.0, *points])
    high = max([*points, 0.0])
    high = high * 1.1 if high > 0 else 1.0
    t0, t1 = span

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * (width - left - 8.0)

    def y(v: float) -> float:
        return (height - bottom) - (v - low) / (high - low) * (height - bottom - 6)

    parts = [f'<svg width="{width:.0f}" height="{height:.0f}">']
    for i in range(5):
        value = low + (high - low) * i / 4
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#2c3235"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y(value) + 3:.1f}" text-anchor="end">{format_value(value, unit)}</text>'
        )
    for i in range(6):
        t = t0 + (t1 - t0) * i / 5
        label = time.strftime("%H:%M:%S", time.localtime(t))
        anchor = "end" if i == 5 else "middle"
        parts.append(f'<text x="{x(t):.1f}" y="{height - 4}" text-anchor="{anchor}">{label}</text>')
    for index, item in enumerate(series):
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in item["values"] if not math.isnan(v))
        color = COLORS[index % len(COLORS)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
    parts.append("</svg>")
    return "".join(parts)


def panel_html(
    panel: dict[str, Any], series: list[dict[str, Any]], names: dict[str, str], span: tuple[float, float]
) -> str:
    grid = panel["gridPos"]
    left, top = grid["x"] * COLUMN, grid["y"] * (ROW + GAP)
    width, height = grid["w"] * COLUMN - GAP, grid["h"] * (ROW + GAP) - GAP
    box = f"left:{left:.0f}px;top:{top:.0f}px;width:{width:.0f}px;height:{height:.0f}px"
    if panel["type"] == "row":
        return f'<div class="row" style="{box}">{html.escape(panel["title"])}</div>'
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit")
    body = ['<div class="none">No data</div>'] if not series else []
    if series and panel["type"] == "stat":
        values = [v for _, v in series[0]["values"] if not math.isnan(v)]
        last = values[-1] if values else math.nan
        text = mapped_text(last, defaults) or format_value(last, unit, defaults.get("decimals"))
        color = color_for(last, defaults)
        spark = lines_svg(series[:1], width, height - 30, None, span)
        spark = re.sub(r"<(text|line)[^>]*>[^<]*(</text>)?", "", spark).replace('stroke="#73bf69"', f'stroke="{color}"')
        body.append(f'<div class="stat"><div style="opacity:.35;margin-left:-58px">{spark}</div>')
        body.append(f'<div class="value" style="color:{color}">{html.escape(text)}</div></div>')
    elif series:
        body.append(lines_svg(series, width - 4, height - 50, unit, span))
        keys = "".join(
            f'<i style="background:{COLORS[i % len(COLORS)]}"></i>'
            + html.escape(legend(s["target"], s["labels"], names))
            for i, s in enumerate(series)
        )
        body.append(f'<div class="legend">{keys}</div>')
    title = f"<h3>{html.escape(panel['title'])}</h3>"
    return f'<div class="panel" style="{box}">{title}{"".join(body)}</div>'


def render_dashboard(
    dashboard: dict[str, Any], answers: dict[int, list[dict[str, Any]]], names: dict[str, str], start: float, end: float
) -> str:
    """The dashboard as one HTML page; ``names`` maps instance addresses to server ids."""
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    panels = "".join(panel_html(p, answers.get(p["id"], []), names, (start, end)) for p in dashboard["panels"])
    minutes = (end - start) / 60
    header = (
        f"<header><b>{html.escape(dashboard['title'])}</b>"
        f'<span class="var">server: All</span><span>last {minutes:.1f} min</span>'
        f"<span>drawn from realtime.json by deploy/grafana/screenshot.py</span></header>"
    )
    grid = f'<div class="grid" style="height:{bottom * (ROW + GAP)}px">{panels}</div>'
    return f"<!doctype html><html><head><style>{STYLE}</style></head><body>{header}{grid}</body></html>"


def render_terminal(command: str, output: str) -> str:
    """A dark terminal showing ``$ command`` and its output."""
    text = html.escape(f"$ {command}\n{output.rstrip()}\n$ ")
    style = (
        "body{margin:0;background:#1e1f29}"
        ".bar{height:26px;background:#2d2f3b;border-radius:6px 6px 0 0}"
        ".bar i{display:inline-block;width:11px;height:11px;border-radius:50%;margin:8px 0 0 8px}"
        "pre{margin:0;padding:12px 16px;color:#e6e6e6;font:14px/1.45 'DejaVu Sans Mono',monospace;tab-size:8}"
    )
    dots = "".join(f'<i style="background:{c}"></i>' for c in ("#ff5f56", "#ffbd2e", "#27c93f"))
    body = f'<div class="bar">{dots}</div><pre>{text}</pre>'
    return f"<!doctype html><html><head><style>{style}</style></head><body>{body}</body></html>"


def screenshot(page_html: str, path: Path, width: int) -> int:
    """Render ``page_html`` in headless Chromium at ``width`` CSS pixels; returns the PNG's size."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": 400}, device_scale_factor=1)
            page.set_content(page_html)
            page.screenshot(path=str(path), full_page=True)
        finally:
            browser.close()
    pngquant = shutil.which("pngquant")  # Debian's package: 256 colours, a third of the bytes
    if pngquant is not None:
        argv = [pngquant, "--force", "--skip-if-larger", "--output", str(path), "256", str(path)]
        subprocess.run(argv, check=False)  # noqa: S603 - a fixed argv
    return path.stat().st_size
