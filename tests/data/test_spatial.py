"""Tests of medcl_lite.data.spatial: per-sample mirror/elastic/rotation/scale/crop in one resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medcl_lite.data.spatial import (
    SPATIAL_PRESETS,
    SpatialAugment,
    default_elastic_step,
    elastic_displacement,
    random_spatial_params,
    rescale_elastic,
    sampling_grid,
    warp,
)

#: PCL's elastic ranges rescaled from 352 x 352 to the 48 x 48 test images.
SMALL_ALPHA, SMALL_SIGMA = rescale_elastic((100.0, 350.0), (14.0, 17.0), 48 / 352)
#: Strong everything, so that every sample is changed.
STRONG = {
    **SPATIAL_PRESETS["pcl"],
    "p_spatial": 1.0,
    "elastic_alpha": (40.0, 60.0),
    "elastic_sigma": (3.0, 4.0),
}


def identity_params(n: int) -> dict[str, torch.Tensor]:
    return random_spatial_params(n, torch.Generator().manual_seed(0))


def label_image(size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A label map with three organs (ids 0, 3, 7, 9) and an image whose intensity is the label."""
    mask = torch.zeros(size, size, dtype=torch.int64)
    mask[6:30, 8:26] = 3
    mask[20:40, 28:44] = 7
    mask[36:44, 4:20] = 9
    return mask.float()[None], mask


def test_identity_params_give_the_input_back() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 2, 20, 24)
    params = identity_params(3)
    assert (params["alpha"] == 0).all() and (params["angle"] == 0).all()
    grid = sampling_grid(params, (20, 24))
    assert grid.shape == (3, 20, 24, 2) and grid.dtype == torch.float32
    torch.testing.assert_close(warp(image, grid), image, atol=1e-5, rtol=0)
    mask = torch.randint(0, 5, (3, 20, 24))
    assert torch.equal(warp(mask, grid, "nearest"), mask)


def test_mirror_flips_exactly() -> None:
    image, mask = label_image()
    params = identity_params(2)
    params["flip"] = torch.tensor([[-1.0, 1.0], [1.0, -1.0]])  # (x, y): horizontal, vertical
    grid = sampling_grid(params, 48)
    out = warp(image.expand(2, -1, -1, -1), grid)
    torch.testing.assert_close(out[0], image.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], image.flip(-2), atol=1e-5, rtol=0)
    out_mask = warp(mask.expand(2, -1, -1), grid, "nearest")
    assert torch.equal(out_mask[0], mask.flip(-1)) and torch.equal(out_mask[1], mask.flip(-2))


def test_rotation_by_90_degrees_is_rot90() -> None:
    image, _ = label_image()
    params = identity_params(1)
    params["angle"] = torch.tensor([math.pi / 2])
    out = warp(image[None], sampling_grid(params, 48))[0]
    torch.testing.assert_close(out, torch.rot90(image, 1, dims=(-2, -1)), atol=1e-4, rtol=0)


def test_random_crop_at_the_corner_and_output_size() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 1, 40, 36)
    params = identity_params(1)
    params["crop"] = torch.tensor([[1.0, 1.0]])  # (x, y): bottom-right corner of the free margin
    out = warp(image, sampling_grid(params, (40, 36), (32, 30)))
    assert out.shape == (1, 1, 32, 30)
    torch.testing.assert_close(out, image[..., 8:, 6:], atol=1e-5, rtol=0)


def test_per_sample_parameters_differ_and_repeat_with_the_seed() -> None:
    draw = lambda seed: random_spatial_params(8, torch.Generator().manual_seed(seed), **STRONG)  # noqa: E731
    first, again, other = draw(1), draw(1), draw(2)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    for key in ("angle", "zoom", "alpha", "sigma", "seed"):
        assert len(set(first[key].tolist())) == 8, key  # every sample its own value
    assert not torch.equal(first["angle"], other["angle"])
    image = torch.rand(1, 1, 32, 32).expand(8, -1, -1, -1)
    out = warp(image, sampling_grid(first, 32))
    assert all(not torch.allclose(out[0], out[i], atol=1e-3) for i in range(1, 8))


def test_probabilities_follow_the_pcl_preset() -> None:
    params = random_spatial_params(4000, torch.Generator().manual_seed(0), **SPATIAL_PRESETS["pcl"])
    spatial = (params["zoom"] != 1).float().mean().item()
    assert abs(spatial - 0.67) < 0.03  # binomial sd ~0.0074
    assert torch.equal(params["alpha"] > 0, params["zoom"] != 1)  # elastic with the spatial block
    assert 100 <= params["alpha"][params["alpha"] > 0].min() <= params["alpha"].max() <= 350
    assert abs(params["angle"].abs().max().item() - math.pi) < 0.01
    flips = (params["flip"] == -1).float().mean(0)
    assert ((flips - 0.5).abs() < 0.03).all()
    off = random_spatial_params(50, torch.Generator().manual_seed(0), **{**STRONG, "p_spatial": 0})
    assert (off["alpha"] == 0).all() and (off["zoom"] == 1).all() and (off["angle"] == 0).all()


