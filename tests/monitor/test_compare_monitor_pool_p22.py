"""Measurement P22's read-out (benchmarks/compare_monitor_pool_p22.py): both arms' saved runs scored as the
shipped defaults' replay scores them, each deployment paired, and the declared clauses decided from them."""

from __future__ import annotations

import json
import sys

import pytest
from tests.audit.test_bench_audit_common import load_bench

P22 = load_bench("compare_monitor_pool_p22")


def window(end: int, domain_p: float, err: float) -> dict:
    """One saved window whose drift, ESS and training-rows evidence flag nothing (domain p decides)."""
    return {"flags": [], "min_p": 0.5, "marginal": 0.02, "domain_p": domain_p, "ess": 0.8, "err": err,
            "end": end, "low_positive": {}, "train_p": 0.5}  # fmt: skip


def stream(d: int, kind: str, domain_ps: list[float], err: float = 0.01) -> dict:
    return {
        "d": d,
        "o": 0,
        "kind": kind,
        "looks": [[200 * (k + 1), 0.5] for k in range(len(domain_ps))],
        "windows": [window(200 * (i + 1), p, err) for i, p in enumerate(domain_ps)],
    }


def f19_set(tmp_path, pool: int, flagged_in_d1: int) -> str:
    """Training 33's set: deployment 1 has ``flagged_in_d1`` of 10 in-distribution windows under the domain
    level (0.0025 for the held-out test in the union), deployment 2 none; one test stream, all flagged."""
    ps = [0.001] * flagged_in_d1 + [0.5] * (10 - flagged_in_d1)
    streams = [
        stream(1, "null", ps),
        stream(2, "null", [0.5] * 10),
        stream(1, "test", [0.0001] * 3, err=0.1),
    ]
    f = tmp_path / f"f19_{pool}_t33.json"
    settings = {"seed": 33, "half": "report", "first_draw": 1900, "pool": pool, "train_reference_rows": 2000}
    f.write_text(json.dumps({"settings": settings, "streams": streams}))
    return str(f)


def guarantee_file(tmp_path, pool: int, flagged: list[float], rates: list[float]) -> str:
    f = tmp_path / f"g_{pool}_t33.json"
    other = {
        "alarm_rates": rates,
        "in_windows": 100 * len(rates),
        "in_flagged": sum(flagged) / len(flagged),
        "in_flagged_per_draw": flagged,
        "noise": {"estimate_within": 0.98, "acc_floor": 0.99},
        "in_unflagged_off": 2,
    }
    f.write_text(
        json.dumps(
            {"train_seed": 33, "draws": list(range(1920, 1920 + len(rates))), "detection": {"dark": 1.0}}
            | {"other_half": other}
        )
    )
    return str(f)


def run(tmp_path, monkeypatch, capsys, large_flags: int, large_rates: list[float]) -> str:
    argv = ["compare_monitor_pool_p22.py", "--f19", f19_set(tmp_path, 262, 3)]
    argv += ["--f19-large", f19_set(tmp_path, 498, large_flags)]
    argv += ["--guarantee", guarantee_file(tmp_path, 262, [0.2, 0.0], [0.0, 0.1])]
    argv += ["--guarantee-large", guarantee_file(tmp_path, 498, [0.05, 0.0], large_rates)]
    monkeypatch.setattr(sys, "argv", argv)
    P22.main()
    return capsys.readouterr().out


def test_pairs_deployments_and_recommends_only_when_every_clause_holds(tmp_path, monkeypatch, capsys) -> None:
    out = run(tmp_path, monkeypatch, capsys, 1, [0.0, 0.0])
    assert (
        "[F19, t33] each deployment's in-distribution windows flagged, 262 -> 498 rows: d1 30%->10%, d2 0%->0%"
        in out
    )
    assert "[F19, 262 rows, pooled over 1 trainings] in-distribution windows flagged 15.0% of 20" in out
    assert "deployments above 10% 1 of 2" in out
    assert "d1920 0%->0% / 20%->5%, d1921 10%->0% / 0%->0%" in out
    assert "(ii) test windows unflagged and off 0 -> 0: True" in out
    assert "recommend holdout_fraction 0.95" in out
    # the larger arm's alarm rate above 5% in half its draws: (a) fails, so no recommendation
    out = run(tmp_path, monkeypatch, capsys, 1, [0.0, 0.2])
    assert "(iii) with 498 rows (a) lowest training 50%" in out and "no recommendation" in out
    # more in-distribution flags with the larger reference: (i) fails
    out = run(tmp_path, monkeypatch, capsys, 5, [0.0, 0.0])
    assert "F19's 15.0% -> 25.0%" in out and "no recommendation" in out


def test_refuses_a_set_of_the_other_arm(tmp_path, monkeypatch) -> None:
    argv = ["x", "--f19", f19_set(tmp_path, 498, 1), "--f19-large", f19_set(tmp_path, 498, 1)]
    argv += ["--guarantee", "g", "--guarantee-large", "g"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="saved with 498 held-out rows, this arm is 262"):
        P22.main()


def test_cost_script_trains_the_other_network_with_the_fraction(tmp_path, monkeypatch) -> None:
    """``diag_holdout_cost.py --holdout-fraction F``: the other network's pipeline gets ``holdout_fraction: F``
    (not ``final_fit: train``) in its own workdir; without the option, H19's ``final_fit: train`` as before."""
    import bench_heldout_monitor
    import bench_monitor_guarantee
    import numpy as np

    cost = load_bench("diag_holdout_cost")
    calls: list[tuple[str, dict]] = []
    y = np.array([0, 1, 1])

    def fake_pipeline(data, runs, preset, overrides, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((str(runs), overrides))
        return type("Result", (), {"run_dir": str(runs / "run")})()

    monkeypatch.setattr(bench_heldout_monitor, "run_pipeline", fake_pipeline)
    monkeypatch.setattr(bench_heldout_monitor, "write_reduced_npz", lambda *a: (None, y))
    monkeypatch.setattr(bench_monitor_guarantee, "npz_path", lambda: tmp_path)  # no data read
    cost.train_all_held_out(tmp_path, 33, y, 0.95)
    cost.train_all_held_out(tmp_path, 33, y)
    assert calls[0] == (
        str(tmp_path / "t33_h0.95" / "runs"),
        {"budget_minutes": 30, "holdout_fraction": 0.95},
    )
    assert calls[1] == (str(tmp_path / "t33" / "runs"), {"budget_minutes": 30, "final_fit": "train"})
