"""Rule usage as an inline SVG bar chart, drawn on the server. No Flask here.

One row per rule: a bar of its firings (scaled to the busiest rule), then
a bar of the cards it produced split into accepted, overridden and no
feedback yet, with the numbers written beside them (a chart must not be
the only way to read a figure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

LABEL_W, FIRE_W, RATE_W, ROW_H = 330, 220, 260, 24
ACCEPTED, OVERRIDDEN, PENDING, FIRINGS = "#2e7d32", "#c62828", "#c9ced6", "#1d4f91"


def svg(stats: Sequence[Mapping[str, Any]]) -> Markup:
    """``stats`` are :meth:`AuditStore.rule_stats` answers (plus a ``title``), busiest first."""
    if not stats:
        return Markup('<p class="muted">No rule fired in this period.</p>')
    busiest = max(int(s["firings"]) for s in stats) or 1
    width = LABEL_W + FIRE_W + RATE_W + 150
    height = 40 + len(stats) * ROW_H + 30
    fire_x = LABEL_W
    rate_x = LABEL_W + FIRE_W + 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title" font-family="sans-serif">',
             '<title id="chart-title">Rule usage: firings per rule, and the share of its cards accepted, '
             'overridden or without feedback</title>',
             '<text x="0" y="16" font-size="13" font-weight="bold" fill="#1f2933">Rule</text>',
             f'<text x="{fire_x}" y="16" font-size="13" font-weight="bold" fill="#1f2933">Firings</text>',
             f'<text x="{rate_x}" y="16" font-size="13" font-weight="bold" fill="#1f2933">'
             'Cards: accepted / overridden / no feedback</text>']
    for index, stat in enumerate(stats):
        top = 30 + index * ROW_H
        firings, cards = int(stat["firings"]), int(stat["cards"])
        accepted, overridden = int(stat["accepted"]), int(stat["overridden"])
        label = str(stat.get("title") or stat["rule"])
        label = label if len(label) <= 46 else label[:45] + "…"
        bar = FIRE_W * firings / busiest
        parts.append(f'<g class="rule-row" data-rule="{escape(stat["rule"])}">'
                     f'<title>{escape(stat["rule"])}: {firings} firings, {cards} cards, {accepted} accepted, '
                     f'{overridden} overridden</title>'
                     f'<text x="0" y="{top + 15}" font-size="12" fill="#111">{escape(label)}</text>'
                     f'<rect x="{fire_x}" y="{top + 4}" width="{bar:.1f}" height="14" fill="{FIRINGS}"/>'
                     f'<text x="{fire_x + bar + 4:.1f}" y="{top + 15}" font-size="11" fill="#111">{firings}</text>')
        if cards:
            x = float(rate_x)
            for count, colour in ((accepted, ACCEPTED), (overridden, OVERRIDDEN),
                                  (max(cards - accepted - overridden, 0), PENDING)):
                w = RATE_W * count / cards
                if w:
                    parts.append(f'<rect x="{x:.1f}" y="{top + 4}" width="{w:.1f}" height="14" fill="{colour}"/>')
                x += w
            parts.append(f'<text x="{rate_x + RATE_W + 6}" y="{top + 15}" font-size="11" fill="#111">'
                         f'{_percent(stat.get("acceptanceRate"))} / {_percent(stat.get("overrideRate"))} '
                         f'of {cards}</text>')
        else:
            parts.append(f'<text x="{rate_x}" y="{top + 15}" font-size="11" fill="#5f6b7a">no cards</text>')
        parts.append("</g>")
    legend_y = 30 + len(stats) * ROW_H + 12
    for offset, (colour, text) in enumerate(((ACCEPTED, "accepted"), (OVERRIDDEN, "overridden"),
                                             (PENDING, "no feedback"))):
        lx = rate_x + offset * 95
        parts.append(f'<rect x="{lx}" y="{legend_y}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{lx + 16}" y="{legend_y + 10}" font-size="11" fill="#111">{text}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _percent(rate: Any) -> str:
    return "–" if rate is None else f"{float(rate) * 100:.0f}%"
