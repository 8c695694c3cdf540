"""The export stage end to end on tiny trained models (digits CNN, synthetic-table MLP)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from export_fixtures import digits_bundle, digits_model, table_bundle, table_model, task_for  # noqa: E402

from closedloop.core.stage import RunContext  # noqa: E402
from closedloop.models.trained import ModelSpec, logits_to_proba  # noqa: E402
from closedloop.serving import Predictor  # noqa: E402
from closedloop.serving.predictor import _logits_to_proba  # noqa: E402
from closedloop.stages.export import ExportBundle, ExportModel  # noqa: E402
from closedloop.stages.export.latency import latency_from_timings  # noqa: E402

FAST = {"latency": {"repeats": 10, "warmup": 2}, "bootstrap": 30, "calibration_samples": 128}


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory):
    b = digits_bundle(binary=True)
    m = digits_model(b)
    t = task_for(
        b, business={"cases_per_day": 100}, acceptance={"auc": 0.8}, constraints={"max_latency_ms": 1000}
    )
    stage = ExportModel(
        **FAST, prune={"amount": 0.3, "epochs": 1}, distill={"params": {"width": 4}, "epochs": 2}
    )
    d = tmp_path_factory.mktemp("export_bin")
    ctx = RunContext(stage_name="export", stage_dir=d, seed=0)
    out = stage.execute({"data": b, "task": t, "model": m}, ctx)
    return b, m, t, stage, out, d, ctx


def test_export_summary_has_the_issue_keys(binary_run) -> None:
    _, _, _, stage, out, _, ctx = binary_run
    s = stage.summarize(out)
    assert s["fp32"]["size_bytes"] > 0 and s["int8"]["size_bytes"] > 0
    assert 0 <= s["parity_max_abs_diff"] <= 1e-3
    assert 0.5 < s["int8"]["metrics"]["auc"] <= 1
    # measured latencies live in the stage's timings (stage.json / summary), not in the hashed folder
    latency, throughput = latency_from_timings(ctx.timings)
    for v in ("torch_fp32", "fp32", "int8", "student", "pruned"):
        assert latency[v]["p50"] > 0 and latency[v]["p95"] >= latency[v]["p50"]
        assert throughput[v] > 0
    written = out.exported.measurements.model_dump(mode="json")
    assert "latency_ms" not in written and "seconds" not in written
    assert isinstance(s["blessed"], bool)
    files = out.exported.files()
    for key in ("onnx_fp32", "onnx_int8", "predictor_metadata", "model_card"):
        assert (out.exported.directory / files[key]).is_file(), key
    dist = out.exported.measurements.distillation
    assert dist is not None and dist.metric == "auc"
    assert dist.student_parameters < dist.teacher_parameters
    # the requested width 4 has 0.28 of the teacher's parameters: the stage shrinks it to fit 1/4
    assert dist.parameter_ratio <= 0.25 and dist.student_size_choice["requested_width"] == 4
    assert dist.student_spec["params"]["width"] == dist.student_size_choice["width"] < 4
    # on disk the metric names the keys; read back from the file, the same typed record
    on_disk = json.loads((out.exported.directory / "measurements.json").read_text())["distillation"]
    assert {"student_alone_auc", "student_distilled_auc", "distilled_minus_alone"} <= set(on_disk)
    assert on_disk == dist.record()
    assert ExportBundle.load(out.exported.directory).measurements.distillation == dist


def test_export_predictor_matches_the_torch_model(binary_run) -> None:
    b, m, _, _, out, _, _ = binary_run
    X = b.val.X[:40]
    ref = m.predict_proba(X)
    p = Predictor(out.exported.directory, variant="fp32")
    np.testing.assert_allclose(p.predict_proba(X), ref, rtol=1e-4, atol=1e-5)
    # uint8 and float pixels give the same answer; the threshold comes from the metadata
    np.testing.assert_allclose(p.predict_proba(X.astype(np.float32)), p.predict_proba(X), atol=1e-7)
    assert p.threshold == pytest.approx(0.45)
    expected = (ref[:, 1] >= 0.45).astype(int)
    assert p.predict(X).tolist() == expected.tolist()
    assert set(p.predict_labels(X)) <= {"low", "high"}
    shipped = Predictor(out.exported.directory)
    assert shipped.variant == out.exported.measurements.shipped
    assert out.exported.measurements.variants[shipped.variant].accepted
    assert shipped.predict_proba(X).shape == ref.shape


def test_export_metadata_and_model_card(binary_run) -> None:
    _, m, t, _, out, _, _ = binary_run
    meta = json.loads((out.exported.directory / "predictor.json").read_text())
    assert meta["input"]["shape"] == [8, 8, 1] and meta["input"]["kind"] == "images"
    assert meta["temperature"] == pytest.approx(1.2) and meta["label_names"] == ["low", "high"]
    assert meta["problem_type"] == "binary" and meta["shipped"] in meta["models"]
    card = out.exported.model_card
    for section in (
        "Intended use",
        "Known misuse",
        "Metrics",
        "Operating point",
        "Limits",
        "Monitoring drift",
    ):
        assert f"## {section}" in card
    assert "Per day (100 cases" in card and "0.4500" in card


def test_export_bundle_save_load_and_report(binary_run, tmp_path: Path) -> None:
    _, _, _, stage, out, d, _ = binary_run
    out.exported.save(tmp_path)
    loaded = ExportBundle.load(tmp_path)
    assert loaded.measurements.shipped == out.exported.measurements.shipped
    assert stage.summarize(type(out)(exported=loaded))["blessed"] == stage.summarize(out)["blessed"]
    assert Predictor(tmp_path).predict(digits_bundle(True).val.X[:3]).shape == (3,)
    blocks = stage.report(type(out)(exported=loaded), d)
    kinds = {type(x).__name__ for x in blocks}
    assert {"Callout", "Table", "Section"} <= kinds


def test_export_multiclass_defaults_ship_int8(tmp_path: Path) -> None:
    b = digits_bundle(binary=False)
    m = digits_model(b, steps=60, width=16)
    t = task_for(b)
    stage = ExportModel(**FAST)
    out = stage.execute(
        {"data": b, "task": t, "model": m}, RunContext(stage_name="export", stage_dir=tmp_path, seed=0)
    )
    meas = out.exported.measurements
    assert meas.quantization == "static"
    assert meas.variants["int8"].size_bytes < meas.variants["fp32"].size_bytes
    p = Predictor(out.exported.directory, variant="fp32")
    assert p.predict_proba(b.val.X[:5]).shape == (5, 10)
    np.testing.assert_allclose(p.predict_proba(b.val.X[:5]).sum(1), 1, atol=1e-6)


@pytest.fixture(scope="module")
def table_runs(tmp_path_factory: pytest.TempPathFactory):
    """The table MLP exported three ways: the default (``quantize: auto``: the network is below
    ``table_int8_min_parameters``), auto with the threshold at 0 (static int8), and dynamic int8."""
    b = table_bundle()
    m = table_model(b)
    t = task_for(b)
    runs = {}
    settings = {
        "auto": {},
        "static": {"table_int8_min_parameters": 0},  # auto's rule on a network at its threshold
        "dynamic": {"quantize": "dynamic"},
    }
    for mode, params in settings.items():
        stage = ExportModel(**FAST, **params)
        ctx = RunContext(stage_name="export", stage_dir=tmp_path_factory.mktemp(f"table_{mode}"), seed=0)
        runs[mode] = (stage, stage.execute({"data": b, "task": t, "model": m}, ctx), ctx.stage_dir)
    return b, m, runs


def test_export_table_mlp_ships_fp32_by_default_and_says_why(table_runs) -> None:
    """quantize: auto makes no int8 variant for a small table network: int8 was measured slower than fp32
    on table MLPs this small (benchmarks/bench_table_quantization.py). The run says why in the summary,
    the report and the model card."""
    b, m, runs = table_runs
    stage, out, stage_dir = runs["auto"]
    meas = out.exported.measurements
    assert meas.quantization == "none" and "int8" not in meas.variants and meas.shipped == "fp32"
    n = m.n_parameters()
    assert n < 100_000
    assert f"quantize: auto for a table network of {n:,} parameters < table_int8_min_parameters 100,000" in (
        meas.quantization_note
    )
    X = b.val.features()
    assert np.isnan(X).any()  # missing values go in raw; imputation is inside the graph
    p = Predictor(out.exported.directory)
    assert p.variant == "fp32" and not p.one_row_at_a_time
    np.testing.assert_allclose(p.predict_proba(X), m.predict_proba(b.val.X), rtol=1e-4, atol=1e-5)
    assert "montage" not in out.exported.model_card.lower() or "not drawn" in out.exported.model_card
    summary = stage.summarize(out)
    assert summary["quantization"] == "none" and summary["quantization_note"] == meas.quantization_note
    shown = [blk.items for blk in stage.report(out, stage_dir) if type(blk).__name__ == "KeyValues"]
    assert any(kv.get("int8") == meas.quantization_note for kv in shown)
    assert "No int8 variant: none (quantize: auto for a table network of" in out.exported.model_card
    assert "int8 outputs differ slightly" not in out.exported.model_card


def test_export_table_mlp_static_int8_keeps_its_batches(table_runs) -> None:
    """quantize: auto on a table network at table_int8_min_parameters: static int8, scales calibrated on
    train rows and fixed, so the predictor runs a request in one call and a row's answer does not move
    with its batch-mates."""
    b, _, runs = table_runs
    _, out, _ = runs["static"]
    meas = out.exported.measurements
    assert meas.quantization == "static" and "int8" in meas.variants
    assert ">= table_int8_min_parameters 0" in meas.quantization_note
    assert "calibrated once on up to 128 train rows" in meas.quantization_note
    int8 = Predictor(out.exported.directory, variant="int8")
    assert not int8.one_row_at_a_time
    rows = np.nan_to_num(b.val.features()[:8], nan=0.0)
    mates = rows.copy()
    mates[1:] *= 40.0  # far wider activations than row 0's: they set a dynamic model's scale (0.00048 off)
    alone = int8.predict_proba(rows[:1])
    np.testing.assert_allclose(int8.predict_proba(mates)[:1], alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(int8.predict_proba(rows)[:1], alone, rtol=0, atol=1e-6)


def test_export_table_mlp_dynamic_int8_answers_one_row_at_a_time(table_runs) -> None:
    b, _, runs = table_runs
    _, out, _ = runs["dynamic"]
    meas = out.exported.measurements
    assert meas.quantization == "dynamic" and "int8" in meas.variants
    check_int8_answers_a_row_alone(out.exported.directory, b.val.features())
    assert "one row at a time" in out.exported.model_card


def test_quantize_auto_picks_by_data_kind_and_network_size() -> None:
    from closedloop.stages.export.config import ExportModelConfig

    cfg = ExportModelConfig()
    assert cfg.quantize_mode("images", 1_000) == "static"
    assert cfg.quantize_mode("table", 99_999) == "none" and cfg.quantize_mode("table", 100_000) == "static"
    assert cfg.calibration_count("images") == 256 and cfg.calibration_count("table") == 2000
    assert ExportModelConfig(calibration_samples=64).calibration_count("table") == 64
    assert ExportModelConfig(quantize="dynamic").quantize_mode("table", 10) == "dynamic"
    assert "tree ensemble" in cfg.quantize_note("table", 10, trees=True)


def check_int8_answers_a_row_alone(directory: Path, X: np.ndarray) -> None:
    """A dynamically quantized int8 model (one activation scale per call) must answer a row the same
    alone and among mixed batch-mates, in the predictor and in the export stage's own session."""
    int8 = Predictor(directory, variant="int8")
    assert int8.one_row_at_a_time
    rows = np.nan_to_num(X[:8], nan=0.0)
    mates = rows.copy()
    mates[1:] *= 40.0  # far wider activations than row 0's: they set the batch's scale
    alone = int8.predict_proba(rows[:1])
    np.testing.assert_array_equal(int8.predict_proba(mates)[:1], alone)
    np.testing.assert_array_equal(int8.predict_proba(rows)[:1], alone)
    # the export stage scores (and times) the int8 model through the same one-row path
    from closedloop.stages.export.onnx_export import OneRowAtATime, onnx_session

    session = onnx_session(
        directory / json.loads((directory / "predictor.json").read_text())["models"]["int8"]["file"]
    )
    assert isinstance(session, OneRowAtATime)
    logits = session.run(None, {session.get_inputs()[0].name: mates})[0]
    np.testing.assert_array_equal(logits.reshape(len(mates), -1), int8.predict_logits(mates))
    fp32 = Predictor(directory, variant="fp32")
    assert not fp32.one_row_at_a_time  # fp32 answers a row the same in any batch: it keeps its batches
    assert not isinstance(onnx_session(directory / fp32.meta["models"]["fp32"]["file"]), OneRowAtATime)


