"""The Visualize drawing: a network's layers as boxes, top to bottom, joined where blobs flow.

A layer sits one row below the deepest layer that produces one of its bottoms, so branches
(GoogLeNet's inception towers) stand side by side. Drawn as SVG on the server: nothing to install.
"""

from __future__ import annotations

from html import escape

from kiln.networks.prototxt import LayerRow, NetSummary
from kiln.networks.prototxt.layers import fmt_shape

BOX_W, BOX_H, GAP_X, GAP_Y = 170, 40, 18, 22
COLOURS = {
    "Convolution": "#cfe2ff",
    "InnerProduct": "#d1e7dd",
    "Pooling": "#fff3cd",
    "Data": "#e2e3e5",
    "Input": "#e2e3e5",
    "SoftmaxWithLoss": "#f8d7da",
    "Accuracy": "#f8d7da",
    "Softmax": "#f8d7da",
}


def _rows(summary: NetSummary) -> list[tuple[LayerRow, int, list[int]]]:
    """(layer, row, producers): the depth of each layer and the layers whose blobs it reads."""
    producer: dict[str, int] = {}
    out: list[tuple[LayerRow, int, list[int]]] = []
    depth: list[int] = []
    for i, layer in enumerate(summary.layers):
        parents = sorted({producer[b] for b in layer.bottoms if b in producer})
        depth.append(1 + max((depth[p] for p in parents), default=-1))
        out.append((layer, depth[i], parents))
        for top in layer.tops:
            producer[top] = i
    return out


def network_svg(summary: NetSummary) -> str:
    """An ``<svg>`` element drawing ``summary``'s layers (escaped: names come from users)."""
    rows = _rows(summary)
    columns: dict[int, int] = {}
    place: list[tuple[float, float]] = []
    for _, row, _ in rows:
        col = columns.get(row, 0)
        columns[row] = col + 1
        place.append((GAP_X + col * (BOX_W + GAP_X), GAP_Y + row * (BOX_H + GAP_Y)))
    width = GAP_X + max(columns.values(), default=1) * (BOX_W + GAP_X)
    height = GAP_Y + (max(columns, default=0) + 1) * (BOX_H + GAP_Y)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="network-graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(summary.name or "network")}">'
    ]
    for i, (_, _, parents) in enumerate(rows):
        x, y = place[i]
        for p in parents:
            px, py = place[p]
            parts.append(f'<line x1="{px + BOX_W / 2}" y1="{py + BOX_H}" x2="{x + BOX_W / 2}" y2="{y}" stroke="#888"/>')
    for i, (layer, _, _) in enumerate(rows):
        x, y = place[i]
        shape = ", ".join(fmt_shape(s) for s in layer.shapes)
        parts.append(
            f'<g class="layer" data-layer="{escape(layer.name)}"><title>{escape(layer.name)} ({escape(layer.type)})'
            f" line {layer.line}: {escape(shape)}</title>"
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5" fill="{COLOURS.get(layer.type, "#f1f3f5")}"'
            ' stroke="#666"/>'
            f'<text x="{x + 6}" y="{y + 16}" font-size="12" font-weight="bold">{escape(_clip(layer.name))}</text>'
            f'<text x="{x + 6}" y="{y + 32}" font-size="11">{escape(_clip(layer.type + " " + shape))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
