"""The self-contained ``report.html`` page: summary, histogram, sortable table, figures, failures.

Everything is inline: CSS, a small vanilla-JS sorter and images as base64 ``data:`` URIs. The table
rows are static HTML (readable without JavaScript); numeric cells carry their full-precision value in
``data-v`` so sorting is numeric, and empty cells sort last in both directions.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from html import escape
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem;color:#222;background:#fff}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem}
.card b{display:block;font-size:1.3rem}.bad b{color:#b00020}
.wrap{overflow-x:auto;max-height:70vh;overflow-y:auto;border:1px solid #ddd}
table{border-collapse:collapse;font-size:.8rem;white-space:nowrap}
th,td{padding:.2rem .5rem;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
thead th{position:sticky;top:0;background:#f4f4f4;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.failed td{background:#fff1f1}
.gallery{display:flex;flex-wrap:wrap;gap:1rem}.gallery figure{margin:0;max-width:100%}
.gallery img{width:280px;cursor:zoom-in;border:1px solid #ccc}
.gallery img.big{width:auto;max-width:100%;cursor:zoom-out}
figcaption{font-size:.8rem}
"""

_JS = """
(function(){
  "use strict";
  var table=document.getElementById("studies");
  if(!table){return;}
  var tbody=table.tBodies[0], heads=table.tHead.rows[0].cells;
  var coll=new Intl.Collator(undefined,{numeric:true,sensitivity:"base"});
  var current=-1, dir=1;
  function key(cell){
    var v=cell.getAttribute("data-v");
    if(v!==null){var n=parseFloat(v);return isNaN(n)?null:n;}
    var t=cell.textContent.trim();return t===""?null:t;
  }
  function cmp(a,b){
    if(a===null||b===null){return a===null?(b===null?0:1):-1;}
    var d=(typeof a==="number"&&typeof b==="number")?(a<b?-1:a>b?1:0):coll.compare(String(a),String(b));
    return d*dir;
  }
  function sortBy(c){
    dir=(c===current)?-dir:1;current=c;
    var items=Array.prototype.map.call(tbody.rows,function(r,i){return [key(r.cells[c]),i,r];});
    items.sort(function(x,y){return cmp(x[0],y[0])||(x[1]-y[1]);});
    var frag=document.createDocumentFragment();
    items.forEach(function(it){frag.appendChild(it[2]);});
    tbody.appendChild(frag);
    for(var h=0;h<heads.length;h++){heads[h].removeAttribute("aria-sort");}
    heads[c].setAttribute("aria-sort",dir>0?"ascending":"descending");
  }
  for(var c=0;c<heads.length;c++){
    heads[c].addEventListener("click",sortBy.bind(null,c));
  }
  document.querySelectorAll(".gallery img").forEach(function(img){
    img.addEventListener("click",function(){img.classList.toggle("big");});
  });
})();
"""


def _fmt(v: Any, col: str) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if col == "seconds":
            return f"{v:.1f}"
        return f"{v:.4f}" if col.startswith("ssim") else f"{v:.2f}"
    return str(v)


def _pm(mean: float | None, sd: float | None, digits: int, unit: str = "") -> str:
    if mean is None:
        return "n/a"
    return f"{mean:+.{digits}f} ± {(sd or 0.0):.{digits}f}{unit}"


def _summary(summary: Mapping[str, Any], histogram_b64: str | None) -> list[str]:
    cards = [
        ("studies", str(summary["studies"]), ""),
        ("done", str(summary["done"]), ""),
        ("failed", str(summary["failed"]), " bad" if summary["failed"] else ""),
        ("PSNR gain (SR − bicubic)", _pm(summary["gain_db_mean"], summary["gain_db_sd"], 2, " dB"), ""),
        ("SSIM gain (SR − bicubic)", _pm(summary["ssim_gain_mean"], summary["ssim_gain_sd"], 4), ""),
        ("studies with metrics", str(summary["with_metrics"]), ""),
    ]
    out = ['<div class="cards">']
    out += [f'<div class="card{cls}"><b>{escape(v)}</b>{escape(k)}</div>' for k, v, cls in cards]
    out.append("</div>")
    if summary.get("duplicates"):
        out.append(
            f"<p>{summary['duplicates']} superseded sidecar(s) of studies seen twice were left out "
            "(see report.json).</p>"
        )
    if histogram_b64:
        out.append(
            '<h2>Distribution of the PSNR gain</h2><img id="histogram" alt="histogram of the PSNR gain" '
            f'src="data:image/png;base64,{histogram_b64}">'
        )
    else:
        out.append("<p>No metrics: they are computed only by <code>mrisr enhance --simulate</code>.</p>")
    return out