@pytest.mark.parametrize("problem", ["binary", "multiclass", "multilabel", "regression"])
def test_export_predictor_link_matches_the_package_convention(problem: str) -> None:
    z = np.random.default_rng(0).normal(size=(7, 1 if problem in ("binary", "regression") else 3))
    np.testing.assert_allclose(_logits_to_proba(z, problem, 1.7), logits_to_proba(z, problem, 1.7))


def test_student_width_is_the_largest_within_the_parameter_bound() -> None:
    from closedloop.core.errors import ConfigError
    from closedloop.stages.export.distill import build_student, choose_student, n_params

    teacher = n_params(build_student(ModelSpec(family="small_cnn", params={"width": 16}), [28, 28, 1], 1))
    spec, info = choose_student(
        "small_cnn", {}, [28, 28, 1], 1, teacher_parameters=teacher, max_ratio=0.25, default_width=16
    )
    width = spec.params["width"]
    assert info["parameters"] <= 0.25 * teacher < info["candidates"][str(width + 1)]
    spec, _ = choose_student(
        "small_cnn", {"width": 3}, [28, 28, 1], 1, teacher_parameters=teacher, max_ratio=0.25
    )
    assert spec.params["width"] == 3  # an explicit width that fits is kept
    with pytest.raises(ConfigError, match="max_parameter_ratio"):
        choose_student("small_cnn", {}, [28, 28, 1], 1, teacher_parameters=100, max_ratio=0.25)


