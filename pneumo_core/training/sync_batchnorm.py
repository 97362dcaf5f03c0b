"""Batch norm synchronised across CPU processes (gloo).

torch's ``nn.SyncBatchNorm`` refuses CPU tensors, and plain DDP on CPU normalises each rank's
slice with its own statistics, so N processes would train a different model than one. This
module computes batch statistics over the global batch with the differentiable
``torch.distributed.nn.functional.all_reduce``: forward and backward then match a single
process holding the whole batch.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce

# Its suggested replacement (_functional_collectives) is private and not differentiable on every
# release; the public autograd-aware op is the right tool until then, so silence only this notice.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated",
                        category=FutureWarning)


class CpuSyncBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        n_local = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=torch.float32)
        n = all_reduce(n_local.clone())
        xf = x.float()
        mean = all_reduce(xf.sum(dim=(0, 2, 3))) / n
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        y = centred / torch.sqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_to_cpu_sync_bn(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by :class:`CpuSyncBatchNorm2d`, keeping weights."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CpuSyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_to_cpu_sync_bn(child)
    return module
