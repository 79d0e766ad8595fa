"""Shared fixtures: a tiny hand-made labelled SliceSet that trains in seconds."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from medcl_lite.data.sliceset import SliceSet  # noqa: E402


def make_tiny_set(n_patients: int = 6, n_times: int = 3, size: int = 32, seed: int = 0) -> SliceSet:
    """Patients x time points of a disc (class 1) with a small blob (class 2), two sites."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks, rows = [], [], []
    for p in range(n_patients):
        cx = rng.uniform(size * 0.3, size * 0.6)
        for t in range(n_times):
            mask = (((xx - cx) ** 2 + (yy - size / 2) ** 2) < (size / 5) ** 2).astype(np.uint8)
            mask[((xx - cx - size / 4) ** 2 + (yy - size / 3) ** 2) < (size / 10) ** 2] = 2
            image = 0.3 + 0.4 * (mask > 0) + 0.05 * rng.standard_normal((size, size))
            images.append(np.clip(image, 0, 1).astype(np.float32))
            masks.append(mask)
            rows.append(
                {"sample_id": f"p{p}_t{t}", "patient_id": f"p{p}", "site": "AB"[p % 2], "time": t,
                 "volume_id": "", "slice_index": 0, "n_slices": 1, "depth": np.nan}
            )
    return SliceSet(np.stack(images), np.stack(masks), pd.DataFrame(rows), ("background", "disc", "blob"), "tiny")


@pytest.fixture
def tiny_set() -> SliceSet:
    return make_tiny_set()
