"""Data-parallel final fit (issue #23): the train stage's launcher on 2 ranks (gloo, 1 torch thread
each) against the one-process fit with 2 torch threads (the same CPU) and with 1 thread (no thread
oversubscription on a loaded machine), on PneumoniaMNIST, 3 seeds each, interleaved in one run. Both fit the same fixed configuration on the train split (the launcher's per-rank batch is the
batch / 2, so the global batch and the schedule are equal) and are scored once on the test split, which
neither trained nor was tuned on. Prints each seed's test AUC, each arm's 3-seed spread, whether the
2-rank mean lies within the one-process spread, and the wall-time ratio.

The machine is shared by 6 engineers (2 cores): seconds are noisy; the ratio is per seed, in one run.
Usage: python benchmarks/bench_ddp_final.py [--per-split 2000 --epochs 6 --seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_train_resume import DATA_ROOT


def inputs(tmp: Path, per_split: int):
    """PneumoniaMNIST's bundle and task through the pipeline's own data and task stages."""
    from closedloop.core.pipeline import Pipeline

    p = Pipeline.from_dict(
        {
            "name": "ddp_final",
            "runs_dir": str(tmp / "runs"),
            "data": {"source": "medmnist", "flag": "pneumoniamnist", "root": str(DATA_ROOT),
                     "download": False, "max_per_split": per_split},
            "stages": [{"kind": "task"}],
        }
    )  # fmt: skip
    p.callbacks = []
    r = p.run(out=tmp / "upstream", progress=False, cache=False)
    return r.artifact("data"), r.artifact("task")


def main() -> None:
    from closedloop.core.ledger import TestLedger
    from closedloop.core.stage import RunContext
    from closedloop.models.trained import logits_to_proba
    from closedloop.stages.train import TrainModel
    from closedloop.stages.train.data_parallel import fit_on_ranks
    from closedloop.stages.train.engine import make_tensor_set
    from closedloop.stats.metrics import compute_metrics

    ap = argparse.ArgumentParser()
    ap.add_argument("--per-split", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data, task = inputs(tmp, a.per_split)
        stage = TrainModel(preset="quick", class_weight="balanced", threads=2, final={"nproc": 2})
        ctx = RunContext(
            stage_name="train", stage_dir=tmp / "train", seed=0, fingerprint="bench",
            test_ledger=TestLedger(tmp / "global.jsonl", tmp / "run.jsonl", run_id="bench"),
        )  # fmt: skip
        sess = stage.make_session(TrainModel.Inputs(data=data, task=task), ctx)
        test = ctx.open_test(data, reason="bench_ddp_final: score both arms once")
        test_set = make_tensor_set(test.X, test.y, sess.pre, task.problem_type)
        eng, mp = sess.engine, {"width": 16}
        hp = sess.base_hp.with_(epochs=a.epochs, patience=None)
        print(
            f"PneumoniaMNIST: fitted on train ({len(sess.train)} images), scored on test ({len(test_set)} "
            f"images, never trained or tuned on); small_cnn width 16, {a.epochs} epochs, batch {hp.batch_size}"
        )
        print("shared 2-core machine (6 engineers working): seconds are noisy; the arms alternate per seed")

        def auc(net: torch.nn.Module) -> float:
            logits = np.asarray(eng.predict_logits(net, test_set)).reshape(len(test_set), -1)
            proba = logits_to_proba(logits, task.problem_type)
            return float(compute_metrics(["auc"], test_set.y_np, proba, task.problem_type)["auc"])

        one2, one1, two = "1 process x 2 threads", "1 process x 1 thread", "2 ranks x 1 thread"
        rows: dict[str, list[tuple[float, float]]] = {one2: [], one1: [], two: []}
        for k in range(a.seeds):
            seed = sess.seed("final", "member", k)
            for arm, threads in ((one2, 2), (one1, 1)):
                torch.set_num_threads(threads)
                net = sess.build(mp, seed)
                t0 = time.perf_counter()
                eng.fit(net, sess.train, None, hp, seed=seed, restore_best=False)
                rows[arm].append((time.perf_counter() - t0, auc(net.eval())))
            torch.set_num_threads(2)
            net = sess.build(mp, seed)
            t0 = time.perf_counter()
            net, _, _ = fit_on_ranks(
                net, {"train": sess.train, "val": None, "seed": seed, "restore_best": False}, eng.fit, hp,
                nproc=2, out=tmp / f"ranks{k}.pt", threads=2,
            )  # fmt: skip
            rows[two].append((time.perf_counter() - t0, auc(net.eval())))
            print(
                f"  seed {k}: test AUC / wall: "
                + "; ".join(f"{arm} {r[-1][1]:.4f} / {r[-1][0]:.1f} s" for arm, r in rows.items())
            )
        for name, r in rows.items():
            aucs = [x[1] for x in r]
            print(
                f"{name:<22} test AUC mean {statistics.mean(aucs):.4f}, {a.seeds}-seed range "
                f"[{min(aucs):.4f}, {max(aucs):.4f}], wall mean {statistics.mean(x[0] for x in r):.1f} s"
            )
        one_aucs = [x[1] for x in rows[one2]]
        two_mean = statistics.mean(x[1] for x in rows[two])
        inside = min(one_aucs) <= two_mean <= max(one_aucs)
        print(
            f"2-rank mean test AUC {two_mean:.4f} within the one-process (2 threads) {a.seeds}-seed range "
            f"[{min(one_aucs):.4f}, {max(one_aucs):.4f}]: {'yes' if inside else 'no'}"
        )
        for base in (one2, one1):
            ratios = [t[0] / o[0] for o, t in zip(rows[base], rows[two], strict=True)]
            print(
                f"wall-time ratio 2 ranks / {base}: median {statistics.median(ratios):.2f} "
                f"(per seed {', '.join(f'{x:.2f}' for x in ratios)})"
            )


if __name__ == "__main__":
    main()
