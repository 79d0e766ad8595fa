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
# # 02 · PCL: slices at the same position of any volume are positives
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/02_pcl.ipynb)
#
# **Paper.** D. Zeng et al., *Positional Contrastive Learning for Volumetric Medical Image
# Segmentation*, MICCAI 2021 (arXiv:2106.09157). Baselines: SimCLR (T. Chen et al., ICML 2020) and
# the global contrastive strategy $G^D$ of K. Chaitanya et al., *Contrastive learning of global and
# local features for medical image segmentation with limited annotations*, NeurIPS 2020
# (arXiv:2006.10511), called **GCL** here. Details and hyper-parameters:
# [docs/methods.md, PCL](../docs/methods.md#pcl--positional-pairs).
#
# > **Which pairs are positive?** Each 2-D slice gets its normalised depth $d = (s + 1) / N$ in
# > its own volume (slice index $s$, $N$ slices; PCL eq. 1). **PCL**: slices of *any* volume with
# > $|d_i - d_j| < \theta$. **GCL**: slices in the same of `parts` depth partitions (default 4).
# > **SimCLR**: only the two views of a slice.
#
# **Learning goals.** After this chapter you can
# - compute a slice's normalised depth and build the positive masks of SimCLR, GCL and PCL from it,
#   for a batch and for a MoCo queue (`medcl_lite.pairing`);
# - explain why instance discrimination creates false negatives in volumetric scans, and measure
#   how many there are in a batch;
# - pretrain encoders that differ only in their positive mask, and probe whether an embedding
#   orders slices by anatomical position;
# - compare pretrained encoders with random initialisation in pairs (same fold and seed), under
#   two Dice protocols and under frozen-encoder and linear-probe evaluation;
# - reason about the threshold θ: what it does to the positive set, and how to read a θ sweep.
#
# **Prerequisites.** [00 · Quickstart](00_quickstart.ipynb) (SimCLR and MoCo, the masked InfoNCE,
# paired comparisons, the Dice metrics) and [01 · CL-TCI](01_cl_tci.ipynb) (a positive mask built
# from metadata, applied to MoCo's queue). Concepts: a 3-D scan as a stack of 2-D slices; cardiac
# short-axis MRI (left and right ventricle, myocardium); k-fold cross-validation by patient.
#
# What you will do, on built-in phantom cardiac MRI volumes (no download):
# 1. see why SimCLR makes *false negatives* in volumes: the same depth of two patients looks alike,
#    yet SimCLR pushes the two apart;
# 2. see the three answers (SimCLR, GCL, PCL) as positive masks, in a batch and in MoCo's queue;
# 3. pretrain SimCLR, GCL, PCL, MoCo and MoCo-PCL, and look at the embeddings coloured by depth;
# 4. fine-tune with 1, 2 and 6 labelled volumes in the **semi-supervised** setting (pretrain on all
#    site-A volumes, labels from site A) and the **transfer** setting (pretrain on site A,
#    fine-tune on a second site, B), k-fold by patient, against random initialisation, with Dice
#    read two ways (the paper's protocol and an honest one, section 6) and every pretraining paired
#    with random init (and PCL with SimCLR and GCL) on the same fold and seed;
# 5. sweep θ and read what the threshold changes;
# 6. measure the encoders with less freedom than full fine-tuning (frozen encoder, discriminative
#    learning rates, a linear probe) at the smallest label budget.
#
# Real data: the same notebook runs on prepared ACDC, CHD, MM-WHS and HVSMR folders through the
# presets in `notebooks/params/pcl/` (`medcl data check acdc`, …).

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

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from medcl_lite import pairing, reference, train, viz
from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.config import from_params, pick, reproduction_settings
from medcl_lite.data.datasets import TwoViewDataset, check_finetune_set, cross_validation_folds
from medcl_lite.data.phantoms import make_cardiac_volumes
from medcl_lite.data.prepared import load_role
from medcl_lite.data.transforms import view_transform
from medcl_lite.experiment import (
    EVALUATION_PROTOCOLS,
    load_predictions,
    protocol_report,
    protocol_table,
    run_evaluation_protocols,
    run_finetune_grid,
)
from medcl_lite.metrics import summarize
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.train import FinetuneConfig, PretrainConfig, embed, pretrain

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill sets these and, by name, any setting of REPRODUCTION below
# (medcl reproduce 02_pcl -f notebooks/params/pcl/<preset>.yaml -p ft_lr 1e-4).
smoke = None  # None: smoke run on a CPU, teaching run on a GPU; True or False forces it
preset = "auto"  # size when not smoke: cpu (~100 min on 2 cores), gpu, or auto
seed = 0  # data, split and pretraining seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/pcl-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
# Data: "phantom" (built in), or prepared folders (a path, or a name under $MEDCL_DATA/prepared).
pretrain_data = "phantom"  # unlabelled volumes for pretraining (phantom: every site-A volume)
semi_data = "phantom"  # semi-supervised fine-tuning set (phantom: site A)
transfer_data = "phantom"  # transfer fine-tuning set (phantom: site B)
methods = []  # empty: the size's pretraining methods (names of METHODS below)
threshold = 0.35  # PCL θ: |Δdepth| < θ are positives (paper: 0.35 ACDC, 0.1 CHD)
label_counts = []  # empty: the size's budgets (paper: 2 and 6 ACDC patients; 1, 2, 8 volumes)
reproduction = {}  # other settings by name, e.g. {"ft_lr": 1e-4}: the REPRODUCTION cell below

# %% jupyter={"source_hidden": true} tags=["reproduction"]
# The settings of a paper reproduction, out of the reader's way: the presets in notebooks/params/pcl/
# set them (see its README). 0, -1 or empty: the size's value (SIZES below).
REPRODUCTION = dict(
    settings=[],  # empty: ["semi", "transfer"]
    encoder="resnet18",  # smp encoder of the U-Net
    image_size=0,  # 0: the size's image side (phantom only; prepared data keep their size)
    parts=4,  # GCL: depth partitions per volume (Chaitanya et al.: 4)
    pretrain_epochs=0,  # 0: the size's value (paper: 300)
    pretrain_batch=0,  # 0: the size's value (paper: 32)
    lr=0.0,  # pretraining lr, 0: the size's value (paper: SGD 0.1, momentum 0.9, wd 1e-5)
    warmup_epochs=-1,  # -1: the size's value (paper: cosine, no warm-up stated)
    queue_size=0,  # MoCo queue, 0: the size's value
    moco_momentum=0.0,  # 0: the size's value
    temperature=0.1,  # paper: 0.1
    proj_dim=0,  # 0: the size's value (paper code: 512)
    augment="pcl_elastic",  # pretraining views: mirror, elastic, rotation, scale 0.7-1.3, each p 0.67
    sweep_thetas=[],  # θ values to sweep besides `threshold`; empty: the size's values; [0]: no sweep
    label_unit="volumes",  # what a label budget counts: volumes or patients (ACDC: 2 and 6 patients)
    n_folds=0,  # 0: the size's value (paper: 5-fold cross-validation)
    ft_steps=0,  # fine-tuning steps, 0: the size's value
    ft_epochs=0,  # > 0: fine-tune for epochs over the labelled slices instead (paper: 100)
    ft_eval_every=0,  # steps between validation checks, 0: a sixth of the run
    ft_batch=0,  # 0: the size's value (paper: 10)
    ft_lr=0.0,  # 0: the size's value (paper: Adam 5e-5, cosine)
    ft_loss="ce+dice",  # "ce" (paper) | "ce+dice"
    ft_augment="light",  # "none" (paper's CHD code) | "light"
    eval_protocols=[],  # beside full fine-tuning (medcl_lite.experiment.EVALUATION_PROTOCOLS): "frozen encoder", "discriminative", "linear probe"; empty: the size's
)

