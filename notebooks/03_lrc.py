# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,jupyter,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · LRC: superpixel regions contrasted locally, on top of a global method
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/03_lrc.ipynb)
#
# **Paper.** X. Yan, J. Naushad, C. You et al., *Localized Region Contrast for Enhancing
# Self-Supervised Learning in Medical Image Segmentation*, MICCAI 2023 (arXiv:2304.03406). Global
# method: MoCo (K. He et al., CVPR 2020, arXiv:1911.05722). Superpixels: P. Felzenszwalb and D.
# Huttenlocher, *Efficient graph-based image segmentation*, IJCV 2004. Details:
# [docs/methods.md, LRC](../docs/methods.md#lrc--localized-region-contrast).
#
# > **Which pairs are positive?** Global contrast answers for whole images (two views of a slice).
# > LRC adds an answer for **regions**: cut each slice into superpixels, follow every superpixel
# > into both augmented views, pool the decoder's features inside it; the same region in the other
# > view is the positive, every other sampled region of the image and the batch a negative:
# > $\mathcal{L} = \mathcal{L}_{\text{global}} + \lambda\,\mathcal{L}_{\text{region}}$.
#
# Why it matters here: a global method (SimCLR, MoCo, and the pairings of chapters 01-02) trains
# only the encoder; the decoder starts at random when fine-tuning begins. Whether global
# pretraining beats random initialisation is a question each chapter measures on its own run. The
# region loss also trains the **decoder**, which fine-tuning can then keep. This notebook measures
# what that adds, with the same label budgets, folds and seeds for every initialisation, and asks
# what the pretrained encoder holds under lighter evaluation protocols.
#
# **Learning goals.** After this chapter you can
# - choose Felzenszwalb's `scale`, `sigma` and `min_size` for a CT slice and check the choice with
#   the achievable accuracy of the regions against the organ masks;
# - carry a superpixel map through an augmentation so that region ids match in both views, and pool
#   decoder features per region in one scatter-add;
# - write LRC's region pairing rule as a positive mask and its loss as NT-Xent over sampled
#   regions, added with weight $\lambda$ to a global contrastive or a supervised loss;
# - test whether a pretrained decoder adds anything, by pairing encoder-only transfer against
#   encoder + decoder transfer on the same folds and seed;
# - tell what pretraining put in the encoder from what fine-tuning needs, with a frozen encoder, a
#   slower encoder and a linear probe beside full fine-tuning.
#
# **Prerequisites.** [00 · Quickstart](00_quickstart.ipynb) (InfoNCE with a positive mask, MoCo,
# paired comparisons against random init); [02 · PCL](02_pcl.ipynb) helps (the evaluation
# protocols, Dice per volume). Concepts: a U-Net's encoder and decoder, cross-entropy and Dice
# losses, geometric augmentation (crop, flip, rotation).
#
# What you will do, on a built-in multi-organ abdominal CT phantom (no download):
# 1. compute Felzenszwalb superpixels on a slice and see how `scale` and `min_size` change them
#    (`sigma` held at `sp_sigma`) and how well they follow the organ boundaries;
# 2. cache them once, reuse them every epoch;
# 3. follow the regions into two augmented views, pool features per region, and see the region
#    positive mask;
# 4. pretrain MoCo vs MoCo + LRC, and supervised vs supervised + LRC;
# 5. fine-tune with a few labelled volumes and compare per-organ Dice against random init, in
#    pairs (same fold and seed);
# 6. at the smallest budget, evaluate the encoders with a frozen encoder, a slower encoder and a
#    linear probe beside full fine-tuning.

# %% [markdown]
# ## Setup
# On Colab this installs the package (Colab already has torch); elsewhere `pip install -e .`.
# Running two notebooks (or a notebook and the tests) on one CPU? Give each its share of the cores:
# `medcl_lite.set_threads(1)` below, or start Jupyter with `MEDCL_THREADS=1` (README, "Several runs on one CPU").

# %%
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/medcl-lite/medcl_lite"],
        check=True,
    )

import medcl_lite  # first, before torch: CPU threads then wait passively when other runs share the cores

medcl_lite.set_threads()  # $MEDCL_THREADS if set (README: several runs on one CPU), else one per core

# %%
import inspect
import time

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from skimage.segmentation import mark_boundaries

from medcl_lite import reference, train, viz
from medcl_lite import regions as lrc
from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.config import from_params, pick, reproduction_settings
from medcl_lite.data.datasets import TwoViewDataset, check_finetune_set, cross_validation_folds
from medcl_lite.data.phantoms import make_abdominal_volumes
from medcl_lite.data.prepared import load_role
from medcl_lite.data.superpixels import FelzenszwalbParams, felzenszwalb_regions, superpixels
from medcl_lite.data.transforms import view_transform
from medcl_lite.experiment import (
    EVALUATION_PROTOCOLS,
    load_predictions,
    protocol_report,
    protocol_table,
    run_evaluation_protocols,
    run_finetune_grid,
)
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.train import FinetuneConfig, PretrainConfig, pretrain

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill sets these and, by name, any setting of REPRODUCTION below
# (medcl reproduce 03_lrc -f notebooks/params/lrc/<preset>.yaml -p ft_lr 1e-4).
smoke = None  # None: smoke run on a CPU, teaching run on a GPU; True or False forces it
preset = "auto"  # size when not smoke: cpu (a 2-core CPU, 1.5-2 hours), gpu, or auto
seed = 0  # data, split and pretraining seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/lrc-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
# Data: "phantom" (built in), or prepared folders (a path, or a name under $MEDCL_DATA/prepared).
pretrain_data = "phantom"  # unlabelled volumes for self-supervised pretraining (phantom: site A)
finetune_data = "phantom"  # labelled volumes for fine-tuning, k-fold (phantom: site A)
supervised_data = "phantom"  # fully labelled source for supervised pretraining (phantom: site B)
methods = []  # empty: the size's pretraining methods (names of METHODS below)
# LRC (unpublished in the paper: our choices, explained in section 2 and 4)
region_weight = 1.0  # λ, the weight of the region term (L_global + λ·L_region)
regions_per_image = 8  # R regions sampled per image
sp_scale = 0.0  # Felzenszwalb scale, 0: the size's value
label_counts = []  # empty: the size's budgets
reproduction = {}  # other settings by name, e.g. {"ft_lr": 1e-4}: the REPRODUCTION cell below

