"""Training throughput (images/s) of the engine against (a) a plain PyTorch loop over a DataLoader with
per-sample torchvision transforms (the MedMNIST-example way) and (b) the same in-memory batched loop
written by hand without the framework. Same model (small_cnn width 16), data (PneumoniaMNIST-28 train,
4,708 images), batch size (128), optimizer (AdamW) and augmentation (affine: rotate 10 deg, shift 10%,
scale 10%, horizontal flip, brightness/contrast 0.1). The three run in short interleaved blocks (median over blocks).

Run: .venv/bin/python benchmarks/bench_train_speed.py [--steps 12] [--reps 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from closedloop.models.registry import build_network
from closedloop.models.trained import ModelSpec, Preprocessing
from closedloop.stages.train.augment import AugmentParams, augment_images
from closedloop.stages.train.engine import Engine, HParams, make_tensor_set

NPZ = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
BS, LR = 128, 3e-3
AUG = AugmentParams(strength=1.0, shift=0.1, hflip=True, rotate=10.0, scale=0.1, brightness=0.1, contrast=0.1)


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(ModelSpec(family="small_cnn", params={"width": 16}), [28, 28, 1], 1)


def run_dataloader(images: np.ndarray, labels: np.ndarray, mean: float, std: float, steps: int) -> float:
    from PIL import Image
    from torchvision.transforms import v2

    tf = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.ColorJitter(brightness=0.1, contrast=0.1),
            v2.Normalize([mean], [std]),
        ]
    )

    class DS(torch.utils.data.Dataset):  # the MedMNIST dataset pattern: PIL image + transform per sample
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return tf(Image.fromarray(images[i], mode="L")), torch.tensor([float(labels[i])])

    dl = torch.utils.data.DataLoader(DS(), batch_size=BS, shuffle=True, drop_last=True)
    net = model()
    opt = torch.optim.AdamW(net.parameters(), lr=LR)
    net.train()
    n, t0 = 0, time.perf_counter()
    for b, (xb, yb) in enumerate(dl):
        if b == steps:
            break
        loss = F.binary_cross_entropy_with_logits(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(xb)
    return n / (time.perf_counter() - t0)


def run_by_hand(x: torch.Tensor, y: torch.Tensor, mean: float, std: float, steps: int) -> float:
    net = model()
    opt = torch.optim.AdamW(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    net.train()
    n, t0 = 0, time.perf_counter()
    perm = torch.randperm(len(x), generator=g)
    for b in range(steps):
        idx = perm[b * BS : (b + 1) * BS]
        xb = augment_images(x[idx].float().div_(255.0), AUG, g)
        xb = (xb - mean) / std
        loss = F.binary_cross_entropy_with_logits(net(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(idx)
    return n / (time.perf_counter() - t0)


def run_engine(tr, pre: Preprocessing, steps: int) -> float:
    eng = Engine("binary", 2, mean=pre.mean, std=pre.std)
    hp = HParams(epochs=1, batch_size=BS, lr=LR, augment=AUG, grad_clip=None)
    net = model()
    t0 = time.perf_counter()
    eng.fit(net, tr, None, hp, seed=0, restore_best=False, max_steps=steps)
    return steps * BS / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12, help="batches per block")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    z = np.load(NPZ)
    images, labels = z["train_images"], z["train_labels"].reshape(-1)
    mean, std = float(images.mean() / 255.0), float(images.std() / 255.0)
    pre = Preprocessing(input_kind="images", input_shape=[28, 28, 1], mean=[mean], std=[std])
    tr = make_tensor_set(images[..., None], labels, pre, "binary")
    x, y = tr.x, tr.y
    res: dict[str, list[float]] = {"dataloader": [], "by_hand": [], "engine": []}
    run_engine(tr, pre, 3)  # warm-up: first-call allocations
    run_by_hand(x, y, mean, std, 3)
    for r in range(args.reps):
        # short blocks, interleaved with a rotating order, so the load of a shared machine hits all three alike
        order = [
            ("dataloader", lambda: run_dataloader(images, labels, mean, std, args.steps)),
            ("by_hand", lambda: run_by_hand(x, y, mean, std, args.steps)),
            ("engine", lambda: run_engine(tr, pre, args.steps)),
        ]
        for name, fn in order[r % 3 :] + order[: r % 3]:
            res[name].append(fn())
    med = {k: statistics.median(v) for k, v in res.items()}
    print(
        f"PneumoniaMNIST-28 train ({len(images)} images), small_cnn width 16, batch {BS}, same augmentation, "
        f"{args.reps} interleaved blocks of {args.steps} batches, torch threads {args.threads}"
    )
    for k, v in res.items():
        print(f"  {k:<11} median {med[k]:8.0f} img/s   (reps: {', '.join(f'{r:.0f}' for r in v)})")
    print(
        f"engine vs DataLoader + per-sample transforms: {med['engine'] / med['dataloader']:.2f}x faster (target >= 2x)"
    )
    overhead = 1 - med["engine"] / med["by_hand"]
    print(
        f"framework overhead vs the same loop by hand: {overhead * 100:+.1f}% (target <= 5%; negative = engine faster)"
    )


if __name__ == "__main__":
    main()
