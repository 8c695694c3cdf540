"""The train stage's report blocks and summary.json view, built from the evaluation artifact and the
stage's timings (``ctx.timings``: phase and rung wall times are not in the artifact)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from closedloop.artifacts.evaluation import EvaluationReport
    from closedloop.artifacts.figures import Figure as FigureRecord
    from closedloop.stages.train.phases.base import Phase

TITLES = {
    "setup": "Setup",
    "sanity": "1. Sanity: overfit one batch",
    "beat_baseline": "2. Beat the baseline",
    "scale_up": "3. Scale up until it overfits",
    "lr_finder": "LR range test",
    "tune": "4. Regularize and tune",
    "families": "Family choice",
    "final": "5. Final fit and test",
}


def report_blocks(ev: EvaluationReport, phases: list[Phase], timings: dict[str, float]) -> list[Any]:
    """Headline (baseline verdict, test table, evaluated_on), then one section per phase: its
    decisions, figures and the blocks the phase itself adds."""
    from closedloop.report.blocks import Callout, Figure, KeyValues, Paragraph, Section, Table
    from closedloop.stages.audit.rerank import review_blocks

    figs: dict[str, list[Any]] = {}
    for f in ev.figures:
        figs.setdefault(f["phase"], []).append(Figure(f["path"], f["caption"]))
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for d in ev.decisions:
        by_phase.setdefault(d["phase"], []).append(d)

    blocks: list[Any] = []
    bb = ev.beats_baseline
    if bb is not None:
        blocks.append(Callout(bb.sentence, "ok" if bb.significant else "warning"))
    else:
        blocks.append(
            Callout("No baseline was wired into this stage: the model is not compared with one.", "warning")
        )
    fin = ev.phases.get("final") or {}
    if fin.get("epochs_trained") is not None:  # the time budget cut the deployed model's fit
        blocks.append(
            Callout(
                f"The time budget cut the final fit: the deployed model trained {fin['epochs_trained']:g} "
                f"of the {fin['selected_epochs']} epoch(s) its configuration was selected with, so its "
                "test figures are those of a less-trained model than the one validated; a larger "
                "budget_minutes trains it fully.",
                "warning",
            )
        )
    if fin.get("deadline_extended_s"):
        blocks.append(
            Paragraph(
                f"The phases before the final fit ran into its share of the time budget: the final phase "
                f"kept its own share: its deadline moved {fin['deadline_extended_s']:g} s past the end of "
                "budget_minutes."
            )
        )
    on = ev.evaluated_on
    val_col = EVALUATED_ON_TEXT.get(on.get("val", "validation"), "validation")
    hold_col = EVALUATED_ON_TEXT.get(on.get("heldout", ""), "held-out")

    def ci(d: dict[str, FigureRecord] | None, k: str) -> str | None:
        if not d or k not in d:
            return None
        v = d[k]
        return f"{v.value:.4f} [{v.ci95[0]:.4f}, {v.ci95[1]:.4f}]"

    blocks.append(
        Table(
            [
                {
                    "metric": k,
                    "test": round(v.value, 4),
                    "95% CI": f"[{v.ci95[0]:.4f}, {v.ci95[1]:.4f}]",
                    val_col: round(ev.val[k].value, 4) if k in ev.val else None,
                    hold_col: ci(ev.heldout, k),
                }
                for k, v in ev.test.items()
            ],
            title="Test metrics (test set opened once) and the data each other column was computed on",
        )
    )
    if on:
        blocks.append(
            KeyValues(
                {fig: f"{o} ({EVALUATED_ON_TEXT.get(o, o)})" for fig, o in on.items()},
                title="evaluated_on: which data each figure was computed on",
            )
        )
    if ev.heldout_note:
        blocks.append(Paragraph(f"Held-out split: {ev.heldout_note}."))
    blocks.append(Paragraph(selection_text(ev)))
    extra: dict[str, list[Any]] = {}
    if ev.families is not None:
        from closedloop.stages.train.families import family_blocks

        extra["families"] = family_blocks(ev.families)
    for p in phases:
        if p.name in ev.phases:
            extra.setdefault(p.section or p.name, []).extend(p.report(ev.phases[p.name], timings))
    for phase, title in TITLES.items():
        body = [Paragraph(d["decision"]) for d in by_phase.get(phase, [])] + figs.get(phase, [])
        body += extra.get(phase, [])
        if body:
            blocks.append(Section(title, body))
    if ev.feature_importance is not None:
        blocks.append(importance_section(ev.feature_importance))
    review = None if ev.label_review is None else ev.label_review.model_dump(mode="json")
    return blocks + review_blocks(review)


def importance_section(imp: Any) -> Any:
    """Tree models: gain and permutation importance, each column saying which data it comes from."""
    from closedloop.report.blocks import Paragraph, Section, Table

    perm_col = f"permutation ({imp.metric} drop, held-out rows)"
    rows = [
        {
            "feature": f.feature,
            "gain share (trained-on rows)": round(f.gain, 4),
            perm_col: None if f.permutation is None else round(f.permutation, 4),
            "95% CI": None
            if f.permutation_ci95 is None
            else f"[{f.permutation_ci95[0]:.4f}, {f.permutation_ci95[1]:.4f}]",
        }
        for f in imp.features[:30]
    ]
    return Section("Feature importance", [Paragraph(imp.note[0].upper() + imp.note[1:] + "."), Table(rows)])


def importance_summary(imp: Any) -> dict[str, Any] | None:
    """summary.json view of the tree importance (None for networks)."""
    if imp is None:
        return None
    return {
        "metric": imp.metric,
        "evaluated_on": imp.evaluated_on,
        "n_rows": imp.n_rows,
        "features": [f.model_dump() for f in imp.features],
    }


EVALUATED_ON_TEXT = {
    "calibration": "held-out calibration split (deployed model, never trained on)",
    "validation": "validation (deployed model fitted on train only)",
    "validation_pre_refit": "validation (selected configuration before the refit)",
    "out_of_fold": "out-of-fold (k-fold cross-validation on train+val)",
    "trained_on": "trained-on data (nothing held out)",
    "test": "test (opened once)",
}


def selection_text(ev: EvaluationReport) -> str:
    """The validation side of the evidence: "selected among N" and how optimistic that makes the score."""
    text = f"Selected among {ev.n_configs} configurations evaluated on validation"
    sel = ev.selection
    if not sel:
        return text + " (selection bias not estimated)."
    expect = "about" if sel.winner_is_best else "at least about"
    how = "" if sel.winner_is_best else " (it was chosen by cross-validation, not as the best on validation)"
    return (
        f"{text}. Winner's validation {sel.metric}: {sel.winner_value:.4f}{how}, estimated selection bias "
        f"{sel.optimism:+.4f} (bootstrap of the selection among the {sel.n_candidates} candidates with "
        f"saved predictions, on {sel.n_validation} validation cases): expect {expect} "
        f"{sel.corrected_value:.4f} on new data. The search is corrected for here, on validation; the "
        "test comparison above is a single declared comparison and needs no correction for it."
    )


def cv_summary(cv: dict[str, Any] | None) -> dict[str, Any] | None:
    """summary.json view of the cross-validated selection (None when it did not run)."""
    if not cv or not cv.get("candidates"):
        return None
    return {k: cv[k] for k in ("protocol", "folds", "repeats", "chosen", "candidates")}
