"""Torch Datasets over a :class:`SliceSet`, patient-wise splits and label budgets.

* :class:`TwoViewDataset` (pretraining): two augmented views of one image plus the metadata the
  pairing functions read (patient, site, time, volume, depth; docs/design.md, "The one idea").
* :class:`LabelledDataset` (fine-tuning and evaluation): image and mask.
* :func:`split_by_patient`, :func:`cross_validation_folds`, :func:`choose_labelled`,
  :func:`choose_labelled_volumes`, :func:`choose_labelled_patients` and
  :func:`make_protocol`: splits by patient, never by slice
  (docs/methods.md, "Protocol common to all chapters"), k-fold cross-validation, nested label
  budgets, and the quick start's "narrow labels, broad data" protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from medcl_lite.data.sliceset import SliceSet

#: Metadata keys every dataset item carries (integer codes are computed once per SliceSet).
ITEM_META_KEYS: tuple[str, ...] = ("index", "patient", "site", "time", "volume", "depth")


# --------------------------------------------------------------------------- datasets
def _resolve_index(index: Sequence[int] | np.ndarray | None, n_rows: int) -> np.ndarray:
    """Rows to serve as int64 (``None`` = all; a boolean mask is turned into its rows)."""
    if index is None:
        return np.arange(n_rows, dtype=np.int64)
    index = np.asarray(index)
    if index.dtype == bool:
        if index.shape != (n_rows,):
            raise ValueError(f"index: boolean mask of shape {index.shape}, expected ({n_rows},)")
        return np.flatnonzero(index).astype(np.int64)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise ValueError(
            f"index must be a 1-D array of row numbers, got {index.dtype} {index.shape}"
        )
    if index.size and (index.min() < 0 or index.max() >= n_rows):
        raise ValueError(
            f"index has rows outside [0, {n_rows}): min {index.min()}, max {index.max()}"
        )
    return index.astype(np.int64)


class _SliceSetItems(Dataset):
    """Shared part of the datasets: rows ``index`` of ``data`` and their metadata codes.

    Codes come from the WHOLE SliceSet (``data.codes``), so they agree across subsets built
    with different ``index`` arrays (e.g. a pretraining set and its label pool). 2-D images
    (``volume_id == ""``) get volume code -1, so that no pairing mistakes them for one volume.
    """

    def __init__(self, data: SliceSet, index: Sequence[int] | np.ndarray | None) -> None:
        if not isinstance(data, SliceSet):
            raise ValueError(f"data must be a SliceSet, got {type(data).__name__}")
        self.data = data
        self.index = _resolve_index(index, len(data))
        self.images = torch.from_numpy(np.ascontiguousarray(data.images, dtype=np.float32))
        self.patient = data.codes("patient_id")
        self.site = data.codes("site")
        self.volume = np.where(
            data.meta["volume_id"].astype(str) == "", -1, data.codes("volume_id")
        )
        self.time = data.meta["time"].to_numpy(dtype=np.int64)
        self.depth = data.meta["depth"].to_numpy(dtype=np.float32)

    def __len__(self) -> int:
        return len(self.index)

    def _row(self, i: int) -> int:
        if not -len(self.index) <= i < len(self.index):
            raise IndexError(f"item {i} out of range for a dataset of {len(self.index)}")
        return int(self.index[i])

    def _meta(self, row: int) -> dict[str, int | Tensor]:
        return {
            "index": row,
            "patient": int(self.patient[row]),
            "site": int(self.site[row]),
            "time": int(self.time[row]),
            "volume": int(self.volume[row]),
            "depth": torch.tensor(self.depth[row], dtype=torch.float32),
        }


def _plain_float(view: Tensor) -> Tensor:
    """A transform's output as a plain contiguous float32 tensor (tv_tensors unwrapped)."""
    return view.as_subclass(Tensor).to(torch.float32).contiguous()


