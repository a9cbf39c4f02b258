"""Small inline SVG charts for the audit report: no JavaScript, no fonts or files to fetch.

Every chart is an `<svg class="plot">` with a `<title>` so it reads in a screen reader and the report's
browser test can count them. Inputs are plain numbers and labels; labels are escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

ACTION_COLORS = {"keep": "#4c956c", "redact": "#e0a458", "drop": "#c8553d"}
PALETTE = ["#3a6ea5", "#4c956c", "#e0a458", "#c8553d", "#7b6d8d", "#2a9d8f", "#8d99ae", "#b5838d"]
FONT = "font-family:system-ui,sans-serif;font-size:12px"


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg class="plot" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" style="{FONT}"><title>{escape(title)}</title>{"".join(body)}</svg>')


def _num(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    a = abs(v)
    return f"{v:.3g}" if a < 1 else f"{v:,.1f}" if a < 1000 else f"{v:,.0f}"


def _clip(label: str, n: int = 34) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def bars(rows: Sequence[tuple[str, float]], title: str, color: str = PALETTE[0], width: int = 640,
         label_width: int = 230) -> str:
    """Horizontal bars, one per (label, value), largest scale first as given."""
    row_h, top = 20, 8
    height = top * 2 + row_h * max(len(rows), 1)
    vmax = max((v for _, v in rows), default=0) or 1
    span = width - label_width - 70
    body = []
    for i, (label, v) in enumerate(rows):
        y = top + i * row_h
        w = max(span * v / vmax, 1 if v else 0)
        body.append(f'<text x="{label_width - 6}" y="{y + 14}" text-anchor="end">{escape(_clip(str(label)))}</text>'
                    f'<rect x="{label_width}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{color}">'
                    f'<title>{escape(str(label))}: {_num(v)}</title></rect>'
                    f'<text x="{label_width + w + 4:.1f}" y="{y + 14}">{_num(v)}</text>')
    return _svg(width, height, title, body)


def stacked_bars(rows: Sequence[tuple[str, dict[str, float]]], keys: Sequence[str], title: str,
                 colors: dict[str, str] | None = None, width: int = 640, label_width: int = 230) -> str:
    """Horizontal stacked bars (e.g. documents per domain split by action), with a legend."""
    colors = colors or {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}
    row_h, top = 20, 26
    height = top + 8 + row_h * max(len(rows), 1)
    vmax = max((sum(parts.values()) for _, parts in rows), default=0) or 1
    span = width - label_width - 70
    body = []
    for i, k in enumerate(keys):
        x = label_width + i * 90
        body.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{colors[k]}"/>'
                    f'<text x="{x + 16}" y="16">{escape(k)}</text>')
    for i, (label, parts) in enumerate(rows):
        y = top + i * row_h
        x = float(label_width)
        body.append(f'<text x="{label_width - 6}" y="{y + 14}" text-anchor="end">{escape(_clip(str(label)))}</text>')
        for k in keys:
            v = parts.get(k, 0) or 0
            if not v:
                continue
            w = span * v / vmax
            body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_h - 6}" '
                        f'fill="{colors[k]}"><title>{escape(str(label))} · {escape(k)}: {_num(v)}</title></rect>')
            x += w
        body.append(f'<text x="{x + 4:.1f}" y="{y + 14}">{_num(sum(parts.values()))}</text>')
    return _svg(width, height, title, body)


def histogram(lo: float, hi: float, counts: Sequence[int], title: str,
              thresholds: Sequence[tuple[float, str]] = (), width: int = 300, height: int = 150) -> str:
    """Equal-width bins from lo to hi; thresholds drawn as red dashed lines (clamped to the axis)."""
    left, right, top, bottom = 8, 8, 18, 20
    n = max(len(counts), 1)
    cmax = max(counts, default=0) or 1
    pw, ph = width - left - right, height - top - bottom
    bw = pw / n
    body = []
    for i, c in enumerate(counts):
        h = ph * c / cmax
        a = lo + (hi - lo) * i / n
        b = lo + (hi - lo) * (i + 1) / n
        body.append(f'<rect x="{left + i * bw:.1f}" y="{top + ph - h:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                    f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{_num(a)} – {_num(b)}: {c:,}</title></rect>')
    body.append(f'<line x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}" stroke="#555"/>'
                f'<text x="{left}" y="{height - 5}">{_num(lo)}</text>'
                f'<text x="{width - right}" y="{height - 5}" text-anchor="end">{_num(hi)}</text>')
    for i, (t, label) in enumerate(thresholds):
        frac = 0.0 if hi == lo else min(max((t - lo) / (hi - lo), 0.0), 1.0)
        x = left + pw * frac
        anchor = "end" if frac > 0.6 else "start"
        dx = -3 if anchor == "end" else 3
        body.append(f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + ph}" '
                    f'stroke="#c8553d" stroke-width="2" stroke-dasharray="4 3"><title>{escape(label)}</title></line>'
                    f'<text x="{x + dx:.1f}" y="{top - 6 + 11 * i}" text-anchor="{anchor}" fill="#c8553d">'
                    f'{escape(_clip(label, 30))}</text>')
    return _svg(width, height, title, body)


def waterfall(start: tuple[str, int], steps: Sequence[tuple[str, int]], end: tuple[str, int], title: str,
              width: int = 640, label_width: int = 230) -> str:
    """Input rows, minus each removal step, down to what remains: one row per step."""
    rows = [start, *steps, end]
    row_h, top = 22, 8
    height = top * 2 + row_h * len(rows)
    vmax = max(start[1], 1)
    span = width - label_width - 90
    body = []
    level = start[1]
    for i, (label, v) in enumerate(rows):
        y = top + i * row_h
        if i == 0 or i == len(rows) - 1:
            x0, w, color, txt = 0.0, span * v / vmax, PALETTE[0] if i == 0 else ACTION_COLORS["keep"], f"{v:,}"
        else:
            level -= v
            x0, w, color, txt = span * level / vmax, span * v / vmax, ACTION_COLORS["drop"], f"−{v:,}"
        body.append(f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end">{escape(_clip(str(label)))}</text>'
                    f'<rect x="{label_width + x0:.1f}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_h - 6}" '
                    f'fill="{color}"><title>{escape(str(label))}: {txt}</title></rect>'
                    f'<text x="{label_width + x0 + max(w, 1) + 4:.1f}" y="{y + 15}">{txt}</text>')
    return _svg(width, height, title, body)


def intervals(rows: Sequence[tuple[str, float, float, float, bool]], reference: float, title: str,
              width: int = 640, label_width: int = 230) -> str:
    """Rates with confidence intervals against a reference rate; flagged rows in red."""
    row_h, top = 20, 20
    height = top + 8 + row_h * max(len(rows), 1)
    vmax = max([reference] + [hi for *_, hi, _ in rows]) or 1
    span = width - label_width - 60

    def x(v: float) -> float:
        return label_width + span * v / vmax

    body = [f'<line x1="{x(reference):.1f}" x2="{x(reference):.1f}" y1="12" y2="{height - 4}" stroke="#555" '
            f'stroke-dasharray="3 3"/><text x="{x(reference) + 3:.1f}" y="12">overall {reference:.1%}</text>']
    for i, (label, rate, lo, hi, flagged) in enumerate(rows):
        y = top + i * row_h + 10
        color = ACTION_COLORS["drop"] if flagged else PALETTE[0]
        body.append(f'<text x="{label_width - 6}" y="{y + 4}" text-anchor="end">{escape(_clip(str(label)))}</text>'
                    f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2"/>'
                    f'<circle cx="{x(rate):.1f}" cy="{y}" r="4" fill="{color}"><title>{escape(str(label))}: '
                    f'{rate:.1%} (95% CI {lo:.1%}–{hi:.1%}){" disparate" if flagged else ""}</title></circle>')
    return _svg(width, height, title, body)


def paired_bars(rows: Sequence[tuple[str, float, float]], names: tuple[str, str], title: str,
                width: int = 640, label_width: int = 230) -> str:
    """Two bars per label (e.g. before and after the policy), on one scale."""
    row_h, top = 30, 26
    height = top + 8 + row_h * max(len(rows), 1)
    vmax = max([max(a, b) for _, a, b in rows] + [0]) or 1
    span = width - label_width - 70
    colors = (PALETTE[0], PALETTE[1])
    body = [f'<rect x="{label_width + i * 90}" y="6" width="12" height="12" fill="{colors[i]}"/>'
            f'<text x="{label_width + i * 90 + 16}" y="16">{escape(n)}</text>' for i, n in enumerate(names)]
    for i, (label, a, b) in enumerate(rows):
        y = top + i * row_h
        body.append(f'<text x="{label_width - 6}" y="{y + 16}" text-anchor="end">{escape(_clip(str(label)))}</text>')
        for j, v in enumerate((a, b)):
            w = span * (v or 0) / vmax
            yy = y + 2 + j * 12
            body.append(f'<rect x="{label_width}" y="{yy}" width="{max(w, 1 if v else 0):.1f}" height="11" '
                        f'fill="{colors[j]}"><title>{escape(str(label))} · {escape(names[j])}: {_num(v or 0)}'
                        f'</title></rect><text x="{label_width + w + 4:.1f}" y="{yy + 9}" font-size="10">'
                        f'{_num(v or 0)}</text>')
    return _svg(width, height, title, body)