def test_elastic_field_equals_scipy_gaussian_filter_at_step_1() -> None:
    seed, alpha, sigma = 123, 2.5, 3.3
    field = elastic_displacement(
        torch.tensor([alpha]), torch.tensor([sigma]), torch.tensor([seed]), (40, 50), step=1
    )
    noise = torch.rand(2, 40, 50, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    for axis in range(2):
        ref = gaussian_filter(noise[axis].double().numpy(), sigma, mode="constant", cval=0) * alpha
        np.testing.assert_allclose(field[0, axis].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("step", [1, 4, 7])
def test_coarse_elastic_field_keeps_the_batchgenerators_magnitude(step: int) -> None:
    # blurred U(-1, 1) noise: std = alpha * sqrt(1/3) / (2 sqrt(pi) sigma), away from the border
    n, alpha, sigma = 16, 225.0, 15.5
    field = elastic_displacement(
        torch.full((n,), alpha), torch.full((n,), sigma), torch.arange(n), (200, 200), step
    )
    expected = alpha / (2 * math.sqrt(3 * math.pi) * sigma)
    assert abs(field[..., 70:130, 70:130].std().item() / expected - 1) < 0.1


def test_mask_keeps_its_label_ids_and_stays_aligned_with_the_image() -> None:
    image, mask = label_image()
    aug = SpatialAugment.from_preset(
        "pcl",
        p_spatial=1.0,
        elastic_alpha=SMALL_ALPHA,
        elastic_sigma=SMALL_SIGMA,
        generator=torch.Generator().manual_seed(3),
    )
    for _ in range(5):
        out_image, out_mask = aug(image, mask)
        assert out_image.shape == (1, 48, 48) and out_mask.shape == (48, 48)
        assert out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= {0, 3, 7, 9}
        assert len(out_mask.unique()) >= 3
        # inside a label region (3 x 3 neighbours alike) the bilinear image equals the label
        # (up to the odd pixel where the deformation compresses more than a 3 x 3 window spans)
        labels = out_mask.float()[None, None]
        high = torch.nn.functional.max_pool2d(labels, 3, stride=1, padding=1)
        low = -torch.nn.functional.max_pool2d(-labels, 3, stride=1, padding=1)
        inside = (high == low)[0, 0]
        assert inside.float().mean() > 0.7
        error = (out_image[0] - labels[0, 0])[inside].abs()
        assert (error < 1e-3).float().mean() > 0.99 and error.max() < 0.5


def test_per_sample_and_batched_calls_agree() -> None:
    torch.manual_seed(0)
    batch = torch.rand(4, 2, 32, 32)
    aug = SpatialAugment((24, 28), generator=torch.Generator().manual_seed(5), **STRONG)
    params = aug.draw(4)
    out = aug(batch, params=params)
    assert out.shape == (4, 2, 24, 28) and out.dtype == torch.float32
    for i in range(4):
        one = {key: value[i : i + 1] for key, value in params.items()}
        single = aug(batch[i], params=one)
        assert single.shape == (2, 24, 28)
        torch.testing.assert_close(single, out[i], atol=1e-5, rtol=0)


def test_fresh_parameters_per_call_and_float64_images() -> None:
    aug = SpatialAugment(generator=torch.Generator().manual_seed(0), **STRONG)
    image = torch.rand(1, 32, 32, dtype=torch.float64)
    first, second = aug(image), aug(image)
    assert first.dtype == torch.float64 and not torch.allclose(first, second)


def test_default_elastic_step() -> None:
    assert default_elastic_step(14.0) == 7
    assert default_elastic_step(1.5) == 1
    assert rescale_elastic((100, 350), (14, 17), 0.5) == ((25.0, 87.5), (7.0, 8.5))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rotation_deg": 200}, "rotation_deg"),
        ({"scale": (0.0, 1.2)}, "scale"),
        ({"p_spatial": 1.5}, "p_spatial"),
        ({"mirror_axes": (2,)}, "mirror_axes"),
        ({"elastic_sigma": (0, 3)}, "elastic_sigma"),
        ({"elastic_alpha": 5}, "elastic_alpha"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SpatialAugment(**kwargs)


def test_bad_inputs_are_rejected() -> None:
    grid = sampling_grid(identity_params(1), 8)
    with pytest.raises(ValueError, match="mode='nearest'"):
        warp(torch.zeros(1, 8, 8, dtype=torch.int64), grid, "bilinear")
    with pytest.raises(ValueError, match="grid must be"):
        warp(torch.zeros(2, 1, 8, 8), grid)
    with pytest.raises(ValueError, match="unknown preset"):
        SpatialAugment.from_preset("nope")
    with pytest.raises(ValueError, match="unknown override"):
        SpatialAugment.from_preset("pcl", degrees=3)
    with pytest.raises(ValueError, match="mask must be"):
        SpatialAugment()(torch.zeros(1, 8, 8), torch.zeros(8, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match="image must be"):
        SpatialAugment()(torch.zeros(8, 8))
