"""Training throughput (images/s) of the engine against (a) a plain PyTorch loop over a DataLoader with
per-sample torchvision transforms (the MedMNIST-example way) and (b) the same in-memory batched loop
written by hand without the framework. Same model (small_cnn width 16), data (PneumoniaMNIST-28 train,
4,708 images), batch size (128), optimizer (AdamW) and augmentation (affine: rotate 10 deg, shift 10%,
scale 10%, horizontal flip, brightness/contrast 0.1). The three are interleaved, repeated, median taken.

Run: .venv/bin/python benchmarks/bench_train_speed.py [--epochs-per-rep 1] [--reps 3]
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


def run_dataloader(images: np.ndarray, labels: np.ndarray, mean: float, std: float, epochs: int) -> float:
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
    for _ in range(epochs):
        for xb, yb in dl:
            loss = F.binary_cross_entropy_with_logits(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(xb)
    return n / (time.perf_counter() - t0)


def run_by_hand(x: torch.Tensor, y: torch.Tensor, mean: float, std: float, epochs: int) -> float:
    net = model()
    opt = torch.optim.AdamW(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    net.train()
    steps = len(x) // BS
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
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


def run_engine(tr, pre: Preprocessing, epochs: int) -> float:
    eng = Engine("binary", 2, mean=pre.mean, std=pre.std)
    hp = HParams(epochs=epochs, batch_size=BS, lr=LR, augment=AUG, grad_clip=None)
    net = model()
    t0 = time.perf_counter()
    res = eng.fit(net, tr, None, hp, seed=0, restore_best=False)
    steps = len(tr) // BS
    return steps * BS * epochs / (time.perf_counter() - t0 - 0.0) if res.history else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs-per-rep", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
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
    run_engine(tr, pre, 1)  # warm-up (first-call allocations) for all three paths share the process
    for _ in range(args.reps):
        res["dataloader"].append(run_dataloader(images, labels, mean, std, args.epochs_per_rep))
        res["by_hand"].append(run_by_hand(x, y, mean, std, args.epochs_per_rep))
        res["engine"].append(run_engine(tr, pre, args.epochs_per_rep))
    med = {k: statistics.median(v) for k, v in res.items()}
    print(
        f"PneumoniaMNIST-28 train ({len(images)} images), small_cnn width 16, batch {BS}, same augmentation, "
        f"{args.reps} interleaved reps x {args.epochs_per_rep} epoch(s), torch threads {args.threads}"
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