# %% jupyter={"source_hidden": true} tags=["reproduction"]
# The settings of a paper reproduction, out of the reader's way: the presets in notebooks/params/lrc/
# set them (see its README). 0, -1 or empty: the size's value (SIZES below).
REPRODUCTION = dict(
    encoder="resnet18",  # smp encoder of the U-Net
    image_size=0,  # 0: the size's image side (phantom only)
    pretrain_epochs=0,  # 0: the size's value
    pretrain_batch=0,  # 0: the size's value
    lr=0.0,  # contrastive pretraining lr, 0: the size's value (SGD, momentum 0.9, wd 1e-5)
    supervised_lr=1e-3,  # supervised pretraining: Adam at this lr with CE + Dice (section 5 says why)
    warmup_epochs=-1,  # -1: the size's value
    queue_size=0,  # MoCo queue, 0: the size's value
    moco_momentum=0.0,  # 0: the size's value
    temperature=0.1,  # global InfoNCE τ
    proj_dim=0,  # 0: the size's value
    augment="quickstart",  # view preset (crop, flip, rotation, intensity); regions follow the geometry
    region_min_pixels=16,  # skip regions smaller than this in either view
    region_temperature=0.1,  # τ of the region InfoNCE
    sp_sigma=0.5,  # Felzenszwalb Gaussian pre-smoothing (pixels)
    sp_min_size=0,  # Felzenszwalb minimum region size (pixels), 0: the size's value
    label_unit="volumes",  # what a label budget counts: volumes or patients
    n_folds=0,  # 0: the size's value
    ft_steps=0,  # fine-tuning steps, 0: the size's value
    ft_epochs=0,  # > 0: fine-tune for epochs over the labelled slices instead
    ft_eval_every=0,  # steps between validation checks, 0: a sixth of the run
    ft_batch=0,  # 0: the size's value
    ft_lr=0.0,  # 0: the size's value (Adam)
    ft_loss="ce+dice",  # "ce" | "ce+dice"
    ft_augment="light",  # "none" | "light"
    eval_protocols=[],  # beside full fine-tuning (medcl_lite.experiment.EVALUATION_PROTOCOLS): "frozen encoder", "discriminative", "linear probe"; empty: the size's
)

# %% [markdown]
# Values derived from the parameters. Three sizes: **smoke** (a minute or two on a CPU: checks
# that everything runs; numbers mean little), **cpu** (a 2-core CPU, about 1.5-2 hours) and
# **gpu** (a Colab GPU: 128² slices, longer pretraining, 5 folds).

# %%
repro = reproduction_settings(REPRODUCTION, reproduction)  # repro.ft_lr, repro.encoder, ...
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, preset, run_device)  # smoke=None: smoke on a CPU
ALL_METHODS = ["MoCo", "MoCo + LRC", "Supervised", "Supervised + LRC"]
SIZES = {
    "smoke": dict(image=64, patients=8, slices=(8, 10), epochs=1, batch=8, lr=0.05, warmup=0, queue=64,
                  m=0.99, proj=64, methods=ALL_METHODS, counts=[1], folds=2, ft_steps=6, ft_batch=4,
                  ft_lr=1e-3, sp_scale=60.0, sp_min=20, protocols=["linear probe"]),
    "cpu": dict(image=64, patients=32, slices=(14, 20), epochs=15, batch=32, lr=0.05, warmup=1,
                queue=256, m=0.99, proj=128, methods=ALL_METHODS, counts=[1, 2, 4], folds=3,
                ft_steps=300, ft_batch=8, ft_lr=1e-3, sp_scale=60.0, sp_min=20,
                protocols=["frozen encoder", "linear probe"]),
    "gpu": dict(image=128, patients=60, slices=(16, 28), epochs=100, batch=32, lr=0.05, warmup=5,
                queue=1024, m=0.99, proj=128, methods=ALL_METHODS, counts=[1, 2, 4, 8], folds=5,
                ft_steps=600, ft_batch=10, ft_lr=1e-3, sp_scale=120.0, sp_min=40,
                protocols=["frozen encoder", "discriminative", "linear probe"]),
}
if size not in SIZES:
    raise ValueError(f"preset={preset!r}: choose one of {sorted(SIZES)} or 'auto'")
S = SIZES[size]
methods = list(pick(methods, S["methods"]))
label_counts = list(pick(label_counts, S["counts"]))
n_folds = pick(repro.n_folds, S["folds"])
sp_params = FelzenszwalbParams(scale=pick(sp_scale, S["sp_scale"]), sigma=repro.sp_sigma,
                               min_size=pick(repro.sp_min_size, S["sp_min"]))
if sorted(set(methods) - set(ALL_METHODS)):
    raise ValueError(f"unknown methods {sorted(set(methods) - set(ALL_METHODS))}; choose from {ALL_METHODS}")
eval_protocols = list(dict.fromkeys(repro.eval_protocols)) or list(S["protocols"])
PROTOCOL_CHOICES = [name for name in EVALUATION_PROTOCOLS if name != "full"]  # "full" is the main grid
if sorted(set(eval_protocols) - set(PROTOCOL_CHOICES)):
    raise ValueError(f"eval_protocols: unknown protocol(s) {sorted(set(eval_protocols) - set(PROTOCOL_CHOICES))}; "
                     f"choose from {PROTOCOL_CHOICES} (full fine-tuning always runs)")
run_dir = medcl_lite.run_folder(out_dir, f"lrc-{size}")  # out_dir, else $MEDCL_RUNS/lrc-{size}
medcl_lite.seed_everything(seed)
print(f"size={size}  device={run_device}  methods={methods}  λ={region_weight}  R={regions_per_image}  {sp_params}")
print(f"budgets={label_counts} {repro.label_unit}  folds={n_folds}  evaluation protocols={eval_protocols}")
print(f"run folder: {run_dir}")