# %% [markdown]
# Values derived from the parameters. Three sizes: **smoke** (a minute or two on a CPU: checks
# that everything runs; numbers mean little), **cpu** (about 100 minutes on a 2-core CPU) and
# **gpu** (a Colab GPU: 128² slices, longer pretraining, 5 folds). The paper presets in
# `notebooks/params/pcl/` set every value explicitly. Each size also names the evaluation
# protocols run beside full fine-tuning (section 9).

# %%
repro = reproduction_settings(REPRODUCTION, reproduction)  # repro.ft_lr, repro.encoder, ...
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, preset, run_device)  # smoke=None: smoke on a CPU
ALL_METHODS = ["SimCLR", "GCL", "PCL", "MoCo", "MoCo-PCL"]
SIZES = {
    "smoke": dict(image=64, patients=8, slices=(6, 8), epochs=1, batch=8, lr=0.1, warmup=0, queue=64,
                  m=0.99, proj=64, methods=["SimCLR", "GCL", "PCL", "MoCo-PCL"], counts=[1], folds=2,
                  ft_steps=6, ft_batch=4, ft_lr=1e-3, thetas=[0.1], protocols=["linear probe"]),
    "cpu": dict(image=64, patients=36, slices=(10, 18), epochs=20, batch=32, lr=0.1, warmup=2,
                queue=256, m=0.99, proj=128, methods=ALL_METHODS, counts=[1, 6], folds=3,
                ft_steps=150, ft_batch=8, ft_lr=1e-3, thetas=[0.05, 0.1, 0.2, 0.5],
                protocols=["frozen encoder", "linear probe"]),
    "gpu": dict(image=128, patients=60, slices=(10, 18), epochs=150, batch=32, lr=0.1, warmup=5,
                queue=1024, m=0.99, proj=512, methods=ALL_METHODS, counts=[1, 2, 6, "all"], folds=5,
                ft_steps=300, ft_batch=10, ft_lr=1e-3, thetas=[0.05, 0.1, 0.2, 0.5],
                protocols=["frozen encoder", "discriminative", "linear probe"]),
}
if size not in SIZES:
    raise ValueError(f"preset={preset!r}: choose one of {sorted(SIZES)} or 'auto'")
S = SIZES[size]


settings = list(pick(repro.settings, ["semi", "transfer"]))
methods = list(pick(methods, S["methods"]))
label_counts = list(pick(label_counts, S["counts"]))
n_folds = pick(repro.n_folds, S["folds"])
thetas = [t for t in pick(repro.sweep_thetas, S["thetas"]) if t and t != threshold]
unknown = sorted(set(methods) - set(ALL_METHODS))
if unknown or not set(settings) <= {"semi", "transfer"}:
    raise ValueError(f"unknown methods {unknown} or settings {settings}; methods: {ALL_METHODS}")
if thetas and "PCL" not in methods:
    raise ValueError("sweep_thetas compares PCL thresholds: keep 'PCL' in methods or set sweep_thetas: [0]")
eval_protocols = list(repro.eval_protocols) or S["protocols"]
choices = [p for p in EVALUATION_PROTOCOLS if p != "full"]  # full fine-tuning is the grid itself
if unknown := [p for p in eval_protocols if p not in choices]:
    raise ValueError(f"eval_protocols: unknown protocol(s) {unknown}; choose from {choices}")
run_dir = medcl_lite.run_folder(out_dir, f"pcl-{size}")  # out_dir, else $MEDCL_RUNS/pcl-{size}
medcl_lite.seed_everything(seed)
print(f"size={size}  device={run_device}  methods={methods}  θ={threshold}  sweep={thetas}")
print(f"settings={settings}  budgets={label_counts} {repro.label_unit}  folds={n_folds}  protocols={eval_protocols}")
print(f"run folder: {run_dir}")

# %% [markdown]
# ## 1 · The data and the two settings
# Phantom cardiac short-axis MRI volumes, one per patient, from above the base of the heart to
# below the apex: what a slice shows depends on its depth (atria and great vessels, then a large
# LV and RV, the LV ring, a small apex, then liver). Patients differ in position, field of view,
# orientation and number of slices, and, as in ACDC, each belongs to one of five diagnostic groups
# (normal, dilated or hypertrophic cardiomyopathy, previous infarction, abnormal right ventricle)
# that change the heart's size, wall and RV: more than one labelled patient can show, which
# leaves the unlabelled pool something to teach. Site **A** is the reference scanner, site **B** a 3 T
# scanner with a strong coil bias field, more noise and lower blood-myocardium contrast.
#
# | setting | pretraining (unlabelled) | fine-tuning and test |
# |---|---|---|
# | semi-supervised | every site-A volume | a few labelled site-A volumes (cpu size: 1 and 6), k-fold by patient |
# | transfer | every site-A volume | labelled site-B volumes, k-fold by patient |
#
# With prepared real data each role is a folder: e.g. ACDC cine frames for pretraining and ACDC
# ED/ES for fine-tuning (semi), or CHD for pretraining and MM-WHS CT or HVSMR for fine-tuning
# (transfer), as in the paper.


# %%
sources = {"pretrain": (pretrain_data, "A"), "semi": (semi_data, "A"), "transfer": (transfer_data, "B")}
needed = ["pretrain", *settings]
phantom = None
if any(sources[role][0] == "phantom" for role in needed):
    phantom = make_cardiac_volumes(n_patients=S["patients"], sites=("A", "B"), size=pick(repro.image_size, S["image"]),
                                   slices=S["slices"], seed=seed, modality="mri")
roles = {role: load_role(value, phantom, site) for role, (value, site) in sources.items() if role in needed}
for role, (data, rows) in roles.items():
    part = data.meta.iloc[rows]
    print(f"{role:9s} {data.name}: {len(rows)} slices, {part.volume_id.nunique()} volumes, "
          f"{part.patient_id.nunique()} patients, {part.n_slices.min()}-{part.n_slices.max()} slices per "
          f"volume, masks: {data.masks is not None}")
for setting in settings:  # too few patients or labels for the folds and budgets: stop before training
    check_finetune_set(*roles[setting], role=f"{setting}_data", n_folds=n_folds, label_counts=label_counts, seed=seed, unit=repro.label_unit)
pool, pool_rows = roles["pretrain"]
if (pool.meta.volume_id.iloc[pool_rows] == "").any():
    raise ValueError(f"pretrain_data {pretrain_data!r} holds 2-D images without volume_id/depth: PCL needs volumes")

