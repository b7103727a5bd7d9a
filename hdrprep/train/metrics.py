"""Validation metrics and the display tonemap, on linear HDR tensors.

``psnr_mulaw`` -- PSNR of mu-law images (mu = 5000, Kalantari & Ramamoorthi
2017 style) after dividing both images by the reference's maximum, so the
tonemapped reference spans [0, 1]; peak 1.

``mu_psnr`` -- the NTIRE 2021 HDR challenge's mu-PSNR. The challenge script
(``psnr_tanh_norm_mu_tonemap``) reads gamma-encoded 16-bit PNGs and first
linearises them with ``x ** 2.24``; then, with n = the 99th percentile of the
linear reference,

    mu_psnr = PSNR_peak1( T(tanh(H_hat / n)), T(tanh(H / n)) ),  T(x) = log(1 + 5000 x) / log(1 + 5000)

Our images are already linear, so ``encoding_gamma`` defaults to 1.0; pass
2.24 for images stored the challenge's way. Both metrics are per image and
then averaged over the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["mu_law", "psnr", "psnr_mulaw", "mu_psnr", "tonemap_preview"]

NTIRE_MU = 5000.0
NTIRE_PERCENTILE = 99.0


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of (B, ...) tensors; inf where they are equal."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(peak ** 2 / mse)


def mu_law(x: torch.Tensor, mu: float) -> torch.Tensor:
    """T(x) = log(1 + mu max(x, 0)) / log(1 + mu); maps [0, 1] onto [0, 1] (the loss uses it too)."""
    return torch.log1p(mu * x.clamp(min=0)) / math.log1p(mu)


def psnr_mulaw(pred: torch.Tensor, ref: torch.Tensor, mu: float = NTIRE_MU) -> torch.Tensor:
    """PSNR (dB, per image) of mu-law images of pred and ref, both divided by max(ref). (B, 3, H, W) linear."""
    scale = ref.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
    return psnr(mu_law((pred / scale).clamp(0, 1), mu), mu_law((ref / scale).clamp(0, 1), mu))


def mu_psnr(pred: torch.Tensor, ref: torch.Tensor, encoding_gamma: float = 1.0,
            percentile: float = NTIRE_PERCENTILE, mu: float = NTIRE_MU) -> torch.Tensor:
    """NTIRE mu-PSNR (dB, per image); see the module docstring for the formula."""
    pred = pred.double().clamp(min=0) ** encoding_gamma
    ref = ref.double().clamp(min=0) ** encoding_gamma
    # np.percentile (linear interpolation) on each reference, as the challenge script does
    norm = torch.tensor([np.percentile(r.cpu().numpy(), percentile) for r in ref], dtype=torch.float64,
                        device=ref.device).clamp(min=1e-12).view(-1, *[1] * (ref.ndim - 1))
    return psnr(mu_law(torch.tanh(pred / norm), mu), mu_law(torch.tanh(ref / norm), mu))


def tonemap_preview(hdr: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """8-bit display image (H, W, 3) RGB of one linear HDR image (3, H, W).

    tanh-normalised mu-law (as in mu_psnr) with the reference's 99th percentile,
    so prediction and target of a pair share one scale.
    """
    norm = max(float(np.percentile(ref.float().cpu().numpy(), NTIRE_PERCENTILE)), 1e-12)
    x = mu_law(torch.tanh(hdr.float().clamp(min=0) / norm), NTIRE_MU)
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
