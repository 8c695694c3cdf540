"""``report.html``: one self-contained file (images inlined), a section per stage, no server needed."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from closedloop.core.io import write_text_atomic
from closedloop.report.blocks import Callout, Figure, Html, KeyValues, Paragraph, Section, Table

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:2em} h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f6f6f6} .kv td:first-child{font-weight:600;white-space:nowrap}
.callout{padding:.5em .8em;border-left:4px solid;margin:.6em 0;border-radius:3px}
.info{border-color:#3b82f6;background:#eff6ff}.ok{border-color:#16a34a;background:#f0fdf4}
.warning{border-color:#d97706;background:#fffbeb}.error{border-color:#dc2626;background:#fef2f2}
.status-ok{color:#16a34a}.status-failed{color:#dc2626}.status-skipped{color:#888}
figure{margin:.8em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.85em;color:#555}
code,pre{background:#f6f6f6;padding:.1em .3em;border-radius:3px} pre{padding:.6em;overflow:auto;white-space:pre-wrap}
nav a{margin-right:1em}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        if set(v) >= {"value", "ci95"} and isinstance(v.get("value"), int | float):
            lo, hi = (v.get("ci95") or [None, None])[:2]
            if lo is not None and hi is not None:
                return f"{v['value']:.4f} [{lo:.4f}, {hi:.4f}]"
        return html.escape(json.dumps(v, default=str)[:400])
    if isinstance(v, list | tuple):
        return html.escape(", ".join(str(_plain(x)) for x in v)[:400])
    return html.escape(str(v))


def _plain(x: Any) -> Any:
    return f"{x:.4g}" if isinstance(x, float) else x


def _img(path: Path) -> str:
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:{mime};base64,{data}" alt="{html.escape(path.name)}">'


def render_blocks(blocks: list[Any], stage_dir: Path) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Paragraph):
            out.append(f"<p>{b.text}</p>")  # text may carry <b>/<code> from the stage itself
        elif isinstance(b, Callout):
            out.append(f'<div class="callout {b.level}">{html.escape(b.text)}</div>')
        elif isinstance(b, KeyValues):
            rows = "".join(
                f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in b.items.items()
            )
            title = f"<h3>{html.escape(b.title)}</h3>" if b.title else ""
            out.append(f'{title}<table class="kv">{rows}</table>')
        elif isinstance(b, Table):
            rows = b.rows[: b.max_rows]
            cols = b.columns or list(dict.fromkeys(k for r in rows for k in r))
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
            body = "".join(
                "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
            )
            more = (
                f"<p><i>{len(b.rows) - b.max_rows} more rows not shown</i></p>"
                if len(b.rows) > b.max_rows
                else ""
            )
            title = f"<h3>{html.escape(b.title)}</h3>" if b.title else ""
            out.append(f"{title}<table><tr>{head}</tr>{body}</table>{more}")
        elif isinstance(b, Figure):
            p = Path(b.path)
            p = p if p.is_absolute() else stage_dir / p
            if p.is_file():
                out.append(f"<figure>{_img(p)}<figcaption>{html.escape(b.caption)}</figcaption></figure>")
            else:
                out.append(f'<div class="callout warning">figure missing: {html.escape(str(b.path))}</div>')
        elif isinstance(b, Html):
            out.append(b.html)
        elif isinstance(b, Section):
            out.append(f"<h3>{html.escape(b.title)}</h3>" + render_blocks(b.blocks, stage_dir))
        else:
            out.append(f"<pre>{html.escape(str(b))}</pre>")
    return "\n".join(out)


def write_report(
    run_dir: Path, pipeline: Any, records: list[Any], outputs: dict[str, Any], summary: dict[str, Any]
) -> Path:
    """Render every stage's report hook into ``run_dir/report.html`` (atomically)."""
    sections = []
    nav = []
    for stage, rec in zip(pipeline.stages, records, strict=True):
        anchor = f"stage-{rec.name}"
        nav.append(f'<a href="#{anchor}">{html.escape(rec.name)}</a>')
        head = (
            f'<h2 id="{anchor}">{html.escape(rec.name)} <small class="status-{rec.status}">{rec.status}'
            f"{' (cached)' if rec.cached else ''}</small> <small>{rec.seconds:.1f} s</small></h2>"
        )
        body = ""
        if type(stage).__doc__:
            body += f"<p><i>{html.escape(type(stage).__doc__.strip().splitlines()[0])}</i></p>"
        if rec.status == "failed":
            body += f'<div class="callout error">{html.escape(rec.error or "failed")}</div>'
        elif rec.status == "ok":
            stage_dir = run_dir / rec.dir
            try:
                stage_outputs = type(stage).Outputs(
                    **{p.name: outputs[p.name] for p in stage.output_ports() if p.name in outputs}
                )
                body += render_blocks(stage.report(stage_outputs, stage_dir), stage_dir)
            except Exception as exc:  # a broken report hook must not lose the rest of the report
                body += f'<div class="callout warning">report section failed: {html.escape(repr(exc))}</div>'
        sections.append(head + body)

    ledger = summary.get("test_openings") or []
    ledger_html = "<h2 id='custody'>Test-set custody</h2>"
    if ledger:
        ledger_html += render_blocks(
            [Table(ledger, columns=["time", "stage", "purpose", "reason", "unsealed", "unseal_reason"])],
            run_dir,
        )
    else:
        ledger_html += "<p>The test split was not opened in this run.</p>"
    ledger_html += (
        f"<p>Configurations evaluated on validation in this run: <b>{summary.get('n_validation_configs', 0)}</b> "
        "(every model selection below was made among these).</p>"
    )
    status = summary.get("status", "?")
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>closedloop: {html.escape(summary.get("name", ""))}</title>
<style>{CSS}</style></head><body>
<h1>closedloop run: {html.escape(summary.get("name", ""))}</h1>
<p>Status <b class="status-{status}">{status}</b> &middot; {summary.get("seconds", 0):.1f} s &middot; seed {summary.get("seed")}
&middot; <code>{html.escape(str(run_dir))}</code></p>
<nav>{"".join(nav)}<a href="#custody">test custody</a></nav>
{"".join(sections)}
{ledger_html}
</body></html>"""
    path = Path(run_dir) / "report.html"
    write_text_atomic(path, doc)
    return path
