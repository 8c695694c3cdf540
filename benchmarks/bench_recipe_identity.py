"""The three fixed training recipes before and after they share one loop (issue 22): identical weights?

The audit's cross-fitted CNN (out-of-fold probabilities, with and without mixup), the export's
distillation loop (hard and with a teacher; binary, multi-class, regression; a last batch of one row,
skipped), adapt's fine-tune (with and without replay; a partial last batch) and, from session 10, the
train engine's sanity overfit and LR range test (on the same step loop since then) are each run with the
same seeds by two checkouts' code (``--pre`` and ``--new``, each a folder holding ``src/``), in
child processes; the sha256 of each result is printed and compared.

    python benchmarks/bench_recipe_identity.py --pre /tmp/pre_checkout --model RUN/stages/05_train/artifacts/model \\
        --data /work/shared/data/medmnist/breastmnist.npz

``--model``: a binary image model a run trained (the fine-tune's champion); ``--data`` the MedMNIST
file whose images it takes (fine-tuning needs scores that are not all equal, which random pixels give).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _h(a) -> str:  # noqa: ANN001 - numpy array
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def recipes(model: str | None, data: str | None) -> list[str]:
    """One line per recipe run: its name and the sha256 of what it produced."""
    import numpy as np
    import torch

    from closedloop.stages.audit.quick_cnn import cnn_oof_probabilities
    from closedloop.stages.export.distill import fit

    torch.set_num_threads(1)
    out = []
    for problem, k in (("binary", 1), ("multiclass", 3), ("regression", 1)):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(101, 6)).astype(np.float32)
        y = rng.normal(size=101) if problem == "regression" else rng.integers(0, 3 if k == 3 else 2, size=101)
        for teacher in (None, rng.normal(size=(101, k)).astype(np.float32)):
            torch.manual_seed(5)
            layers = [torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.2)]
            m = torch.nn.Sequential(*layers, torch.nn.Linear(8, k))
            yy = y.reshape(-1, 1) if problem == "binary" else y
            fit(m, X, yy, problem, epochs=3, batch_size=25, seed=3, teacher_logits=teacher)
            weights = torch.cat([p.detach().flatten() for p in m.state_dict().values()]).numpy()
            out.append(f"distill {problem} teacher={teacher is not None}: {_h(weights)}")
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(60, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, size=60)
    folds = [(np.setdiff1d(np.arange(60), np.arange(f, 60, 3)), np.arange(f, 60, 3)) for f in range(3)]
    for mix in (0.4, 0.0):
        P = cnn_oof_probabilities(
            imgs, labels, folds, 2, epochs=2, min_steps=3, batch_size=16, mixup=mix, jobs=1, seed=2
        )
        out.append(f"audit cnn mixup={mix}: {_h(P)}")
    out += engine_recipes()
    if model and data:
        from closedloop.adapt.finetune import FinetuneSpec, fine_tune
        from closedloop.models.trained import TrainedModel

        champ = TrainedModel.load(model)
        d = np.load(data)
        X, y = d["test_images"][:40, ..., None], d["test_labels"][:40].reshape(-1)
        Xr, yr = d["train_images"][:50, ..., None], d["train_labels"][:50].reshape(-1)
        for rw in (0.3, 0.0):
            spec = FinetuneSpec(scope="all", epochs=2, batch_size=16, replay_weight=rw)
            tuned, info = fine_tune(champ, X, y, spec, costs=(1.0, 5.0), replay=(Xr, yr), seed=0)
            out.append(
                f"adapt fine-tune replay={rw}: {_h(tuned.predict_logits(X))} (weight change {info.weight_change!r})"
            )
    return out


def engine_recipes() -> list[str]:
    """The train stage's two one-purpose loops (session 10: on the recipes' step loop): the sanity
    check's overfit of one batch (stopped by its step count, by its loss target) and the LR range test
    (a full sweep, one stopped by a diverging loss), on a binary and a multi-class image network."""
    import time

    import numpy as np
    import torch

    from closedloop.models.registry import build_network
    from closedloop.models.trained import ModelSpec, Preprocessing
    from closedloop.stages.train.engine import Engine, HParams, make_tensor_set

    out = []
    rng = np.random.default_rng(7)
    imgs = rng.integers(0, 256, size=(96, 8, 8, 1), dtype=np.uint8)
    pre = Preprocessing(input_kind="images", input_shape=[8, 8, 1], mean=[0.5], std=[0.3])
    for problem, k in (("binary", 2), ("multiclass", 3)):
        y = rng.integers(0, k, size=96)
        y = y.reshape(-1, 1) if problem == "binary" else y
        train = make_tensor_set(imgs, y, pre, problem)
        eng = Engine(problem, k, mean=[0.5], std=[0.3])

        def net(seed: int, k: int = k, problem: str = problem) -> torch.nn.Module:
            torch.manual_seed(seed)
            spec = ModelSpec(family="small_cnn", params={"width": 4, "depth": 1})
            return build_network(spec, [8, 8, 1], 1 if problem == "binary" else k)

        for steps in (3, 200):
            m = net(1)
            losses = eng.overfit_batch(
                m, train.subset(np.arange(24)), steps=steps, lr=3e-2, deadline=time.time() + 3600, label="id"
            )
            w = torch.cat([v.detach().flatten().float() for v in m.state_dict().values()]).numpy()
            out.append(
                f"engine sanity overfit {problem} steps<={steps}: {len(losses)} losses {_h(np.array(losses))}, weights {_h(w)}"
            )
        for lr_max in (1.0, 1e4):
            m = net(2)
            lrs, losses, lr = eng.lr_range_test(
                m, train, HParams(batch_size=32, weight_decay=1e-3), seed=4, steps=40, lr_max=lr_max
            )
            w = torch.cat([v.detach().flatten().float() for v in m.state_dict().values()]).numpy()
            out.append(
                f"engine lr range test {problem} lr_max={lr_max:g}: {len(lrs)} steps, losses {_h(np.array(losses))}, "
                f"suggested lr {lr!r}, weights {_h(w)}"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pre", type=Path, help="checkout (a folder with src/) of the code before")
    ap.add_argument("--new", type=Path, default=ROOT, help="checkout of the code after (default: this one)")
    ap.add_argument("--model", help="a binary image model folder (the fine-tune's champion)")
    ap.add_argument("--data", help="a MedMNIST .npz whose images the model takes")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print("\n".join(recipes(a.model, a.data)))
        return
    if a.pre is None:
        ap.error("--pre is required")
    print(
        f"# python benchmarks/bench_recipe_identity.py --pre {a.pre} --new {a.new} --model {a.model} --data {a.data}"
    )
    sides = {}
    for side, code in (("pre", a.pre), ("new", a.new)):
        cmd = [sys.executable, __file__, "--child"] + (
            ["--model", a.model, "--data", a.data] if a.model else []
        )
        env = {**os.environ, "PYTHONPATH": str(Path(code) / "src")}
        sides[side] = subprocess.run(
            cmd, env=env, check=True, capture_output=True, text=True
        ).stdout.splitlines()
    same_all = len(sides["pre"]) == len(sides["new"])
    for pre, new in zip(sides["pre"], sides["new"], strict=False):
        same = pre == new
        same_all &= same
        print(f"{new}  {'IDENTICAL' if same else 'DIFFERENT (pre ' + pre.split(': ', 1)[1] + ')'}")
    print(f"{len(sides['new'])} recipe runs: " + ("ALL IDENTICAL" if same_all else "SOME DIFFERENT"))


if __name__ == "__main__":
    main()
