"""The report's first screen: the :class:`~closedloop.report.decision.Decision` as HTML that fits a
1280x800 window. Each item carries ``data-decision="..."`` so a browser test can find it."""

from __future__ import annotations

import html

from closedloop.report.decision import ACTION_TITLES, Decision
from closedloop.report.evidence import Estimate

# Item names in reading order; the browser test checks each is visible in the first viewport.
ITEMS = ("next-step", "acceptance", "baseline", "constraints", "per-day", "audit")

CSS = """
.decision{display:grid;grid-template-columns:1fr 1fr;gap:.5em .8em;margin:.4em 0 .8em}
.decision .card{border:1px solid #ddd;border-radius:6px;padding:.35em .7em;font-size:.88em;min-width:0}
.decision .card h3{margin:0 0 .2em;font-size:.8em;text-transform:uppercase;letter-spacing:.04em;color:#666}
.decision .wide{grid-column:1/3}
.decision table{margin:.1em 0;font-size:1em;width:100%} .decision td,.decision th{padding:.12em .4em}
.next{border-left:6px solid #3b82f6;background:#eff6ff}
.next.ship{border-color:#16a34a;background:#f0fdf4}.next.fix_data,.next.fix_failure{border-color:#dc2626;background:#fef2f2}
.next.stop_tuning,.next.collect_more_data{border-color:#d97706;background:#fffbeb}
.next .action{font-size:1.35em;font-weight:700}
.next ul{margin:.15em 0 0 1.1em;padding:0}
.badge{display:inline-block;padding:0 .45em;border-radius:9px;font-size:.85em;font-weight:600;color:#fff}
.b-met,.b-yes{background:#16a34a}.b-missed,.b-no{background:#dc2626}.b-undecided,.b-unknown,.b-not_measured{background:#d97706}
.oneline{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;margin:.1em 0}
.sev-error{color:#dc2626;font-weight:600}.sev-warning{color:#b45309;font-weight:600}
.note{color:#666;font-style:italic}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "?"
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:,.0f}"


def _ci(ci: tuple[float, float] | None, digits: int = 3) -> str:
    return f"[{_num(ci[0], digits)}, {_num(ci[1], digits)}]" if ci else "(no interval)"


def _p(p: float | None) -> str:
    """``"p = 0.012"`` or ``"p < 0.001"``."""
    if p is None:
        return "p = ?"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _badge(kind: str, text: str | None = None) -> str:
    return f'<span class="badge b-{_e(kind)}">{_e(text or kind.replace("_", " "))}</span>'


def _count(e: Estimate) -> str:
    lo, hi = e.ci95 or (e.value, e.value)
    d = 1 if max(abs(lo), abs(hi), abs(e.value)) < 10 else 0
    return f"<b>{e.value:,.{d}f}</b> <small>[{lo:,.{d}f}, {hi:,.{d}f}]</small>"


VERDICT_WORDS = {
    "better": ("yes", "significantly better than"),
    "not_distinguishable": ("undecided", "not distinguishable from"),
    "worse": ("no", "significantly worse than"),
}


def _human(d: Decision) -> str:
    """One line: the model against the measured human level (paired, on the human's items)."""
    h = d.human
    if h is None or h.comparison is None:
        return ""
    c = h.comparison
    kind, words = VERDICT_WORDS.get(c.verdict, ("unknown", c.verdict))
    run = c.model_run.rstrip("/").rsplit("/", 1)[-1]
    return (
        f'<p data-decision="human">{_badge(kind, "human level")} the model is <b>{_e(words)}</b> the measured '
        f"human level: {_e(c.metric)} {_num(c.model_value)} vs {_num(c.human_value)}, difference "
        f"<b>{c.delta:+.3f}</b> {_ci(c.ci95)}, {_p(c.p_value)} <small>({_e(c.method)}; "
        f"{_e(c.evaluated_on)}; model of run {_e(run)})</small></p>"
    )


def render_decision(d: Decision) -> str:
    """The decision panel (one ``<section>``); self-contained apart from :data:`CSS`."""
    ns = d.next_step
    reasons = "".join(f"<li>{_e(r)}</li>" for r in ns.reasons[:4])
    next_html = (
        f'<div class="card wide next {_e(ns.action)}" data-decision="next-step"><h3>Recommended next step</h3>'
        f'<div class="action">{_e(ACTION_TITLES[ns.action])}</div><ul>{reasons}</ul></div>'
    )

    if d.metrics:
        rows = "".join(
            f"<tr><td>{_e(m.metric)}</td><td><b>{_num(m.value)}</b> {_ci(m.ci95)}</td>"
            f"<td>{'&ge;' if m.higher_is_better else '&le;'} {m.bar:g}</td><td>{_badge(m.verdict)}</td>"
            f"<td><small>{_e(m.evaluated_on)}</small></td></tr>"
            for m in d.metrics
        )
        body = (
            "<table><tr><th>metric</th><th>value [95% CI]</th><th>bar</th><th>verdict</th><th>data</th></tr>"
            f"{rows}</table>"
        )
    else:
        body = f'<p class="note">{_e(d.metrics_note)}</p>'
    acceptance = f'<div class="card" data-decision="acceptance"><h3>Acceptance bars</h3>{body}</div>'

    b = d.baseline
    if b is not None:
        among = (
            f", selected among {b.n_configs} configurations"
            if b.n_configs and "configuration" not in b.correction
            else ""
        )
        corr = f" ({_e(b.correction)})" if b.correction and b.correction != "none" else ""
        body = (
            f"<p>{_badge('yes' if b.significant else 'no', 'beats it' if b.significant else 'not significantly')} "
            f"vs <b>{_e(b.baseline or 'best baseline')}</b>: {_e(b.metric)} difference "
            f"<b>{b.delta:+.3f}</b> {_ci(b.ci95)}, {_p(b.p_reported)}{corr}{among}; "
            f"<small>on {_e(b.evaluated_on)}</small></p>"
        )
    else:
        body = f'<p class="note">{_e(d.baseline_note)}</p>'
    body += _human(d)
    baseline = f'<div class="card" data-decision="baseline"><h3>Beats the best baseline?</h3>{body}</div>'

    if d.constraints:
        items = []
        for c in d.constraints:
            kind = "unknown" if c.met is None else ("yes" if c.met else "no")
            text = "not measured" if c.met is None else ("meets" if c.met else "exceeds")
            items.append(
                f"<div>{_badge(kind, text)} {_e(c.name)} <b>{_num(c.value, 3 if (c.value or 0) < 10 else 1)} "
                f"{_e(c.unit)}</b> (limit {c.limit:g} {_e(c.unit)}, {_e(c.detail)})</div>"
            )
        head = (
            f"<div>shipped variant <b>{_e(d.shipped_variant)}</b>"
            + (f" ({'blessed' if d.blessed else 'NOT blessed'})" if d.blessed is not None else "")
            + "</div>"
            if d.shipped_variant
            else ""
        )
        note = f'<div class="note">{_e(d.constraints_note)}</div>' if d.constraints_note else ""
        body = head + "".join(items) + note
    else:
        body = f'<p class="note">{_e(d.constraints_note)}</p>'
    constraints = f'<div class="card" data-decision="constraints"><h3>Production constraints</h3>{body}</div>'

    pd = d.per_day
    if pd is not None:
        unit = "per day" if pd.unit == "day" else f"per {pd.unit}"
        what = pd.positive_name or "positives"
        ctx = []
        if pd.cases is not None and pd.unit == "day":
            ctx.append(f"{pd.cases:,.0f} cases")
        if pd.prevalence is not None:
            ctx.append(f"{pd.prevalence:.1%} {what}")
        body = (
            f"<p>{_e(unit)}: {_count(pd.caught)} caught, {_count(pd.missed)} missed, "
            f"{_count(pd.false_alarms)} false alarms <small>({_e(', '.join(ctx))}; 95% intervals; "
            f"rates on {_e(pd.evaluated_on)})</small></p>"
        )
    else:
        body = f'<p class="note">{_e(d.per_day_note)}</p>'
    per_day = f'<div class="card" data-decision="per-day"><h3>What it means per day</h3>{body}</div>'

    if d.audit:
        shown = d.audit[:5]
        lines = "".join(
            f'<div class="oneline" title="{_e(a.message)}"><span class="sev-{a.severity}">{a.severity}</span> '
            f"[{_e(a.check)}] {_e(a.message)}</div>"
            for a in shown
        )
        more = (
            f'<div class="note"><a href="#stage-audit">{len(d.audit) - len(shown)} more in the audit section</a></div>'
            if len(d.audit) > len(shown)
            else ""
        )
        body = lines + more
    else:
        body = f'<p class="note">{_e(d.audit_note)}</p>'
    if d.gap_note:  # the val->test gap, read next to the audit's split-shift finding
        body = f'<p data-decision="gap"><span class="sev-warning">gap</span> {_e(d.gap_note)}</p>' + body
    audit = f'<div class="card wide" data-decision="audit"><h3>Audit: errors and warnings</h3>{body}</div>'

    return (
        f'<section class="decision" id="decision">{next_html}{acceptance}{baseline}{constraints}{per_day}'
        f"{audit}</section>"
    )
