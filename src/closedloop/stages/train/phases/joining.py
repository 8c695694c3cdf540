"""What a process joining a leader's tuning study must agree on, kept in the study itself.

The leader writes two user attributes on the study when its tune phase starts: the **config
fingerprint** (everything that decides a trial's result: the data the trials train and score on, the
task, the preprocessing, every train setting except where and how fast it runs, the run seed and the
code) and the **trial plan** (what the earlier phases chose: the model parameters, the search space,
the trial count, the forced epochs, the deadline and the heartbeat). A ``closedloop worker`` computes
its own fingerprint from its own config and data and is refused, naming the fields that differ, when
it does not match: its trials would not be comparable with the leader's. A joined worker has no access
to the leader's ``work/`` folder, so it leaves each trial's validation logits in the trial (a user
attribute) and the leader copies them into ``work/`` when the phase ends.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.core.io import canonical_json, sha256_text
from closedloop.stages.train.knobs import Dimension, Space
from closedloop.stages.train.session import TrainSession, trial_logits_file

FINGERPRINT_ATTR = "closedloop.fingerprint"
PLAN_ATTR = "closedloop.plan"
OPEN_ATTR = "closedloop.open"
LOGITS_ATTR = "val_logits"
"""User attr of a trial a joined worker ran: its validation logits (``.npy`` bytes, base64)."""

SCALE_FIELDS = frozenset(
    {"workers", "storage", "study_name", "threads", "device", "heartbeat_seconds", "final"}
)
"""Train settings that say where and how fast trials run, not what they compute: left out of the
fingerprint (a worker on another machine may use other threads or a GPU)."""


class TrialPlan(BaseModel):
    """What the phases before tuning decided, which every trial of the study uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_params: dict[str, Any]
    space: dict[str, Dimension]
    n_trials: int
    forced_epochs: int | None = None
    deadline: float
    """The tune phase's end (Unix time): no new trial starts after it once one is counted."""
    heartbeat_seconds: int | None = None
    """RDB storage: the heartbeat every process of the study uses (None: no heartbeat)."""

    def search_space(self) -> Space:
        return dict(self.space)


def _code_digest() -> str:
    """The source of the code a trial runs (train stage, models, core seeds): a change there changes
    trial results even without a version bump."""
    import closedloop

    root = Path(closedloop.__file__).parent
    h = hashlib.sha256()
    for sub in ("stages/train", "models", "core/seeds.py"):
        p = root / sub
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _tensor_digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        arr = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        h.update(str((arr.dtype, arr.shape)).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def fingerprint(sess: TrainSession) -> dict[str, str]:
    """Field -> short text; two processes whose fingerprints are equal produce the same trial from the
    same parameters and seed."""
    import optuna
    import torch

    import closedloop

    out = {
        "data.train": _tensor_digest(sess.train.x, sess.train.y),
        "data.val": _tensor_digest(sess.val.x, sess.val.y),
        "task": sha256_text(canonical_json(sess.task.model_dump(mode="json")))[:16],
        "preprocessing": sha256_text(canonical_json(sess.pre.model_dump(mode="json")))[:16],
        "family": sess.family,
        "seed": str(sess.ctx.seed),
        "code": f"closedloop {closedloop.__version__} ({_code_digest()}), torch {torch.__version__}, "
        f"optuna {optuna.__version__}",
    }
    settings = sess.cfg.model_dump(mode="json", exclude=set(SCALE_FIELDS))
    out.update({f"train.{k}": json.dumps(v, sort_keys=True) for k, v in sorted(settings.items())})
    return out


def differences(leader: dict[str, str], mine: dict[str, str]) -> list[str]:
    """``field: leader's value vs this worker's`` for every field that differs."""
    keys = sorted(set(leader) | set(mine))
    return [
        f"{k}: {leader.get(k, '(absent)')} (leader) vs {mine.get(k, '(absent)')} (this worker)"
        for k in keys
        if leader.get(k) != mine.get(k)
    ]


def publish(study: Any, fp: dict[str, str], plan: TrialPlan) -> None:
    """The leader's side: what joining workers read before their first trial."""
    study.set_user_attr(FINGERPRINT_ATTR, fp)
    study.set_user_attr(PLAN_ATTR, plan.model_dump(mode="json"))
    study.set_user_attr(OPEN_ATTR, True)


def close(study: Any) -> None:
    """The phase is over: a worker that starts later finds no open study to wait for."""
    study.set_user_attr(OPEN_ATTR, False)


def encode_logits(logits: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.asarray(logits), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_logits(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def collect_logits(sess: TrainSession, study: Any) -> int:
    """Copy the validation logits joined workers left in their trials into ``work/`` (where the leader
    reads every trial's logits). Returns how many it copied."""
    n = 0
    for t in study.get_trials(deepcopy=False):
        text = t.user_attrs.get(LOGITS_ATTR)
        if text and not (sess.work / trial_logits_file(t.number)).is_file():
            sess.save_logits(trial_logits_file(t.number), decode_logits(text))
            n += 1
    return n
