"""How much a queue's annotators agree: Cohen's kappa per pair, Fleiss' kappa and Krippendorff's
alpha overall (95% bootstrap intervals over items), the between-annotator confusion matrix per pair,
and the items with the most disagreement, side by side, as raw material for a labeling guideline.

``closedloop label QUEUE --agreement OUT.html`` writes the page (images inline) and ``OUT.json``.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import DataError
from closedloop.core.io import write_json_atomic, write_text_atomic
from closedloop.labeling.consensus import label_matrix
from closedloop.labeling.queue import LabelQueue, load_queue

MIN_SHARED = 10
"""Fewest items two annotators must share before their kappa is computed (an interval on fewer is
too wide to say anything)."""


class Interval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float
    ci95: list[float]
    n_items: int


class PairAgreement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: str
    b: str
    n_shared: int
    kappa: Interval | None
    """None when they share fewer than ``MIN_SHARED`` items (see ``note``)."""
    confusion: list[list[int]]
    """Rows: ``a``'s class, columns: ``b``'s class (class order as in ``classes``)."""
    note: str = ""


class DisagreedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    file: str | None
    disagreement: float
    """1 - share of the most chosen class."""
    labels: dict[str, str]
    """Annotator -> class."""


class AgreementReport(BaseModel):
    """Agreement between a queue's annotators (``OUT.json``)."""

    model_config = ConfigDict(extra="forbid")

    queue: str
    classes: list[str]
    annotators: list[str]
    n_items_labeled: int
    n_items_multi: int
    """Items with two or more labels (what agreement is computed on)."""
    fleiss_kappa: Interval
    krippendorff_alpha: Interval
    pairs: list[PairAgreement]
    most_disagreed: list[DisagreedItem]


def agreement_report(queue: LabelQueue, n_boot: int = 1000, seed: int = 0, top: int = 12) -> AgreementReport:
    """Agreement over the queue's current labels.

    Raises:
        DataError: fewer than two annotators, or fewer than ``MIN_SHARED`` items with two or more
            labels (the message says how many there are and how many are needed).
    """
    from closedloop.stats.agreement import confusion, disagreement, kappa_with_ci, overall_with_ci

    m = label_matrix(queue)
    K = len(queue.classes)
    if len(m.annotators) < 2:
        raise DataError(
            f"{queue.dir}/labels.csv: agreement needs two or more annotators, found {len(m.annotators)} "
            f"({m.annotators}); assign overlapping items with 'closedloop human-baseline ... --annotators A,B "
            "--overlap 0.3'"
        )
    n_multi = int(((m.L >= 0).sum(axis=1) >= 2).sum())
    if n_multi < MIN_SHARED:
        raise DataError(
            f"{queue.dir}/labels.csv: {n_multi} item(s) have labels from two or more annotators; agreement needs "
            f"at least {MIN_SHARED} (label more of the overlapping items, or declare a larger --overlap)"
        )
    fleiss, alpha = overall_with_ci(m.L, K, n_boot=n_boot, seed=seed)
    pairs = []
    for i in range(len(m.annotators)):
        for j in range(i + 1, len(m.annotators)):
            a, b = m.L[:, i], m.L[:, j]
            shared = int(((a >= 0) & (b >= 0)).sum())
            C = confusion(a, b, K).tolist()
            if shared < MIN_SHARED:
                pairs.append(
                    PairAgreement(
                        a=m.annotators[i],
                        b=m.annotators[j],
                        n_shared=shared,
                        kappa=None,
                        confusion=C,
                        note=f"{shared} shared item(s); Cohen's kappa needs at least {MIN_SHARED}",
                    )
                )
                continue
            k = kappa_with_ci(a, b, K, n_boot=n_boot, seed=seed)
            pairs.append(
                PairAgreement(
                    a=m.annotators[i],
                    b=m.annotators[j],
                    n_shared=shared,
                    kappa=Interval(value=k.value, ci95=list(k.ci95), n_items=k.n),
                    confusion=C,
                )
            )
    d = disagreement(m.L, K)
    order = [r for r in np.argsort(-np.nan_to_num(d, nan=-1.0), kind="stable") if d[r] > 0][:top]
    worst = [
        DisagreedItem(
            id=m.ids[r],
            file=queue.item(m.ids[r]).file,
            disagreement=float(d[r]),
            labels={a: queue.classes[m.L[r, c]] for c, a in enumerate(m.annotators) if m.L[r, c] >= 0},
        )
        for r in order
    ]
    return AgreementReport(
        queue=str(queue.dir),
        classes=queue.classes,
        annotators=m.annotators,
        n_items_labeled=len(m.ids),
        n_items_multi=n_multi,
        fleiss_kappa=Interval(value=fleiss.value, ci95=list(fleiss.ci95), n_items=fleiss.n),
        krippendorff_alpha=Interval(value=alpha.value, ci95=list(alpha.ci95), n_items=alpha.n),
        pairs=pairs,
        most_disagreed=worst,
    )


