"""The derivation graph of an evaluation as an SVG picture, drawn on the server.

Columns left to right: what was answered (recommendations and alerts),
then the facts rules derived, then the patient's own record (input
resources). A fact reached twice is drawn once. Edges go from a conclusion
to what it rests on; each derived fact names the rule that concluded it.
Every string from the record is escaped. No Flask here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

BOX_W, BOX_H = 250, 62
COL_GAP, ROW_GAP = 70, 14
MARGIN = 16
#: fill, stroke per kind of node
STYLE = {
    "emergency": ("#fde2e1", "#b3261e"), "urgent": ("#fff1d6", "#9a5b00"), "routine": ("#e3eefc", "#1d4f91"),
    "self-care": ("#e6f4ea", "#1e6b34"), "alert": ("#fff4c2", "#7a5d00"), "red-flag": ("#fde2e1", "#b3261e"),
    "derived": ("#eef0f3", "#4a5360"), "input": ("#ffffff", "#1e6b34"),
}
_CHARS = 38


@dataclass
class Node:
    key: str
    label: str
    kind: str
    note: str = ""                    # second line: the rule, or the resource reference
    children: list[str] = field(default_factory=list)
    column: int = 0
    row: float = 0.0


def build(evaluation: Mapping[str, Any], rule_titles: Mapping[str, str] | None = None) -> dict[str, Node]:
    """Nodes of the graph keyed by fact id (items by ``item:<id>``), children in tree order."""
    titles = rule_titles or {}
    nodes: dict[str, Node] = {}

    def visit(tree: Iterable[Mapping[str, Any]]) -> list[str]:
        keys = []
        for fact in tree:
            key = str(fact.get("fact") or fact.get("resource"))
            if key not in nodes:
                if fact.get("resource"):
                    nodes[key] = Node(key, str(fact.get("label", key)), "input", str(fact["resource"]))
                else:
                    rule = str(fact.get("rule") or "")
                    kind = "red-flag" if fact.get("type") == "red-flag" else "derived"
                    nodes[key] = Node(key, str(fact.get("label", key)), kind, f"rule: {titles.get(rule, rule)}")
                    nodes[key].children = visit(fact.get("because") or [])
            keys.append(key)
        return keys

    for kind, items in (("recommendation", evaluation.get("recommendations") or []),
                        ("alert", evaluation.get("alerts") or [])):
        for item in items:
            key = f"item:{item['id']}"
            style = "alert" if kind == "alert" else str(item.get("urgency", "routine"))
            nodes[key] = Node(key, str(item.get("title", item["id"])), style,
                              f"{item.get('urgency', '')} · {item.get('rule', '')}")
            nodes[key].children = visit(item.get("because") or [])
    _layout(nodes)
    return nodes


def _layout(nodes: dict[str, Node]) -> None:
    items = [n for n in nodes.values() if n.key.startswith("item:")]
    depth: dict[str, int] = {}

    def deepen(key: str, level: int, path: frozenset[str]) -> None:
        if key in path or depth.get(key, -1) >= level:
            return
        depth[key] = level
        for child in nodes[key].children:
            deepen(child, level + 1, path | {key})

    for item in items:
        deepen(item.key, 0, frozenset())
    last = max((depth[k] for k in depth if nodes[k].kind != "input"), default=0) + 1
    for key, node in nodes.items():
        node.column = last if node.kind == "input" else depth.get(key, 0)
    columns: dict[int, list[Node]] = {}
    for node in nodes.values():
        columns.setdefault(node.column, []).append(node)
    # Order each column by where its parents sit (fewer crossings), keeping tree order for ties.
    placed: dict[str, float] = {}
    for column in sorted(columns):
        members = columns[column]
        if column == 0:
            order = members
        else:
            def parent_rows(node: Node) -> float:
                rows = [placed[p.key] for p in nodes.values() if node.key in p.children and p.key in placed]
                return sum(rows) / len(rows) if rows else 0.0
            order = sorted(members, key=parent_rows)
        for row, node in enumerate(order):
            node.row = row
            placed[node.key] = row


def svg(evaluation: Mapping[str, Any], rule_titles: Mapping[str, str] | None = None) -> Markup:
    """The graph as an inline ``<svg>`` element (empty evaluations get a short note)."""
    nodes = build(evaluation, rule_titles)
    if not nodes:
        return Markup('<svg xmlns="http://www.w3.org/2000/svg" width="420" height="40" role="img" '
                      'font-family="sans-serif"><text x="8" y="24" font-size="13">Nothing was answered, so there '
                      'is nothing to draw.</text></svg>')
    rows = max(n.row for n in nodes.values()) + 1
    columns = max(n.column for n in nodes.values()) + 1
    width = MARGIN * 2 + columns * BOX_W + (columns - 1) * COL_GAP
    height = MARGIN * 2 + int(rows) * (BOX_H + ROW_GAP) + 24

    def x(node: Node) -> float:
        return MARGIN + node.column * (BOX_W + COL_GAP)

    def y(node: Node) -> float:
        return MARGIN + 24 + node.row * (BOX_H + ROW_GAP)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="derivation-graph" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="graph-title" font-family="sans-serif">',
             '<title id="graph-title">Derivation graph: answers on the left, derived facts in the middle, '
             'the patient\'s record on the right</title>',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7380"/></marker></defs>']
    headings = {0: "Answered", columns - 1: "Patient record"}
    for column in range(columns):
        text = headings.get(column, "Derived facts")
        parts.append(f'<text x="{MARGIN + column * (BOX_W + COL_GAP)}" y="{MARGIN + 10}" font-size="13" '
                     f'font-weight="bold" fill="#1f2933">{text}</text>')
    for node in nodes.values():
        for child_key in node.children:
            child = nodes[child_key]
            x1, y1 = x(node) + BOX_W, y(node) + BOX_H / 2
            x2, y2 = x(child), y(child) + BOX_H / 2
            bend = (x2 - x1) / 2 if x2 > x1 else 60
            parts.append(f'<path d="M {x1:.0f} {y1:.0f} C {x1 + bend:.0f} {y1:.0f}, {x2 - bend:.0f} {y2:.0f}, '
                         f'{x2:.0f} {y2:.0f}" fill="none" stroke="#6b7380" stroke-width="1.3" '
                         'marker-end="url(#arrow)"/>')
    for node in nodes.values():
        fill, stroke = STYLE.get(node.kind, STYLE["derived"])
        parts.append(f'<g class="node node-{escape(node.kind)}" data-key="{escape(node.key)}">'
                     f'<title>{escape(node.label)} — {escape(node.note)}</title>'
                     f'<rect x="{x(node):.0f}" y="{y(node):.0f}" width="{BOX_W}" height="{BOX_H}" rx="6" '
                     f'fill="{fill}" stroke="{stroke}" stroke-width="1.6"/>'
                     + "".join(f'<text x="{x(node) + 8:.0f}" y="{y(node) + 17 + 15 * n:.0f}" font-size="12" '
                               f'fill="#111">{escape(line)}</text>' for n, line in enumerate(_lines(node.label)))
                     + f'<text x="{x(node) + 8:.0f}" y="{y(node) + 53:.0f}" font-size="10.5" fill="#3d4550">'
                     f'{escape(_clip(node.note, _CHARS + 4))}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _lines(text: str, limit: int = _CHARS) -> list[str]:
    """At most two lines, broken at spaces, the second clipped."""
    words = " ".join(text.split()).split(" ")
    first = ""
    while words and len(first) + len(words[0]) + (1 if first else 0) <= limit:
        first = f"{first} {words.pop(0)}" if first else words.pop(0)
    if not first:  # one very long word
        return [_clip(text, limit)]
    rest = " ".join(words)
    return [first, _clip(rest, limit)] if rest else [first]


def _clip(text: str, limit: int = _CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
