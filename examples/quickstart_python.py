"""Build the quickstart pipeline in Python instead of YAML, run it, and read the results.

Run from the project root:  python examples/quickstart_python.py
"""

from __future__ import annotations

from closedloop import Pipeline
from closedloop.core.registry import STAGES


def build() -> Pipeline:
    """The same pipeline as configs/quickstart.yaml, stage by stage."""
    task = STAGES.resolve("task")(
        acceptance={"acc": 0.9},
        constraints={"max_latency_ms": 5, "max_model_size_mb": 5},
        intended_use="Demonstration: recognise handwritten digits in 8x8 scans.",
    )
    stages = [task]
    for key, params in [
        ("audit", {}),
        ("baseline", {}),
        ("train", {"preset": "quick"}),
        ("export", {}),
        ("monitor", {}),
    ]:
        if key in STAGES.names():  # every built-in stage; skipped only in a partial install
            stages.append(STAGES.resolve(key)(**params))
    return Pipeline(stages, data={"source": "sklearn", "name": "digits"}, name="quickstart_python")


if __name__ == "__main__":
    result = build().run()
    print("status:", result.summary["status"])
    for name, stage in result.summary["stages"].items():
        print(f"  {name:<10} {stage['status']:<8} {stage['seconds']:6.1f} s")
    print("task:", result.artifact("task").primary_metric, "is the primary metric")
    print("report:", result.report_path)