def _table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], numeric: Collection[str], embedded: Collection[str]
) -> list[str]:
    out = ['<div class="wrap"><table id="studies"><thead><tr>']
    out += [f'<th scope="col" title="sort by {c}">{escape(c)}</th>' for c in columns]
    out.append("</tr></thead><tbody>")
    for r in rows:
        cls = "" if r["status"] == "done" else ' class="failed"'
        cells = []
        for c in columns:
            v = r.get(c)
            if c in numeric:
                dv = "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))
                cells.append(f'<td class="n" data-v="{dv}">{escape(_fmt(v, c))}</td>')
            elif c == "figure" and v and r.get("_figure_missing"):
                cells.append(f"<td>{escape(str(v))} (missing)</td>")
            elif c == "figure" and v:
                # The href is mrisr.report.links.figure_link's: relative, inside the output folder.
                href = str(r.get("_figure_href") or "")
                target = f"#fig-{escape(str(r['study']))}" if r["study"] in embedded else escape(href)
                cells.append(f'<td><a href="{target}">{escape(str(v))}</a></td>')
            else:
                cells.append(f"<td>{escape(_fmt(v, c))}</td>")
        out.append(f"<tr{cls}>{''.join(cells)}</tr>")
    out.append("</tbody></table></div>")
    return out


def render_html(
    *,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    numeric: Collection[str],
    embedded: Mapping[str, str],
    histogram_b64: str | None,
    failures: Sequence[tuple[str, str]],
) -> str:
    """The report page as one HTML string.

    Args:
        summary: The summary dict of ``report.json``.
        rows: Report rows (dicts keyed by column), in display order.
        columns: Column names, in order.
        numeric: The columns holding numbers (right-aligned, sorted numerically).
        embedded: ``{study: base64 PNG}`` of the figures to embed, in display order.
        histogram_b64: The gain histogram as base64 PNG, or ``None`` when no study has metrics.
        failures: ``(study, reason)`` pairs.

    Returns:
        The page text (UTF-8).
    """
    title = f"mrisr report — {summary['studies']} studies"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1><p>Output folder: <code>{escape(str(summary['out_dir']))}</code></p>",
    ]
    out += _summary(summary, histogram_b64)
    out.append("<h2>Studies</h2><p>Click a column header to sort; click again to reverse.</p>")
    out += _table(rows, columns, numeric, embedded)
    n_fig = sum(1 for r in rows if r.get("figure"))
    out.append(
        f"<h2>Comparison figures</h2><p>{len(embedded)} of {n_fig} figures embedded (the first studies "
        "by name and those with the lowest PSNR gain); the others are linked from the table and open "
        "while this page stays in the output folder. Click a figure to enlarge it.</p>"
    )
    out.append('<div class="gallery">')
    gains = {r["study"]: r.get("gain_db") for r in rows}
    for study, b64 in embedded.items():
        g = gains.get(study)
        cap = escape(str(study)) + (f" — gain {g:+.2f} dB" if isinstance(g, float) else "")
        out.append(
            f'<figure id="fig-{escape(str(study))}"><img alt="comparison figure of {escape(str(study))}" '
            f'src="data:image/png;base64,{b64}"><figcaption>{cap}</figcaption></figure>'
        )
    out.append("</div>")
    out.append(f"<h2>Failures ({len(failures)})</h2>")
    if failures:
        out.append('<table id="failures"><thead><tr><th>study</th><th>reason</th></tr></thead><tbody>')
        out += [f"<tr><td>{escape(s)}</td><td>{escape(e)}</td></tr>" for s, e in failures]
        out.append("</tbody></table>")
    else:
        out.append("<p>None.</p>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out) + "\n"
