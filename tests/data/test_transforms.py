"""Tests of medcl_lite.data.transforms: presets, views, joint image/mask augmentation."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as nnf
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from medcl_lite.data.transforms import (
    JOINT_STRENGTHS,
    PRESETS,
    RandomGamma,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomUnsharpMask,
    RandomViewGeometry,
    _base_grid,
    _sample_crop_box,
    _view_theta,
    joint_transform,
    view_transform,
)

#: All augmentations off: the geometry alone, for exact checks.
NO_AUGMENTATION = {
    "crop_scale": (1.0, 1.0),
    "crop_ratio": (1.0, 1.0),
    "degrees": 0.0,
    "translate": 0.0,
    "scale": (1.0, 1.0),
    "hflip": 0.0,
    "vflip": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "gamma": None,
    "blur_p": 0.0,
    "noise_p": 0.0,
}


@pytest.fixture
def image() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(1, 32, 32)


def square_pair(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A dark image with a bright square and the square's mask (label 1), plus a label-2 strip."""
    image = torch.full((1, size, size), 0.1)
    mask = torch.zeros(size, size, dtype=torch.int64)
    image[:, 8:22, 10:24] = 0.9
    mask[8:22, 10:24] = 1
    mask[26:29, 4:28] = 2
    return image, mask


# --------------------------------------------------------------------------- presets and views
def test_presets_share_one_set_of_keys_and_build():
    keys = set(PRESETS["quickstart"])
    assert set(PRESETS) == {"cl_tci", "pcl", "quickstart", "quickstart_no_crop", "quickstart_scanners"}
    for name, settings in PRESETS.items():
        assert set(settings) == keys, name
        assert isinstance(view_transform(16, name), v2.Transform)
    assert PRESETS["quickstart"]["hflip"] == 0.0  # left/right lungs are distinct labels
    assert PRESETS["cl_tci"]["gamma"] == (1.0, 1.4)
    assert PRESETS["pcl"]["scale"] == (0.7, 1.3) and PRESETS["pcl"]["affine_p"] == 0.67
    no_crop = {k: v for k, v in PRESETS["quickstart_no_crop"].items() if PRESETS["quickstart"][k] != v}
    assert no_crop == {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)}  # the diagnosis's one change
    scanners = {k for k, v in PRESETS["quickstart_scanners"].items() if PRESETS["quickstart"][k] != v}
    assert scanners == {"noise_sigma", "noise_p", "blur_sigma", "sharpen_amount", "sharpen_p"}  # intensity only


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("in_shape", [(32, 32), (40, 28), (128, 128)])
def test_view_shape_dtype_range(preset, in_shape):
    torch.manual_seed(1)
    transform = view_transform(24, preset)
    x = torch.rand(1, *in_shape)
    for _ in range(5):
        view = transform(x)
        assert view.shape == (1, 24, 24) and view.dtype == torch.float32
        assert type(view) is torch.Tensor
        assert view.min() >= 0.0 and view.max() <= 1.0


@pytest.mark.parametrize("preset", ["cl_tci", "quickstart"])
def test_two_calls_give_two_different_views(image, preset):
    transform = view_transform(32, preset)
    assert not torch.equal(transform(image), transform(image))


def test_pcl_views_differ_most_of_the_time(image):
    # identical only when no flip and no spatial transform: (1 - 0.67) * 0.25 = 8 % of pairs
    torch.manual_seed(0)
    transform = view_transform(32, "pcl")
    same = sum(torch.equal(transform(image), transform(image)) for _ in range(100))
    assert same < 25


def test_views_repeat_under_the_same_seed(image):
    transform = view_transform(32, "quickstart")
    torch.manual_seed(3)
    first = transform(image)
    torch.manual_seed(3)
    assert torch.equal(first, transform(image))


def test_all_off_is_identity_and_does_not_alias_the_input(image):
    view = view_transform(32, "quickstart", **NO_AUGMENTATION)(image)
    assert torch.equal(view, image)
    view += 1
    assert image.max() <= 1.0


