"""Masked U-Net, loss terms and metrics against literal implementations."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from test_train_store import one_torch_thread  # noqa: E402,F401


def literal_masked_conv(x, m, w, b, stride, pad):
    """Santos Eq. 2-4 with explicit loops, float64: returns (W * (X M) + b, |W|/(||W||_1 + 1e-6) * M)."""
    x, m, w, b = (t.detach().double().numpy() for t in (x, m, w, b))
    _, cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    z = np.pad(x * m, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    mp = np.pad(m, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], cout, ho, wo))
    mout = np.zeros_like(out)
    for n in range(x.shape[0]):
        for o in range(cout):
            norm = np.abs(w[o]).sum() + 1e-6
            for yy in range(ho):
                for xx in range(wo):
                    win = (slice(None), slice(yy * stride, yy * stride + k), slice(xx * stride, xx * stride + k))
                    out[n, o, yy, xx] = b[o] + (w[o] * z[n][win]).sum()
                    mout[n, o, yy, xx] = (np.abs(w[o]) * mp[n][win]).sum() / norm
    return out, mout


@pytest.mark.parametrize("kernel,stride", [(3, 1), (5, 2), (7, 2)])
def test_masked_conv_matches_literal_loops(kernel, stride):
    from hdrprep.train.model import MaskedConv2d

    gen = torch.Generator().manual_seed(kernel)
    conv = MaskedConv2d(3, 4, kernel, stride)
    with torch.no_grad():
        conv.conv.weight.normal_(generator=gen)
        conv.conv.bias.normal_(generator=gen)
    x = torch.randn(2, 3, 11, 9, generator=gen)
    m = torch.rand(2, 3, 11, 9, generator=gen)
    out, mout = conv(x, m)
    ref_out, ref_m = literal_masked_conv(x, m, conv.conv.weight, conv.conv.bias, stride, kernel // 2)
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mout.numpy(), ref_m, rtol=1e-5, atol=1e-6)
    assert mout.min() >= 0 and mout.max() <= 1 + 1e-6
    assert not mout.requires_grad  # the mask update is not learned


def test_unet_pads_any_size_and_is_masked_at_the_input():
    from hdrprep.train.model import MaskedUNet, reconstruct

    torch.manual_seed(0)
    net = MaskedUNet(width=4, depth=3)
    x, m = torch.rand(2, 3, 37, 50), torch.rand(2, 3, 37, 50)
    y = net(x, m)
    assert y.shape == x.shape
    # the first layer only sees X * M: changing fully masked pixels changes nothing there
    m0 = m.clone()
    m0[:, :, 10:20, 10:20] = 0
    x2 = x.clone()
    x2[:, :, 10:20, 10:20] = 5.0
    f1, _ = net.enc[0](x, m0)
    f2, _ = net.enc[0](x2, m0)
    assert torch.equal(f1, f2)
    # Eq. 1: well exposed pixels are T^2, saturated ones exp(Y_hat) - 1
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    assert torch.allclose(reconstruct(x, ones, y), x ** 2)
    assert torch.allclose(reconstruct(x, zeros, y), torch.exp(y) - 1, atol=1e-6)
    assert net.stride == 8 and MaskedUNet().stride == 128


def test_vgg19_layout_matches_torchvision_keys():
    from hdrprep.train.loss import vgg19_features

    keys = list(vgg19_features().state_dict())
    convs = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]  # torchvision vgg19().features
    assert keys == [f"{i}.{p}" for i in convs for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A randomly initialised VGG-19 saved the torchvision way (features.* plus a classifier key)."""
    from hdrprep.train.loss import vgg19_features

    torch.manual_seed(1)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path


def test_load_vgg19_and_its_errors(vgg_file, tmp_path):
    from hdrprep.errors import ConfigError
    from hdrprep.train.loss import load_vgg19

    net = load_vgg19(vgg_file)
    assert len(net) == 19 and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ConfigError, match=r"vgg19\(weights='IMAGENET1K_V1'\)"):
        load_vgg19(None)
    with pytest.raises(ConfigError, match="file not found"):
        load_vgg19(tmp_path / "nope.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="does not fit"):
        load_vgg19(tmp_path / "bad.pth")


def test_reconstruction_loss_and_helpers_on_hand_made_tensors():
    from hdrprep.train.loss import SantosLoss, gram
    from hdrprep.train.metrics import mu_law

    y = torch.tensor([[[[0.0, 1.0], [2.0, 0.5]]]]).repeat(1, 3, 1, 1)
    h = torch.tensor([[[[0.0, 1.0], [3.0, 0.0]]]]).repeat(1, 3, 1, 1)
    m = torch.tensor([[[[1.0, 0.5], [0.0, 0.25]]]]).repeat(1, 3, 1, 1)
    # |(1-M)(Y - log(H+1))| per pixel: 0, 0.5 |1 - log 2|, |2 - log 4|, 0.75 * 0.5
    expect = (0.5 * abs(1 - math.log(2)) + abs(2 - math.log(4)) + 0.375) / 4
    terms = SantosLoss(None)(y, torch.rand_like(y), m, h)
    assert terms["l_r"].item() == pytest.approx(expect, rel=1e-6)
    assert terms["total"].item() == pytest.approx(6.0 * expect, rel=1e-6)
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])  # B=1, C=2, H=1, W=2
    np.testing.assert_allclose(gram(f)[0].numpy(), np.array([[5.0, 1.0], [1.0, 10.0]]) / 4)
    assert mu_law(torch.tensor([0.0, 1.0, -2.0]), 500).tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert mu_law(torch.tensor([0.1]), 500).item() == pytest.approx(math.log(51) / math.log(501))


