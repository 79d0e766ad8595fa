"""The one batched-inference loop: same outputs as one image at a time, mode restored, bad input named."""

import numpy as np
import pytest
import torch
from conftest import make_tiny_set
from torch import nn

from medcl_lite.inference import map_images


class _Net(nn.Module):
    """Conv + BatchNorm: eval mode matters (running statistics, not the batch's)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3))

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def net():
    torch.manual_seed(0)
    net = _Net()
    net.body[1].running_mean.fill_(0.3)  # so that batch statistics would give other numbers
    return net.train()


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_outputs_match_one_image_at_a_time_in_eval_mode(net, batch_size):
    data = make_tiny_set()
    rows = np.array([5, 0, 7, 2, 9])
    got = map_images(lambda x: net(x).mean(dim=(2, 3)), net, data, rows, batch_size)
    assert got.shape == (5, 3) and got.dtype == np.float32
    assert net.training  # mode given back
    net.eval()
    with torch.no_grad():
        want = [net(torch.from_numpy(data.images[r])[None, None]).mean(dim=(2, 3))[0] for r in rows]
    np.testing.assert_allclose(got, torch.stack(want).numpy(), rtol=1e-5, atol=1e-6)


def test_all_rows_by_default_and_integer_outputs_kept(net):
    data = make_tiny_set()
    labels = map_images(lambda x: net(x).argmax(dim=1).to(torch.uint8), net, data)
    assert labels.shape == (len(data), *data.image_size) and labels.dtype == np.uint8


def test_mode_restored_after_an_error(net):
    def boom(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        map_images(boom, net, make_tiny_set(), [0])
    assert net.training


def test_bad_input_is_named(net):
    data = make_tiny_set()
    with pytest.raises(ValueError, match="empty index"):
        map_images(net, net, data, [])
    with pytest.raises(ValueError, match="batch_size=0"):
        map_images(net, net, data, [0], batch_size=0)