def test_flip_overrides_flip_exactly(image):
    hflip = view_transform(32, "quickstart", **{**NO_AUGMENTATION, "hflip": 1.0})
    vflip = view_transform(32, "quickstart", **{**NO_AUGMENTATION, "vflip": 1.0})
    torch.testing.assert_close(hflip(image), image.flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(vflip(image), image.flip(-2), atol=1e-6, rtol=0)


def test_unknown_preset_or_override_names_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"'simclr'.*cl_tci.*pcl.*quickstart"):
        view_transform(32, "simclr")
    with pytest.raises(ValueError, match=r"rotation.*degrees"):
        view_transform(32, "quickstart", rotation=10)


@pytest.mark.parametrize(
    "override",
    [
        {"crop_scale": (0.9, 0.5)},
        {"crop_scale": (0.5, 1.5)},
        {"hflip": 1.5},
        {"degrees": 270},
        {"brightness": -0.1},
        {"gamma": (1.5,)},
        {"noise_p": 2.0},
        {"blur_sigma": (0.0, 1.0)},
    ],
)
def test_bad_override_values_are_rejected(override):
    with pytest.raises(ValueError, match=next(iter(override)).split("_")[0]):
        view_transform(32, "quickstart", **override)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_size_is_rejected(size):
    with pytest.raises(ValueError, match="size"):
        view_transform(size)


def test_transforms_pickle_for_dataloader_workers(image):
    for transform in (view_transform(16), joint_transform(16)):
        clone = pickle.loads(pickle.dumps(transform))
        assert type(clone) is type(transform)
    assert view_transform(16)(image).shape == (1, 16, 16)


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("angle, shift, zoom", [(20.0, (0.1, -0.05), 1.2), (-7.0, (0.0, 0.0), 0.8)])
def test_view_theta_matches_torchvision_affine(angle, shift, zoom):
    torch.manual_seed(0)
    x = torch.rand(1, 32, 32)
    theta = torch.tensor(
        _view_theta((0.0, 0.0, 1.0, 1.0), angle, (2 * shift[0], 2 * shift[1]), zoom, (1.0, 1.0))
    )
    grid = (_base_grid(32) @ theta.T).view(1, 32, 32, 2)
    ours = nnf.grid_sample(x[None], grid, align_corners=False)[0]
    reference = F.affine(
        x,
        angle=angle,
        translate=[shift[0] * 32, shift[1] * 32],
        scale=zoom,
        shear=[0.0, 0.0],
        interpolation=F.InterpolationMode.BILINEAR,
    )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_base_grid_equals_affine_grid_of_identity():
    reference = nnf.affine_grid(torch.eye(2, 3)[None], [1, 1, 7, 7], align_corners=False)
    torch.testing.assert_close(_base_grid(7)[:, :2].view(1, 7, 7, 2), reference)


def test_quarter_turn_is_rot90(image):
    theta = torch.tensor(_view_theta((0.0, 0.0, 1.0, 1.0), 90.0, (0.0, 0.0), 1.0, (1.0, 1.0)))
    grid = (_base_grid(32) @ theta.T).view(1, 32, 32, 2)
    turned = nnf.grid_sample(image[None], grid, align_corners=False)[0]
    torch.testing.assert_close(turned, torch.rot90(image, -1, (-2, -1)), atol=1e-6, rtol=0)


def test_crop_box_lies_inside_with_the_requested_area():
    torch.manual_seed(0)
    for _ in range(200):
        cx, cy, half_w, half_h = _sample_crop_box(30, 40, (0.3, 0.6), (3 / 4, 4 / 3))
        assert abs(cx) + half_w <= 1 + 1e-9 and abs(cy) + half_h <= 1 + 1e-9
        assert 0.3 - 1e-9 <= half_w * half_h <= 0.6 + 1e-9  # area fraction
        aspect = (half_w * 40) / (half_h * 30)
        assert 3 / 4 - 1e-9 <= aspect <= 4 / 3 + 1e-9