def _e(x: object) -> str:
    return html.escape(str(x))


def _iv(i: Interval | None) -> str:
    return "–" if i is None else f"<b>{i.value:.3f}</b> [{i.ci95[0]:.3f}, {i.ci95[1]:.3f}]"


def render_agreement(rep: AgreementReport, queue: LabelQueue) -> str:
    """A self-contained HTML page (images inlined as data URIs)."""
    rows = "".join(
        f"<tr><td>{_e(p.a)}</td><td>{_e(p.b)}</td><td>{p.n_shared}</td><td>{_iv(p.kappa)}</td>"
        f"<td>{_e(p.note)}</td></tr>"
        for p in rep.pairs
    )
    conf = []
    for p in rep.pairs:
        head = "".join(f"<th>{_e(c)}</th>" for c in rep.classes)
        body = "".join(
            f"<tr><th>{_e(rep.classes[r])}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
            for r, row in enumerate(p.confusion)
        )
        conf.append(
            f'<div class="conf"><h3>{_e(p.a)} (rows) vs {_e(p.b)} (columns)</h3>'
            f"<table><tr><th></th>{head}</tr>{body}</table></div>"
        )
    cards = []
    for it in rep.most_disagreed:
        img = ""
        if it.file:
            data = base64.b64encode((queue.dir / it.file).read_bytes()).decode()
            img = f'<img src="data:image/png;base64,{data}" alt="item {_e(it.id)}">'
        elif queue.item(it.id).features:
            feats = "".join(
                f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in queue.item(it.id).features.items()
            )
            img = f"<table>{feats}</table>"
        labels = "".join(f"<li>{_e(a)}: <b>{_e(c)}</b></li>" for a, c in it.labels.items())
        cards.append(
            f'<div class="item" data-item="{_e(it.id)}">{img}<div>id {_e(it.id)} · disagreement '
            f"{it.disagreement:.2f}</div><ul>{labels}</ul></div>"
        )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>agreement: {_e(queue.dir.name)}</title>
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#1d2230}}table{{border-collapse:collapse}}
td,th{{padding:.2em .6em;border-bottom:1px solid #e3e6ee;text-align:left}}.grid{{display:flex;flex-wrap:wrap;gap:1em}}
.item{{border:1px solid #dde1ea;border-radius:6px;padding:.5em;width:13em}}.item img{{width:12em;image-rendering:pixelated}}
.conf{{display:inline-block;margin-right:2em}}</style></head><body>
<h1>Agreement between annotators: {_e(queue.dir.name)}</h1>
<p>{len(rep.annotators)} annotators ({_e(", ".join(rep.annotators))}); {rep.n_items_labeled} items labeled,
{rep.n_items_multi} by two or more. 95% intervals: percentile bootstrap over items.</p>
<table data-agreement="overall"><tr><th>overall</th><th>value [95% CI]</th><th>items</th></tr>
<tr><td>Fleiss' kappa</td><td>{_iv(rep.fleiss_kappa)}</td><td>{rep.fleiss_kappa.n_items}</td></tr>
<tr><td>Krippendorff's alpha (nominal)</td><td>{_iv(rep.krippendorff_alpha)}</td><td>{rep.krippendorff_alpha.n_items}</td></tr></table>
<h2>Cohen's kappa per pair</h2><table data-agreement="pairs"><tr><th>annotator</th><th>annotator</th>
<th>shared items</th><th>kappa [95% CI]</th><th></th></tr>{rows}</table>
<h2>Between-annotator confusion</h2>{"".join(conf)}
<h2>Most disagreed items</h2><p>The raw material for a labeling guideline: what makes these hard?</p>
<div class="grid" data-agreement="disagreed">{"".join(cards) or "<p>no item with disagreement</p>"}</div>
</body></html>
"""


def write_agreement(
    queue_dir: str | Path, out_html: str | Path, n_boot: int = 1000, seed: int = 0
) -> AgreementReport:
    """Compute the agreement of ``queue_dir`` and write ``out_html`` and the same name with ``.json``."""
    queue = load_queue(queue_dir)
    rep = agreement_report(queue, n_boot=n_boot, seed=seed)
    out = Path(out_html)
    write_text_atomic(out, render_agreement(rep, queue))
    write_json_atomic(out.with_suffix(".json"), rep.model_dump(mode="json"))
    return rep
