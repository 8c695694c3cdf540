"""``export-web``: a run's exported model as a self-contained static folder whose page runs it.

Layout of the folder::

    index.html, app.js        the page (no framework, no network access but its own folder)
    spec.json                 the input contract (closedloop.artifacts.webpage.WebSpec), read by the page and Python
    model.onnx                the chosen variant of the exported model, byte for byte
    runtime/                  onnxruntime-web's wasm build and the license named in spec.json, vendored from the pinned npm package

Only a run whose export stage finished and whose shipped model was blessed is exported (refused
otherwise, with the reason); ``allow_unblessed`` exports it anyway and the page says so in red.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from closedloop.artifacts.export import ExportBundle, ExportRecord, PredictorInfo
from closedloop.artifacts.webpage import SPEC_FILE, Card, InputContract, ModelFile, Runtime, Source, WebSpec
from closedloop.core.errors import ClosedLoopError
from closedloop.core.io import atomic_path, read_json, sha256_file, write_text_atomic
from closedloop.core.run_reader import RunDir
from closedloop.web import runtime

PAGE_FILES = ("index.html", "app.js")
MODEL_FILE = "model.onnx"
RUNTIME_DIR = "runtime"
IMAGE_CONVERSION = (
    "decoded without colour management; grayscale (L = (19595 R + 38470 G + 7471 B + 32768) >> 16) or RGB by "
    "the model's channel count; other sizes resized with Pillow's bilinear filter (as closedloop serve does)"
)


class ExportWebError(ClosedLoopError):
    """The run cannot be exported for the browser (no export, failed, not blessed, bad variant)."""


@dataclass(frozen=True)
class WebBuild:
    """What ``export_web`` wrote."""

    out_dir: Path
    spec: WebSpec
    total_bytes: int


def _failed_export(run_dir: Path) -> str | None:
    """The reason when the run's export stage did not finish (from manifest.json), else None."""
    try:
        stages = RunDir(run_dir).manifest_record.stages
    except ValueError:  # unreadable manifest: the export lookup below says what is missing
        return None
    for st in stages:
        if st.kind == "export" and st.status != "ok":
            why = f": {st.error}" if st.error else ""
            return f"its export stage {st.name or 'export'!r} is {st.status}{why}"
    return None


def _card_section(card: str, title: str) -> str:
    """The text under ``## title`` in the model card (up to the next heading)."""
    lines, inside = [], False
    for line in card.splitlines():
        if line.startswith("## "):
            inside = line[3:].strip().lower() == title.lower()
            continue
        if inside:
            lines.append(line)
    return "\n".join(lines).strip()


def _card(export_dir: Path, name: str) -> Card:
    path = export_dir / "model_card.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    use = _card_section(text, "Intended use")
    misuse = [
        ln[2:].strip() for ln in _card_section(text, "Known misuse").splitlines() if ln.startswith("- ")
    ]
    return Card(name=name, intended_use=use or "not declared in the model card", known_misuse=misuse)


def _measurements(export_dir: Path) -> ExportRecord | None:
    """``measurements.json`` as its typed record (None: the folder has none, e.g. an adapted model)."""
    path = export_dir / ExportBundle.record_file
    return ExportRecord.model_validate(read_json(path)) if path.is_file() else None


def _metadata(export_dir: Path) -> PredictorInfo:
    """``predictor.json``, checked by the predictor's own reader, as its typed record."""
    from closedloop.serving.predictor import load_metadata

    return PredictorInfo.model_validate(load_metadata(export_dir))


def _variant(meta: PredictorInfo, measurements: ExportRecord | None, variant: str | None, where: Path) -> str:
    """The variant to export: the one asked for, else the shipped one; refused when rejected."""
    models = meta.models
    chosen = variant or meta.shipped or next(iter(models))
    if chosen not in models:
        raise ExportWebError(f"--variant {chosen!r}: {where} has {sorted(models)}")
    info = measurements.variants.get(chosen) if measurements is not None else None
    if info is not None and not info.accepted:
        raise ExportWebError(
            f"--variant {chosen!r} was rejected by the export stage ({info.reason or 'not accepted'}); "
            f"choose one of the accepted variants, e.g. the shipped {meta.shipped!r}"
        )
    return chosen