# %% [markdown]
# ## 1 · The data
# Phantom contrast CT of the upper abdomen, one volume per patient from the liver dome to below
# the kidneys, shown in the radiological convention (the patient's right on the image left):
# liver, spleen, right and left kidney, stomach, with textured tissues, fat, muscle, spine,
# vessels and bowel as unlabelled context. Patients differ in build, organ size and position, and
# about half the livers hold dark lesions (metastases or cysts, labelled liver as annotators do).
# Site **A** is the reference scanner; site **B** another
# scanner and contrast phase, fully labelled: the source for supervised pretraining.
#
# | role | phantom | real data (presets) |
# |---|---|---|
# | self-supervised pretraining (unlabelled) | every site-A volume | e.g. BTCV or AMOS CT, all volumes |
# | supervised pretraining (all labels) | every site-B volume | another labelled multi-organ set |
# | fine-tuning, k-fold by patient | a few labelled site-A volumes | the target set |

# %%
sources = {"pretrain": (pretrain_data, "A"), "finetune": (finetune_data, "A"), "supervised": (supervised_data, "B")}
phantom = None
if any(value == "phantom" for value, _ in sources.values()):
    phantom = make_abdominal_volumes(n_patients=S["patients"], sites=("A", "B"), size=pick(repro.image_size, S["image"]),
                                     slices=S["slices"], seed=seed)
roles = {role: load_role(value, phantom, site) for role, (value, site) in sources.items()}
for role, (data, rows) in roles.items():
    part = data.meta.iloc[rows]
    print(f"{role:10s} {data.name}: {len(rows)} slices, {part.volume_id.nunique()} volumes, classes {data.classes}")
pool, pool_rows = roles["pretrain"]
ft_data, ft_rows = roles["finetune"]
# too few patients or labels for the folds and budgets: stop here, before any training
check_finetune_set(*roles["finetune"], role="finetune_data", n_folds=n_folds, label_counts=label_counts, seed=seed, unit=repro.label_unit)
classes = ft_data.classes
volume = pool_rows[pool.meta.volume_id.iloc[pool_rows].to_numpy() == pool.meta.volume_id.iloc[pool_rows[0]]]
shown = volume[np.linspace(0, len(volume) - 1, 6).round().astype(int)]
if pool.masks is not None:
    fig = viz.show_overlays(pool.images[shown], pool.masks[shown], pool.masks[shown], class_names=pool.classes)
else:
    fig = viz.show_images(pool.images[shown], titles=[f"depth {d:.2f}" for d in pool.meta.depth.iloc[shown]])
viz.save_figure(fig, run_dir / "figures" / "volume.png")

# %% [markdown]
# ## 2 · Felzenszwalb superpixels
# Felzenszwalb's graph-based segmentation merges neighbouring pixels while the intensity step
# between two groups is small compared with the variation inside them. The graph links every pixel
# to its 8 neighbours with weight $w(p, q) = |I_\sigma(p) - I_\sigma(q)|$, where $I_\sigma$ is the
# slice smoothed by a Gaussian of standard deviation $\sigma$ = `sigma` (pixels). Edges are visited
# from the lightest; an edge $e$ between components $C_1 \ne C_2$ merges them when
#
# $$
# w(e) < \min\Big(\mathrm{Int}(C_1) + \frac{k}{|C_1|},\; \mathrm{Int}(C_2) + \frac{k}{|C_2|}\Big),
# \qquad k = \texttt{scale} / 255,
# $$
#
# with $\mathrm{Int}(C)$ the heaviest edge merged into $C$ so far (0 for a single pixel) and $|C|$
# its size in pixels. The $k/|C|$ term lets small components merge across larger steps, so a larger
# `scale` gives fewer, larger regions; scikit-image divides `scale` by 255, so on our slices in
# [0, 1] it is in 0-255 intensity units (`medcl_lite.data.superpixels`). Afterwards, any component
# under `min_size` pixels is merged into a neighbour along the lightest edges. The three are the
# fields of `FelzenszwalbParams(scale, sigma, min_size)` (`sp_scale`, `sp_sigma`, `sp_min_size`
# here); LRC does not publish its values. A grid over one slice
# (`skimage.segmentation.felzenszwalb`), with, where the slice has organ labels, the *achievable
# accuracy* of each setting: label every region with its majority class $c$ and count the pixels
# that come out right, $\frac{1}{|\text{slice}|}\sum_{r} \max_c |\Omega_r \cap Y_c|$ ($\Omega_r$
# the pixels of region $r$, $Y_c$ those of class $c$):

