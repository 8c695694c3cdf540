"""``report.html``: one self-contained file (images inlined), a section per stage, no server needed."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from closedloop.artifacts.figures import WithInterval
from closedloop.artifacts.summary import RunSummary, TrackingStatus
from closedloop.core.blocks import Callout, Figure, Html, KeyValues, Paragraph, Section, Table
from closedloop.core.io import write_json_atomic, write_text_atomic

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222}
.layout{display:grid;grid-template-columns:170px minmax(0,1fr)}
nav.toc{position:sticky;top:0;align-self:start;height:100vh;overflow:auto;background:#f8f8f8;border-right:1px solid #e5e5e5;padding:.8em .6em;box-sizing:border-box;font-size:.85em}
nav.toc a{display:block;margin:.15em 0;color:#1d4ed8;text-decoration:none} nav.toc .toc-title{font-weight:700;margin-bottom:.4em}
main{padding:.2em 1.4em 2em;max-width:1080px}
h1{margin:.3em 0 0;font-size:1.5em} .runline{margin:.1em 0;color:#666;font-size:.85em} .tracking{margin:.1em 0;font-size:.85em;color:#555}
details.sec{border-top:1px solid #eee} details.sec>summary{cursor:pointer;list-style-position:inside}
details.sec>summary h2{display:inline;font-size:1.2em;margin:0} details.sec>summary{padding:.5em 0}
.sec-body{padding-bottom:1em;scroll-margin-top:3em} h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f6f6f6} .kv td:first-child{font-weight:600;white-space:nowrap}
.callout{padding:.5em .8em;border-left:4px solid;margin:.6em 0;border-radius:3px}
.info{border-color:#3b82f6;background:#eff6ff}.ok{border-color:#16a34a;background:#f0fdf4}
.warning{border-color:#d97706;background:#fffbeb}.error{border-color:#dc2626;background:#fef2f2}
.status-ok{color:#16a34a}.status-failed{color:#dc2626}.status-skipped{color:#888}
figure{margin:.8em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.85em;color:#555}
code,pre{background:#f6f6f6;padding:.1em .3em;border-radius:3px} pre{padding:.6em;overflow:auto;white-space:pre-wrap}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        figure = WithInterval.read(v)  # a value with its 95% interval, in any block
        if (
            figure is not None
            and {"value", "ci95"} <= figure.model_fields_set
            and isinstance(figure.value, int | float)
        ):
            lo, hi = (figure.ci95 or [None, None])[:2]
            if lo is not None and hi is not None:
                return f"{figure.value:.4f} [{lo:.4f}, {hi:.4f}]"
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


def _section(anchor: str, title_html: str, body: str, *, open_: bool = False) -> str:
    """A collapsible section (native ``<details>``). The anchor sits inside the collapsed part, so
    following a table-of-contents link opens the section (the browser reveals the target; no script)."""
    return (
        f'<details class="sec"{" open" if open_ else ""}><summary><h2>{title_html}</h2></summary>'
        f'<div class="sec-body" id="{anchor}">{body}</div></details>'
    )


def _decision_html(run_dir: Path, summary: dict[str, Any]) -> str:
    """The first screen; a broken decision must not lose the rest of the report."""
    from closedloop.report.decision import decide
    from closedloop.report.evidence import gather
    from closedloop.report.first_screen import render_decision

    try:
        decision = decide(gather(run_dir, summary))
    except Exception as exc:
        return f'<div class="callout warning">decision summary failed: {html.escape(repr(exc))}</div>'
    write_json_atomic(Path(run_dir) / "decision.json", decision.model_dump(mode="json"))
    return render_decision(decision)


def _tracking_html(t: TrackingStatus | None) -> str:
    if t is None:
        return ""
    if t.ok:
        where = t.url or t.uri
        version = (
            f"; model {html.escape(str(t.registered_model))} version {html.escape(str(t.model_version))}"
            if t.model_version
            else ""
        )
        return (
            f'<p class="tracking">Tracked in {html.escape(t.backend)}: {html.escape(str(where))}{version}</p>'
        )
    return (
        f'<div class="callout warning" data-decision="tracking">Tracking ({html.escape(t.backend)}) failed: '
        f"{html.escape(str(t.error))}. Nothing is lost: every file of this run is in the run directory.</div>"
    )


def write_report(
    run_dir: Path, pipeline: Any, records: list[Any], outputs: dict[str, Any], summary: dict[str, Any]
) -> Path:
    """Render the decision (first screen) and every stage's report hook into ``run_dir/report.html``."""
    from closedloop.report.first_screen import CSS as DECISION_CSS

    sections = []
    toc = ['<a href="#decision">Decision</a>']
    for stage, rec in zip(pipeline.stages, records, strict=True):
        anchor = f"stage-{rec.name}"
        toc.append(
            f'<a href="#{anchor}">{html.escape(rec.name)} <small class="status-{rec.status}">{rec.status}</small></a>'
        )
        head = (
            f'{html.escape(rec.name)} <small class="status-{rec.status}">{rec.status}'
            f"{' (cached)' if rec.cached else ''}</small> <small>{rec.seconds:.1f} s</small>"
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
        sections.append(_section(anchor, head, body, open_=rec.status == "failed"))

    run = RunSummary.model_validate(summary)  # read as the typed record, never by key
    ledger = [o.model_dump() for o in run.test_openings]
    custody = ""
    if ledger:
        custody += render_blocks(
            [Table(ledger, columns=["time", "stage", "purpose", "reason", "unsealed", "unseal_reason"])],
            run_dir,
        )
    else:
        custody += "<p>The test split was not opened in this run.</p>"
    custody += (
        f"<p>Configurations evaluated on validation in this run: <b>{run.n_validation_configs or 0}</b> "
        "(every model selection below was made among these).</p>"
    )
    sections.append(_section("custody", "Test-set custody", custody))
    toc.append('<a href="#custody">test custody</a>')
    if run.tracking is not None:
        t = run.tracking
        shown = {k: v for k, v in t.model_dump().items() if v not in (None, "")}
        sections.append(
            _section(
                "tracking",
                f"Experiment tracking <small>{html.escape(t.backend)}</small>",
                render_blocks([KeyValues(shown)], run_dir),
                open_=not t.ok,
            )
        )
        toc.append('<a href="#tracking">tracking</a>')
    if run.callback_errors:
        failed = [
            Callout(f"{e.callback} failed in {e.hook}: {e.error}", "warning") for e in run.callback_errors
        ]
        sections.append(
            _section(
                "callbacks", "Callbacks <small>failed</small>", render_blocks(failed, run_dir), open_=True
            )
        )
        toc.append('<a href="#callbacks">callbacks</a>')
    status = run.status
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>closedloop: {html.escape(run.name)}</title>
<style>{CSS}{DECISION_CSS}</style></head><body>
<div class="layout"><nav class="toc"><div class="toc-title">closedloop</div>{"".join(toc)}
</nav>
<main>
<h1>{html.escape(run.name)} <small class="status-{status}">{status}</small></h1>
<p class="runline">{run.seconds:.1f} s &middot; seed {run.seed}
&middot; <code>{html.escape(str(run_dir))}</code></p>
{_tracking_html(run.tracking)}
{_decision_html(Path(run_dir), summary)}
{"".join(sections)}
</main></div>
</body></html>"""
    path = Path(run_dir) / "report.html"
    write_text_atomic(path, doc)
    return path