# %% [markdown]
# **One volume, top to bottom.** Every slice carries its **normalised depth** in its own volume
# (PCL eq. 1), the `depth` column of the metadata (the paper calls it $p$; the figure titles
# below print it as `p=`):
#
# $$
# d_i = \frac{s_i + 1}{N_{v(i)}}, \qquad d_i \in (0, 1],
# $$
#
# with $s_i$ = `slice_index` (0 for the first slice), $N_{v(i)}$ = `n_slices` of the slice's
# volume $v(i)$, and $d_i$ = `depth` (NaN for a 2-D image, which then matches nothing). The last
# slice has $d = 1$ whatever the volume's length, so slices of volumes with different slice counts
# can be compared by relative position.

# %%
pool_meta = pool.meta.iloc[pool_rows].reset_index(drop=True)
depth = pool_meta.depth.to_numpy()
patients = pool_meta.patient_id.to_numpy()
first = pool_rows[pool_meta.volume_id == pool_meta.volume_id.iloc[0]]
fig = viz.show_images(pool.images[first], titles=[f"p={d:.2f}" for d in pool.meta.depth.iloc[first]],
                      suptitle=f"volume {pool.meta.volume_id.iloc[first[0]]}: {len(first)} slices")
viz.save_figure(fig, run_dir / "figures" / "one_volume.png")

# %% [markdown]
# ## 2 · Why SimCLR makes false negatives in volumes
# Rows: four patients; columns: the slice nearest to the same depths. Down a column the slices
# look alike (same anatomy at the same position), but for SimCLR every one of them is a
# **negative** of the others: it must push apart images that a segmenter should treat alike.

# %%
targets = [0.2, 0.4, 0.6, 0.8]
four = list(dict.fromkeys(patients))[:4]
grid, titles = [], []
for patient in four:
    own = np.flatnonzero(patients == patient)
    for target in targets:
        k = own[np.abs(depth[own] - target).argmin()]
        grid.append(pool.images[pool_rows[k]])
        titles.append(f"{patient} p={depth[k]:.2f}")
fig = viz.show_images(np.stack(grid), titles=titles, ncols=len(targets),
                      suptitle="same depth, different patients: alike, yet SimCLR negatives")
viz.save_figure(fig, run_dir / "figures" / "same_depth_grid.png")

# %% [markdown]
# **Measured, not just seen.** For pairs of slices of *different* patients: the correlation of
# their (8×8 downsampled) images against their depth difference $|d_i - d_j|$. If similar depth
# means similar images, the correlation falls as the depth difference grows: read the table. The
# cell then draws a random batch of $B = 32$ slices and counts the share of SimCLR's negatives
# that lie within θ of the anchor's depth (`near_share`):
#
# $$
# \text{share} = \frac{1}{B(B-1)} \sum_{i \ne j} \mathbb{1}\big[\,|d_i - d_j| < \theta\,\big],
# $$
#
# with θ = `threshold`. These are the false negatives that PCL turns into positives.

# %%
small = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(pool.images[pool_rows])[:, None], 8).flatten(1)
small = (small - small.mean(1, keepdim=True)) / (small.std(1, keepdim=True) + 1e-6)
correlation = (small @ small.T / small.shape[1]).numpy()
other = patients[:, None] != patients[None, :]
gap = np.abs(depth[:, None] - depth[None, :])
bins = np.linspace(0, 1, 11)
which = np.digitize(gap[other], bins) - 1
similarity = pd.DataFrame({"|Δdepth|": [f"{bins[b]:.1f}-{bins[b + 1]:.1f}" for b in range(10)],
                           "image correlation": [correlation[other][which == b].mean() if (which == b).any() else np.nan
                                                 for b in range(10)]}).dropna().round(3)
display(similarity.set_index("|Δdepth|").T)
batch_rows = np.random.default_rng(seed).permutation(len(pool_rows))[:32]
near = pairing.positional(depth[batch_rows], threshold=threshold).numpy()
negatives = ~np.eye(len(batch_rows), dtype=bool)
near_share = float(near[negatives].mean())
print(f"in a random batch of {len(batch_rows)}: {near_share:.0%} of SimCLR's negatives lie within "
      f"θ={threshold} of the anchor's depth (false negatives PCL makes positive)")

# %% [markdown]
# ## 3 · Three answers to "which pairs are positive?"
# Each strategy turns the depths of a batch of $B$ slices into a boolean matrix $M$ (`[B, B]`,
# the `pos_mask` the loss receives): $M_{ij}$ True makes slice $j$ a positive of slice $i$.
#
# $$
# \begin{aligned}
# \text{SimCLR:}\quad & M_{ij} = \mathbb{1}[\,i = j\,] \\
# \text{PCL:}\quad & M_{ij} = \mathbb{1}\big[\,|d_i - d_j| < \theta\,\big] \\
# \text{GCL:}\quad & M_{ij} = \mathbb{1}\big[\,g(d_i) = g(d_j)\,\big], \qquad
#   g(d) = \min\big(\max(\lceil G d \rceil - 1,\, 0),\, G - 1\big)
# \end{aligned}
# $$
#
# with θ = `threshold`, $G$ = `parts` and $g$ = `pairing.partition_index` (partition $k$ holds the
# depths in $(k/G, (k+1)/G]$). In the loss, view $a$ of slice $i$ has the positive set
#
# $$
# P(a) = \{\text{the other view of } i\} \cup \{\text{both views of every } j \ne i \text{ with } M_{ij}\},
# $$
#
# and the masked InfoNCE of [00 · Quickstart](00_quickstart.ipynb) (section 3, "One loss for every
# answer") does the rest. What the code does at the edges (`pairing.positional`, printed below):
# the inequality is strict, so a slice exactly θ away is a negative; the diagonal is True
# ($|d_i - d_i| = 0 < \theta$), which only restates that the anchor's other view is positive (the
# loss adds it anyway, and a view is never its own positive nor in its own denominator); slices of
# the anchor's *own* volume within θ are positives too, not only other patients'; NaN depths never
# match; θ must lie in $(0, 1]$. GCL's $g$ differs slightly from the $\lfloor s G / N \rfloor$ of
# [docs/methods.md, PCL: GCL baseline](../docs/methods.md#pcl-gcl-baseline): the two agree when $G$
# divides $N$, otherwise a slice at a border can fall into the neighbouring partition; both cut a
# volume into near-equal runs.
#
# The figures: the same batch of 16 slices, sorted by depth; dark cells are positives (the
# diagonal stands for the own other view; each title counts the extra positives beyond it). GCL
# cuts every volume into `parts` runs of slices, so two slices just either side of a partition
# border are negatives while slices at opposite ends of one partition are positives; PCL's window
# moves with the anchor.

# %%
print(inspect.getsource(pairing.positional))
shown = batch_rows[:16][np.argsort(depth[batch_rows[:16]])]
ticks = [f"{d:.2f}" for d in depth[shown]]
masks = {
    "SimCLR (instance)": pairing.instance(len(shown)),
    f"GCL (partition, {repro.parts} parts)": pairing.partition(depth[shown], parts=repro.parts),
    f"PCL (positional, θ={threshold})": pairing.positional(depth[shown], threshold=threshold),
}
for name, mask in masks.items():
    fig = viz.show_mask(mask, title=f"{name}: {int(mask.sum()) - len(shown)} extra positives", tick_labels=ticks)
    viz.save_figure(fig, run_dir / "figures" / f"mask_{name.split()[0].lower()}.png")

