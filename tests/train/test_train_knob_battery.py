"""Every registered tuned knob passes the knob battery (:func:`check_knob`), a user's knob declared in
one class (tests/toy_knob.py) included; the battery and the class checks fail where they should."""

from __future__ import annotations

import pytest

from closedloop.stages.train import knobs as K
from closedloop.stages.train.config import TrainConfig
from closedloop.stages.train.hparams import HParams
from closedloop.stages.train.knob_checks import check_knob

USER_KNOB = "toy_knob:LogitPenalty"
USER_OPTIMIZER_KNOB = "toy_knob:AdamBeta2"


@pytest.mark.parametrize("name", [*K.ALL_KNOBS, USER_KNOB, USER_OPTIMIZER_KNOB])
def test_every_knob_passes_the_battery(name: str) -> None:
    assert len(check_knob(name)) == 3


def test_a_user_knob_is_one_class_named_by_import_path() -> None:
    cfg = TrainConfig(tune_knobs=["lr", USER_KNOB])
    ctx = K.SpaceContext(lr=3e-3, max_epochs=9, problem_type="binary", input_kind="table", family="mlp")
    space = K.search_space(ctx, cfg.tune_knobs)
    assert list(space) == ["lr", "logit_penalty"]
    assert K.default_trial(space) == {"logit_penalty": 1e-3}
    assert K.neutral_values(3e-3, 9)["logit_penalty"] == 0.0
    _, hp = K.split_params(HParams(), {}, {"logit_penalty": 0.01}, patience=None, max_epochs=9)
    assert hp.knobs == {"logit_penalty": 0.01} and hp.as_dict()["knobs"] == {"logit_penalty": 0.01}
    assert [k.name for k, _ in K.loss_hooks(hp)] == ["logit_penalty"]
    assert "knobs" not in HParams().as_dict()  # a run without such a knob writes the record it always did
    # registered, but tuned only where named: the default list is the built-in knobs
    assert "logit_penalty" not in TrainConfig().tune_knobs


def test_bad_knob_names_fail_at_validate() -> None:
    with pytest.raises(
        ValueError, match=r"unknown knob\(s\) 'weight_decy' \(did you mean 'weight_decay'\?\)"
    ):
        TrainConfig(tune_knobs=["weight_decy"])
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_pkg'"):
        TrainConfig(tune_knobs=["no_such_pkg:Knob"])
    with pytest.raises(ValueError, match=r"'toy_knob:Any' is not a Knob subclass"):
        TrainConfig(tune_knobs=["toy_knob:Any"])


def test_an_incomplete_knob_class_fails_when_defined() -> None:
    with pytest.raises(TypeError, match="override range"):

        class NoRange(K.Knob):
            name = "no_range"

    with pytest.raises(TypeError, match="the engine would never read it"):

        class NoEffect(K.Knob):
            name = "no_effect"

            def range(self, c: K.SpaceContext) -> K.Range | None:
                return (0.0, 1.0)

    assert "no_range" not in K.BY_NAME and all(k.name not in ("no_range", "no_effect") for k in K.KNOBS)


def test_the_battery_fails_a_knob_whose_neutral_value_has_an_effect() -> None:
    # the engine never calls a hook at the neutral value; a knob on a field the engine already reads
    # must name that field's no-effect value: the warm-up share 0.2 is the default, not 0.5
    class Warmup(K.Knob):  # registered (tuned only where named, so no other test sees it)
        name, default, neutral = "warmup", 0.2, 0.5

        def range(self, c: K.SpaceContext) -> K.Range | None:
            return (0.0, 0.5)

    with pytest.raises(AssertionError, match="'warmup': at its neutral value 0.5 the fit differs"):
        check_knob("warmup")


def test_a_knob_value_no_class_declares_is_refused_not_ignored() -> None:
    from closedloop.core.errors import ConfigError

    hp = HParams(knobs={"not_imported_here": 0.1})  # e.g. a process that never imported the knob's module
    with pytest.raises(ConfigError, match=r"\['not_imported_here'\].*import the module defining it"):
        K.loss_hooks(hp)


def test_the_optimizer_is_built_from_the_optimizer_knobs_options() -> None:
    import torch

    from closedloop.stages.train.engine import Engine

    beta2 = K.knob(USER_OPTIMIZER_KNOB)  # a user's optimizer knob: one class, the engine unchanged
    assert [k.name for k in K.KNOBS if k.applies == "optimizer"][:2] == ["lr", "weight_decay"]
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    _, hp = K.split_params(
        HParams(lr=0.02), {}, {"weight_decay": 0.1, beta2.name: 0.99}, patience=None, max_epochs=3
    )
    opt, _ = Engine("binary", 1).make_optimizer(net, hp, total_steps=10)
    weights, others = opt.param_groups
    assert [p.ndim for p in weights["params"]] == [2, 2] and all(p.ndim == 1 for p in others["params"])
    assert weights["weight_decay"] == 0.1 and others["weight_decay"] == 0.0  # decay on the weights only
    assert weights["initial_lr"] == others["initial_lr"] == 0.02 and weights["betas"] == (0.9, 0.99)
    plain, _ = Engine("binary", 1).make_optimizer(net, HParams(), total_steps=10)
    assert plain.param_groups[0]["betas"] == (0.9, 0.999)  # not tuned: its neutral, AdamW's default


def test_the_engine_reads_no_knob_by_name_but_the_fits_length() -> None:
    """A knob's effect is its class's (the optimizer's options, the hooks); the engine reads one knob's
    HParams field itself: ``epochs``, the length of the fit its schedule, re-plans and checkpoint count
    (knobs.py's module docstring says why that is not a hook)."""
    import re
    from pathlib import Path

    import closedloop.stages.train.engine as engine

    text = Path(engine.__file__).read_text()
    read = {m for m in re.findall(r"\bhp\.(\w+)", text) if m in K.ALL_KNOBS}  # the built-in knobs
    assert read == {"epochs"}, f"the engine reads these knobs by name: {sorted(read)}"


def test_an_optimizer_knob_declares_its_options() -> None:
    with pytest.raises(TypeError, match="overrides optimizer_options"):

        class NoOptions(K.Knob):
            name, applies, neutral = "no_options", "optimizer", 0.0

            def range(self, c: K.SpaceContext) -> K.Range | None:
                return (0.0, 1.0)

    with pytest.raises(TypeError, match="only an optimizer knob does"):

        class TrainingWithOptions(K.Knob):
            name = "training_with_options"

            def range(self, c: K.SpaceContext) -> K.Range | None:
                return (0.0, 1.0)

            def optimizer_options(self, value: object, group: str) -> dict[str, object]:
                return {"eps": value}

    assert all(k.name not in ("no_options", "training_with_options") for k in K.KNOBS)
