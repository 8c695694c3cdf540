"""JSON Schema of pipeline configs: the top level plus each registered stage's and source's params."""

from __future__ import annotations

from typing import Any

from closedloop.core.callbacks import CALLBACKS
from closedloop.core.config import PipelineSpec
from closedloop.core.registry import SOURCES, STAGES


def pipeline_schema() -> dict[str, Any]:
    """A JSON Schema where ``stages[].params`` is chosen by ``kind`` (if/then per registered stage)."""
    schema = PipelineSpec.model_json_schema()
    defs = schema.setdefault("$defs", {})
    # the tracking section is checked by the tracker's own config (core carries it as a mapping)
    tracking = CALLBACKS.resolve("tracking").Config.model_json_schema()
    defs.update(tracking.pop("$defs", {}))
    defs["TrackingSpec"] = tracking
    schema["properties"]["tracking"] = {
        "anyOf": [{"$ref": "#/$defs/TrackingSpec"}, {"type": "null"}],
        "default": None,
    }
    branches = []
    for key, cls in STAGES.items().items():
        if key == "data":
            continue
        sub = cls.Config.model_json_schema()
        defs.update(sub.pop("$defs", {}))
        defs[f"{cls.__name__}Params"] = sub
        branches.append(
            {
                "if": {"properties": {"kind": {"const": key}}},
                "then": {"properties": {"params": {"$ref": f"#/$defs/{cls.__name__}Params"}}},
            }
        )
    stage_def = defs.get("StageSpec", {})
    stage_def["allOf"] = branches
    stage_def.setdefault("properties", {}).setdefault("kind", {})["examples"] = [
        k for k in STAGES.names() if k != "data"
    ]
    data_branches = []
    for key, cls in SOURCES.items().items():
        sub = cls.Config.model_json_schema()
        defs.update(sub.pop("$defs", {}))
        props = dict(sub.get("properties", {}))
        props["source"] = {"const": key}
        data_branches.append(
            {"if": {"properties": {"source": {"const": key}}}, "then": {"properties": props}}
        )
    schema["properties"]["data"] = {
        "type": "object",
        "required": ["source"],
        "allOf": data_branches,
        "properties": {"source": {"enum": SOURCES.names()}},
    }
    return schema