def test_perceptual_terms_literal_and_gradients_flow(vgg_file):
    from hdrprep.train.loss import SantosLoss, load_vgg19
    from hdrprep.train.model import reconstruct

    torch.manual_seed(2)
    vgg = load_vgg19(vgg_file)
    loss = SantosLoss(vgg)
    ldr = torch.rand(2, 3, 32, 32)
    hdr = ldr ** 2 * 3
    mask = (torch.rand(2, 1, 32, 32) > 0.3).float().repeat(1, 3, 1, 1)  # binary mask
    # a perfect prediction in the holes gives H_tilde = H: every term is 0
    zero = loss(torch.log1p(hdr), ldr, mask, hdr)
    assert all(zero[k].item() == pytest.approx(0.0, abs=1e-6) for k in ("total", "l_vgg", "l_style"))

    y = (torch.log1p(hdr) + 0.3 * torch.randn_like(hdr)).requires_grad_(True)
    terms = loss(y, ldr, mask, hdr)
    # literal: mu-law of both images after dividing by max(H), ImageNet normalisation, VGG cut at each pool
    h_tilde = mask * hdr + (1 - mask) * reconstruct(ldr, mask, y)
    scale = hdr.flatten(1).amax(1).view(-1, 1, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def tmap(x):
        return (torch.log(1 + 500 * x.clamp(min=0) / scale) / math.log(501) - mean) / std

    l_vgg, l_style = 0.0, 0.0
    for cut in (5, 10, 19):
        a, b = vgg[:cut](tmap(h_tilde)), vgg[:cut](tmap(hdr))
        l_vgg = l_vgg + (a - b).abs().mean()
        ga = torch.einsum("nchw,ndhw->ncd", a, a) / a[0].numel()
        gb = torch.einsum("nchw,ndhw->ncd", b, b) / b[0].numel()
        l_style = l_style + (ga - gb).abs().mean()
    assert terms["l_vgg"].item() == pytest.approx(l_vgg.item(), rel=1e-5)
    assert terms["l_style"].item() == pytest.approx(l_style.item(), rel=1e-4)
    assert terms["total"].item() == pytest.approx(6 * terms["l_r"].item() + l_vgg.item() + 120 * l_style.item(),
                                                  rel=1e-5)
    (grad,) = torch.autograd.grad(terms["l_vgg"] + terms["l_style"], y)
    assert grad[mask == 0].abs().sum() > 0  # perceptual gradients reach Y_hat in the saturated part
    assert grad[mask == 1].abs().sum() == 0  # and nothing in the well exposed part


def ntire_mu_psnr_literal(res_nonlinear, ref_nonlinear):
    """The NTIRE 2021 script, in numpy: linearise with ^2.24, 99th pct of ref, tanh, mu-law 5000, PSNR."""
    ref, res = ref_nonlinear ** 2.24, res_nonlinear ** 2.24
    norm = np.percentile(ref, 99)

    def tm(x):
        return np.log(1 + 5000 * np.tanh(x / norm)) / np.log(1 + 5000)

    return -10 * np.log10(np.mean((tm(ref) - tm(res)) ** 2))


def test_metrics_against_literal_formulas():
    from hdrprep.train.metrics import mu_psnr, psnr, psnr_mulaw

    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 3, (2, 3, 16, 16))
    res = ref * rng.uniform(0.8, 1.2, ref.shape)
    got = mu_psnr(torch.from_numpy(res), torch.from_numpy(ref), encoding_gamma=2.24).numpy()
    np.testing.assert_allclose(got, [ntire_mu_psnr_literal(res[i], ref[i]) for i in range(2)], rtol=1e-10)
    a = torch.zeros(1, 4)
    assert psnr(a, a + 0.1).item() == pytest.approx(20.0)
    assert math.isinf(psnr(a, a).item())
    # psnr_mulaw: both divided by max(ref), mu-law 5000
    t = lambda x: np.log1p(5000 * x / ref[0].max()) / np.log1p(5000)  # noqa: E731
    expect = -10 * np.log10(np.mean((t(np.clip(res[0], 0, ref[0].max())) - t(ref[0])) ** 2))
    assert psnr_mulaw(torch.from_numpy(res), torch.from_numpy(ref))[0].item() == pytest.approx(expect)
