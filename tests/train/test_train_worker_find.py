"""A worker joins a study only once the leader has published it whole (fingerprint, plan, then open): one
still being published is waited for. CI once caught a worker between the fingerprint and the plan, which
then failed with ``KeyError: 'closedloop.plan'``."""

from __future__ import annotations

import optuna
import pytest

from closedloop.core.errors import ConfigError
from closedloop.stages.train.phases import joining as J
from closedloop.stages.train.worker import _find_study


def test_a_study_still_being_published_is_waited_for_not_joined() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage)
    mine = {"mlp": {"family": "mlp", "seed": "0"}}
    study.set_user_attr(J.FINGERPRINT_ATTR, mine["mlp"])  # the leader's first write: no plan yet
    with pytest.raises(ConfigError, match="no open closedloop study"):
        _find_study(storage, "memory", None, mine, wait_s=0.0)
    study.set_user_attr(J.PLAN_ATTR, {"placeholder": True})
    study.set_user_attr(J.OPEN_ATTR, True)
    assert _find_study(storage, "memory", None, mine, wait_s=0.0) == ("s", "mlp")
    J.close(study)  # a finished phase is still found (the worker then leaves at once)
    assert _find_study(storage, "memory", None, mine, wait_s=0.0) == ("s", "mlp")