# %% [markdown]
# How many partners count as positive depends on θ: the mean share of a batch that is positive
# for an anchor, $\frac{1}{B^2} \sum_{i,j} M_{ij}$ over the batch of section 2, for several
# thresholds. The diagonal is counted, so the smallest possible value is $1/B$. The paper picks
# θ = 0.1 for CHD's CT volumes (many thin slices) and 0.35 for ACDC's MRI volumes (about ten
# slices).

# %%
share = {f"θ={t}": float(pairing.positional(depth[batch_rows], threshold=t).float().mean())
         for t in sorted({0.05, 0.1, 0.2, 0.35, 0.5, threshold, *thetas})}
display(pd.Series(share, name="positives per anchor (share of batch)").round(3).to_frame().T)

# %% [markdown]
# **MoCo-PCL.** MoCo compares each query with the batch's keys and a queue of older keys; the
# queue stores every key's depth (`MoCoQueue`), so the positional mask reaches the queue as well.
# For the query $q$ of slice $i$ (`medcl_lite.train.moco_objective`):
#
# $$
# P(q) = \{k_i\} \cup \{\, k_j \text{ in the batch or the queue} : |d_i - d_j| < \theta \,\},
# $$
#
# where $k_i$ is the key of the query's own slice, and every batch key and queue entry is in the
# denominator. Plain MoCo keeps only $\{k_i\}$. Empty queue slots have NaN depth and never match.
# 8 queries against 48 queue keys:

# %%
queue_rows = np.random.default_rng(seed + 1).permutation(len(pool_rows))[:48]
queue_rows = queue_rows[np.argsort(depth[queue_rows])]
fig = viz.show_mask(pairing.positional(depth[shown[::2]], depth[queue_rows], threshold=threshold),
                    title=f"8 queries vs 48 queue keys: |Δdepth| < {threshold}", row_label="query",
                    col_label="queue key (sorted by depth)")
viz.save_figure(fig, run_dir / "figures" / "mask_queue.png")

# %% [markdown]
# ## 4 · Pretraining
# Views: the paper's spatial augmentation (`augment="pcl_elastic"`: mirror, elastic deformation,
# rotation, scaling 0.7–1.3, each with p = 0.67, drawn per sample, in one `grid_sample`; see
# `medcl_lite/data/spatial.py` and `benchmarks/bench_augment.py`). Two views of four slices:

# %%
views = TwoViewDataset(pool, view_transform(pool.image_size[0], repro.augment), index=pool_rows)
pairs = [views[int(i)] for i in batch_rows[:6]]
fig = viz.show_pairs(torch.stack([p["view1"] for p in pairs]), torch.stack([p["view2"] for p in pairs]),
                     suptitle="two pcl_elastic views of each slice")
viz.save_figure(fig, run_dir / "figures" / "views.png")

# %% [markdown]
# Every method uses the same encoder, head (GAP → Linear → ReLU → Linear), loss and schedule; only
# the positive mask differs (`PretrainConfig.pairing`: `"instance"`, `"partition"` or
# `"positional"`). The SimCLR form of the loss (`medcl_lite.losses.nt_xent`, derived in
# [00 · Quickstart](00_quickstart.ipynb)) over the $2B$ views of a batch, with $P(a)$ from
# section 3:
#
# $$
# \mathcal{L} = -\frac{1}{2B} \sum_{a=1}^{2B} \frac{1}{|P(a)|} \sum_{p \in P(a)}
# \log \frac{\exp\big(s(z_a, z_p)/\tau\big)}{\sum_{c \ne a} \exp\big(s(z_a, z_c)/\tau\big)},
# $$
#
# with $z_a$ the head's output for view $a$, $s$ the cosine similarity and $\tau$ = `temperature`.
# The MoCo methods use the same loss per query with $P(q)$ of section 3 and the queue's keys in the
# denominator. The public PCL code also multiplies the loss by $\tau / 0.07$, a constant factor the
# package leaves out
# ([docs/methods.md, Shared loss](../docs/methods.md#shared-loss--one-masked-infonce)).
# `pretrain` resumes from its checkpoint when the cell runs again.
#
# > **Pitfall.** Pretraining losses of different pairings are not comparable: more positives per
# > anchor change the level of the loss, so a lower curve says nothing about a better encoder.
# > Compare encoders downstream (sections 5 to 9).
#
# > **Pitfall.** Set MoCo's queue and momentum for the dataset, not from the paper. The queue holds
# > the keys of the last `queue_size / batch_size` steps: on a small pool, a long queue holds keys
# > of an encoder that has since moved and, once it spans more than an epoch, older keys of the
# > anchor's own slice (the loss leaves those out of plain MoCo's denominator; positional pairing
# > counts them as positives). Hence the short queues (`queue` in `SIZES`) and momentum 0.99 on
# > the phantom pool.

# %%
METHODS = {
    "SimCLR": dict(framework="simclr", pairing="instance"),
    "GCL": dict(framework="simclr", pairing="partition"),
    "PCL": dict(framework="simclr", pairing="positional"),
    "MoCo": dict(framework="moco", pairing="instance"),
    "MoCo-PCL": dict(framework="moco", pairing="positional"),
}
common = {
    "max_epochs": pick(repro.pretrain_epochs, S["epochs"]), "batch_size": pick(repro.pretrain_batch, S["batch"]),
    "seed": seed, "device": device, "progress": progress, "resume": True, "augment": repro.augment,
    "lr": pick(repro.lr, S["lr"]), "warmup_epochs": repro.warmup_epochs if repro.warmup_epochs >= 0 else S["warmup"],
    "queue_size": pick(repro.queue_size, S["queue"]), "moco_momentum": pick(repro.moco_momentum, S["m"]),
    "temperature": repro.temperature, "proj_dim": pick(repro.proj_dim, S["proj"]), "encoder": repro.encoder,
    "threshold": threshold, "parts": repro.parts,
}


def slug(name: str) -> str:
    return name.lower().replace("-", "_").replace("=", "").replace(".", "p").replace(" ", "_")


pretrained = {}
for name in methods:
    cfg = from_params(PretrainConfig, common, **METHODS[name], out_dir=str(run_dir / f"pretrain_{slug(name)}"))
    pretrained[name] = pretrain(cfg, pool, index=pool_rows)
    print(f"{name:9s} {len(pretrained[name].history)} steps in {pretrained[name].seconds:.0f} s, "
          f"final loss {pretrained[name].history.loss.iloc[-3:].mean():.3f}")
fig = viz.plot_curves({n: r.history for n, r in pretrained.items()}, x="step", y="loss",
                      title="pretraining loss (more positives change the loss level: not comparable)")
viz.save_figure(fig, run_dir / "figures" / "pretrain_loss.png")

