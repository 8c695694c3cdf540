"""Monitor: profile stage, checks, bad input, stream/CLI output, flywheel and estimates."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.core.errors import ConfigError, DataError, RunDirError
from closedloop.core.stage import RunContext
from closedloop.monitoring import DriftTest, Monitor, ReferenceProfile
from closedloop.monitoring.estimate import estimate, expected_auc_binary
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_setup, table_setup  # noqa: E402

from run_fixtures import save_artifact  # noqa: E402

FAST = {"calibration_windows": 30, "window_sizes": [50, 100], "permutations": 60}


def _run_dir(tmp: Path, model, profile) -> Path:
    run = tmp / "run"
    save_artifact(run, "05_train", "model", model)
    save_artifact(run, "07_monitor", "reference", profile)
    return run


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    bundle, model = digits_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    tmp = tmp_path_factory.mktemp("digits")
    stage = BuildMonitorProfile(**FAST)
    out = stage.execute({"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp, seed=0))
    run = _run_dir(tmp, model, out.reference)
    return bundle, model, stage, out, run


def test_profile_summary_and_round_trip(digits):
    bundle, model, stage, out, run = digits
    ref = stage.summarize(out)["reference"]
    assert ref["reference_size"] + ref["calibration_size"] == 400 and 190 <= ref["reference_size"] <= 210
    assert set(ref["thresholds"]) == {"50", "100"}
    # every held-out row speaks in the domain check; a multiclass stream test follows the confidence
    assert ref["domain_rows"] == 400 and ref["stream_scores"] == ["confidence"]
    for t in ref["thresholds"].values():
        assert 0 < t["alarm"] <= t["warn"] < 1
    loaded = ReferenceProfile.load(run / "stages/07_monitor/artifacts/reference")
    assert loaded.info == out.reference.info
    np.testing.assert_array_equal(loaded.reference.embeddings, out.reference.reference.embeddings)
    assert stage.report(out, run)  # works from saved outputs


def test_clean_window_ok_and_shift_alarms(digits):
    bundle, model, _, _, run = digits
    mon = Monitor.load(run)
    test = bundle.unsealed_test(__import__("closedloop.core.stage", fromlist=["_TEST_TOKEN"])._TEST_TOKEN)
    clean = mon.check(test.X[:100], labels=test.y[:100])
    assert clean["alert"] != "alarm"
    assert set(clean["p_values"]) >= {"features", "embedding_mmd", "bbsd", "predicted_class", "confidence"}
    assert abs(clean["estimated"]["acc"] - clean["realized"]["acc"]) < 0.15
    dark = (test.X[:100].astype(float) * 0.5).astype(np.uint8)
    shifted = mon.check(dark)
    assert shifted["alert"] == "alarm"
    assert shifted["p_values"]["features"] < 1e-6
    assert shifted["top_features"][0]["feature"].startswith(("intensity", "grid"))
    # the alert's evidence line names what moved, not only that something did
    top = shifted["top_features"][0]["feature"]
    said = next(e for e in shifted["evidence"] if e.startswith("features: "))
    assert f"univariate per feature; most drifted: {top} (PSI " in said
    assert not any("most drifted" in e for e in clean["evidence"])
    # the label-free estimate is withheld where the window differs from the reference
    assert clean["estimate_reliable"] is True  # no test at the marginal alarm level
    assert shifted["estimate_reliable"] is False
    assert any("label-free estimate withheld" in e and "random" in e for e in shifted["evidence"])
    # the point estimate is withheld (kept for the record) and random labels are asked for
    assert shifted["estimated"] == {} and "acc" in shifted["estimate_withheld"]
    assert shifted["estimate_reason"].startswith("withheld: the data differ from the reference (")
    assert shifted["spot_check"]["asked"] and shifted["spot_check"]["labels_needed"] == 385
    assert clean["spot_check"]["asked"] is False and clean["spot_check"]["labels_needed"] < 385


def test_bad_input_messages(digits):
    bundle, _, _, _, run = digits
    mon = Monitor.load(run)
    X = bundle.val.X[:50]
    with pytest.raises(DataError, match=r"expected uint8 images shaped \(N, 8, 8, 1\)"):
        mon.check(np.zeros((50, 10, 10, 1), np.uint8))
    with pytest.raises(DataError, match="3 channel"):
        mon.check(np.repeat(X, 3, axis=3))
    with pytest.raises(DataError, match="channels-first"):
        mon.check(X.transpose(0, 3, 1, 2).copy())
    with pytest.raises(DataError, match="not numeric"):
        mon.check(np.array([["a"] * 64] * 5, dtype=object).reshape(5, 8, 8, 1))
    with pytest.raises(DataError, match="empty window"):
        mon.check(X[:0])
    with_nan = X.astype(np.float32)
    with_nan[:3, 0, 0, 0] = np.nan
    res = mon.check(with_nan)
    assert res["data_quality"]["rows_with_missing"] == 3 and res["n"] == 47
    assert any("NaN" in e for e in res["evidence"])


def test_run_dir_without_profile(tmp_path):
    (tmp_path / "stages/01_data/artifacts").mkdir(parents=True)
    with pytest.raises(RunDirError, match="kind: monitor"):
        Monitor.load(tmp_path)


def test_stream_cli_and_review_queue(digits, tmp_path):
    from closedloop.stages.monitor.cli import main

    bundle, _, _, _, run = digits
    X = np.concatenate([bundle.val.X[:150], (bundle.val.X[150:300] * 0.5).astype(np.uint8)])
    np.savez(tmp_path / "prod.npz", images=X[..., 0])
    out = tmp_path / "res.json"
    rc = main([
        "monitor", str(run), str(tmp_path / "prod.npz"), "--window", "50", "--out", str(out),
        "--plot", str(tmp_path / "t.png"), "--review", "10", "--review-dir", str(tmp_path / "queue"),
    ])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    alerts = [w["alert"] for w in res["windows"]]
    assert len(alerts) == 6 and alerts[3:] == ["alarm"] * 3
    w = res["windows"][0]
    assert {"alert", "p_values", "estimated", "min_p", "evidence"} <= set(w)
    assert "acc" in w["estimated"]
    q = pd.read_csv(tmp_path / "queue" / "queue.csv")
    assert len(q) == 10 and (tmp_path / "queue" / q["file"][0]).is_file()
    assert q["priority"].is_monotonic_decreasing
    assert (tmp_path / "t.png").stat().st_size > 0


def test_shadow_mode(digits):
    bundle, _, _, _, run = digits
    a = Monitor.load(run)
    res = Monitor.shadow(a, a, bundle.val.X[:80])
    assert res["disagreement"] == 0.0 and res["n"] == 80
    assert res["champion"]["estimated"] == res["challenger"]["estimated"]


def test_table_monitor_missing_values_and_schema(tmp_path):
    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    out = BuildMonitorProfile(**FAST).execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp_path, seed=0)
    )
    mon = Monitor(out.reference, model)
    df = bundle.val.X.copy()
    df.loc[:39, "a"] = np.nan
    res = mon.check(df)
    assert res["data_quality"]["missing_by_feature"]["a"] == 40
    assert any("'a'" in w for w in res["data_quality"]["warnings"])
    with pytest.raises(DataError, match=r"missing column\(s\) \['color'\]"):
        mon.check(df.drop(columns=["color"]))
    shifted = bundle.val.X.copy()
    shifted["color"] = "red"
    assert mon.check(shifted)["alert"] == "alarm"


def test_config_and_registry_contracts():
    with pytest.raises(ConfigError, match="unknown drift test"):
        BuildMonitorProfile(tests=["kolmogorov"])
    with pytest.raises(TypeError, match="implement run"):

        class Incomplete(DriftTest):  # noqa: F841
            name = "incomplete_test"
            description = "x"


def test_cbpe_matches_simulation():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 2, 400)
    proba = np.stack([1 - p, p], axis=1)
    est = estimate(proba, "binary", 0.5, ["acc", "auc"], rng=rng)
    ys = (rng.random((300, 400)) < p).astype(int)
    from sklearn.metrics import roc_auc_score

    assert abs(est["acc"]["value"] - np.mean(((p >= 0.5) == ys).mean(axis=1))) < 0.01
    assert abs(est["auc"]["value"] - np.mean([roc_auc_score(y, p) for y in ys])) < 0.01
    assert est["auc"]["low"] < est["auc"]["value"] < est["auc"]["high"]
    q = np.array([0.2, 0.2, 0.9, 0.5])
    num = den = 0.0
    for i in range(4):
        for j in range(4):
            if i != j:
                w = q[i] * (1 - q[j])
                den += w
                num += w * ((q[i] > q[j]) + 0.5 * (q[i] == q[j]))
    assert expected_auc_binary(q) == pytest.approx(num / den)


def test_blockiness_reacts_to_jpeg_like_compression():
    import io

    from PIL import Image

    from closedloop.monitoring.features import blockiness, image_feature_names, image_features

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    imgs = []
    for _ in range(20):  # smooth random images with some texture
        a, b, c = rng.uniform(0.1, 0.4, 3)
        img = 128 + 60 * np.sin(a * xx + b * yy + c * 10) + rng.normal(0, 6, (28, 28))
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    X = np.stack(imgs)

    def jpeg(im: np.ndarray, q: int) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=q)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())))

    J = np.stack([jpeg(im, 30) for im in X])
    b0, b1 = blockiness(X.astype(np.float32)), blockiness(J.astype(np.float32))
    assert np.all(np.abs(b0 - 1) < 0.3) and np.median(b1) > np.median(b0) + 0.2
    assert np.all(blockiness(np.zeros((3, 8, 8), np.float32)) == 0)  # too small for a block boundary
    names = image_feature_names(1)
    feats = image_features(X[..., None])
    assert feats.shape[1] == len(names)
    np.testing.assert_allclose(feats[:, names.index("intensity_blockiness")], b0, rtol=1e-5)


def test_calibration_kernel_reuse_gives_the_same_p_values():
    from closedloop.monitoring.drift import DriftContext, Sample
    from closedloop.monitoring.drift.builtin import EmbeddingMMD
    from closedloop.monitoring.drift.stats import gaussian_kernel

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(120, 4)).astype(np.float32)
    pool = Sample(features=np.zeros((120, 1), np.float32), embeddings=emb, index=np.arange(120))
    ref, win = pool.take(np.arange(0, 70)), pool.take(np.arange(70, 120))

    def ctx(kernel):
        return DriftContext(
            "binary", 0.5, ["f"], [], bandwidth=2.0, permutations=80, rng=np.random.default_rng(5),
            pool={} if kernel is None else {"embedding_mmd": kernel},
        )  # fmt: skip

    plain = EmbeddingMMD().run(ref, win, ctx(None))
    reused = EmbeddingMMD().run(ref, win, ctx(gaussian_kernel(emb, 2.0)))
    assert reused.p_value == plain.p_value
    assert reused.statistic == pytest.approx(plain.statistic, rel=1e-5)


def test_old_profile_format_asks_for_a_rebuild(digits, tmp_path):
    import shutil

    _, _, _, _, run = digits
    src = run / "stages/07_monitor/artifacts/reference"
    dst = tmp_path / "old"
    shutil.copytree(src, dst)
    meta = json.loads((dst / "profile.json").read_text())
    meta["format_version"] = 1
    (dst / "profile.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match="rebuild it"):
        ReferenceProfile.load(dst)
