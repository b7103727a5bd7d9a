"""The masked U-Net of Santos, Ren and Kalantari (SIGGRAPH 2020).

Every convolution masks its input features and carries the mask forward
(Santos Eq. 2-4)::

    Z_l = X_l * M_l
    X_{l+1} = phi(W_l conv Z_l + b_l)
    M_{l+1} = (|W_l| / (||W_l||_1 + 1e-6)) conv M_l

where ||W_l||_1 is the sum of |W_l| over one output filter (input channels and
taps), as in the released code (``mask_update_conv(mask) / (norm + 1e-6)`` with
``norm`` summed per output channel). The mask update is not learned: no
gradient flows through it.

Layout (Santos Fig. 6 and the released ``SoftConvNotLearnedMaskUNet``): an
encoder of ``depth`` stride-2 convolutions with kernels 7, 5, 5, 3, 3, ... and
widths w, 2w, 4w, 8w, 8w, ... (w = 64, depth = 7 in the paper), leaky ReLU
(slope 0.2); a decoder that upsamples by nearest neighbour, concatenates the
matching encoder features (skip connection) and applies a 3x3 convolution with
ReLU, except the last one, which is linear and returns 3 channels. As in the
released code the skip features enter the decoder with mask 1: the decoder's
last layer thus sees the raw input, the only place where the network can tell
a saturated pixel from a dark one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hdrprep.errors import ConfigError

__all__ = ["MaskedConv2d", "MaskedUNet", "reconstruct", "GAMMA"]

GAMMA = 2.0  # Santos Eq. 1: T^gamma brings the LDR to linear in the well-exposed part
EPS = 1e-6


class MaskedConv2d(nn.Module):
    """Convolution with feature masking and a non-learned mask update.

    Parameters
    ----------
    in_ch, out_ch, kernel, stride : int
        As for ``nn.Conv2d``; padding is ``kernel // 2``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, mask: (B, C_in, H, W), mask in [0, 1] -> features and mask, (B, C_out, H', W')."""
        out = self.conv(x * mask)
        with torch.no_grad():
            w = self.conv.weight.detach().abs()
            w = w / (w.sum(dim=(1, 2, 3), keepdim=True) + EPS)
            new_mask = F.conv2d(mask.to(w.dtype), w, None, self.conv.stride, self.conv.padding)
        return out, new_mask.to(out.dtype)


class MaskedUNet(nn.Module):
    """Santos et al. 2020 masked U-Net; returns Y_hat, the HDR in log space.

    Parameters
    ----------
    width : int
        Channels of the first encoder layer (paper: 64).
    depth : int
        Number of stride-2 encoder layers (paper: 7); inputs are padded to a
        multiple of ``2**depth`` and the output cropped back.
    seed : int
        Seed of the Xavier-normal initialisation (biases start at 0).
    """

    def __init__(self, width: int = 64, depth: int = 7, seed: int = 0):
        super().__init__()
        if width < 1 or not 1 <= depth <= 10:
            raise ConfigError(f"invalid model size width={width}, depth={depth}: use width >= 1 and depth in 1..10 "
                              "(paper: width 64, depth 7)")
        self.width, self.depth = width, depth
        chans = [3] + [width * min(2 ** i, 8) for i in range(depth)]
        kernels = [7, 5, 5] + [3] * max(0, depth - 3)
        self.enc = nn.ModuleList(MaskedConv2d(chans[i], chans[i + 1], kernels[i], 2) for i in range(depth))
        # dec[i] maps (upsampled level i+1 features, skip features of level i) to level i's width
        self.dec = nn.ModuleList(MaskedConv2d(chans[i + 1] + chans[i], chans[i], 3, 1) for i in range(depth))
        gen = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight, generator=gen)
                nn.init.zeros_(m.bias)

    @property
    def stride(self) -> int:
        return 2 ** self.depth

    def forward(self, ldr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ldr, mask: (B, 3, H, W) in [0, 1], any H, W -> Y_hat (B, 3, H, W), log(H + 1) scale."""
        if ldr.ndim != 4 or ldr.shape[1] != 3 or mask.shape != ldr.shape:
            raise ConfigError(f"model input must be (B, 3, H, W) LDR and mask of the same shape, "
                              f"got {tuple(ldr.shape)} and {tuple(mask.shape)}")
        h, w = ldr.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        if ph or pw:
            ldr = F.pad(ldr, (0, pw, 0, ph), mode="replicate")
            mask = F.pad(mask, (0, pw, 0, ph), mode="replicate")
        feats, masks = [ldr], [mask]
        x, m = ldr, mask
        for conv in self.enc:
            x, m = conv(x, m)
            x = F.leaky_relu(x, 0.2)
            feats.append(x)
            masks.append(m)
        for i in reversed(range(self.depth)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            m = F.interpolate(m, scale_factor=2, mode="nearest")
            x = torch.cat([x, feats[i]], dim=1)
            m = torch.cat([m, torch.ones_like(masks[i])], dim=1)
            x, m = self.dec[i](x, m)
            if i > 0:
                x = F.relu(x)
        return x[..., :h, :w]


def reconstruct(ldr: torch.Tensor, mask: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """Santos Eq. 1: H_hat = M * T^2 + (1 - M) * (exp(Y_hat) - 1).

    All (B, 3, H, W); returns linear HDR in the camera scale (1.0 = clipping point).
    """
    return mask * ldr.pow(GAMMA) + (1.0 - mask) * torch.expm1(y_hat)