# %% [markdown]
# ## 5 · What did the encoders learn? Embeddings coloured by depth
# Pooled bottleneck features of the pool, projected with t-SNE and coloured by depth, for a random
# encoder, SimCLR and PCL. The probe in the table: for every slice, its nearest neighbour (cosine)
# **among other patients' slices**; the mean depth difference between the two. Small means the
# embedding places slices by anatomical position, which is what PCL asks for.

# %%
random_net = train.build_contrastive(from_params(PretrainConfig, common, resume=False)).to(run_device)
encoders_to_probe = {"random init": random_net, **{n: r.net for n, r in pretrained.items()}}
probe = []
for name, net in encoders_to_probe.items():
    feats = embed(net, pool, pool_rows)
    unit = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)
    similarity_matrix = np.where(other, unit @ unit.T, -np.inf)  # other patients only
    nearest = similarity_matrix.argmax(1)
    probe.append({"encoder": name, "|Δdepth| to nearest other-patient slice": float(np.abs(depth - depth[nearest]).mean())})
    if name in ("random init", "SimCLR", "PCL"):
        fig = viz.plot_embeddings(feats, depth.astype(np.float64), method="tsne", label_name="depth",
                                  title=f"{name}: slices coloured by depth", seed=seed)
        viz.save_figure(fig, run_dir / "figures" / f"tsne_{slug(name)}.png")
chance = float(np.abs(depth[:, None] - depth[None, :])[other].mean())
probe.append({"encoder": "chance (random other-patient slice)", "|Δdepth| to nearest other-patient slice": chance})
probe = pd.DataFrame(probe).set_index("encoder").round(3)
display(probe)

# %% [markdown]
# ## 6 · Fine-tuning: semi-supervised and transfer, k-fold by patient
# The patients of each fine-tuning set are dealt into `n_folds` folds; each fold is the test set
# once. Within the other folds a few patients form a **validation** split and the rest the label
# pool, from which the budget's volumes are drawn (every slice of a chosen volume is labelled;
# nested budgets). Only the encoder is transferred; the decoder starts at random. Every run
# reports two protocols, with the Dice metrics defined in [00 · Quickstart](00_quickstart.ipynb)
# (section "Metrics used in every chapter"):
# - **paper**: pooled 2-D Dice over all test slices, at the step with the best pooled Dice *on the
#   held-out fold itself* (the public code's protocol; choosing on test data is optimistic;
#   [docs/methods.md, PCL: caveats](../docs/methods.md#pcl-caveats));
# - **honest**: per-volume 3-D Dice, averaged over the test volumes, at the step chosen on the
#   validation split.