def build_spec(
    run_dir: Path,
    export_dir: Path,
    variant: str | None,
    model_path: Path,
    rt: runtime.RuntimeFiles,
    name: str,
) -> WebSpec:
    meta = _metadata(export_dir)
    measurements = _measurements(export_dir)
    chosen = _variant(meta, measurements, variant, export_dir)
    inp = meta.input
    if inp is None:  # load_metadata refuses a predictor.json without one
        raise ExportWebError(f"{export_dir}: predictor.json has no input contract")
    kind = inp.kind
    shape = [int(d) for d in inp.shape]
    threshold = meta.variant_threshold(chosen)
    return WebSpec(
        model=ModelFile(
            file=MODEL_FILE, variant=chosen, sha256=sha256_file(model_path), bytes=model_path.stat().st_size
        ),
        problem_type=str(meta.problem_type),
        class_names=[str(n) for n in meta.label_names],
        positive_class=None if meta.positive_class is None else str(meta.positive_class),
        temperature=float(meta.variant_temperature(chosen)),
        threshold=None if threshold is None else float(threshold),
        input=InputContract(
            name=str(inp.name or "x"),
            kind=kind,
            shape=shape,
            channels=shape[-1] if kind == "images" else None,
            scaling=(
                "raw pixel values 0..255 as float32, channels last; the graph normalizes"
                if kind == "images"
                else "raw feature values as float32 in the order of feature_names; NaN = missing (the graph imputes)"
            ),
            image_conversion=IMAGE_CONVERSION if kind == "images" else None,
            feature_names=inp.feature_names,
        ),
        card=_card(export_dir, name),
        source=Source(
            run_dir=str(run_dir),
            run_id=run_dir.name,
            pipeline=name,
            blessed=measurements is not None and measurements.blessed,
            checks=list(measurements.checks_text) if measurements is not None else [],
        ),
        runtime=Runtime(
            package=runtime.PACKAGE,
            version=rt.version,
            integrity=rt.integrity,
            tarball=rt.source,
            license=rt.license,
            files=rt.sha256,
        ),
    )


def export_web(
    run_dir: str | Path,
    out_dir: str | Path,
    variant: str | None = None,
    runtime_tarball: str | Path | None = None,
    allow_unblessed: bool = False,
) -> WebBuild:
    """Write the static folder for ``run_dir``'s exported model into ``out_dir`` (created or refreshed)."""
    from closedloop.serving.model import ServeError, _pipeline_name, find_export_dir

    run_dir = Path(run_dir).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ExportWebError(f"{run_dir}: no such run directory")
    failed = _failed_export(run_dir)
    if failed:
        raise ExportWebError(f"cannot export {run_dir} for the browser: {failed}")
    try:
        export_dir = find_export_dir(run_dir)
    except ServeError as exc:
        raise ExportWebError(f"cannot export for the browser: {exc}") from None
    measurements = _measurements(export_dir)
    if not (measurements is not None and measurements.blessed) and not allow_unblessed:
        checks = (
            "; ".join(measurements.checks_text if measurements is not None else []) or "no measurements.json"
        )
        raise ExportWebError(
            f"{run_dir}: its shipped model is not blessed ({checks}); a page would put an unchecked model "
            "in front of people. Fix the run, or pass --allow-unblessed (the page then says so)"
        )
    if out_dir == run_dir or run_dir in out_dir.parents:
        raise ExportWebError(f"{out_dir}: choose a folder outside the run directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / SPEC_FILE).is_file():
        raise ExportWebError(
            f"{out_dir}: exists and is not an export-web folder; choose an empty or new folder"
        )

    meta = _metadata(export_dir)
    chosen = _variant(meta, measurements, variant, export_dir)
    src_model = export_dir / meta.models[chosen].file
    if not src_model.is_file():
        raise ExportWebError(f"{src_model}: model file of variant {chosen!r} not found")

    out_dir.mkdir(parents=True, exist_ok=True)
    rt = runtime.vendor(out_dir / RUNTIME_DIR, runtime_tarball)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        shutil.copyfile(src_model, tmp)
    spec = build_spec(run_dir, export_dir, chosen, out_dir / MODEL_FILE, rt, _pipeline_name(run_dir))
    static = resources.files("closedloop.web") / "static"
    for name in PAGE_FILES:
        write_text_atomic(out_dir / name, (static / name).read_text(encoding="utf-8"))
    # spec.json last: a folder with a spec is complete
    write_text_atomic(out_dir / SPEC_FILE, json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return WebBuild(out_dir=out_dir, spec=spec, total_bytes=total)