class TwoViewDataset(_SliceSetItems):
    """Two augmented views of each image, for contrastive pretraining.

    Item ``i`` is a dict: ``view1``, ``view2`` (``[1, H', W']`` float32, two independent calls
    of ``transform`` on image ``index[i]``), and the metadata :data:`ITEM_META_KEYS`: ``index``
    (row in ``data``), ``patient``, ``site``, ``volume`` (int codes of patient_id, site,
    volume_id; ``volume`` is -1 for 2-D images), ``time`` (int), ``depth`` (float32 scalar; NaN for 2-D images). The default
    DataLoader collate turns a batch into tensors of shape ``[B, 1, H', W']`` and ``[B]``.

    With ``regions`` (LRC's superpixels of the unaugmented slices, e.g. from
    :func:`medcl_lite.data.superpixels.superpixels`), items also hold ``regions1`` and
    ``regions2``: ``[H', W']`` int64 region maps warped with the same random geometry as
    ``view1`` / ``view2`` (one ``transform(image, tv_tensors.Mask(regions + 1))`` call per view;
    masks are sampled nearest-neighbour, so ids stay exact, and intensity steps leave them alone).
    Pixels from outside the image get -1 (no region). Batches: ``[B, H', W']``.

    With ``correspondence=True`` (IDEAL's dense loss, :mod:`medcl_lite.dense`), items also hold
    ``pixels1`` and ``pixels2``: ``[H', W']`` int64, for every view pixel the index ``y * W + x``
    of the original pixel it shows (-1 outside the image). It is the *pixel index map* of the
    slice, made on the fly and warped like a region map in the same transform call, so two views'
    correspondences are exact. Works together with ``regions`` and ``masks``.

    Args:
        data: the images (all sites and patients the pairing should see).
        transform: ``[1, H, W] -> [1, H', W']``, random on each call, e.g. ``view_transform(64)``;
            with ``regions`` it must also take ``(image, mask)`` and return both, as
            :func:`~medcl_lite.data.transforms.view_transform` does (also ``"pcl_elastic"``).
        index: rows of ``data`` to serve (default all), e.g. ``protocol.pretrain``.
        regions: optional ``[len(data), H, W]`` integer region ids >= 0, one map per row of
            ``data`` (not of ``index``).
        masks: also serve ``mask1`` / ``mask2`` (``[H', W']`` int64 class maps warped with each
            view, background outside the image) for supervised pretraining.
        correspondence: also serve ``pixels1`` / ``pixels2`` (original pixel per view pixel);
            needs ``H * W < 2**24`` (indices stay exact through float resampling).
    """

    def __init__(
        self,
        data: SliceSet,
        transform: Callable[..., Tensor | tuple[Tensor, Tensor]],
        index: Sequence[int] | np.ndarray | None = None,
        regions: np.ndarray | Tensor | None = None,
        masks: bool = False,
        correspondence: bool = False,
    ) -> None:
        if not callable(transform):
            raise ValueError(
                f"transform must be callable (e.g. view_transform(size)), got {transform!r}"
            )
        if correspondence:
            _check_pixel_count(data)
        super().__init__(data, index)
        self.correspondence = bool(correspondence)
        self.transform = transform
        self.regions = None if regions is None else _check_regions(regions, data)
        if masks and data.masks is None:
            raise ValueError(f"masks=True needs a labelled dataset; {data.name!r} has no masks")
        self.masks = torch.from_numpy(np.ascontiguousarray(data.masks)) if masks else None

    def _view_with_maps(self, image: Tensor, row: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One view and its label maps, warped by one transform call: region ids (``-1``
        outside the image) and/or the mask (background outside), stacked as channels of one
        ``tv_tensors.Mask`` so that they share the view's geometry."""
        maps = []
        if self.regions is not None:
            maps.append(self.regions[row].to(torch.int64) + 1)  # 0 = padding
        if self.correspondence:
            maps.append(_pixel_index_map(*image.shape[-2:]) + 1)  # 0 = padding
        if self.masks is not None:
            maps.append(self.masks[row].to(torch.int64))
        try:
            out = self.transform(tv_tensors.Image(image), tv_tensors.Mask(torch.stack(maps)))
        except TypeError as err:
            raise TypeError(
                "with regions, masks or correspondence, transform must accept (image, mask) as"
                " view_transform"
                f" does; {self.transform!r} failed: {err}"
            ) from err
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError(
                "with regions or masks, transform(image, mask) must return (view, mask) as"
                f" view_transform does; {self.transform!r} returned {type(out).__name__}"
            )
        view, mapped = _plain_float(out[0]), out[1].as_subclass(Tensor)
        if mapped.shape != (len(maps), *view.shape[-2:]) or mapped.is_floating_point():
            raise ValueError(
                f"transform returned label maps {mapped.dtype} {tuple(mapped.shape)} for a view "
                f"{tuple(view.shape)}; it must warp masks to the view's [H', W'] with integer ids"
            )
        mapped = mapped.to(torch.int64)
        named = {}
        if self.regions is not None:
            named["regions"] = mapped[0] - 1
        if self.correspondence:
            named["pixels"] = mapped[int(self.regions is not None)] - 1
        if self.masks is not None:
            named["mask"] = mapped[-1]
        return view, named

    def __getitem__(self, i: int) -> dict[str, Tensor | int]:
        row = self._row(i)
        image = self.images[row].unsqueeze(0)
        if self.regions is None and self.masks is None and not self.correspondence:
            return {
                "view1": _plain_float(self.transform(image)),
                "view2": _plain_float(self.transform(image)),
                **self._meta(row),
            }
        view1, maps1 = self._view_with_maps(image, row)
        view2, maps2 = self._view_with_maps(image, row)
        item = {"view1": view1, "view2": view2}
        for name in maps1:
            item[f"{name}1"], item[f"{name}2"] = maps1[name], maps2[name]
        return item | self._meta(row)


def _pixel_index_map(height: int, width: int) -> Tensor:
    """``[H, W]`` int64 map holding ``y * W + x`` at pixel ``(y, x)`` (IDEAL's correspondence)."""
    return torch.arange(height * width, dtype=torch.int64).reshape(height, width)


def _check_pixel_count(data: SliceSet) -> None:
    """Pixel indices must stay exact through float resampling: ``H * W < 2**24``."""
    height, width = data.image_size
    if height * width >= 2**24:
        raise ValueError(
            f"correspondence=True needs H * W < 2**24 (pixel indices exact in float32), but "
            f"{data.name!r} has images of {height} x {width}"
        )


def _check_regions(regions: np.ndarray | Tensor, data: SliceSet) -> Tensor:
    """``regions`` as an int32 tensor after checking shape ``[len(data), H, W]`` and ids."""
    if isinstance(regions, Tensor):
        regions = regions.detach().cpu().numpy()
    regions = np.asarray(regions)
    if regions.shape != data.images.shape:
        raise ValueError(
            f"regions must be [len(data), H, W] = {data.images.shape} (one map per row of data "
            f"{data.name!r}), got {regions.shape}"
        )
    if not np.issubdtype(regions.dtype, np.integer):
        raise ValueError(f"regions must hold integer region ids, got dtype {regions.dtype}")
    if regions.size and (regions.min() < 0 or regions.max() >= 2**24 - 1):
        raise ValueError(
            f"regions ids must be in [0, 2**24 - 1) (exact through float resampling), got "
            f"min {regions.min()}, max {regions.max()}"
        )
    return torch.from_numpy(np.ascontiguousarray(regions, dtype=np.int32))


class LabelledDataset(_SliceSetItems):
    """Images with their masks, for fine-tuning and evaluation.

    Item ``i`` is a dict: ``image`` (``[1, H, W]`` float32), ``mask`` (``[H, W]`` int64) and the
    metadata :data:`ITEM_META_KEYS` (as :class:`TwoViewDataset`).

    Args:
        data: a SliceSet with masks.
        transform: optional joint ``(image, mask) -> (image, mask)``, e.g. ``joint_transform(64)``.
        index: rows of ``data`` to serve (default all), e.g. ``choose_labelled(...)``.
    """

    def __init__(
        self,
        data: SliceSet,
        transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
        index: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        if data.masks is None:
            raise ValueError(f"LabelledDataset needs masks, but SliceSet {data.name!r} has none")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable or None, got {transform!r}")
        super().__init__(data, index)
        self.masks = torch.from_numpy(np.ascontiguousarray(data.masks))
        self.transform = transform

    def __getitem__(self, i: int) -> dict[str, Tensor | int]:
        row = self._row(i)
        image = self.images[row].unsqueeze(0)
        mask = self.masks[row].to(torch.int64)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        else:
            image = image.clone()
        return {
            "image": _plain_float(image),
            "mask": mask.as_subclass(Tensor).to(torch.int64).contiguous(),
            **self._meta(row),
        }


# --------------------------------------------------------------------------- splits
def _require_columns(meta: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in meta.columns]
    if missing:
        raise ValueError(f"meta lacks column(s) {missing}; it has {list(meta.columns)}")


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items in ``fractions``: largest remainders, then every split with a positive
    fraction gets at least one item while ``n`` allows (taken from the largest split)."""
    exact = [f * n for f in fractions]
    counts = [int(np.floor(e)) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: (counts[k] - exact[k], k))
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    for k, f in enumerate(fractions):
        if f > 0 and counts[k] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    return counts


def _patient_strata(meta: pd.DataFrame, stratify: str | None) -> dict[str, list[str]]:
    """Patients grouped by ``stratify`` (a patient seen under several values goes with the most
    frequent one, ties by name); one group ``""`` when ``stratify`` is None. Sorted names."""
    patients = meta["patient_id"].astype(str)
    if stratify is None:
        return {"": sorted(patients.unique())}
    values = meta[stratify].astype(str)
    counts = pd.DataFrame({"patient": patients, "value": values}).value_counts()
    counts = counts.reset_index(name="n").sort_values(
        ["patient", "n", "value"], ascending=[True, False, True]
    )
    first = counts.drop_duplicates("patient")
    strata: dict[str, list[str]] = {}
    for patient, value in zip(first["patient"], first["value"], strict=True):
        strata.setdefault(value, []).append(patient)
    return {value: sorted(strata[value]) for value in sorted(strata)}


def split_by_patient(
    meta: pd.DataFrame,
    fractions: dict[str, float],
    seed: int,
    stratify: str | None = "site",
) -> dict[str, np.ndarray]:
    """Rows of each split; every patient lands in exactly one split.

    Patients (not images) are shuffled with ``seed`` and divided in ``fractions`` (largest
    remainders; each split with a positive fraction gets a patient while there are enough).
    With ``stratify`` (a column, default ``"site"``) this happens within each of its values,
    so every site is split in the same fractions.

    Args:
        meta: one row per image with ``patient_id`` (and the ``stratify`` column).
        fractions: split name -> fraction, e.g. ``{"train": 0.7, "test": 0.3}``; sum 1.
        seed: the same seed gives the same split.
        stratify: column to stratify by, or None.

    Returns:
        split name -> sorted int64 row numbers of ``meta`` (positions, not index labels).
    """
    if not fractions:
        raise ValueError("fractions must name at least one split")
    values = [float(f) for f in fractions.values()]
    if any(f < 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be >= 0 and sum to 1, got {fractions} (sum {sum(values)})"
        )
    _require_columns(meta, ["patient_id"] + ([stratify] if stratify is not None else []))
    rng = np.random.default_rng(seed)
    patient_split: dict[str, str] = {}
    for patients in _patient_strata(meta, stratify).values():
        order = rng.permutation(len(patients))
        start = 0
        for name, count in zip(fractions, _split_counts(len(patients), values), strict=True):
            for k in order[start : start + count]:
                patient_split[patients[k]] = name
            start += count
    assigned = meta["patient_id"].astype(str).map(patient_split).to_numpy()
    return {name: np.flatnonzero(assigned == name).astype(np.int64) for name in fractions}


def _check_budget(name: str, n: int | str, available: int, unit: str) -> int | None:
    """``None`` for "all", else ``n`` checked to be an int in [1, available]."""
    if isinstance(n, str):
        if n != "all":
            raise ValueError(f'{name} must be "all" or a positive int, got {n!r}')
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f'{name} must be "all" or a positive int, got {n!r}')
    if not 1 <= n <= available:
        raise ValueError(f"{name}={n} is outside [1, {available}] ({available} {unit} available)")
    return int(n)


def _round_robin(groups: list[np.ndarray]) -> np.ndarray:
    """Items in rounds: the first of every group, then the second of every group, ..."""
    longest = max((len(g) for g in groups), default=0)
    return np.asarray([g[k] for k in range(longest) for g in groups if k < len(g)], dtype=np.int64)


def _patient_priority(
    meta: pd.DataFrame, rows: np.ndarray, key: np.ndarray, seed: int
) -> np.ndarray:
    """Distinct values of ``key`` (one per entry of ``rows``) in a seeded order that visits every
    patient once before any patient twice: patients shuffled, each patient's values shuffled,
    then round robin. Budgets are prefixes of this order, so they are nested."""
    rng = np.random.default_rng(seed)
    patients = meta["patient_id"].astype(str).to_numpy()[rows]
    names, inverse = np.unique(patients, return_inverse=True)
    boundaries = np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1]
    positions_by_patient = np.split(np.argsort(inverse, kind="stable"), boundaries)
    groups = []
    for patient in rng.permutation(len(names)):
        values = np.unique(key[positions_by_patient[patient]])
        groups.append(values[rng.permutation(len(values))])
    return _round_robin(groups)


def choose_labelled(
    meta: pd.DataFrame, index: Sequence[int] | np.ndarray, n_labelled: int | str, seed: int
) -> np.ndarray:
    """The labelled images among rows ``index``: a label budget counted in images.

    ``"all"`` keeps every row. An int ``n`` takes ``n`` images from ``n`` different patients (one
    time point or slice each) while ``n`` <= the number of patients; beyond that, every patient
    and then further images spread evenly over patients (round robin). Budgets are nested for one
    seed: ``choose_labelled(m, i, 2, s)`` is a subset of ``choose_labelled(m, i, 4, s)``, so
    label curves compare like with like.

    Returns:
        sorted int64 row numbers of ``meta``.
    """
    _require_columns(meta, ["patient_id"])
    rows = np.unique(_resolve_index(index, len(meta)))
    n = _check_budget("n_labelled", n_labelled, len(rows), "images")
    if n is None:
        return rows
    order = _patient_priority(meta, rows, rows, seed)
    return np.sort(order[:n])


def choose_labelled_volumes(
    meta: pd.DataFrame, index: Sequence[int] | np.ndarray, n_volumes: int | str, seed: int
) -> np.ndarray:
    """All slices of ``n_volumes`` volumes among rows ``index`` (PCL / ACDC budgets count volumes).

    Volumes are picked from different patients first (round robin, as :func:`choose_labelled`),
    and budgets are nested for one seed. ``"all"`` keeps every row.

    Returns:
        sorted int64 row numbers of ``meta``.
    """
    _require_columns(meta, ["patient_id", "volume_id"])
    rows = np.unique(_resolve_index(index, len(meta)))
    volume_ids = meta["volume_id"].astype(str).to_numpy()[rows]
    if np.any(volume_ids == ""):
        raise ValueError(
            "choose_labelled_volumes needs volume_id on every row of index; 2-D images have '' "
            "(use choose_labelled)"
        )
    n = _check_budget("n_volumes", n_volumes, len(np.unique(volume_ids)), "volumes")
    if n is None:
        return rows
    codes = np.unique(volume_ids, return_inverse=True)[1]
    chosen = _patient_priority(meta, rows, codes, seed)[:n]
    return np.sort(rows[np.isin(codes, chosen)])



def choose_labelled_patients(
    meta: pd.DataFrame, index: Sequence[int] | np.ndarray, n_patients: int | str, seed: int
) -> np.ndarray:
    """All rows of ``n_patients`` patients among rows ``index`` (PCL's ACDC budgets: 2 and 6
    labelled patients, each with its ED and ES volume). Nested for one seed; ``"all"`` keeps every row.

    Returns:
        sorted int64 row numbers of ``meta``.
    """
    _require_columns(meta, ["patient_id"])
    rows = np.unique(_resolve_index(index, len(meta)))
    patients = meta["patient_id"].astype(str).to_numpy()[rows]
    names, codes = np.unique(patients, return_inverse=True)
    n = _check_budget("n_patients", n_patients, len(names), "patients")
    if n is None:
        return rows
    chosen = np.random.default_rng(seed).permutation(len(names))[:n]
    return np.sort(rows[np.isin(codes, chosen)])


#: What a label budget counts -> the function that picks the labelled rows for it.
LABEL_UNITS: dict[str, Callable[..., np.ndarray]] = {
    "images": choose_labelled,
    "volumes": choose_labelled_volumes,
    "patients": choose_labelled_patients,
}


def choose_labelled_by(
    unit: str, meta: pd.DataFrame, index: Sequence[int] | np.ndarray, n: int | str, seed: int
) -> np.ndarray:
    """Labelled rows for a budget of ``n`` ``unit`` (``"images"``, ``"volumes"`` or ``"patients"``)."""
    if unit not in LABEL_UNITS:
        raise ValueError(f"label unit {unit!r}: choose one of {sorted(LABEL_UNITS)}")
    return LABEL_UNITS[unit](meta, index, n, seed)


# --------------------------------------------------------------------------- protocol
@dataclass
class Protocol:
    """Row numbers of one experiment's splits (all patient-disjoint from ``test``).

    Attributes:
        pretrain: train-split rows of all sites (unlabelled pretraining).
        label_pool: train-split rows of the labelled sites (choose the label budget from these).
        val: val-split rows of the labelled sites (epoch choice with labels you would have).
        test: test-split rows of all sites (broad evaluation; see :meth:`test_by_site`).
        labelled_sites: the sites whose labels fine-tuning may use.
        meta: the metadata the rows refer to.
        seed: the split seed.
    """

    pretrain: np.ndarray
    label_pool: np.ndarray
    val: np.ndarray
    test: np.ndarray
    labelled_sites: tuple[str, ...]
    meta: pd.DataFrame = field(repr=False)
    seed: int = 0

    def splits(self) -> dict[str, np.ndarray]:
        """Split name -> rows, in the order of :meth:`summary`."""
        return {
            "pretrain": self.pretrain,
            "label_pool": self.label_pool,
            "val": self.val,
            "test": self.test,
        }

    def test_by_site(self) -> dict[str, np.ndarray]:
        """Test rows of each site (for per-site Dice), sites sorted by name."""
        sites = self.meta["site"].astype(str).to_numpy()[self.test]
        return {site: self.test[sites == site] for site in sorted(np.unique(sites))}

    def summary(self) -> pd.DataFrame:
        """One row per split: ``split``, ``images``, ``patients``, ``sites`` (names joined)."""
        records = []
        for name, rows in self.splits().items():
            part = self.meta.iloc[rows]
            records.append(
                {
                    "split": name,
                    "images": len(rows),
                    "patients": part["patient_id"].nunique(),
                    "sites": ", ".join(sorted(part["site"].astype(str).unique())),
                }
            )
        return pd.DataFrame.from_records(records, columns=["split", "images", "patients", "sites"])


def make_protocol(
    meta: pd.DataFrame,
    labelled_sites: Sequence[str] = ("A",),
    val_fraction: float = 0.15,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> Protocol:
    """The quick start's "narrow labels, broad data" protocol (docs/design.md, "Data").

    Patients of all sites are split into train / val / test by patient, stratified by site.
    Pretraining sees the train split of every site, labels come from the train split of
    ``labelled_sites`` only, epochs are chosen on their val split, and the test split of every
    site measures how far the narrow labels carry. Val-split rows of unlabelled sites are unused.
    """
    _require_columns(meta, ["patient_id", "site"])
    if isinstance(labelled_sites, str):
        labelled_sites = (labelled_sites,)
    labelled_sites = tuple(str(s) for s in labelled_sites)
    available = sorted(meta["site"].astype(str).unique())
    unknown = [s for s in labelled_sites if s not in available]
    if not labelled_sites or unknown:
        raise ValueError(
            f"labelled_sites {list(labelled_sites)}: unknown {unknown}; sites: {available}"
        )
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    train_fraction = 1.0 - val_fraction - test_fraction
    if train_fraction <= 0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    split = split_by_patient(
        meta,
        {"train": train_fraction, "val": val_fraction, "test": test_fraction},
        seed=seed,
        stratify="site",
    )
    labelled = meta["site"].astype(str).isin(labelled_sites).to_numpy()
    return Protocol(
        pretrain=split["train"],
        label_pool=split["train"][labelled[split["train"]]],
        val=split["val"][labelled[split["val"]]],
        test=split["test"],
        labelled_sites=labelled_sites,
        meta=meta.reset_index(drop=True),
        seed=seed,
    )


# --------------------------------------------------------------------------- k-fold
@dataclass
class Fold:
    """One fold of patient-wise k-fold cross-validation (row numbers of ``meta``).

    Attributes:
        number: 0 .. k-1.
        label_pool: rows of the training folds minus ``val`` (choose the label budget here).
        val: rows of a few training-fold patients, for the step/epoch choice (the honest way).
        test: rows of this fold's held-out patients.
    """

    number: int
    label_pool: np.ndarray
    val: np.ndarray
    test: np.ndarray


def cross_validation_folds(
    meta: pd.DataFrame,
    rows: Sequence[int] | np.ndarray | None = None,
    k: int = 5,
    seed: int = 0,
    val_fraction: float = 0.15,
) -> list[Fold]:
    """Patient-wise ``k``-fold cross-validation over ``rows`` (CL-TCI and PCL use 5 folds).

    Patients are shuffled with ``seed`` and dealt into ``k`` folds of near-equal size; each fold
    is the test set once. The papers' public code picks the epoch on that held-out fold; to also
    report the honest number, ``val_fraction`` of the remaining patients (at least one) are held
    out as ``val`` for the choice, and the rest form the ``label_pool``.

    Returns:
        ``k`` :class:`Fold` objects; their ``test`` rows partition ``rows``.
    """
    _require_columns(meta, ["patient_id"])
    rows = np.unique(_resolve_index(rows, len(meta)))
    patients = meta["patient_id"].astype(str).to_numpy()[rows]
    names = np.unique(patients)
    if not 2 <= k <= len(names):
        raise ValueError(f"k={k} folds need 2 <= k <= the {len(names)} patients")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(names[rng.permutation(len(names))], np.arange(len(names)) % k, strict=True))
    fold = np.array([fold_of[p] for p in patients])
    folds = []
    for number in range(k):
        rest = np.unique(patients[fold != number])
        n_val = max(1, round(val_fraction * len(rest))) if val_fraction > 0 else 0
        val_patients = rest[rng.permutation(len(rest))[:n_val]]
        is_val = np.isin(patients, val_patients) & (fold != number)
        folds.append(
            Fold(
                number=number,
                label_pool=rows[(fold != number) & ~is_val],
                val=rows[is_val],
                test=rows[fold == number],
            )
        )
    return folds


def check_finetune_set(
    data: SliceSet,
    rows: Sequence[int] | np.ndarray,
    *,
    role: str,
    n_folds: int,
    label_counts: Sequence[int | str],
    unit: str = "images",
    seed: int = 0,
    val_fraction: float = 0.15,
) -> None:
    """Refuse, before any training, a fine-tuning set that cannot serve the chosen settings.

    The set must have masks, at least ``n_folds`` patients, and in every fold of
    :func:`cross_validation_folds` (same ``seed`` and ``val_fraction``) a label pool that holds
    the largest budget of ``label_counts`` (counted in ``unit``: images, volumes or patients).

    Raises:
        ValueError: naming ``role`` and the data, what it has and what the settings need.
    """
    if unit not in LABEL_UNITS:
        raise ValueError(f"label unit {unit!r}: choose one of {sorted(LABEL_UNITS)}")
    rows = np.unique(_resolve_index(rows, len(data)))
    part = data.meta.iloc[rows]
    has = (f"{part['patient_id'].nunique()} patients, "
           + (f"{part['volume_id'].nunique()} volumes, " if (part["volume_id"] != "").all() else "")
           + f"{len(rows)} images")  # fmt: skip
    where = f"{role} ({data.name}: {has})"
    if data.masks is None:
        raise ValueError(f"{where} has no masks: fine-tuning and testing need labelled images")
    if not 2 <= n_folds <= part["patient_id"].nunique():
        raise ValueError(f"{where}: {n_folds}-fold cross-validation by patient needs at least"
                         f" {max(n_folds, 2)} patients; lower n_folds or add patients")  # fmt: skip
    budgets = [n for n in label_counts if not isinstance(n, str)]
    need = max(budgets, default=1)
    count = {"images": len, "volumes": lambda m: m["volume_id"].nunique(),
             "patients": lambda m: m["patient_id"].nunique()}[unit]  # fmt: skip
    folds = cross_validation_folds(data.meta, rows, k=n_folds, seed=seed, val_fraction=val_fraction)
    smallest = min(count(data.meta.iloc[fold.label_pool]) for fold in folds)
    if smallest < need:
        raise ValueError(
            f"{where} is too small: {n_folds}-fold cross-validation leaves {smallest} labelled"
            f" {unit} in the smallest fold's label pool (the rest is test and validation), but"
            f" label_counts {list(label_counts)} need {need}; add data, or lower n_folds or"
            " label_counts"
        )
