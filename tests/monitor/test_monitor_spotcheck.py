"""Spot checks (random rows, realized metrics with intervals) and a new reference from a verified period."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).parents[1] / "serving"))
from livelog_fixtures import _digits_model, request, tiny_run, write  # noqa: E402

from closedloop.cli import main  # noqa: E402
from closedloop.monitoring.monitor import find_profile_dir  # noqa: E402
from run_fixtures import save_artifact  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def _log(tmp: Path, run) -> Path:
    log = tmp / "log"
    recs = [
        request(
            run.X[k : k + 2],
            run.proba[k : k + 2],
            t=k,
            request_id=f"q{k:04d}",
            names=run.names,
            version=run.run.name,
        )
        for k in range(0, 300, 2)
    ]
    write(log, "requests-a-000000.jsonl", recs)
    return log


def _fill(csv_path: Path, run, out: Path, rows: int | None = None) -> list[dict[str, str]]:
    """Label the drawn rows with their true class (request q{k} holds rows k and k+1)."""
    with open(csv_path, newline="") as f:
        lines = list(csv.DictReader(f))[:rows]
    for line in lines:
        r = int(line["request_id"][1:]) + int(line["index"])
        line["label"] = run.names[int(run.y[r])]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]))
        w.writeheader()
        w.writerows(lines)
    return lines


def test_spot_check_draws_random_rows_and_measures_them(run, tmp_path, capsys):
    log = _log(tmp_path, run)
    drawn = tmp_path / "spot"
    # a copy: the draw is recorded in the run folder, which the session-wide tiny run shares with other tests
    runc = tmp_path / "runs" / run.run.name
    shutil.copytree(run.run, runc)
    assert main(["monitor", str(runc), str(log), "--window", "100", "--spot-check", "120",
                 "--spot-check-dir", str(drawn)]) == 0  # fmt: skip
    assert "spot check: 120 row(s) drawn uniformly at random" in capsys.readouterr().out
    lines = _fill(drawn / "spot_check.csv", run, tmp_path / "labels.csv")
    assert len(lines) == 120 and len({(r["request_id"], r["index"]) for r in lines}) == 120
    assert all((drawn / r["file"]).is_file() for r in lines)
    out = tmp_path / "res.json"
    assert main(["monitor", str(runc), str(log), "--window", "100", "--spot-check-labels",
                 str(tmp_path / "labels.csv"), "--out", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text())["spot_check"]
    rows = [int(r["request_id"][1:]) + int(r["index"]) for r in lines]
    truth = float((run.proba[rows].argmax(1) == run.y[rows]).mean())
    assert res["n"] == 120 and res["metrics"]["acc"]["value"] == pytest.approx(truth)
    lo, hi = res["metrics"]["acc"]["ci95"]
    assert lo < truth < hi and hi - lo < 0.2
    text = capsys.readouterr().out
    assert "realized on 120 random row(s): acc=" in text
    # 120 labeled rows, fewer than the reference's 400: no hint that they could become a larger reference
    assert "agrees with the reference accuracy" in text and "this verified period has" not in text


def test_a_verified_period_larger_than_the_reference_is_offered_as_one() -> None:
    from closedloop.stages.monitor.cli import larger_reference_hint

    hint = larger_reference_hint({"agrees_with_reference": True, "n": 500}, 262)
    assert (
        hint is not None
        and "500 random labeled row(s), more than the reference's 262; --set-reference" in hint
    )
    assert larger_reference_hint({"agrees_with_reference": False, "n": 500}, 262) is None  # not verified
    assert (
        larger_reference_hint({"agrees_with_reference": None, "n": 500}, 262) is None
    )  # no reference accuracy
    assert larger_reference_hint({"agrees_with_reference": True, "n": 262}, 262) is None  # not larger


def test_spot_check_bad_input(run, tmp_path, capsys):
    log = _log(tmp_path, run)
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,index,label\nq0000,0,0\nnot-a-request,3,1\n")
    assert main(["monitor", str(run.run), str(log), "--spot-check-labels", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "1 labeled row(s) are not champion rows of this log: ['not-a-request/3 (line 3)']" in err
    bad.write_text("request_id,index,label\nq0000,0,cat\n")
    assert main(["monitor", str(run.run), str(log), "--spot-check-labels", str(bad)]) == 2
    assert "label(s) [\"'cat' (line 2)\"] are not classes of the model" in capsys.readouterr().err
    bad.write_text("request_id,label\nq0000,0\n")
    assert main(["monitor", str(run.run), str(log), "--spot-check-labels", str(bad)]) == 2
    assert "missing column(s) ['index']" in capsys.readouterr().err
    assert main(["monitor", str(run.run), str(log), "--spot-check", "5000"]) == 2
    assert "the log holds only 300 champion row(s)" in capsys.readouterr().err
    # a reset of the reference (and the stream) without a verified period
    assert main(["monitor", str(run.run), str(log), "--set-reference"]) == 2
    assert "--set-reference without a verified period" in capsys.readouterr().err
    # a spot check that disagrees (every label wrong) does not verify the period
    wrong = "\n".join(
        f"q{k:04d},0,{run.names[(int(run.y[k]) + 1) % len(run.names)]}" for k in range(0, 200, 2)
    )
    bad.write_text("request_id,index,label\n" + wrong + "\n")
    assert main(["monitor", str(run.run), str(log), "--spot-check-labels", str(bad), "--set-reference"]) == 2
    err = capsys.readouterr().err
    assert (
        "the spot check does not verify this period: realized accuracy 0.0" in err and "retrain first" in err
    )


@pytest.mark.slow  # builds a profile
def test_set_reference_from_a_verified_period(run, tmp_path, capsys):
    bundle, _ = _digits_model()  # the same data the tiny run's model was trained on (deterministic)
    runc = tmp_path / "runs" / run.run.name
    shutil.copytree(run.run, runc)
    save_artifact(runc, "00_data", "data", bundle)
    log = _log(tmp_path, run)
    drawn = tmp_path / "spot"
    assert main(["monitor", str(runc), str(log), "--spot-check", "200", "--spot-check-dir", str(drawn)]) == 0
    _fill(drawn / "spot_check.csv", run, tmp_path / "labels.csv")
    capsys.readouterr()
    rc = main(
        [
            "monitor",
            str(runc),
            str(log),
            "--spot-check-labels",
            str(tmp_path / "labels.csv"),
            "--set-reference",
        ]
    )
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert (
        "agrees with the reference accuracy" in text.out
        and "new reference from the verified period" in text.out
    )
    new = find_profile_dir(runc)
    assert new.parent == runc / "references"
    meta = json.loads((new / "profile.json").read_text())
    assert (
        meta["source"]["evaluated_on"] == "production_spot_check"
        and meta["reference_size"] + meta["calibration_size"] == 200
    )
    # the monitor now compares with the new reference, over the rows after its verified period
    out = tmp_path / "after.json"
    more = [request(run.X[k : k + 2], run.proba[k : k + 2], t=1000 + k, request_id=f"z{k:04d}", names=run.names,
                    version=run.run.name) for k in range(300, 400, 2)]  # fmt: skip
    write(log, "requests-a-000001.jsonl", more)
    assert main(["monitor", str(runc), str(log), "--window", "50", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["log"]["n_rows"] == 100 and any("verified period" in w for w in res["log"]["warnings"])
    assert np.isfinite(res["stream"]["e_value"])
