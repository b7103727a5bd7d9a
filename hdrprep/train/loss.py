"""Santos et al. 2020 loss: masked log-L1 reconstruction plus VGG-19 perceptual and style terms.

    L = 6.0 L_r + 1.0 (1.0 L_vgg + 120 L_style)
    L_r     = mean |(1 - M) (Y_hat - log(H + 1))|
    H_tilde = M H + (1 - M) H_hat
    L_vgg   = sum_l mean |phi_l(T(H_tilde)) - phi_l(T(H))|
    L_style = sum_l mean |G_l(T(H_tilde)) - G_l(T(H))|,  G = phi^T phi / (C H W)

phi_l are VGG-19 features after pool1, pool2 and pool3 (torchvision indices 4,
9, 18), T is the mu-law compressor with mu = 500. ``||.||_1`` is taken as the
mean absolute value, as in the released code (``nn.L1Loss``). Unlike the
released code, gradients flow through the perceptual terms.

Range: Eq. 10 maps [0, 1] to [0, 1], so both images are divided by the per-image
maximum of the reference H (a constant, no gradient) after clipping to
[0, ``clip_max`` = 50] -- the released code's handling of HDR values above 1;
without it the VGG input would exceed its training range by far. The mu-law
images are normalised with the ImageNet mean and std that VGG was trained with.

:class:`InpaintingLoss` is the loss of the inpainting pre-training (Liu et al. 2018,
Sec. 3.3, with the weights of Santos' released code); see its docstring.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hdrprep.errors import ConfigError
from hdrprep.train.metrics import mu_law

__all__ = ["VGG19_LAYERS", "POOL_INDICES", "vgg19_features", "load_vgg19", "gram", "SantosLoss",
           "InpaintingLoss", "dilated_holes", "masked_tv", "VGG_HELP"]

# torchvision's vgg19 "E" configuration: numbers are 3x3 conv widths, "M" a 2x2 max-pool
VGG19_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M"]
POOL_INDICES = (4, 9, 18)  # pool1, pool2, pool3 in torchvision's vgg19().features
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VGG_HELP = (
    "the perceptual loss needs ImageNet VGG-19 weights in torchvision's state-dict layout, and they cannot be "
    "downloaded here. On a machine with internet run: python -c \"import torch, torchvision; "
    "torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict(), 'vgg19.pth')\" "
    "and pass --vgg-weights vgg19.pth (or train without the perceptual terms with --no-perceptual)"
)


def vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features`` with the same layer order and state-dict keys (``N.weight``)."""
    layers: list[nn.Module] = []
    c = 3
    for v in VGG19_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers)


def load_vgg19(path: str | os.PathLike | None) -> nn.Sequential:
    """Load VGG-19 ``features`` from a local torchvision state dict, cut after pool3, frozen.

    Parameters
    ----------
    path : file saved with ``torch.save(vgg19(...).state_dict())`` (keys ``features.N.*``;
        ``classifier.*`` keys are ignored) or of the ``features`` module alone (keys ``N.*``).

    Raises
    ------
    ConfigError
        No path, missing file, or a state dict that does not fit VGG-19.
    """
    if path is None:
        raise ConfigError(f"no VGG-19 weights: {VGG_HELP}")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--vgg-weights {path}: file not found; {VGG_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise ConfigError(f"--vgg-weights {path}: not a torch state dict ({exc}); {VGG_HELP}") from exc
    if not isinstance(state, dict):
        raise ConfigError(f"--vgg-weights {path}: expected a state dict, got {type(state).__name__}; {VGG_HELP}")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    net = vgg19_features()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"--vgg-weights {path}: does not fit torchvision's VGG-19 ({exc}); {VGG_HELP}") from exc
    net = net[: POOL_INDICES[-1] + 1]
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix (B, C, C) of features (B, C, H, W), normalised by C*H*W (Santos Eq. 12)."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


