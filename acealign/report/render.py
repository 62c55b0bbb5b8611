"""Rendering of the report's sections: HTML (figures embedded as base64 PNG) and Markdown."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # (name, caption, table)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (name, caption)


# -- writers -----------------------------------------------------------------------------------------

MAX_INLINE_ROWS = 40


# Columns that are fractions, p-values or raw distances (3 decimals); scores x100 and d_CDF x1000
# get 2. A spread over seeds (``<column>_sd``) is shown like its column.
FINE_COLUMNS = {
    "modal_accuracy", "d_modal_accuracy", "flipped_share", "cdf_distance", "no_effect", "noise_floor",
    "p_value", "p_holm", "dm", "dd", "magnitude", "aligned", "flipped", "stereotyping", "erasure",
    "seed_mean", "seed_std",
}


def _fmt(v, column: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        fine = column in FINE_COLUMNS or column.removesuffix("_sd") in FINE_COLUMNS
        return f"{v:.3f}" if fine else f"{v:.2f}"
    return str(v)


def markdown_table(table: pd.DataFrame, max_rows: int | None = None) -> str:
    if table.empty:
        return "_(no rows)_"
    shown = table if max_rows is None else table.head(max_rows)
    cols = list(shown.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for rec in shown.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, c).replace("|", "\\|") for v, c in zip(rec, cols, strict=True)) + " |")
    return "\n".join(lines)


def _html_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p><em>(no rows)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v, c))}</td>" for v, c in zip(rec, table.columns, strict=True)) + "</tr>"
        for rec in table.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_inline(text: str) -> str:
    """The little Markdown the section texts use (bold, code, bullets) as HTML."""
    out = []
    for para in text.split("\n\n"):
        esc = html.escape(para)
        esc = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc)
        esc = re.sub(r"`(.+?)`", r"<code>\1</code>", esc)
        if esc.lstrip().startswith("- "):
            items = "".join(f"<li>{li[2:]}</li>" for li in esc.strip().split("\n"))
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{esc}</p>")
    return "".join(out)


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.nodata{color:#a33;font-style:italic}details{margin-bottom:1em}h2{border-bottom:1px solid #ddd;margin-top:2em}"""


def render_html(sections: list[Section], fig_png: dict, missing: dict, run_dir: Path) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>acealign report: {html.escape(str(run_dir))}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>acealign report</h1><p>Run directory <code>{html.escape(str(run_dir))}</code>, built {now} "
             "from saved predictions (tables also as CSV/JSON in <code>tables/</code>).</p>"]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>{_md_inline(sec.text)}")
        for name, caption in sec.figures:
            png = fig_png.get(name)
            if png:
                b64 = base64.b64encode(png).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{b64}'>"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            else:
                parts.append(f"<p class='nodata'>Figure “{html.escape(caption)}”: no data — "
                             f"{html.escape(missing.get(name, 'not drawn'))}.</p>")
        for name, caption, table in sec.tables:
            title = f"{html.escape(caption)} <small>(<code>tables/{name}.csv</code>, {len(table)} rows)</small>"
            if len(table) > MAX_INLINE_ROWS:
                parts.append(f"<details><summary>{title}</summary>{_html_table(table)}</details>")
            else:
                parts.append(f"<h3>{title}</h3>{_html_table(table)}")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(sections: list[Section], fig_png: dict, missing: dict, run_dir: Path) -> str:
    out = [f"# acealign report\n\nRun directory `{run_dir}`; built from saved predictions. "
           "Every table is also in `tables/` as CSV and JSON.\n"]
    for sec in sections:
        out.append(f"## {sec.title}\n\n{sec.text}\n")
        for name, caption in sec.figures:
            if fig_png.get(name):
                out.append(f"![{caption}](figures/{name}.png)\n")
            else:
                out.append(f"_Figure “{caption}”: no data — {missing.get(name, 'not drawn')}._\n")
        for name, caption, table in sec.tables:
            more = len(table) > MAX_INLINE_ROWS
            out.append(f"**{caption}** (`tables/{name}.csv`, {len(table)} rows"
                       + (f"; first {MAX_INLINE_ROWS} shown" if more else "") + ")\n")
            out.append(markdown_table(table, MAX_INLINE_ROWS if more else None) + "\n")
    return "\n".join(out)