def test_crop_zooms_in_on_a_quarter():
    # crop area 1/4, square: the view is a 2x magnification of a 16 x 16 window
    torch.manual_seed(0)
    x = torch.zeros(1, 32, 32)
    x[:, :, ::2] = 1.0  # vertical stripes, period 2 px
    geometry = RandomViewGeometry(32, crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0))
    view = geometry(x)
    # magnified stripes have a period of 4 px: column k and k + 4 agree, k and k + 2 do not
    interior = view[0, 4:-4, 4:-8]
    torch.testing.assert_close(interior, view[0, 4:-4, 8:-4], atol=1e-5, rtol=0)
    assert (interior - view[0, 4:-4, 6:-6]).abs().mean() > 0.3


def test_large_inputs_are_antialiased():
    # one bright column in three; sampled 4x smaller without a low-pass filter the columns alias
    # into a 0 / 0.5 pattern (std 0.23); antialiased they blur to about 1/3 everywhere
    stripes = (torch.arange(128) % 3 == 0).float().expand(1, 128, 128).clone()
    view = RandomViewGeometry(32)(stripes)
    interior = view[0, 2:-2, 2:-2]
    assert abs(interior.mean().item() - 1 / 3) < 0.02 and interior.std() < 0.06


def test_geometry_keeps_mask_labels_and_dtype():
    torch.manual_seed(0)
    mask = tv_tensors.Mask(torch.randint(0, 3, (32, 32)) * 3 + 1)  # labels 1, 4, 7
    geometry = RandomViewGeometry(
        24, crop_scale=(0.5, 1.0), degrees=30, scale=(0.8, 1.2), hflip=0.5
    )
    for _ in range(10):
        out = geometry(mask)
        assert isinstance(out, tv_tensors.Mask) and out.dtype == torch.int64
        assert out.shape == (24, 24)
        assert set(out.unique().tolist()) <= {0, 1, 4, 7}  # 0: outside the image


# --------------------------------------------------------------------------- intensity
def test_gamma_is_a_power():
    x = torch.rand(1, 8, 8)
    torch.testing.assert_close(RandomGamma((2.0, 2.0))(x), x**2)


def test_noise_has_the_requested_sigma_and_stays_in_range():
    torch.manual_seed(0)
    out = RandomGaussianNoise((0.1, 0.1), p=1.0)(torch.full((1, 64, 64), 0.5))
    assert abs(out.std().item() - 0.1) < 0.01 and abs(out.mean().item() - 0.5) < 0.01
    clipped = RandomGaussianNoise((0.5, 0.5), p=1.0)(torch.full((1, 16, 16), 0.9))
    assert clipped.max() <= 1.0 and clipped.min() >= 0.0


def test_blur_keeps_constants_and_mass_and_spreads_a_point():
    blur = RandomGaussianBlur((1.0, 1.0), p=1.0)
    constant = torch.full((1, 16, 16), 0.3)
    torch.testing.assert_close(blur(constant), constant)
    point = torch.zeros(1, 15, 15)
    point[0, 7, 7] = 1.0
    spread = blur(point)
    assert abs(spread.sum().item() - 1.0) < 1e-5
    assert spread[0, 7, 7] < 0.2 and spread[0, 7, 8] > 0.05
    torch.testing.assert_close(spread, spread.flip(-1))  # symmetric kernel
    torch.testing.assert_close(spread, spread.transpose(-1, -2))


def test_unsharp_mask_is_image_plus_amount_times_its_detail():
    sharpen = RandomUnsharpMask((0.5, 0.5), p=1.0, sigma=1.0)
    constant = torch.full((1, 16, 16), 0.3)
    torch.testing.assert_close(sharpen(constant), constant)  # no detail, nothing to enhance
    torch.manual_seed(0)
    x = 0.25 + 0.5 * torch.rand(1, 16, 16)  # stays inside [0, 1] after enhancement
    blurred = RandomGaussianBlur((1.0, 1.0), p=1.0)(x)  # the same kernel (radius 2 for sigma 1)
    torch.testing.assert_close(sharpen(x), (x + 0.5 * (x - blurred)).clamp(0, 1))
    edge = torch.zeros(1, 16, 16)
    edge[..., 8:] = 1.0
    out = sharpen(edge)
    assert out.min() >= 0 and out.max() <= 1 and torch.equal(out, out.clamp(0, 1))
    with pytest.raises(ValueError, match="sharpen_amount"):
        RandomUnsharpMask((1.0, 0.5))
    with pytest.raises(ValueError, match="sigma"):
        RandomUnsharpMask(sigma=0.0)