def test_int8_file_is_compacted_and_scalars_are_full_rank(binary_run) -> None:
    import onnx

    _, _, _, _, out, _, _ = binary_run
    d = out.exported.directory
    q = onnx.load(str(d / "model_int8.onnx"))
    assert not q.graph.value_info and all(len(t.name) <= 4 for t in q.graph.initializer)
    assert {i.name for i in q.graph.input} == {"x"} and {o.name for o in q.graph.output} == {"logits"}
    assert any(t.data_type == onnx.TensorProto.INT32 for t in q.graph.initializer)  # int32 biases
    fp = onnx.load(str(d / "model_fp32.onnx"))
    consts = {t.name: len(t.dims) for t in fp.graph.initializer}
    for node in fp.graph.node:
        if node.op_type in ("Add", "Sub", "Mul", "Div"):
            assert all(consts.get(i, 4) == 4 for i in node.input), node  # no rank-0 operand left


def test_latency_is_timed_interleaved() -> None:
    from closedloop.stages.export.latency import measure_all

    calls: list[str] = []
    runners = {k: (lambda x, k=k: calls.append(k)) for k in ("a", "b", "c")}
    t = measure_all(runners, np.zeros((3, 2), np.float32), threads=1, repeats=6, warmup=0)
    assert set(t) == {"a", "b", "c"} and all(v.throughput_per_s > 0 for v in t.values())
    assert calls[:6] == ["a", "b", "c", "b", "c", "a"]  # round-robin, rotating order


def test_one_row_at_a_time_is_the_same_in_the_predictor_and_the_export_stage() -> None:
    """The standalone predictor cannot import the stage, so each has its wrapper; they must agree."""
    from closedloop.serving.predictor import OneRowAtATime as Served
    from closedloop.stages.export.onnx_export import OneRowAtATime as Exported

    class PerCallScale:  # like DynamicQuantizeLinear: the answer depends on the whole call's range
        def get_inputs(self) -> list:
            return []

        def run(self, names, feeds):
            (x,) = feeds.values()
            return [np.round(x / np.abs(x).max() * 127), x.sum(axis=1)]

    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    ours, theirs = Served(PerCallScale()).run(None, {"x": x}), Exported(PerCallScale()).run(None, {"x": x})
    for a, b, k in zip(ours, theirs, range(2), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a[2:3], PerCallScale().run(None, {"x": x[2:3]})[k])
