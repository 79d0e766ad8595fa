"""Models: segmenter shapes, head, momentum encoder, encoder transfer."""

import pytest
import torch

from medcl_lite.models import (
    EncoderWithHead,
    ProjectionHead,
    build_segmenter,
    load_encoder,
    momentum_copy,
    momentum_update,
)


@pytest.mark.parametrize("arch", ["unet", "deeplabv3", "deeplabv3plus"])
def test_segmenter_shapes(arch):
    model = build_segmenter(arch, "resnet18", in_channels=1, classes=3)
    x = torch.randn(2, 1, 64, 64)
    assert model(x).shape == (2, 3, 64, 64)
    features = model.encoder(x)
    assert features[0].shape == (2, 1, 64, 64)
    assert features[-1].shape[1] == model.encoder.out_channels[-1] == 512


def test_unknown_arch_names_choices():
    with pytest.raises(ValueError, match="deeplabv3"):
        build_segmenter("segformer3d")


def test_projection_head_shape():
    head = ProjectionHead(512, out_dim=128)
    assert head(torch.randn(3, 512, 2, 2)).shape == (3, 128)


def test_momentum_update_moves_key_weights_towards_online():
    torch.manual_seed(0)
    net = EncoderWithHead(build_segmenter().encoder, ProjectionHead(512, 16))
    key = momentum_copy(net)
    assert all(not p.requires_grad for p in key.parameters())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    before = [p.clone() for p in key.parameters()]
    momentum_update(net, key, momentum=0.9)
    for b, p_k, p_q in zip(before, key.parameters(), net.parameters(), strict=True):
        assert torch.allclose(p_k, 0.9 * b + 0.1 * p_q)
        assert not torch.equal(p_k, b)


def test_encoder_transfers_between_unet_and_deeplab():
    unet = build_segmenter("unet")
    deeplab = build_segmenter("deeplabv3", classes=3)
    load_encoder(deeplab, unet.encoder.state_dict())
    for a, b in zip(unet.encoder.parameters(), deeplab.encoder.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_encoder_refuses_mismatch():
    small = build_segmenter("unet", "resnet18")
    with pytest.raises(ValueError, match="does not fit"):
        load_encoder(small, {"conv1.weight": torch.zeros(1)})