class _VGGLoss(nn.Module):
    """A loss with optional VGG-19 pool1-3 features of images in [0, 1] (ImageNet-normalised inside)."""

    def __init__(self, vgg: nn.Module | None):
        super().__init__()
        self.vgg = vgg
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VGG features after pool1, pool2, pool3 of an image (B, 3, H, W) in [0, 1]."""
        out = []
        x = (x - self.mean) / self.std
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in POOL_INDICES:
                out.append(x)
        return out


class SantosLoss(_VGGLoss):
    """The training loss; ``vgg=None`` drops the perceptual terms (``--no-perceptual``).

    Forward takes Y_hat, T, M, H, all (B, 3, H, W) float32, and returns a dict of
    scalar tensors: ``total``, ``l_r``, ``l_vgg``, ``l_style`` (the last two 0 without VGG).
    """

    def __init__(self, vgg: nn.Module | None, lambda_r: float = 6.0, lambda_p: float = 1.0,
                 lambda_vgg: float = 1.0, lambda_style: float = 120.0, mu: float = 500.0, clip_max: float = 50.0):
        super().__init__(vgg)
        self.lambda_r, self.lambda_p, self.lambda_vgg, self.lambda_style = lambda_r, lambda_p, lambda_vgg, lambda_style
        self.mu, self.clip_max = mu, clip_max

    def forward(self, y_hat, ldr, mask, hdr) -> dict[str, torch.Tensor]:
        from hdrprep.train.model import reconstruct

        hole = 1.0 - mask
        l_r = (hole * (y_hat - torch.log1p(hdr))).abs().mean()
        zero = y_hat.new_zeros(())
        if self.vgg is None:
            return {"total": self.lambda_r * l_r, "l_r": l_r, "l_vgg": zero, "l_style": zero}
        h_hat = reconstruct(ldr, mask, y_hat)
        h_tilde = mask * hdr + hole * h_hat
        ref = hdr.clamp(0, self.clip_max)
        scale = ref.flatten(1).amax(dim=1).clamp(min=1e-6).view(-1, 1, 1, 1)
        f_out = self.features(mu_law(h_tilde.clamp(max=self.clip_max) / scale, self.mu))
        f_ref = self.features(mu_law(ref / scale, self.mu))
        l_vgg = sum(F.l1_loss(a, b) for a, b in zip(f_out, f_ref))
        l_style = sum(F.l1_loss(gram(a), gram(b)) for a, b in zip(f_out, f_ref))
        total = self.lambda_r * l_r + self.lambda_p * (self.lambda_vgg * l_vgg + self.lambda_style * l_style)
        return {"total": total, "l_r": l_r, "l_vgg": l_vgg, "l_style": l_style}


def dilated_holes(mask: torch.Tensor) -> torch.Tensor:
    """P of Liu et al. 2018 (Sec. 3.3, L_tv): the hole region (mask 0) dilated by one pixel (3x3, diagonals included).

    mask : (B, C, H, W) binary float, 1 = valid -> float (B, C, H, W), 1 inside P.
    """
    return F.max_pool2d(1.0 - mask, 3, stride=1, padding=1).gt(0).to(mask.dtype)


def masked_tv(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Liu et al. 2018 (Sec. 3.3, L_tv): total variation of ``image`` over neighbours that both lie in ``region``.

    sum over (i, j), (i, j+1) in P of |I(i, j+1) - I(i, j)| plus the same vertically,
    divided by N = the number of elements of ``image`` (B C H W). Liu et al.'s code and
    Santos' take the differences of ``P * I`` instead, which also penalises the value
    of every pixel on the rim of P; the paper's pairs-inside-P form is used here.
    """
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs() * (region[..., :, 1:] * region[..., :, :-1])
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs() * (region[..., 1:, :] * region[..., :-1, :])
    return (dx.sum() + dy.sum()) / image.numel()


class InpaintingLoss(_VGGLoss):
    """The loss of Liu et al. 2018 (Sec. 3.3) for the inpainting pre-training; ``vgg=None`` drops perceptual and style.

    With I_out the network's output, I_gt the photograph, M the binary mask (1 = valid)
    and I_comp = M I_gt + (1 - M) I_out (the output with the known pixels put back)::

        L = 1 L_valid + 6 L_hole + 0.05 L_perceptual + 120 L_style + 0.1 L_tv
        L_valid = mean |M (I_out - I_gt)|,  L_hole = mean |(1 - M)(I_out - I_gt)|
        L_perceptual = sum_p mean |phi_p(I_out) - phi_p(I_gt)| + mean |phi_p(I_comp) - phi_p(I_gt)|
        L_style = sum_p mean |G_p(I_out) - G_p(I_gt)| + mean |G_p(I_comp) - G_p(I_gt)|
        L_tv = masked_tv(I_comp, P),  P = the holes dilated by one pixel

    "mean" divides by the element count (B C H W for images, B C^2 for Gram matrices
    with G = phi^T phi / (C H W)): Liu's 1/N_{I_gt}, 1/N_{phi} and K_p normalisations,
    and ``nn.L1Loss`` in the released code. The weights are those of Santos' released
    ``InpaintingLoss`` (valid 1, hole 6, tv 0.1, prc 0.05, style 120), the same as
    Liu's. Differences from that code: phi_p are VGG-19 (not VGG-16) features after
    pool1-3, so that one weights file serves both stages; images are in [0, 1] and
    ImageNet-normalised only on the way into VGG (the released code normalises the
    data itself and takes the L1 terms in that space); TV as in :func:`masked_tv`.

    Forward takes ``out``, ``mask``, ``gt``, all (B, 3, H, W) float32, and returns a dict
    of scalar tensors: ``total``, ``l_valid``, ``l_hole``, ``l_tv``, ``l_perceptual``,
    ``l_style`` (the last two 0 without VGG).
    """

    def __init__(self, vgg: nn.Module | None, lambda_valid: float = 1.0, lambda_hole: float = 6.0,
                 lambda_tv: float = 0.1, lambda_perceptual: float = 0.05, lambda_style: float = 120.0):
        super().__init__(vgg)
        self.weights = {"l_valid": lambda_valid, "l_hole": lambda_hole, "l_tv": lambda_tv,
                        "l_perceptual": lambda_perceptual, "l_style": lambda_style}

    def forward(self, out: torch.Tensor, mask: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        hole = 1.0 - mask
        comp = mask * gt + hole * out
        terms = {"l_valid": (mask * (out - gt)).abs().mean(), "l_hole": (hole * (out - gt)).abs().mean(),
                 "l_tv": masked_tv(comp, dilated_holes(mask))}
        zero = out.new_zeros(())
        terms["l_perceptual"], terms["l_style"] = zero, zero
        if self.vgg is not None:
            # one VGG pass over the three images stacked
            feats = self.features(torch.cat([out, comp, gt]))
            b = out.shape[0]
            for f in feats:
                f_out, f_comp, f_gt = f[:b], f[b:2 * b], f[2 * b:]
                g_out, g_comp, g_gt = gram(f_out), gram(f_comp), gram(f_gt)
                terms["l_perceptual"] = terms["l_perceptual"] + F.l1_loss(f_out, f_gt) + F.l1_loss(f_comp, f_gt)
                terms["l_style"] = terms["l_style"] + F.l1_loss(g_out, g_gt) + F.l1_loss(g_comp, g_gt)
        terms["total"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms
