"""The retrained challenger from the champion's weights (``RetrainSpec(mode="warm_start")``).

The pipeline retrain (:mod:`closedloop.adapt.retrain`, ``mode="pipeline"``) reruns the champion's
whole config with the production samples added to train: a new search, a new final fit and a new
network, about two minutes per adaptation on a 2-core CPU, and a different network each time (on the
bench's corruptions it ranked worse than the champion as often as better, docs/results/shift_recovery.txt).
The warm start keeps what the champion's search chose (architecture, preprocessing) and continues from
its weights:

- ``epochs`` passes over the champion's own training split with the production fit samples added,
  each counted ``weight`` times (the declared weight: the same meaning as in the pipeline retrain),
  seeded batches, Adam at ``lr``;
- BatchNorm statistics and dropout frozen (eval mode), as in the fine-tune: the training split is the
  champion's, so its statistics are still the right ones for it, and a few dozen production images
  must not re-estimate them;
- the whole training split in every epoch (not a replayed sample of it, as the fine-tune does): the
  production samples shift the network, the training split keeps it where the champion was trained
  and tested (the non-inferiority part of the promotion rule checks it).

Its threshold is set like the pipeline retrain's, on calibration labels it never trained on
(:func:`closedloop.adapt.retrain.retrain_challenger`). Seconds on a GPU, tens of seconds on a CPU
(the network trains on CUDA when there is one; the result is moved back to the CPU).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from closedloop.stats.errors import StatsError


def warm_retrain(
    model: Any,
    train: tuple[np.ndarray, np.ndarray],
    added: tuple[np.ndarray, np.ndarray],
    *,
    weight: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> tuple[Any, str]:
    """(the network trained further from the champion's weights as a
    :class:`~closedloop.models.trained.TrainedModel` with temperature 1 and no threshold yet, the
    device it trained on): module docstring. ``train``: the champion's training split;
    ``added``: the production samples added ``weight`` times each."""
    import torch

    from closedloop.models.loop import fit_epochs
    from closedloop.models.trained import TrainedModel, raw_array

    head = getattr(model.network, "head", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise StatsError("the warm-start retrain needs a binary network with a linear 'head'")
    X_tr, y_tr = np.asarray(train[0]), np.asarray(train[1]).reshape(-1).astype(int)
    X_add, y_add = np.asarray(added[0]), np.asarray(added[1]).reshape(-1).astype(int)
    X = np.concatenate([X_tr, np.repeat(X_add, weight, axis=0)])
    y = np.concatenate([y_tr, np.repeat(y_add, weight)])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = copy.deepcopy(model.network)
    with torch.no_grad():  # the champion's temperature folded into its head: the start is the champion
        T = float(model.temperature)
        net.head.weight.div_(T)
        if net.head.bias is not None:
            net.head.bias.div_(T)
    tuned = TrainedModel(
        spec=model.spec, network=net, preprocessing=model.preprocessing, problem_type=model.problem_type,
        n_outputs=model.n_outputs, label_names=model.label_names, temperature=1.0, threshold=None,
        info={**model.info, "adapted_from": model.info.get("run_id"), "adaptation": "retrain(warm_start)"},
    )  # fmt: skip
    module = tuned.raw_module().to(device)
    module.eval()  # BatchNorm statistics and dropout frozen (module docstring)
    for p in module.parameters():
        p.requires_grad_(True)
    xs = torch.from_numpy(np.ascontiguousarray(raw_array(X))).to(device)
    ys = torch.from_numpy(y.astype(np.float32)).to(device)
    opt = torch.optim.Adam([p for p in net.parameters()], lr=lr)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def batch_loss(bi: Any) -> Any:
        bi = bi.to(device)
        return bce(module(xs[bi]).reshape(-1), ys[bi])

    fit_epochs(
        len(y), epochs=epochs, batch_size=batch_size, optimizer=opt, batch_loss=batch_loss,
        generator=torch.Generator().manual_seed(int(seed)),
    )  # fmt: skip
    for p in module.parameters():
        p.requires_grad_(False)
    module.to("cpu")
    net.eval()
    return tuned, device
