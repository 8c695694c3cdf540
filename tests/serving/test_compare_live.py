"""compare-live: champion vs shadow (paired, joined by request id) or canary (independent), planted
differences, the promotion rule, bad input and the command's output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from livelog_fixtures import feedback, request, tiny_run, write  # noqa: E402

from closedloop.core.errors import DataError  # noqa: E402
from closedloop.monitoring.compare import add_arguments, compare_live  # noqa: E402
from closedloop.monitoring.compare import run as run_cmd


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def _planted(y: np.ndarray, acc: float, rng: np.random.Generator, k: int = 10) -> np.ndarray:
    """Probabilities whose argmax is the true class on a share ``acc`` of the rows."""
    n = len(y)
    pred = np.where(rng.random(n) < acc, y, (y + rng.integers(1, k, n)) % k)
    p = np.full((n, k), 0.2 / (k - 1))
    p[np.arange(n), pred] = 0.8
    return p


def _shadow_log(
    tmp: Path, run, p_champ: np.ndarray, p_shadow: np.ndarray, labeled: bool = True, random: Any = True
) -> None:
    """Batches of 2; shadow records in *reverse* time order and in other files, so that rows only
    line up when joined by (request_id, index)."""
    n = len(p_champ)
    champ, shadow, fb = [], [], []
    for b, i in enumerate(range(0, n, 2)):
        rid = f"req{b:04d}"
        kw = {"request_id": rid, "names": run.names, "run_dir": str(run.run)}
        champ.append(request(run.X[i : i + 2], p_champ[i : i + 2], t=b, **kw))
        shadow.append(request(run.X[i : i + 2], p_shadow[i : i + 2], t=10_000 - b, route="shadow", **kw))
        if labeled:
            fb += [
                feedback(
                    rid,
                    run.names[int(run.y[i + j])],
                    t=20_000 + i,
                    index=j,
                    random=random if isinstance(random, bool) else bool(random[i + j]),
                )  # fmt: skip
                for j in range(2)
            ]
    write(tmp, "requests-a-000000.jsonl", champ[::2])
    write(tmp, "requests-b-000000.jsonl", champ[1::2])
    write(tmp, "requests-a-000001.jsonl", shadow[::-1])
    if fb:
        write(tmp, "feedback-c-000000.jsonl", fb[::-1])


def test_shadow_better_is_promoted_with_paired_statistics(run, tmp_path):
    rng = np.random.default_rng(1)
    y = run.y[:300]
    p_champ = _planted(y, 0.6, rng)
    p_shadow = _planted(y, 0.9, rng)
    _shadow_log(tmp_path, run, p_champ, p_shadow)
    c = compare_live(tmp_path, n_resamples=500)
    assert c.challenger_route == "shadow" and c.design == "paired" and c.n_pairs == 300 and c.n_labeled == 300
    acc_c = float((p_champ.argmax(1) == y).mean())
    acc_s = float((p_shadow.argmax(1) == y).mean())
    # exact: computed on rows joined by (request_id, index); positional pairing would give ~0.1 accuracy
    assert c.performance.value_champion == pytest.approx(acc_c)
    assert c.performance.value_challenger == pytest.approx(acc_s)
    assert c.performance.delta == pytest.approx(acc_s - acc_c)
    assert c.performance.ci95[0] > 0 and c.performance.p_one_sided < 0.01
    differ = int((p_champ.argmax(1) != p_shadow.argmax(1)).sum())
    assert c.disagreement.count == differ and c.disagreement.n == 300
    lo, hi = c.disagreement.ci95
    assert lo < differ / 300 < hi
    assert c.promote and c.recommendation == "promote"
    assert c.constraints["acceptance.acc"].ok
    assert "joined to the champion's by (request_id, index)" in c.evaluated_on
    # the decision is the shared rule's, on the same pairs (figures and reasons agree with it)
    from closedloop.stats.promotion import decide_promotion

    d = decide_promotion(y, p_shadow, p_champ, metric="acc", problem_type="multiclass", n_resamples=500)
    assert c.performance.p_one_sided == pytest.approx(d.p_value) and "on live" in c.reasons[-1]


def test_equal_models_keep_the_champion(run, tmp_path):
    rng = np.random.default_rng(2)
    y = run.y[:200]
    p = _planted(y, 0.8, rng)
    _shadow_log(tmp_path, run, p, p.copy())
    c = compare_live(tmp_path, n_resamples=300)
    assert c.disagreement.count == 0 and c.performance.delta == 0
    assert not c.promote and c.recommendation == "keep"
    assert "not better" in c.reasons[0]


def test_a_worse_challenger_is_kept_out_and_the_acceptance_bar_counts(run, tmp_path):
    rng = np.random.default_rng(3)
    y = run.y[:200]
    _shadow_log(tmp_path, run, _planted(y, 0.7, rng), _planted(y, 0.3, rng))
    c = compare_live(tmp_path, n_resamples=300)
    assert c.performance.delta < 0 and not c.promote
    assert not c.constraints["acceptance.acc"].ok  # 0.3 is below the task's bar of 0.5
    assert any("constraint acceptance.acc not met" in r for r in c.reasons)


def test_without_feedback_only_disagreement(run, tmp_path):
    rng = np.random.default_rng(4)
    y = run.y[:100]
    _shadow_log(tmp_path, run, _planted(y, 0.7, rng), _planted(y, 0.7, rng), labeled=False)
    c = compare_live(tmp_path)
    assert c.performance is None and c.n_labeled == 0 and c.disagreement.n == 100
    assert not c.promote and "no feedback labels" in c.reasons[0]


def test_only_randomly_selected_labels_judge(run, tmp_path):
    """Labels of rows chosen for review (not marked random) are left out of the comparison and the
    decision: here they would make a no-better challenger look much better."""
    rng = np.random.default_rng(7)
    y = run.y[:300]
    chosen = np.arange(300) % 3 != 0  # two thirds labeled because a strategy picked them
    p_champ = _planted(y, 0.6, rng)
    p_shadow = np.where(chosen[:, None], _planted(y, 0.98, rng), p_champ)  # better only where picked
    _shadow_log(tmp_path, run, p_champ, p_shadow, random=~chosen)
    c = compare_live(tmp_path, n_resamples=300)
    assert c.n_labeled == int((~chosen).sum()) and c.n_labeled_not_random == int(chosen.sum())
    assert c.performance.delta == pytest.approx(0.0) and not c.promote
    assert any("not marked random" in w for w in c.warnings)
    assert "not randomly selected left out" in c.evaluated_on
    # the same log with every label marked random would promote: the filter is what keeps it
    every = tmp_path / "all_random"
    _shadow_log(every, run, p_champ, p_shadow, random=True)
    assert compare_live(every, n_resamples=300).promote
    # no random label at all: nothing to judge on
    none = tmp_path / "none_random"
    _shadow_log(none, run, p_champ, p_shadow, random=False)
    c = compare_live(none, n_resamples=300)
    assert c.n_labeled == 0 and c.n_labeled_not_random == 300 and not c.promote
    assert "no feedback labels on randomly selected" in c.reasons[0]


def test_canary_arms_are_compared_as_independent_samples(run, tmp_path):
    rng = np.random.default_rng(5)
    y = run.y[:400]
    recs, fb = [], []
    for i in range(400):
        route = "canary" if i % 4 == 0 else "champion"
        p = _planted(y[i : i + 1], 0.95 if route == "canary" else 0.5, rng)
        recs.append(
            request(
                run.X[i : i + 1],
                p,
                t=i,
                route=route,
                request_id=f"c{i}",
                run_dir=str(run.run),
                names=run.names,
            )
        )
        fb.append(feedback(f"c{i}", run.names[int(y[i])], t=1000 + i, random=True))
    write(tmp_path, "requests-a-000000.jsonl", recs)
    write(tmp_path, "feedback-a-000000.jsonl", fb)
    c = compare_live(tmp_path, n_resamples=500)
    assert c.challenger_route == "canary" and c.design == "independent"
    assert c.n_pairs == 0 and c.disagreement is None and c.n_challenger_rows == 100
    assert c.performance.delta > 0.2 and c.performance.p_one_sided < 0.01 and c.promote
    assert "independent" in c.performance.method


def test_bad_input(run, tmp_path):
    write(tmp_path, "requests-a-000000.jsonl", [request(run.X[:1], run.proba[:1], t=0, names=run.names)])
    with pytest.raises(DataError, match="no shadow or canary records.*--shadow RUN_DIR"):
        compare_live(tmp_path)
    # labels present, but the run directory the records name is gone
    other = tmp_path / "moved"
    rid = "m1"
    write(
        other,
        "requests-a-000000.jsonl",
        [
            request(run.X[:1], run.proba[:1], t=0, request_id=rid, names=run.names, run_dir="/nowhere/run"),
            request(
                run.X[:1],
                run.proba[:1],
                t=0,
                request_id=rid,
                names=run.names,
                run_dir="/nowhere/run",
                route="shadow",
            ),
        ],
    )
    write(other, "feedback-a-000000.jsonl", [feedback(rid, "3", t=1, random=True)])
    with pytest.raises(DataError, match=r"cannot find the task.*/nowhere/run.*--run-dir"):
        compare_live(other)
    assert compare_live(other, run_dir=run.run).n_labeled == 1
    with pytest.raises(
        DataError, match="--metric expected_cost: needs a binary task with business costs.* is multiclass"
    ):
        compare_live(other, run_dir=run.run, metric="expected_cost")
    with pytest.raises(DataError, match="--since 'noon'"):
        compare_live(other, since="noon")


def test_command_prints_and_writes_json_and_html(run, tmp_path, capsys):
    rng = np.random.default_rng(6)
    y = run.y[:100]
    log = tmp_path / "log"
    _shadow_log(log, run, _planted(y, 0.6, rng), _planted(y, 0.9, rng))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for name in ("report.json", "report.html"):
        assert (
            run_cmd(parser.parse_args([str(log), "--out", str(tmp_path / name), "--resamples", "200"])) == 0
        )
    printed = capsys.readouterr().out
    assert "disagreement" in printed and "PROMOTE" in printed
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["recommendation"] == "promote" and data["design"] == "paired"
    page = (tmp_path / "report.html").read_text()
    assert "<html>" in page and "PROMOTE" in page and "Disagreement" in page
    with pytest.raises(DataError, match=r"--out .*report.txt: expected a .json or .html"):
        run_cmd(parser.parse_args([str(log), "--out", str(tmp_path / "report.txt")]))