# %%
slice_row = volume[len(volume) // 3]
image = pool.images[slice_row]
grid, titles, quality = [], [], []
truth = ft_data.masks[slice_row] if (ft_data is pool and pool.masks is not None) else None
for scale in (20.0, 60.0, 200.0):
    for min_size in (5, 20, 80):
        params = FelzenszwalbParams(scale=scale, sigma=repro.sp_sigma, min_size=min_size)
        regions = felzenszwalb_regions(image, params)
        grid.append(mark_boundaries(np.stack([image] * 3, -1), regions, color=(1, 0.2, 0.2)).transpose(2, 0, 1))
        titles.append(f"scale {scale:g}, min {min_size}: {regions.max() + 1}")
        if truth is not None:  # how well regions follow organs: majority-label accuracy (ASA)
            counts = np.zeros((regions.max() + 1, len(classes)), int)
            np.add.at(counts, (regions.ravel(), truth.ravel()), 1)
            quality.append({"scale": scale, "min_size": min_size, "regions": int(regions.max() + 1),
                            "achievable accuracy": counts.max(1).sum() / truth.size})
fig = viz.show_images(np.stack(grid), titles=titles, ncols=3, suptitle="Felzenszwalb superpixels: scale x min_size")
viz.save_figure(fig, run_dir / "figures" / "superpixel_grid.png")
if quality:
    display(pd.DataFrame(quality).round(3).set_index(["scale", "min_size"]))

# %% [markdown]
# **Our choice** (`sp_scale`, `sp_sigma`, `sp_min_size`): enough regions that most lie inside one
# organ (achievable accuracy, the pixel accuracy of labelling each region by its majority class,
# close to 1), few enough that each covers more than `region_min_pixels` pixels after cropping, so
# pooled features average over a real piece of tissue. Small organs (kidneys) need several
# regions, the liver gets many.

# %% [markdown]
# ## 3 · Computed once, cached, reused
# Superpixels depend only on the unaugmented slice, so they are computed once per slice and
# cached on disk (keyed by the parameters and the images); every epoch reuses them. The timing
# of a first (computing) and a second (cached) call:

# %%
cache_dir = run_dir / "superpixels"
timings = {}
for attempt in ("first call", "second call"):
    t0 = time.perf_counter()
    pool_regions = superpixels(pool, sp_params, cache_dir=cache_dir)
    timings[attempt] = time.perf_counter() - t0
per_slice = np.array([r.max() + 1 for r in pool_regions[pool_rows]])
display(pd.Series(timings, name="seconds").round(3).to_frame().T)
print(f"{len(pool)} slices, {per_slice.mean():.0f} regions per slice (min {per_slice.min()}, max {per_slice.max()}); "
      f"cache: {sorted(p.name for p in cache_dir.iterdir())}")

# %% [markdown]
# ## 4 · Regions in two views, pooled, and the region positive mask
# The view augmentation moves the region map with exactly the same geometry as its view
# (nearest-neighbour sampling, so region ids stay exact; pixels from outside the slice get -1).
# Below: two views of three slices with their region boundaries; region pairs at the same place
# of the anatomy carry the same id.
#
# > **Pitfall.** Resize or warp a region map only with nearest-neighbour sampling. Bilinear
# > interpolation averages neighbouring ids into the id of some unrelated region, and the "same
# > region in the other view" is then no longer the same tissue.

# %%
views = TwoViewDataset(pool, view_transform(pool.image_size[0], repro.augment), index=pool_rows, regions=pool_regions)
items = [views[int(i)] for i in np.linspace(0, len(pool_rows) - 1, 3).round().astype(int)]
panels = []
for item in items:
    for v, r in (("view1", "regions1"), ("view2", "regions2")):
        picture = item[v][0].numpy().clip(0, 1)
        panels.append(mark_boundaries(np.stack([picture] * 3, -1), item[r].numpy() + 1, color=(1, 0.2, 0.2)).transpose(2, 0, 1))
fig = viz.show_images(np.stack(panels), ncols=2, suptitle="view 1 | view 2, with their superpixel regions")
viz.save_figure(fig, run_dir / "figures" / "region_views.png")

# %% [markdown]
# **Pooling.** Decoder features `[B, C, H, W]` are averaged inside every region (`region_pool`).
# For image $b$ of the batch, with feature map $f_b$ and region $k$ covering the pixels
# $\Omega_{b,k} = \{x : \texttt{regions}[b, x] = k\}$:
#
# $$
# r_{b,k} = \frac{1}{|\Omega_{b,k}|} \sum_{x \in \Omega_{b,k}} f_b(x),
# $$
#
# computed for every $(b, k)$ at once by one scatter-add (`index_add` over the flat index
# $b \cdot K + k$, $K$ = the number of region ids) and one `bincount` for $|\Omega_{b,k}|$
# (`counts`); no loop over regions. The region map is brought to the feature map's size by nearest
# neighbour (the features are never upsampled), pixels with id $-1$ (outside the slice after a
# crop) belong to no region, and an empty region pools to 0.
#
# **Sampling.** `sample_regions` keeps the regions with $|\Omega^{(1)}_{b,k}| \ge$
# `region_min_pixels` and $|\Omega^{(2)}_{b,k}| \ge$ `region_min_pixels` (in *both* views) and draws
# up to $R$ = `regions_per_image` of them per image, uniformly without repeats (LRC's "contrastive
# sampling"). Together the batch gives $M$ sampled regions $i = (b_i, k_i)$.
#
# **Which pairs are positive?** Each sampled region is projected by the region head $g$
# (`RegionHead`, the same head for both views): $u_i = g(r^{(1)}_{b_i,k_i})$ in view 1 and
# $u_{M+i} = g(r^{(2)}_{b_i,k_i})$ in view 2. The positive of a region is the same superpixel of
# the same image in the other view, and every other sampled region, of the same image or another,
# in either view, is a negative:
#
# $$
# P(i) = \{\, j \ne i : b_j = b_i,\ k_j = k_i \,\} = \{\text{the other view of } i\}
# $$
#
# (indices over the $2M$ projected regions, with $b_{M+i} = b_i$ and $k_{M+i} = k_i$;
# `region_positive_mask`: because regions are drawn without repeats it is the identity over the
# $M$ sampled regions, the instance mask of [00 · Quickstart](00_quickstart.ipynb), section 3).
# The region loss is the shared NT-Xent over the $2M$ projected regions:
#
# $$
# \mathcal{L}_{\text{region}} = -\frac{1}{2M} \sum_{i=1}^{2M}
# \log \frac{\exp\big(s(u_i, u_{p(i)})/\tau_r\big)}{\sum_{a \ne i} \exp\big(s(u_i, u_a)/\tau_r\big)}
# $$
#
# with $p(i)$ the single element of $P(i)$, $s$ the cosine similarity and $\tau_r$ =
# `region_temperature`; with $M < 2$ the term is 0. The paper fixes the rule (same region,
# other view; other regions negatives) but not $R$, the size threshold, $\tau_r$ or the decoder
# level: those are the code's choices (section 5). The code, and the positive mask of a real batch
# of the three slices above:

# %%
print(inspect.getsource(lrc.region_loss))
batch = torch.utils.data.default_collate(items)
probe = train.build_contrastive(from_params(PretrainConfig, region_weight=1.0))
with torch.no_grad():
    _, dense = probe.forward_dense(torch.cat([batch["view1"], batch["view2"]]))
d1, d2 = dense.chunk(2)
_, counts1 = lrc.region_pool(d1, batch["regions1"])
_, counts2 = lrc.region_pool(d2, batch["regions2"], num_regions=counts1.shape[1])
image_idx, region_idx = lrc.sample_regions(counts1, counts2, regions_per_image, repro.region_min_pixels,
                                           generator=torch.Generator().manual_seed(seed))
ticks = [f"{i}:{r}" for i, r in zip(image_idx.tolist(), region_idx.tolist(), strict=True)]
fig = viz.show_mask(lrc.region_positive_mask(image_idx, region_idx), title=f"{len(ticks)} sampled regions (image:region): positive = same region, other view",
                    tick_labels=ticks)
viz.save_figure(fig, run_dir / "figures" / "region_mask.png")

# %% [markdown]
# ## 5 · Pretraining
# Every run minimises one objective (`medcl_lite.train.local_loss`):
#
# $$
# \mathcal{L} = \mathcal{L}_{\text{global}} + \lambda \, \mathcal{L}_{\text{region}}
# $$
#
# with $\lambda$ = `region_weight`, where $\mathcal{L}_{\text{global}}$ is MoCo's InfoNCE (temperature `temperature`, see
# [00 · Quickstart](00_quickstart.ipynb)) or, for supervised pretraining, the segmentation loss
# on both views' masks; $\lambda = 0$ gives the base method alone.
# - **MoCo**: the global method, query and key from the two views, a queue of negatives.
# - **MoCo + LRC**: the same plus $\lambda\,\mathcal{L}_{\text{region}}$ on the last U-Net decoder
#   stage (16 channels at full resolution; our choice of level: the features segmentation reads).
#   The key view's region features come from the momentum network (no gradient), then pass through
#   the same online region head; the region term has no queue, so its negatives are the batch's
#   sampled regions only.
# - **Supervised**: segmentation of the fully labelled site-B volumes (both views, same geometry
#   for the masks), with the fine-tuning recipe: Adam at `supervised_lr` and cross-entropy + Dice.
# - **Supervised + LRC**: the same plus $\lambda\,\mathcal{L}_{\text{region}}$ (LRC Sec. 4 reports
#   that LRC also helps supervised pretraining; section 7 measures whether it does here).
#
# The LRC variants and supervised pretraining train encoder **and** decoder; fine-tuning keeps both.
#
# > **Pitfall.** With cross-entropy alone, a short supervised pretraining run can settle on the
# > background and the largest organ: small organs hold few pixels and barely move the loss. The
# > Dice term weighs every organ alike, hence CE + Dice here; check the per-organ scores of a
# > supervised source before calling it a baseline.

# %%
supervised_optim = {"optimizer": "adam", "lr": repro.supervised_lr, "supervised_loss": "ce+dice"}
METHODS = {
    "MoCo": dict(framework="moco", region_weight=0.0),
    "MoCo + LRC": dict(framework="moco", region_weight=region_weight),
    "Supervised": dict(framework="supervised", region_weight=0.0, **supervised_optim),
    "Supervised + LRC": dict(framework="supervised", region_weight=region_weight, **supervised_optim),
}
common = {
    "max_epochs": pick(repro.pretrain_epochs, S["epochs"]), "batch_size": pick(repro.pretrain_batch, S["batch"]),
    "seed": seed, "device": device, "progress": progress, "resume": True, "augment": repro.augment,
    "lr": pick(repro.lr, S["lr"]), "warmup_epochs": repro.warmup_epochs if repro.warmup_epochs >= 0 else S["warmup"],
    "queue_size": pick(repro.queue_size, S["queue"]), "moco_momentum": pick(repro.moco_momentum, S["m"]),
    "temperature": repro.temperature, "proj_dim": pick(repro.proj_dim, S["proj"]), "encoder": repro.encoder,
    "regions_per_image": regions_per_image, "region_min_pixels": repro.region_min_pixels,
    "region_temperature": repro.region_temperature, "sp_scale": sp_params.scale, "sp_sigma": sp_params.sigma,
    "sp_min_size": sp_params.min_size, "superpixel_cache": str(cache_dir),
}
sup_data, sup_rows = roles["supervised"]
pretrained = {}
for name in methods:
    supervised = METHODS[name]["framework"] == "supervised"
    data, rows = (sup_data, sup_rows) if supervised else (pool, pool_rows)
    cfg = from_params(PretrainConfig, common, **METHODS[name],
                      out_dir=str(run_dir / f"pretrain_{name.lower().replace(' + ', '_').replace(' ', '_')}"))
    pretrained[name] = pretrain(cfg, data, index=rows)
    h = pretrained[name].history
    print(f"{name:17s} {len(h)} steps in {pretrained[name].seconds:.0f} s, final loss {h.loss.iloc[-3:].mean():.3f}"
          + (f" (region {h.region_loss.iloc[-3:].mean():.3f}, {h.regions.iloc[-3:].mean():.0f} regions/step)"
             if "region_loss" in h else ""))
curves = {n: r.history for n, r in pretrained.items() if "region_loss" in r.history}
if curves:
    fig = viz.plot_curves(curves, x="step", y="region_loss", title="region loss during pretraining")
    viz.save_figure(fig, run_dir / "figures" / "region_loss.png")

# %% [markdown]
# ## 6 · Fine-tuning with a few labelled volumes
# k-fold by patient on the fine-tuning set; from each fold's label pool `n` volumes are labelled
# (nested budgets), a validation split picks the step, the held-out fold is scored once. Every
# initialisation sees the same volumes, folds and seed. To separate *what* helps, the LRC
# encoders are also fine-tuned with their pretrained encoder only (decoder at random). The Dice
# variants (per volume, per image) are defined in
# [00 · Quickstart, "Metrics used in every chapter"](00_quickstart.ipynb#Metrics-used-in-every-chapter).

# %%
ft_base = from_params(FinetuneConfig, {
    "max_steps": pick(repro.ft_steps, S["ft_steps"]), "max_epochs": repro.ft_epochs, "encoder": repro.encoder,
    "batch_size": pick(repro.ft_batch, S["ft_batch"]), "lr": pick(repro.ft_lr, S["ft_lr"]), "loss": repro.ft_loss,
    "augment": repro.ft_augment, "device": device, "paper_selection": False,
    "eval_every": pick(repro.ft_eval_every, max(5, pick(repro.ft_steps, S["ft_steps"]) // 6)),
})
inits = {"random init": None}
for name, result in pretrained.items():
    inits[name] = result.transfer_state
    if result.trains_decoder and "LRC" in name:
        inits[f"{name} (encoder only)"] = result.encoder_state
folds = cross_validation_folds(ft_data.meta, ft_rows, k=n_folds, seed=seed)
rows = run_finetune_grid(ft_data, folds, inits, label_counts, [seed], ft_base, out_dir=run_dir / "finetune",
                         progress=progress, unit=repro.label_unit)
atomic_write_text(run_dir / "results.csv", rows.to_csv(index=False))
print(f"{len(rows)} fine-tuning runs")


# %%
def budget_name(n) -> str:
    return "all labels" if str(n) == "all" else f"{n} {repro.label_unit[:-1] if str(n) == '1' else repro.label_unit}"


table = protocol_table(rows.assign(setting="semi"), ["init"], [], {"test_dice_volume": "Dice per volume"}, budget_name)
display(table)
organ_columns = [f"test_dice_{c}" for c in classes[1:] if f"test_dice_{c}" in rows]
per_organ = rows.groupby(["init", "n_labelled"], sort=False)[organ_columns].mean().round(3)
per_organ.columns = [c.removeprefix("test_dice_") for c in per_organ.columns]
display(per_organ)
if rows.n_labelled.nunique() > 1:
    fig = viz.plot_dice_vs_labels(rows, x="n_labelled", y="test_dice_volume", hue="init",
                                  title=f"per-volume Dice vs labelled {repro.label_unit}")
    viz.save_figure(fig, run_dir / "figures" / "dice_vs_labels.png")

# %% [markdown]
# ## 7 · Reading the result
# A pretrained run and the random-init run of the same fold and seed see the same labelled volumes,
# the same validation and test volumes and start from the same seed, so compare them in **pairs**:
# for pair $i$ (a fold × seed),
# $d_i = \text{Dice}(\text{pretrained}, i) - \text{Dice}(\text{random init}, i)$, with Dice per 3-D volume
# (`test_dice_volume`, the step chosen on validation; see
# [00, "Metrics used in every chapter"](00_quickstart.ipynb#Metrics-used-in-every-chapter)). Over the $n$ pairs the table gives the mean
# difference $\bar d$ (`mean_diff`) and its 95 % interval $\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt{n}$
# (`ci_low`, `ci_high`; `medcl_lite.paired`). The verdict is computed from it: "better" or "worse"
# only when the interval excludes 0, "no evidence" when it covers 0. With few folds the interval is
# wide ($t_{0.975,1} = 12.7$ for two pairs): "no evidence" then says the run is too small to tell,
# not that the methods are equal. Several initialisations face one baseline here: reading off the
# best of them after the fact overstates its difference (the winner's curse); each line is one
# comparison chosen before the run.

# %%
value = "test_dice_volume"  # the honest metric: Dice per volume, the step chosen on validation
pair_on = ["fold", "seed"]


def budget_label(row) -> str:
    return budget_name(row.n_labelled)


comparison = paired_comparison(rows, groups=["n_labelled"], value=value, pair_on=pair_on)
atomic_write_text(run_dir / "comparison.csv", comparison.to_csv(index=False))
display(comparison.round(3))
fig = viz.plot_paired(comparison, ["n_labelled", "init"], title="pretrained minus random init, paired on fold and seed")
viz.save_figure(fig, run_dir / "figures" / "paired.png")
summary_text = verdict_text(comparison, ["n_labelled"], label=budget_label, smoke=size == "smoke")
display(Markdown(summary_text))

# %% [markdown]
# **The LRC questions**, each its own paired comparison on the same folds and seed:
# - does adding LRC help its base method? `MoCo + LRC` against `MoCo`, `Supervised + LRC`
#   against `Supervised` (baseline: the method alone);
# - is what LRC adds in the encoder or in the decoder it also trains? `… + LRC (encoder only)`
#   (decoder at random) against `… + LRC` (encoder and decoder): a negative difference is what
#   dropping the pretrained decoder costs.

# %%
questions = []  # (method, baseline)
for base in ("MoCo", "Supervised"):
    if base in inits and f"{base} + LRC" in inits:
        questions.append((f"{base} + LRC", base))
    if f"{base} + LRC (encoder only)" in inits:
        questions.append((f"{base} + LRC (encoder only)", f"{base} + LRC"))
lrc_tables, lrc_texts = [], []
for method, baseline in questions:
    pair = paired_comparison(rows[rows.init.isin([method, baseline])], groups=["n_labelled"], value=value,
                             baseline=baseline, pair_on=pair_on)
    lrc_tables.append(pair.assign(baseline=baseline))
    lrc_texts.append(verdict_text(pair, ["n_labelled"], baseline=baseline, label=budget_label, smoke=size == "smoke"))
if lrc_tables:
    display(pd.concat(lrc_tables, ignore_index=True).round(3))
    lrc_text = "\n".join(lrc_texts)
    display(Markdown(lrc_text))
    summary_text += "\n\nThe LRC questions:\n\n" + lrc_text

# %% [markdown]
# **The reference run** of the `cpu` size, read from `notebooks/reference/03_lrc/` (recorded by
# `medcl reproduce 03_lrc -f notebooks/params/lrc/cpu.yaml --name lrc-reference --record`, never
# retyped): Dice per 3-D volume with the step chosen on validation, mean ± std over the folds, then
# its paired comparisons. Your run prints its own tables above; runs are deterministic by seed on
# one machine.

# %%
print(reference.caption("03_lrc"))
recorded = reference.load_table("03_lrc", "results.csv")
if recorded is not None:
    display(protocol_table(recorded.assign(setting="semi"), ["init"], [], {"test_dice_volume": "Dice per volume"},
                           budget_name))
    recorded_comparison = reference.load_table("03_lrc", "comparison.csv")
    if recorded_comparison is not None:
        display(recorded_comparison.round(3))

# %% [markdown]
# Means and fold spreads decide nothing alone; the paired intervals do. Questions to put to your
# run and the reference: does any initialisation's interval against random init exclude 0, and at
# which budget? Does adding LRC move MoCo and supervised pretraining the same way? Does the
# encoder-only variant lose against encoder + decoder, i.e. does what the region loss teaches live
# in the decoder it trains? Which organs are hard (the per-organ table)? With three folds and one
# seed there are three pairs per cell ($t_{0.975,2} = 4.3$): how large must a difference be before
# the interval can exclude 0? How close is random init at the largest budget to its smallest: how
# much room is left? Caveats: one seed, three folds, 64² slices and 15 pretraining epochs.
#
# > **Pitfall.** Too few fine-tuning steps leave the small organs (the kidneys) near zero Dice for
# > *every* initialisation, and a comparison then measures nothing but the liver. Read the
# > per-organ table before the paired verdicts; if an organ is near 0 in every row, raise
# > `ft_steps` first.

# %% [markdown]
# ## 8 · Evaluation protocols: what did the encoder learn?
# Full fine-tuning lets every weight move: a pretrained encoder can be overwritten, or not be
# needed, when the labelled volumes suffice. Self-supervised papers also measure the
# representation with lighter protocols (MoCo Sec. 4.1; SimCLR's linear evaluation). Here they run
# at the **smallest budget only**, with the same initialisations, folds, seed and fine-tuning
# settings as the grid (`eval_protocols`, `medcl_lite.experiment.run_evaluation_protocols`):
# - **frozen encoder** (`encoder_lr_scale=0`): only the decoder and the head learn, on the
#   encoder's frozen weights and its frozen BatchNorm statistics, so the score measures what
#   pretraining put in the encoder.
# - **discriminative** (`encoder_lr_scale=0.1`): the encoder learns at 0.1 × the decoder's rate:
#   it adapts to the labels but keeps most of what pretraining learned.
# - **linear probe** (`medcl_lite.probe`): a 1×1 convolution on encoder stage 3 (stride 8)
#   predicts each cell's majority class (the coarse mask), upsampled to score; nothing else
#   learns. The standard self-supervised measurement, in its dense form.
#
# What is transferred (printed below): MoCo trains the encoder only. The region loss reads the
# last decoder stage, so the LRC variants (and supervised pretraining) also trained the decoder, and
# the grid transfers encoder **and** decoder for them (`transfer_state`). Under "frozen encoder" their decoder starts
# pretrained and keeps learning, so those rows measure the encoder plus a decoder start; the
# "(encoder only)" rows start the decoder at random and measure the encoder alone. The linear probe
# reads the encoder only: `… + LRC` and `… + LRC (encoder only)` share it and probe alike.
#
# The metric here is Dice per image (`test_dice`, see
# [00, "Metrics used in every chapter"](00_quickstart.ipynb#Metrics-used-in-every-chapter)), the one
# the probe gives, so the full fine-tuning rows of this budget are compared in it too (not in
# section 7's Dice per volume).
# Under each protocol every initialisation is paired with random init under the same protocol
# (same fold and seed). How to read it: if pretraining wins under the frozen encoder or the probe
# but not under full fine-tuning, the representation holds something that full fine-tuning at this
# size does not need, or overwrites; if it does not win there either, what pretraining put in the
# encoder is not what this segmentation reads.

# %%
print("transferred:", {name: "encoder + decoder" if r.trains_decoder else "encoder" for name, r in pretrained.items()})
smallest = str(label_counts[0])
extra = run_evaluation_protocols(ft_data, folds, inits, label_counts[:1], [seed], ft_base, eval_protocols,
                                 out_dir=run_dir / "protocols", progress=progress, unit=repro.label_unit)
protocols = protocol_report(rows[rows.n_labelled == smallest], extra, pair_on=pair_on)
atomic_write_text(run_dir / "protocols.csv", protocols.rows.to_csv(index=False))
display(Markdown(f"**Dice per image at {budget_name(smallest)}, mean ± std over folds**"))
display(protocols.means)
display(protocols.comparison.round(3))
protocol_text = protocols.text(label=lambda row: f"{row.protocol}, {budget_name(row.n_labelled)}", smoke=size == "smoke")
display(Markdown(protocol_text))

# %% [markdown]
# ## 9 · Overlays
# Test slices of fold 0 at the smallest budget: contours are the ground truth, colours the
# prediction, for random init and the pretraining with the highest mean (picked after the fact:
# the winner's curse applies to it).

# %%
n_small = str(label_counts[0])
fold = folds[0]
show = fold.test[:: max(1, len(fold.test) // 4)][:4]
cell = rows[rows.n_labelled == n_small]
best = cell[cell.init != "random init"].groupby("init").test_dice_volume.mean().idxmax()
for init in ("random init", best):
    pred = load_predictions(run_dir / "finetune", init, n_small, seed, fold=0)
    fig = viz.show_overlays(ft_data.images[show], ft_data.masks[show], pred[np.searchsorted(fold.test, show)],
                            class_names=classes)
    fig.suptitle(f"{init}, {budget_name(n_small)}", y=1.03)
    viz.save_figure(fig, run_dir / "figures" / f"overlay_{init.split()[0].lower()}.png")

# %%
md = [
    f"# LRC results ({size}, {env['device']}, torch {env['torch']})",
    "",
    f"Data: pretrain={pretrain_data}, finetune={finetune_data}, supervised={supervised_data}; "
    f"λ={region_weight}, R={regions_per_image}, min pixels={repro.region_min_pixels}, "
    f"τ_region={repro.region_temperature}, "
    f"{sp_params}; budgets in {repro.label_unit}; {n_folds}-fold cross-validation; mean ± std over folds.",
    "",
    table.to_markdown(),
    "",
    "Per organ (mean over folds):",
    "",
    per_organ.reset_index().to_markdown(index=False),
    "",
    summary_text,
    "",
    f"Evaluation protocols at {budget_name(smallest)}, Dice per image, mean ± std over folds:",
    "",
    protocols.means.to_markdown(),
    "",
    protocol_text,
    "",
]
atomic_write_text(run_dir / "results.md", "\n".join(md))
print((run_dir / "results.md").read_text())


# %% [markdown]
# ## Exercises
# Predict first (write your guess down), then run, then explain what you saw. Each exercise names
# the parameter or function to change; the worked answers run every experiment and explain the
# outcome: [solutions/03_lrc.ipynb](solutions/03_lrc.ipynb).
#
# **Exercise 03.1 · Superpixel scale and organ boundaries** *(about 1 min on 2 cores)*
# *Predict*: raise Felzenszwalb's `scale` from 10 to 250 (`sigma` 0.5, `min_size` 20) on 64² slices.
# Roughly how many regions per slice at each end? Does the achievable accuracy fall steadily, or
# stay near 1 up to some scale and then drop? Which organ is swallowed by a neighbour first?
# *Run*: `superpixels(data, FelzenszwalbParams(scale=s, sigma=0.5, min_size=20))` for s = 10, 30, 60,
# 120, 250 on 12 site-A volumes (`make_abdominal_volumes(n_patients=12, sites=("A",), size=64,
# slices=(8, 12))`); per scale the median `region_counts`, the achievable accuracy of section 2, the
# share of regions that are at least 90 % one class, and per organ the share of its pixels that lie
# in regions it dominates.
# *Explain*: why a larger `scale` merges across organ boundaries, why the smallest or
# lowest-contrast organ suffers first, and what a small `scale` costs instead (regions that fall
# under `region_min_pixels` after a crop).
#
# **Exercise 03.2 · Same-organ negatives in the region loss** *(about 1 min on 2 cores)*
# *Predict*: the region positive mask has one positive per region. Of a region's $2M - 2$
# negatives, what share are regions of its own class (two pieces of the same organ, or background
# with background)? Does raising R = `regions_per_image` from 4 to 16 raise that share, lower it,
# or leave it alone?
# *Run*: one batch of 32 slices with `TwoViewDataset(..., regions=..., masks=True)`; label each
# region by pooling a one-hot map of the view's mask with `lrc.region_pool` (a region's class
# histogram), draw regions with `lrc.sample_regions` (R = 4, 8, 16; `scale` 30, 60, 120), build
# `lrc.region_positive_mask` and count the negative pairs whose regions share a majority class.
# *Explain*: why the share follows the class mix of the sampled regions rather than R, why
# same-organ negatives work against segmentation, and why LRC adds the region term to a global
# (or supervised) loss instead of using it alone.
#
# **Exercise 03.3 · The LRC weight λ and the region loss's chance value** *(about 2 min on 2 cores)*
# *Predict*: what does `lrc.region_loss` return when every region has the same embedding, as a
# function of the number $M$ of sampled regions? After 6 epochs of MoCo + LRC with λ =
# `region_weight` = 0, 1 and 4, does the region loss end below that value, and does the MoCo
# (global) loss end higher at λ = 4 than at λ = 0?
# *Run*: `lrc.region_loss` on a constant feature map, against $\log(2M - 1)$; then `pretrain`
# (MoCo, batch 16, 6 epochs, queue 128, `region_weight` 0, 1, 4) on the 12 volumes, and compare
# `history.region_loss` with $\log(2\,\cdot$ `history.regions` $- 1)$ step by step and `global_loss`
# across λ.
# *Explain*: why $\log(2M - 1)$ of each step, not 0, is the reference, what λ trades between the
# two terms, and why pretext losses do not yet say anything about segmentation.
#
# **Exercise 03.4 · Encoder-only vs encoder + decoder transfer** *(about 4 min on 2 cores)*
# *Predict*: fine-tuned with one labelled volume, does the λ = 1 model of 03.3 do better with its
# pretrained decoder (`transfer_state`) than with its encoder alone (`encoder_state`, decoder at
# random)? Can a paired interval over 3 folds tell?
# *Run*: `run_finetune_grid` with random init, `MoCo + LRC` and `MoCo + LRC (encoder only)`, 3 folds,
# a budget of 1 volume, 80 steps; `paired_comparison` of `test_dice_volume` against random init and
# against `MoCo + LRC`, read with `verdict_text`.
# *Explain*: what the second comparison isolates, the mechanisms for and against keeping a
# pretrained decoder, and how wide a 95 % interval over three pairs is.

# %% [markdown]
# ## Key takeaways
# - LRC answers "which pairs are positive?" with the instance rule one level down: a superpixel is
#   positive only with itself in the other view. The mask is the identity over sampled regions,
#   and the same NT-Xent that serves whole images serves regions.
# - Correspondence comes from geometry, not from features: superpixels are cut once on the
#   unaugmented slice and carried into both views by the views' own transforms. Their quality
#   (how well regions stay inside one organ) bounds what a region pair can mean.
# - Other regions of the same image are negatives, including regions of the same organ: the rule
#   pushes apart pieces of tissue that a segmentation must later group, which is one reason the
#   region term is added to a global or supervised loss rather than used alone.
# - A region loss on decoder features trains the decoder, which a global method leaves at random.
#   Whether that pretrained decoder matters is measured, not assumed: compare `… + LRC` with
#   `… + LRC (encoder only)` in pairs.
# - Full fine-tuning can hide or overwrite what pretraining put in the encoder. Read the frozen
#   encoder and linear probe rows beside it, and check in the recorded reference table how much
#   room random initialisation leaves at each budget before expecting any gain.
#
# ## Further reading
# - X. Yan, J. Naushad, C. You et al., *Localized Region Contrast for Enhancing Self-Supervised
#   Learning in Medical Image Segmentation*, MICCAI 2023, arXiv:2304.03406. docs/methods.md cites
#   no public code for it; this package's implementation is `medcl_lite.regions`.
# - P. F. Felzenszwalb, D. P. Huttenlocher, *Efficient Graph-Based Image Segmentation*, IJCV 2004.
# - K. He, H. Fan, Y. Wu, S. Xie, R. Girshick, *Momentum Contrast for Unsupervised Visual
#   Representation Learning*, CVPR 2020, arXiv:1911.05722; code: github.com/facebookresearch/moco.
# - K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, *Contrastive learning of global and local
#   features for medical image segmentation with limited annotations*, NeurIPS 2020,
#   arXiv:2006.10511 (a local contrastive loss on decoder feature maps).
# - O. J. Hénaff, S. Koppula, J.-B. Alayrac, A. van den Oord, O. Vinyals, J. Carreira, *Efficient
#   Visual Pretraining with Contrastive Detection* (DetCon), ICCV 2021, arXiv:2103.10957 (features
#   pooled over unsupervised masks, Felzenszwalb's among them, contrasted across views).
# - X. Wang, R. Zhang, C. Shen, T. Kong, L. Li, *Dense Contrastive Learning for Self-Supervised
#   Visual Pre-Training* (DenseCL), CVPR 2021, arXiv:2011.09157 (one embedding per location instead
#   of per region; IDEAL, chapter 04, cites it as related work).
#
# [← 02 · PCL](02_pcl.ipynb) · [04 · IDEAL: dense contrast →](04_ideal.ipynb)
