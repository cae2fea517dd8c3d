"""The report's matrix as HTML that fits a laptop screen: the table scrolls inside its own box
with sticky row and column headers; each check family's columns collapse to one summary
column (families with nothing failing or changed start collapsed when the table is wider than
the window); a filter shows only the rows and cells that fail or changed against the baseline.

The matrix comes in as harness.report.Matrix (read by its attributes) with the report's own
helpers for anchors and badges, so this module imports no other harness module.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any, Callable

SHORT = {"llama-cpp-python": "llama-cpp-py", "llama-cpp-python-eval": "lcp-eval", "llama.cpp-builtin": "builtin",
         "llama-server": "server", "llama.cpp-chat": "chat-layer", "-": "model"}

CSS = """
.mtools{margin:6px 0;font-size:13px}.mtools label{margin-right:14px}.mtools button{font-size:12px}
.mwrap{overflow:auto;max-height:calc(100vh - 90px);border:1px solid #ccc}
table.matrix{margin:0;border-collapse:separate;border-spacing:0}
table.matrix th,table.matrix td{border:0;border-right:1px solid #ddd;border-bottom:1px solid #ddd;white-space:nowrap}
table.matrix thead th{position:sticky;top:0;z-index:2;background:#eef;font-size:12px}
table.matrix thead tr.r2 th{top:var(--r1,24px)}
table.matrix tbody th{position:sticky;left:0;z-index:1;background:#fff;font-size:12px}
table.matrix thead th.corner{left:0;z-index:3}
table.matrix th.fam button{border:0;background:none;cursor:pointer;font-weight:700;padding:0 4px}
table.matrix .sm{display:none}table.matrix td.cell{padding:2px 3px;text-align:center}
td.cell.changed{outline:3px solid #6a1b9a;outline-offset:-3px}td.cell.changed a:after{content:" Δ";color:#6a1b9a;font-weight:700}
table.matrix.only tbody tr:not(.bad){display:none}
table.matrix.only td.cell:not(.fail):not(.changed){opacity:.2}
"""

JS = """
(function(){
var t=document.getElementById('mtable');if(!t)return;
var r1=t.tHead.rows[0];t.style.setProperty('--r1',r1.offsetHeight+'px');
function set(i,collapsed){
  t.classList.toggle('c'+i,collapsed);
  var th=r1.querySelector('th.fam[data-fam="'+i+'"]');
  th.colSpan=collapsed?1:+th.dataset.n;th.querySelector('button').textContent=collapsed?'▸':'▾';
}
r1.querySelectorAll('th.fam').forEach(function(th){
  th.querySelector('button').onclick=function(){set(th.dataset.fam,!t.classList.contains('c'+th.dataset.fam));};
});
document.getElementById('only-bad').onchange=function(){t.classList.toggle('only',this.checked);};
document.getElementById('collapse-all').onclick=function(){r1.querySelectorAll('th.fam').forEach(function(th){set(th.dataset.fam,true);});};
document.getElementById('expand-all').onclick=function(){r1.querySelectorAll('th.fam').forEach(function(th){set(th.dataset.fam,false);});};
var box=document.querySelector('.mwrap');
if(t.offsetWidth>box.clientWidth){r1.querySelectorAll('th.fam').forEach(function(th){if(th.dataset.bad!=='1')set(th.dataset.fam,true);});}
})();
"""


def _collapse_css(n: int) -> str:
    return "".join(f"table.matrix.c{i} .f{i}.bk{{display:none}}table.matrix.c{i} .f{i}.sm{{display:table-cell}}"
                   for i in range(n))


def matrix_html(matrix: Any, changed: set[tuple[str, str, str]], *, anchor: Callable[..., str],
                badges: Callable[[Counter], str], cell_class: Callable[[Counter], str], legend: str) -> str:
    e = html.escape
    fams = matrix.families
    bad_fam = {f: any((c := matrix.cell(m, f, b)) is not None and (c.counts.get("fail") or (m, f, b) in changed)
                      for m in matrix.models for b in matrix.backends[f]) for f in fams}
    out = [f"<style>{CSS}{_collapse_css(len(fams))}</style>",
           '<div class="mtools"><label><input type="checkbox" id="only-bad"> only failing or changed cells</label>'
           '<button id="collapse-all">collapse all families</button> <button id="expand-all">expand all</button> '
           f'<span class="small">{e(legend)}: <span class="b pass">pass</span><span class="b fail">fail</span>'
           '<span class="b xfail">xfail</span><span class="b skip">skip</span>; '
           '<b style="color:#6a1b9a">Δ</b> changed since the baseline; ▾/▸ collapses a family. '
           "Click a cell for its details.</span></div>",
           '<div class="mwrap"><table class="matrix" id="mtable"><thead><tr class="r1">'
           '<th class="corner" rowspan="2">model</th>']
    for i, fam in enumerate(fams):
        n = len(matrix.backends[fam])
        out.append(f'<th class="fam" colspan="{n}" data-fam="{i}" data-n="{n}" data-bad="{int(bad_fam[fam])}">'
                   f"<button title=\"collapse or expand {e(fam)}\">▾</button>{e(fam)}</th>")
    out.append('</tr><tr class="r2">')
    for i, fam in enumerate(fams):
        out += [f'<th class="f{i} bk" title="{e(b)}">{e(SHORT.get(b, b))}</th>' for b in matrix.backends[fam]]
        out.append(f'<th class="f{i} sm">all</th>')
    out.append("</tr></thead><tbody>")
    rows = []
    for model in matrix.models:
        row, bad = [], False
        for i, fam in enumerate(fams):
            total: Counter = Counter()
            fam_bad = False
            for b in matrix.backends[fam]:
                c = matrix.cell(model, fam, b)
                if c is None:
                    row.append(f'<td class="cell empty f{i} bk">·</td>')
                    continue
                total.update(c.counts)
                ch = (model, fam, b) in changed
                fam_bad |= bool(c.counts.get("fail")) or ch
                row.append(f'<td class="cell {cell_class(c.counts)}{" changed" if ch else ""} f{i} bk" title="{e(model)} · '
                           f'{e(fam)} · {e(b)}"><a href="#{anchor(model, fam, b)}">{badges(c.counts)}</a></td>')
            bad |= fam_bad
            cls = cell_class(total) if total else "empty"
            row.append(f'<td class="cell {cls}{" changed" if fam_bad and not total.get("fail") else ""} f{i} sm">'
                       f"{badges(total) if total else '·'}</td>")
        rows.append((not bad, f'<tr{" class=bad" if bad else ""}><th>{e(model)}</th>{"".join(row)}</tr>'))
    out += [r for _, r in sorted(rows, key=lambda r: r[0])]          # rows that fail or changed first (stable)
    out.append(f"</tbody></table></div><script>{JS}</script>")
    return "\n".join(out)