# %%
ft_base = from_params(FinetuneConfig, {
    "max_steps": pick(repro.ft_steps, S["ft_steps"]), "max_epochs": repro.ft_epochs, "encoder": repro.encoder,
    "batch_size": pick(repro.ft_batch, S["ft_batch"]), "lr": pick(repro.ft_lr, S["ft_lr"]), "loss": repro.ft_loss,
    "augment": repro.ft_augment, "device": device, "paper_selection": True,
    "eval_every": pick(repro.ft_eval_every, max(5, pick(repro.ft_steps, S["ft_steps"]) // 6)),
})
encoders = {"random init": None, **{n: r.encoder_state for n, r in pretrained.items()}}
all_rows, folds_of = [], {}
for setting in settings:
    data, rows = roles[setting]
    if data.masks is None:
        raise ValueError(f"{setting}: {data.name} has no masks; choose a labelled prepared folder")
    folds_of[setting] = cross_validation_folds(data.meta, rows, k=n_folds, seed=seed)
    grid = run_finetune_grid(data, folds_of[setting], encoders, label_counts, [seed], ft_base,
                             out_dir=run_dir / f"finetune_{setting}", progress=progress, unit=repro.label_unit)
    all_rows.append(grid.assign(setting=setting))
rows = pd.concat(all_rows, ignore_index=True)
atomic_write_text(run_dir / "results.csv", rows.to_csv(index=False))
print(f"{len(rows)} fine-tuning runs")


# %%
def budget_name(n) -> str:
    """'1 volume', '6 volumes', 'all labels'."""
    return "all labels" if str(n) == "all" else f"{n} {repro.label_unit[:-1] if str(n) == '1' else repro.label_unit}"


PROTOCOLS = {"paper_test_dice_pooled": "paper: pooled 2-D, test-fold pick",
             "test_dice_volume": "honest: per-volume 3-D, val pick"}
table = protocol_table(rows, ["init"], ["setting"], PROTOCOLS, budget_name)
display(table)

# %%
for setting in settings:
    part = rows[rows.setting == setting]
    if part.n_labelled.nunique() > 1:
        fig = viz.plot_dice_vs_labels(part, x="n_labelled", y="test_dice_volume", hue="init",
                                      title=f"{setting}: honest 3-D Dice vs labelled {repro.label_unit}")
        viz.save_figure(fig, run_dir / "figures" / f"dice_vs_labels_{setting}.png")

# %% [markdown]
# Per structure (honest protocol, per-slice Dice of each class, mean over folds), smallest budget:

# %%
class_columns = [c for c in rows.columns if c.startswith("test_dice_") and c not in
                 ("test_dice_pooled", "test_dice_volume") and not c.startswith("test_dice_site_")]
smallest = rows[rows.n_labelled == str(label_counts[0])]
display(smallest.groupby(["setting", "init"], sort=False)[class_columns].mean().round(3))

# %% [markdown]
# ## 7 · The θ sweep
# PCL pretrained with other thresholds, fine-tuned in the first setting at the smallest budget
# (same folds and seed). What the two ends of the range do to $P(a)$ (section 3):
# - **θ → 0**: the window closes. Below the smallest non-zero depth gap only exact matches remain
#   (the same slice index of two volumes of equal length), and PCL approaches SimCLR: the own
#   other view, plus those exact matches.
# - **large θ**: most of the batch becomes positive, including slices that show different anatomy
#   (the atria of one patient and the apex of another). At θ = 1 every pair is positive, since
#   all depths lie in $(0, 1]$, and the mask no longer tells positions apart.
#
# Between the two ends the chapter does not predict a shape: read it off the sweep. The first table
# gives the honest Dice per θ beside its positives per anchor (the share table of section 3); the
# second pairs each θ with the chosen `threshold` on the same fold and seed (mean difference, 95 %
# t interval, as in section 8). A trend counts only where those intervals support it.

# %%
sweep_rows = pd.DataFrame()
if thetas:
    sweep_encoders = {}
    for t in thetas:
        cfg = from_params(PretrainConfig, common, **METHODS["PCL"], threshold=t,
                          out_dir=str(run_dir / f"pretrain_pcl_theta{slug(str(t))}"))
        sweep_encoders[f"PCL θ={t}"] = pretrain(cfg, pool, index=pool_rows).encoder_state
    setting = settings[0]
    data = roles[setting][0]
    new_rows = run_finetune_grid(data, folds_of[setting], sweep_encoders, label_counts[:1], [seed], ft_base,
                                 out_dir=run_dir / f"finetune_{setting}", progress=progress, unit=repro.label_unit)
    base_rows = rows[(rows.setting == setting) & (rows.n_labelled == str(label_counts[0]))]
    main_rows = base_rows[base_rows.init == "PCL"].assign(init=f"PCL θ={threshold}")  # already run above
    sweep_rows = pd.concat([new_rows, main_rows], ignore_index=True)
    sweep_rows["theta"] = sweep_rows.init.str.split("=").str[1].astype(float)
    sweep_table = summarize(sweep_rows, ["theta"], "test_dice_volume").sort_values("theta")
    sweep_table["positives per anchor"] = [share.get(f"θ={t}", np.nan) for t in sweep_table.theta]
    display(sweep_table[["theta", "mean ± std", "positives per anchor"]].set_index("theta").round(3))
    print("for reference, same cell (means): " + ", ".join(
        f"{i} {base_rows[base_rows.init == i].test_dice_volume.mean():.3f}" for i in ("random init", "SimCLR", "GCL")
        if i in set(base_rows.init)))
    sweep_comparison = paired_comparison(sweep_rows, groups=["n_labelled"], value="test_dice_volume",
                                         baseline=f"PCL θ={threshold}", pair_on=["fold", "seed"])
    display(sweep_comparison.round(3))  # each θ minus the chosen θ, paired on fold and seed
    if sweep_rows.theta.nunique() > 1:
        fig = viz.plot_dice_vs_labels(sweep_rows, x="theta", y="test_dice_volume", hue=None,
                                      title=f"{setting}, {budget_name(label_counts[0])}: honest Dice vs PCL θ")
        viz.save_figure(fig, run_dir / "figures" / "theta_sweep.png")

# %% [markdown]
# ## 8 · Reading the result
# A pretrained run and the random-init run of the same fold and seed see the same labelled volumes,
# validation and test patients, and start the same decoder, so compare them in **pairs**: for pair
# $i$ (a fold × seed), $d_i = \text{Dice}(\text{pretrained}, i) - \text{Dice}(\text{random init}, i)$,
# honest 3-D Dice per volume (the same reading as in [00 · Quickstart](00_quickstart.ipynb)). Over
# the $n$ pairs of a setting and budget the table gives the mean difference $\bar d$ (`mean_diff`)
# and its 95 % interval
# $\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt{n}$ (`ci_low`, `ci_high`; `medcl_lite.paired`). The verdict
# is computed from it: "better" or "worse" only when the interval excludes 0, "no evidence" when it
# covers 0. With 2 folds ($t_{0.975,1} = 12.7$) or 3 ($4.3$) the interval is wide: few folds buy
# little certainty. Several methods face one baseline here: each row is one comparison, and reading
# off the best of them overstates its difference (the winner's curse).

# %%
GROUPS = ["setting", "n_labelled"]
comparison = paired_comparison(rows, groups=GROUPS, value="test_dice_volume", pair_on=["fold", "seed"])
atomic_write_text(run_dir / "comparison.csv", comparison.to_csv(index=False))
display(comparison.round(3))
fig = viz.plot_paired(comparison, ["setting", "n_labelled", "init"], unit="3-D Dice",
                      title="pretrained minus random init, paired on fold and seed")  # fmt: skip
viz.save_figure(fig, run_dir / "figures" / "paired.png")
summary_text = verdict_text(comparison, GROUPS, label=lambda r: f"{r.setting}, {budget_name(r.n_labelled)}",
                            smoke=size == "smoke")
display(Markdown(summary_text))

# %% [markdown]
# **The chapter's own questions**, paired the same way but against another pretraining: do the
# depth-aware answers beat SimCLR's instance pairs (GCL and PCL minus SimCLR)? Does PCL's sliding
# window beat GCL's fixed partitions (PCL minus GCL)? Does the positional mask help MoCo too
# (MoCo-PCL minus MoCo)? Only the questions whose methods this run pretrained are asked.

# %%
QUESTIONS = {  # baseline -> the methods compared with it, each pair on the same fold and seed
    "SimCLR": ["GCL", "PCL"],
    "GCL": ["PCL"],
    "MoCo": ["MoCo-PCL"],
}
method_parts, method_text = [], []
for base, others in QUESTIONS.items():
    asked = rows[rows.init.isin([base, *others])]
    if base not in set(asked.init) or set(asked.init) == {base}:
        continue
    answer = paired_comparison(asked, groups=GROUPS, value="test_dice_volume", baseline=base,
                               pair_on=["fold", "seed"])
    method_parts.append(answer.assign(baseline=base))
    method_text.append(verdict_text(answer, GROUPS, baseline=base,
                                    label=lambda r: f"{r.setting}, {budget_name(r.n_labelled)}", smoke=size == "smoke"))
method_comparison = pd.concat(method_parts, ignore_index=True) if method_parts else pd.DataFrame()
if method_parts:
    display(method_comparison.round(3))
    display(Markdown("\n\n".join(method_text)))
else:
    print("no method-vs-method question: this run lacks SimCLR, GCL, MoCo or their depth-aware variants")

# %% [markdown]
# Two more readings computed from this run: how much higher the paper's protocol (pooled 2-D Dice,
# step picked on the test fold) reads than the honest one, and what the embedding probe of section 5
# says about each encoder next to chance.

# %%
gap = (rows.paper_test_dice_pooled - rows.test_dice_volume).groupby([rows.setting, rows.n_labelled]).mean()
nearest_gap = probe.iloc[:, 0]
reading_text = "\n".join([
    f"- paper minus honest protocol, mean over folds per cell: {gap.min():+.3f} to {gap.max():+.3f} "
    f"({(gap > 0).sum()} of {len(gap)} cells higher)",
    f"- in a random batch, {near_share:.0%} of SimCLR's negatives lie within θ={threshold} of the anchor's depth",
    "- mean |Δdepth| to the nearest other-patient slice: "
    + ", ".join(f"{name} {value:.3f}" for name, value in nearest_gap.items()),
])
display(Markdown(reading_text))

# %% [markdown]
# **The reference run** of the `cpu` size, read from `notebooks/reference/02_pcl/` (recorded by
# `medcl reproduce 02_pcl -f notebooks/params/pcl/cpu.yaml --name pcl-reference --record`, never
# retyped): honest Dice (3-D per volume, step chosen on validation), mean ± std over the folds, then
# its paired comparisons. Your run prints its own tables above; runs are deterministic by seed on
# one machine.

# %%
print(reference.caption("02_pcl"))
recorded = reference.load_table("02_pcl", "results.csv")
if recorded is not None:
    display(protocol_table(recorded, ["init"], ["setting"], {"test_dice_volume": "honest"}, budget_name))
    recorded_comparison = reference.load_table("02_pcl", "comparison.csv")
    if recorded_comparison is not None:
        display(recorded_comparison.round(3))

# %% [markdown]
# Its means alone decide nothing: whether a difference between two rows is evidence is what the
# paired intervals decide. Questions to put to your run's tables: is PCL better than SimCLR, and
# than GCL, in every cell or only in some, and in how many is the interval clear of 0? Is plain
# SimCLR above or below random init, and does the false-negative share of section 2 (its negatives
# within θ of the anchor's depth) help explain it? Does the embedding probe (section 5) rank the
# encoders the way the Dice does? Does the θ sweep show a trend that its paired differences
# support? Caveat: the θ sweep is one budget, one seed, a few folds.

# %% [markdown]
# **The paper's numbers**, for orientation only: ACDC (real cine MRI, 352², 300 pretraining
# epochs on every cine frame, plain U-Net with 48 base filters), Dice of PCL with 2 and 6 labelled
# patients, as published (the 2-D pooled Dice with the epoch picked on the held-out fold). They
# are **not comparable** with phantom numbers and are never mixed into the table above.
#
# | ACDC, PCL | 2 patients | 6 patients |
# |---|---|---|
# | paper (Zeng et al. 2021) | 0.671 | 0.850 |
#
# IDEAL's comparison table cites PCL at 0.885 for a larger budget (10 % of ACDC). Users of the
# public code report failing to reproduce these (0.185 with the released checkpoint), which is why
# the presets in `notebooks/params/pcl/` write every setting out.

# %% [markdown]
# ## 9 · Evaluation protocols: what did the encoder learn?
# Full fine-tuning lets every weight move, so it can overwrite what pretraining put in the encoder,
# or learn the same from the labels alone. The self-supervised papers also measure the encoder with
# less freedom (`medcl_lite.experiment.EVALUATION_PROTOCOLS`, setting `eval_protocols` of `REPRODUCTION`):
# - **frozen encoder**: only the decoder and the head learn, on the encoder's frozen weights and
#   BatchNorm statistics (`encoder_lr_scale=0`): the score measures what pretraining put in the
#   encoder, since a random encoder stays random.
# - **discriminative**: the encoder learns at 0.1 × the decoder's learning rate
#   (`encoder_lr_scale=0.1`), the papers' way of keeping what pretraining learned while adapting it.
# - **linear probe**: a 1×1 convolution on encoder stage 3 predicts the coarse mask (each cell's
#   majority class), nothing else learns (`medcl_lite.probe`): the standard self-supervised
#   measurement (SimCLR Sec. 2.3), here dense.
#
# They run at the smallest label budget only, with the same encoders, folds, seed and fine-tuning
# settings as the grid, so every run pairs with the grid's runs; the grid's runs of that budget are
# the **full** protocol. Each protocol compares its pretrained runs with its own random-init runs,
# paired on fold and seed as in section 8. The metric here is per-slice Dice (`test_dice`) for
# every protocol, since the probe scores no other, not the 3-D Dice of section 8. How to read it:
# if pretraining wins under the frozen encoder or the probe but not under full fine-tuning, the
# representation holds something that full fine-tuning at this size does not need, or overwrites.

# %%
budget = label_counts[:1]
full_parts, extra_parts = [], []
for setting in settings:
    data = roles[setting][0]
    extra = run_evaluation_protocols(data, folds_of[setting], encoders, budget, [seed], ft_base, eval_protocols,
                                     out_dir=run_dir / f"protocols_{setting}", progress=progress, unit=repro.label_unit)
    full_parts.append(rows[(rows.setting == setting) & (rows.n_labelled == str(budget[0]))])
    extra_parts.append(extra.assign(setting=setting))
protocols = protocol_report(pd.concat(full_parts), pd.concat(extra_parts), ["setting"])
atomic_write_text(run_dir / "protocols.csv", protocols.rows.to_csv(index=False))
display(Markdown(f"Per-slice Dice, mean ± std over folds, {budget_name(budget[0])}:"))
display(protocols.means)
display(protocols.comparison.round(3))
protocol_text = protocols.text(label=lambda r: f"{r.setting}, {r.protocol}, {budget_name(r.n_labelled)}",
                               smoke=size == "smoke")
display(Markdown(protocol_text))

# %% [markdown]
# ## 10 · Overlays
# Test slices of fold 0 at the smallest budget in each setting: contours are the ground truth,
# colours the prediction, for random init and the best pretraining of that cell.

# %%
n_small = str(label_counts[0])
for setting in settings:
    data = roles[setting][0]
    fold = folds_of[setting][0]
    show = fold.test[:: max(1, len(fold.test) // 4)][:4]
    part = rows[(rows.setting == setting) & (rows.n_labelled == n_small)]
    best = part[part.init != "random init"].groupby("init").test_dice_volume.mean().idxmax()
    for init in ("random init", best):
        pred = load_predictions(run_dir / f"finetune_{setting}", init, n_small, seed, fold=0)
        fig = viz.show_overlays(data.images[show], data.masks[show], pred[np.searchsorted(fold.test, show)],
                                class_names=data.classes)
        fig.suptitle(f"{setting}: {init}, {budget_name(n_small)}", y=1.03)
        viz.save_figure(fig, run_dir / "figures" / f"overlay_{setting}_{slug(init)}.png")

# %%
md = [
    f"# PCL results ({size}, {env['device']}, torch {env['torch']})",
    "",
    f"Data: pretrain={pretrain_data}, semi={semi_data}, transfer={transfer_data}; θ={threshold}, "
    f"GCL parts={repro.parts}; budgets in {repro.label_unit}; {n_folds}-fold cross-validation by patient; "
    "mean ± std over folds.",
    "",
    "- paper: 2-D Dice pooled over slices at the step with the best pooled Dice on the held-out fold "
    "(the public code's protocol; optimistic).",
    "- honest: 3-D Dice per volume at the step chosen on a separate validation split.",
    "",
    table.to_markdown(),
    "",
    "Nearest other-patient slice, mean |Δdepth|:",
    "",
    probe.to_markdown(),
    "",
    f"Paired comparisons (honest 3-D Dice, pairs: same fold and seed; {n_folds} folds x seed {seed}):",
    "",
    comparison.round(3).to_markdown(index=False),
    "",
    summary_text,
    "",
    *([method_comparison.round(3).to_markdown(index=False), "", "\n\n".join(method_text), ""] if method_parts else []),
    reading_text,
    "",
    f"Evaluation protocols ({budget_name(budget[0])}; per-slice Dice, mean ± std over folds):",
    "",
    protocols.means.to_markdown(),
    "",
    protocols.comparison.round(3).to_markdown(index=False),
    "",
    protocol_text,
    "",
]
if not sweep_rows.empty:
    md += ["θ sweep (honest Dice):", "", sweep_table[["theta", "mean ± std"]].to_markdown(index=False), "",
           f"Each θ minus θ={threshold}, paired on fold and seed:", "",
           sweep_comparison.round(3).to_markdown(index=False), ""]
md += ["The paper's ACDC numbers (PCL: 0.671 with 2 patients, 0.850 with 6) are on real data and not "
       "comparable with phantom numbers.", ""]
atomic_write_text(run_dir / "results.md", "\n".join(md))
print((run_dir / "results.md").read_text())

# %% [markdown]
# ## Exercises
# Predict first (write your guess down), then run, then explain what you saw. Each exercise names
# the parameter or function to change; the worked answers run every experiment and explain the
# outcome: [solutions/02_pcl.ipynb](solutions/02_pcl.ipynb).
#
# **Exercise 02.1 · θ beyond 0.5: when every pair is positive** *(about 1 min on 2 cores)*
# *Predict*: what share of slice pairs does `pairing.positional` make positive at θ = 0.5, 0.75 and
# 1? At θ = 1, what is the smallest loss any encoder can reach on a batch of B = 32 slices, and what
# does a collapsed encoder (every embedding the same) score?
# *Run*: `pairing.positional(depth, threshold=t)` over the pool for θ from 0.05 to 1 against
# $2\theta - \theta^2$; then, for a batch of 32, `losses.nt_xent(z, z, 0.1, pos_mask=mask)` of
# constant embeddings, the floor $\frac{1}{2B}\sum_a \log|P(a)|$ from the mask's row sums, and a
# few hundred Adam steps on free embeddings `z` (one vector per slice) for the instance mask and
# θ = 0.1, 0.35, 1.
# *Explain*: why the share reaches every pair at θ = 1, why the collapsed encoder is optimal there,
# and what a growing θ does to the room between the collapse value and the floor.
#
# **Exercise 02.2 · GCL partitions vs PCL's window for the same slices** *(about 1 min on 2 cores)*
# *Predict*: with `parts` G = 2, 4, 8 and a PCL θ that gives the same share of positive pairs
# ($\theta_G = 1 - \sqrt{1 - 1/G}$), which mask makes more close neighbours ($|\Delta d| < 0.05$)
# negatives, and whose positives reach farther apart? How does each change with G?
# *Run*: `pairing.partition(depth, parts=G)` and `pairing.positional(depth, threshold=θ_G)` over
# every pair of pool slices; count split close neighbours (closed form for GCL: $G$ × their mean
# $|\Delta d|$) and positives farther apart than $\theta_G$; draw both masks of 16 sorted slices
# with `viz.show_mask`.
# *Explain*: why the two masks differ at the same share, and the trade-off G sets for GCL.
#
# **Exercise 02.3 · Depth normalisation across slice counts** *(about 1 min on 2 cores)*
# *Predict*: at θ = 0.1, how many slices of an 18-slice volume are positives of an anchor, and of a
# 10-slice volume? Which depth do the first and the last slice of each get? For the slice at d = 0.5
# of a 10-slice volume, are its neighbours at 0.4 and 0.6 (exactly θ away) positives?
# *Run*: print the depths of the pool's shortest and longest volumes; count
# `pairing.positional(depth, threshold=t)` positives per (anchor, other volume) for θ = 0.02, 0.05,
# 0.1, grouped by the other volume's `n_slices`, against $N(2\theta - \theta^2)$; then
# `pairing.positional(torch.arange(1, 11) / 10, threshold=0.1)`.
# *Explain*: the asymmetry of $d = (s+1)/N$ at the two ends, why long volumes contribute more
# positives, when an anchor finds none in a volume, and what float32 does to "exactly θ".
#
# **Exercise 02.4 · False negatives and a short pretraining** *(about 2 min on 2 cores)*
# *Predict*: in batches of 32 slices from 8 volumes, what share of SimCLR's negatives lie within
# θ = 0.35 of the anchor's depth, and what share come from the anchor's own volume? After 8 short
# epochs, does PCL place a slice's nearest other-patient neighbour closer in depth than SimCLR does?
# *Run*: iterate `train.pretrain_loader(cfg, pool, rows)` and count `pairing.positional` and
# `pairing.equal_codes(batch["volume"])` over each batch's off-diagonal; then `pretrain` SimCLR
# (`pairing="instance"`) and PCL (`pairing="positional"`, `threshold=0.35`) for seeds 0, 1, 2, read the
# section 5 probe for each and for the random start, and compare with
# `paired_comparison(..., pair_on=["seed"])`.
# *Explain*: where SimCLR's false negatives come from, what PCL's loss asks of the embedding, and
# what the paired intervals allow you to claim.

# %% [markdown]
# ## Key takeaways
# - In a volumetric scan, instance discrimination treats slices that show the same anatomy in
#   different patients as negatives. The slice's depth, free metadata, turns those false negatives
#   into positives without a single label.
# - SimCLR, GCL and PCL share the encoder, the loss and the schedule and differ only in the
#   positive mask: GCL's fixed partitions split near neighbours at every border, PCL's window moves
#   with the anchor. A difference between their rows is the mask's doing, up to the fold-to-fold
#   noise that the paired intervals measure.
# - θ sets how many positives an anchor has and how far apart they may lie: as θ → 0 PCL
#   approaches SimCLR, and a large θ makes slices of different anatomy positives. Choose it for the
#   data's slice spacing and anatomy, and judge a θ sweep by its paired intervals, not its means.
# - A pairing rule needs only metadata on both sides: because MoCo's queue stores each key's
#   depth, the same positional mask serves SimCLR and MoCo.
# - State the protocol with the number. Picking the step on the test fold is model selection on
#   test data; section 8 computes how far the paper's protocol and the honest one differ on your
#   run, and the recorded reference table above is for orientation, not for verdicts.

# %% [markdown]
# ## Further reading
# - D. Zeng, Y. Wu, X. Hu, X. Xu, H. Yuan, M. Huang, J. Zhuang, J. Hu, Y. Shi, *Positional
#   Contrastive Learning for Volumetric Medical Image Segmentation*, MICCAI 2021, arXiv:2106.09157.
#   Authors' code: [github.com/dewenzeng/positional_cl](https://github.com/dewenzeng/positional_cl).
# - K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, *Contrastive learning of global and local
#   features for medical image segmentation with limited annotations*, NeurIPS 2020,
#   arXiv:2006.10511 (the $G^D$ strategy used here as GCL, and a local, pixel-level loss).
# - T. Chen, S. Kornblith, M. Norouzi, G. Hinton, *A Simple Framework for Contrastive Learning of
#   Visual Representations*, ICML 2020, arXiv:2002.05709 (SimCLR); K. He, H. Fan, Y. Wu, S. Xie,
#   R. Girshick, *Momentum Contrast for Unsupervised Visual Representation Learning*, CVPR 2020,
#   arXiv:1911.05722 (MoCo).
# - Related methods:
#   - P. Khosla et al., *Supervised Contrastive Learning*, NeurIPS 2020, arXiv:2004.11362: the
#     multi-positive loss that PCL's mask plugs into, with class labels in place of depth.
#   - W. Bai, C. Chen, G. Tarroni, J. Duan, F. Guitton, S. E. Petersen, Y. Guo, P. M. Matthews,
#     D. Rueckert, *Self-Supervised Learning for Cardiac MR Image Segmentation by Anatomical
#     Position Prediction*, MICCAI 2019, arXiv:1907.02757: anatomical position as a prediction
#     target rather than a pairing rule.
#   - B. Dufumier et al., *Contrastive Learning with Continuous Proxy Meta-Data for 3D MRI
#     Classification*, MICCAI 2021, arXiv:2106.08808: the y-aware InfoNCE, which weights
#     positives by a kernel on continuous metadata, a soft counterpart of PCL's hard window.
#
# [← 01 · CL-TCI](01_cl_tci.ipynb) · [03 · LRC: regions →](03_lrc.ipynb)