def test_probability_zero_leaves_images_alone(image):
    for transform in (
        RandomUnsharpMask((1.0, 1.0), p=0.0),
        RandomGamma((2.0, 2.0), p=0.0),
        RandomGaussianNoise((0.1, 0.1), p=0.0),
        RandomGaussianBlur((1.0, 1.0), p=0.0),
    ):
        assert torch.equal(transform(image), image)


def test_intensity_transforms_do_not_touch_masks():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.rand(1, 16, 16))
    mask = tv_tensors.Mask(torch.randint(0, 3, (16, 16)))
    intensity = v2.Compose(
        [
            v2.ColorJitter(brightness=0.4, contrast=0.4),
            RandomGamma((0.5, 2.0)),
            RandomGaussianBlur((1.0, 1.0), p=1.0),
            RandomGaussianNoise((0.1, 0.1), p=1.0),
        ]
    )
    out_image, out_mask = intensity(image, mask)
    assert torch.equal(out_mask, mask)
    assert not torch.equal(out_image, image)


# --------------------------------------------------------------------------- joint transform
def test_joint_none_is_identity_at_size_and_resizes_otherwise():
    image, mask = square_pair(32)
    same_image, same_mask = joint_transform(32, "none")(image, mask)
    assert torch.equal(same_image, image) and torch.equal(same_mask, mask)
    small_image, small_mask = joint_transform(16, "none")(image, mask)
    assert small_image.shape == (1, 16, 16) and small_mask.shape == (16, 16)
    assert small_mask.dtype == torch.int64
    assert set(small_mask.unique().tolist()) == {0, 1, 2}


def test_joint_light_keeps_labels_exactly_and_returns_plain_tensors():
    torch.manual_seed(0)
    image, mask = square_pair(32)
    transform = joint_transform(32, "light")
    for _ in range(30):
        out_image, out_mask = transform(image, mask)
        assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor
        assert out_image.shape == (1, 32, 32) and out_image.dtype == torch.float32
        assert out_mask.shape == (32, 32) and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= {0, 1, 2}


def test_joint_light_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    image, mask = square_pair(32)
    transform = joint_transform(32, "light")
    moved = 0
    for _ in range(20):
        out_image, out_mask = transform(image, mask)
        square = out_mask == 1
        inside = out_image[0][square].mean()
        outside = out_image[0][out_mask == 0].mean()
        bright = out_image[0] > (inside + outside) / 2
        # the bright pixels are the square, up to a one-pixel rim of interpolation
        iou = (bright & square).sum() / (bright | square).sum()
        assert iou > 0.8, iou  # misaligned image and mask: IoU 0.46-0.9, mean 0.71
        moved += not torch.equal(out_mask, mask)
    assert moved >= 15  # the geometry really moved the mask


def test_joint_rejects_bad_inputs():
    image, mask = square_pair(16)
    transform = joint_transform(16)
    with pytest.raises(ValueError, match="image"):
        transform(image[0], mask)
    with pytest.raises(ValueError, match="mask"):
        transform(image, mask[:8])
    with pytest.raises(ValueError, match="integer"):
        transform(image, mask.float())
    with pytest.raises(ValueError, match=r"'strong'.*none.*light"):
        joint_transform(16, "strong")
    assert set(JOINT_STRENGTHS) == {"none", "light"}


def test_pcl_elastic_view_is_per_sample_and_keeps_shape(image):
    from medcl_lite.data.spatial import SpatialAugment

    transform = view_transform(32, "pcl_elastic")
    assert isinstance(transform, SpatialAugment)
    assert transform.settings["elastic_sigma"] == pytest.approx((14 * 32 / 352, 17 * 32 / 352))
    torch.manual_seed(0)
    views = [transform(image) for _ in range(6)]
    assert all(v.shape == (1, 32, 32) and v.dtype == torch.float32 for v in views)
    assert sum(not torch.allclose(views[0], v) for v in views[1:]) >= 4
    with pytest.raises(ValueError, match="unknown override"):
        view_transform(32, "pcl_elastic", hflip=0.5)
