"""The train stage's selection evidence: candidates' saved validation logits -> selection bias."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from closedloop.stages.train.selection import candidate_files, selection_evidence


def _session(work: Path, y: np.ndarray, rivals: list[tuple[str, Path]] | None = None) -> SimpleNamespace:
    decisions: list[tuple[str, str]] = []
    return SimpleNamespace(
        work=work,
        family="mlp",
        rivals=rivals or [],
        val=SimpleNamespace(y_np=y),
        val_groups=None,  # no data.group: rows resampled
        task=SimpleNamespace(primary_metric="auc", problem_type="binary", metric_convention="medmnist"),
        cfg=SimpleNamespace(n_bootstrap=200),
        ctx=SimpleNamespace(seed=0),
        n_configs=12,
        decisions=decisions,
        decide=lambda phase, text, evidence: decisions.append((phase, text)),
    )


def test_selection_evidence_from_saved_logits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    (tmp_path / "trials").mkdir()
    for r in range(2):
        np.save(tmp_path / f"rung_{r}_val_logits.npy", (y + rng.normal(size=120) * 1.5)[:, None])
    for t in (0, 1, 2, 10):
        np.save(tmp_path / "trials" / f"{t}.npy", (y + rng.normal(size=120) * 1.5)[:, None])
    files = candidate_files(tmp_path)
    assert [n for n, _ in files] == [
        "ladder rung 1",
        "ladder rung 2",
        "tuning trial 0",
        "tuning trial 1",
        "tuning trial 2",
        "tuning trial 10",
    ]
    sess = _session(tmp_path, y)
    sb = selection_evidence(sess, SimpleNamespace(val_logits_file="trials/2.npy"))  # type: ignore[arg-type]
    assert sb is not None and sb.n_candidates == 6 and sb.winner == "tuning trial 2"
    assert sb.evaluated_on == "validation" and sb.optimism > 0
    assert "6 configurations" in sess.decisions[-1][1]
    assert "12 configurations were scored on validation" in sess.decisions[-1][1]
    # a chosen file that is not among the candidates: no estimate, and the report says why
    assert selection_evidence(sess, SimpleNamespace(val_logits_file="cv/x.npy")) is None  # type: ignore[arg-type]
    assert "not estimated" in sess.decisions[-1][1]


def test_selection_evidence_covers_the_other_families_of_a_family_list(tmp_path: Path) -> None:
    """A family list: the rival families' candidates enter the estimate, named by family."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 120)
    mine, rival = tmp_path / "family_mlp", tmp_path / "family_lgbm"
    for work in (mine, rival):
        (work / "trials").mkdir(parents=True)
        np.save(work / "rung_0_val_logits.npy", (y + rng.normal(size=120) * 1.5)[:, None])
        for t in range(3):
            np.save(work / "trials" / f"{t}.npy", (y + rng.normal(size=120) * 1.5)[:, None])
    alone = selection_evidence(_session(mine, y), SimpleNamespace(val_logits_file="trials/1.npy"))  # type: ignore[arg-type]
    both = selection_evidence(
        _session(mine, y, [("lgbm", rival)]),
        SimpleNamespace(val_logits_file="trials/1.npy"),  # type: ignore[arg-type]
    )
    assert alone is not None and both is not None
    assert (alone.n_candidates, both.n_candidates) == (4, 8)
    assert both.winner == "mlp tuning trial 1" and alone.winner == "tuning trial 1"
