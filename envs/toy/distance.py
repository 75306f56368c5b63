"""Distances between two sample sets, on CPU or GPU tensors alike.

Sliced Wasserstein-2: the root mean, over random unit directions, of the squared 1D Wasserstein-2
distance between the projected samples (sorted projections matched by quantile).
MMD: the biased (V-statistic) estimate with a sum of Gaussian kernels over fixed bandwidths,
so it is never negative and its floor is a positive number like the SWD's.
"""

from __future__ import annotations

import numpy as np
import torch

MMD_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0)


def _tensor(x: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.to(device=device or t.device, dtype=torch.float64)


def sliced_wasserstein(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, n_projections: int = 256, seed: int = 0) -> float:
    x = _tensor(x)
    y = _tensor(y, x.device)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = _sorted_columns(x @ theta), _sorted_columns(y @ theta)
    if px.shape[0] != py.shape[0]:
        k = max(px.shape[0], py.shape[0])
        q = (torch.arange(k, dtype=torch.float64, device=x.device) + 0.5) / k
        px, py = _quantiles(px, q), _quantiles(py, q)
    return float(((px - py) ** 2).mean().sqrt())


def _sorted_columns(p: torch.Tensor) -> torch.Tensor:
    """Each column sorted, in p's layout: sorted as contiguous rows (torch sorts a strided dim 0 about 2x slower;
    numpy's sort on CPU is faster still), the same values either way."""
    rows = p.detach().T.contiguous()
    if rows.device.type == "cpu":
        return torch.from_numpy(np.sort(rows.numpy(), axis=1)).T.contiguous()
    return rows.sort(dim=1).values.T.contiguous()


def _quantiles(sorted_cols: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Empirical quantile function of each sorted column at levels q (linear interpolation)."""
    n = sorted_cols.shape[0]
    pos = (q * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo)[:, None]
    return sorted_cols[lo] * (1 - w) + sorted_cols[hi] * w


def mmd_rbf(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, bandwidths: tuple[float, ...] = MMD_BANDWIDTHS, chunk: int = 2048) -> float:
    # kernels in float32 (four times faster), sums accumulated in float64
    x = _tensor(x).float()
    y = _tensor(y, x.device).float()

    def mean_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64, device=a.device)
        for i in range(0, a.shape[0], chunk):
            d2 = torch.cdist(a[i : i + chunk], b).pow(2)
            total += sum(torch.exp(-d2 / (2 * s * s)).sum(dtype=torch.float64) for s in bandwidths)
        return total / (a.shape[0] * b.shape[0])

    mmd2 = mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)
    return float(mmd2.clamp(min=0).sqrt())
