"""UV-space and image-space discriminators (docs/method.md section 4): output and mask shapes, masks as pooled
visibility, circular padding along u, positional encoding, projection conditioning, PatchGAN layout,
and one tiny generator -> discriminator step."""

from __future__ import annotations

import math

import pytest
import torch

from meshinv.models import (
    ConvMeshGenerator, MeshDiscriminator, PatchDiscriminator, TextureDiscriminator, UVDiscriminator,
    positional_encoding,
)


def textured_input(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, 4, T, T) = [texture * alpha, alpha] with a random binary alpha."""
    g = torch.Generator().manual_seed(seed)
    alpha = (torch.rand(batch, 1, size, size, generator=g) > 0.4).float()
    texture = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    return torch.cat([texture * alpha, alpha], dim=1)


def test_texture_discriminator_shapes_and_mask():
    d = TextureDiscriminator(64, n_classes=4).eval()
    x = textured_input(2, 64)
    scores, mask = d(x, torch.tensor([0, 3]))
    assert not d.stride_first and d.total_stride == 8
    assert scores.shape == mask.shape == (2, 1, 8, 8)
    assert torch.allclose(mask, torch.nn.functional.avg_pool2d(x[:, 3:4], 8))
    assert not mask.requires_grad and scores.requires_grad
    # The original's strides: stride-2 first conv at full scale from 512 on, at any scale from 1024.
    assert TextureDiscriminator(512).stride_first and TextureDiscriminator(512).total_stride == 16
    assert not TextureDiscriminator(512, downsample=4).stride_first
    assert TextureDiscriminator(1024, downsample=2).stride_first
    assert TextureDiscriminator(512).conv1.stride == (2, 2) and TextureDiscriminator(256).conv1.stride == (1, 1)
    pooled = TextureDiscriminator(128, downsample=2)
    scores, mask = pooled(x[:1])
    assert scores.shape == mask.shape == (1, 1, 4, 4) and pooled.total_stride == 16
    with pytest.raises(ValueError, match="class_id"):
        d(x)
    with pytest.raises(ValueError, match="expected"):
        d(x[:, :3])


def test_mesh_discriminator_shapes_and_mask():
    d = MeshDiscriminator(n_classes=0).eval()
    x = textured_input(3, 64)
    mesh_map = torch.randn(3, 3, 16, 16)
    scores, mask = d(x, mesh_map)
    assert scores.shape == mask.shape == (3, 1, 4, 4)
    assert torch.allclose(mask, torch.nn.functional.avg_pool2d(x[:, 3:4], 16), atol=1e-6)
    assert "projector.weight" not in d.state_dict()
    with pytest.raises(ValueError, match="multiple"):
        d(x[:, :, :60, :60], mesh_map)
    with pytest.raises(ValueError, match="unconditional"):
        d(x, mesh_map, torch.tensor([0, 1, 2]))


def test_uv_discriminator_set():
    d = UVDiscriminator(64, n_classes=2)
    assert d.num_discriminators == 2 and d.loss_weights == (0.5, 0.5)
    x = textured_input(2, 64)
    scores, masks = d(x, torch.randn(2, 3, 32, 32), torch.tensor([1, 0]))
    assert [s.shape[-1] for s in scores] == [m.shape[-1] for m in masks] == [8, 8]
    # The original's CUB setting: three discriminators at 512 (the third on the 4x pooled texture).
    d512 = UVDiscriminator(512, n_classes=200)
    assert d512.num_discriminators == 3 and d512.loss_weights == pytest.approx((1 / 3,) * 3)
    assert d512.d3.downsample == 4 and d512.d3.total_stride == 32
    assert UVDiscriminator(512, num_discriminators=2).loss_weights == pytest.approx((2 / 3, 1 / 3))
    with pytest.raises(ValueError):
        UVDiscriminator(256, num_discriminators=3)
    keys = d512.state_dict().keys()
    assert {"d1.conv1.weight_orig", "d1.projector.weight", "d2.conv4.weight_u", "d3.conv5.bias"} <= set(keys)
    assert d512.state_dict()["d1.conv1.weight_orig"].shape == (64, 8, 4, 4)  # RGB, alpha, 4 encodings
    assert d512.state_dict()["d2.conv1.weight_orig"].shape == (64, 11, 5, 5)  # + mesh map


def settled(d: torch.nn.Module, *inputs) -> torch.nn.Module:
    """A few train-mode passes let spectral norm's power iteration converge, then eval mode (with
    the random initial u, v the eval-mode weights are scaled by a meaningless sigma)."""
    with torch.no_grad():
        for _ in range(3):
            d.train()(*inputs)
    return d.eval()


def test_padding_wraps_around_u():
    """A change in the first texel column reaches the last output columns (circular padding)."""
    x = textured_input(1, 128)
    x[:, 3] = 1.0
    d = settled(TextureDiscriminator(128), x)
    bumped = x.clone()
    bumped[:, :, 56:72, 0] += 1.0
    with torch.no_grad():
        delta = (d(bumped)[0] - d(x)[0]).abs()[0, 0].amax(dim=0)  # per output column, (16,)
    assert delta[-1] > 1e-4 and delta[0] > 1e-4
    assert delta[6:10].max() == 0  # the far side of the map is outside the receptive field


def test_positional_encoding():
    enc = positional_encoding(8, 8)
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    v_angle, u_angle = rows * math.pi / 8, cols * 2 * math.pi / 8 - math.pi
    expected = torch.stack([v_angle.cos(), v_angle.sin(), u_angle.cos(), u_angle.sin()])
    assert torch.allclose(enc, expected, atol=1e-6)
    assert torch.equal(positional_encoding(8, 4), enc[:, :, 2:6])
    with pytest.raises(ValueError):
        positional_encoding(8, 3)


def test_projection_conditioning():
    d = TextureDiscriminator(32, n_classes=3).eval()
    x = textured_input(2, 32)
    with torch.no_grad():
        a = d(x, torch.tensor([0, 0]))[0]
        b = d(x, torch.tensor([2, 2]))[0]
        assert (a - b).abs().max() > 1e-6
        d.projector.weight.zero_()  # no class term left: the class has no effect
        assert torch.equal(d(x, torch.tensor([0, 0]))[0], d(x, torch.tensor([2, 1]))[0])


def test_patch_discriminator():
    d = PatchDiscriminator()
    assert d(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)]
    # The original's Sequential layout: instance norm has no parameters, every conv has a bias.
    assert [k for k in d.state_dict() if k.endswith("weight")] == [
        "model.0.weight", "model.2.weight", "model.5.weight", "model.8.weight", "model.11.weight"]
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.001
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)


def test_tiny_gan_step():
    """Generator -> UV discriminators: a hinge-style step reaches both networks' parameters."""
    torch.manual_seed(0)
    generator = ConvMeshGenerator(latent_dim=8, n_classes=2, texture_resolution=32, mesh_resolution=8)
    with torch.no_grad():
        generator.conv_mesh.weight.normal_(0, 0.01)  # let gradients pass the zero-initialised head
    discriminator = UVDiscriminator(32, n_classes=2)
    c = torch.tensor([0, 1])
    texture, mesh_map = generator(torch.randn(2, 8), c)
    alpha = textured_input(2, 32)[:, 3:]
    scores, masks = discriminator(torch.cat([texture * alpha, alpha], dim=1), mesh_map, c)
    assert [s.shape[-1] for s in scores] == [4, 2]
    loss = -sum((s * m).sum() / m.sum().clamp_min(1e-8) for s, m in zip(scores, masks))
    loss.backward()
    for module in (generator, discriminator):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert generator.blk3_mesh.conv1.weight_orig.grad.abs().sum() > 0
    assert generator.fc.weight.grad.abs().sum() > 0
