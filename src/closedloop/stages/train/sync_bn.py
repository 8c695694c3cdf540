"""Synchronized BatchNorm for data-parallel training: torch's :class:`~torch.nn.SyncBatchNorm` on GPU
and :class:`CpuSyncBatchNorm` on CPU (gloo), used by the ``torchrun`` entry point
(:mod:`.distributed`) and the stage's own ranks (:mod:`.data_parallel`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over the process group; the gradient of every rank's input is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _AllReduceSum.apply(grad, ctx.group), None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Synchronized BatchNorm for CPU tensors (gloo), where torch's :class:`~torch.nn.SyncBatchNorm`
    refuses CPU inputs and DDP refuses CPU modules holding it. In training, the per-channel count, sum
    and squared deviations are all-reduced (autograd flows through the collectives, as in torch's GPU
    kernel) and the running statistics get the global batch's mean and unbiased variance. In
    evaluation, or with one process, it is plain BatchNorm. Same state as BatchNorm."""

    process_group: Any = None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        group = self.process_group or (dist.group.WORLD if dist.is_available() else None)
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
        ):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.size(1)
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        local = torch.cat([input.sum(dims), input.new_full((1,), input.numel() // c)])
        tot = _AllReduceSum.apply(local, group)
        count = tot[c]
        mean = tot[:c] / count
        var = _AllReduceSum.apply(((input - mean.view(shape)) ** 2).sum(dims), group) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_((var * count / (count - 1).clamp_min(1)).detach(), m)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(net: nn.Module, device: str) -> tuple[nn.Module, int]:
    """Convert every BatchNorm layer of ``net`` to synchronized BatchNorm before DDP wraps it
    (:class:`torch.nn.SyncBatchNorm` on GPU, :class:`CpuSyncBatchNorm` on CPU). Returns the network and
    the number of converted layers (0: no BatchNorm, nothing changed)."""
    n = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    if n == 0:
        return net, 0
    net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if torch.device(device).type == "cpu":
        for m in net.modules():
            if type(m) is nn.SyncBatchNorm:
                m.__class__ = CpuSyncBatchNorm  # both are _BatchNorm with the same state
    return net, n
