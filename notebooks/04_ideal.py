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
# # 04 · IDEAL: dense local contrast, then two-stream semi-supervised fine-tuning
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/04_ideal.ipynb)
#
# **Paper.** H. Basak, S. Chattopadhyay, R. Kundu, S. Nag, R. Mallipeddi, *IDEAL: Improved DEnse
# locAL Contrastive Learning for Semi-Supervised Medical Image Segmentation*, ICASSP 2023
# (arXiv:2210.15075). Global method: MoCo (K. He et al., CVPR 2020). Dense contrast: X. Wang et
# al., *DenseCL*, CVPR 2021. Two streams with cross pseudo-labels: X. Chen et al., *CPS*, CVPR
# 2021. Details: [docs/methods.md, IDEAL](../docs/methods.md#ideal--dense-local-contrast-and-two-stream-fine-tuning).
#
# **Learning goals.** After this chapter you can
# - explain what a dense (1×1-convolution) projection head changes against a global one, and
#   predict the shape of each head's output;
# - build dense positive pairs from the exact geometry of two augmented views, and say which
#   locations get no partner and are left out;
# - write IDEAL's pretraining objective (MoCo + λ·dense InfoNCE) and its two-stream fine-tuning
#   objective (supervised loss of each stream + ramped cross pseudo-label loss), and point to the
#   function that computes each term;
# - test "dense vs global pretraining" and "two-stream vs supervised fine-tuning" as separate paired
#   comparisons on the same folds and seed, and check whether averaging two streams helps.
#
# **Prerequisites.** [00 · Quickstart](00_quickstart.ipynb) (the masked InfoNCE, MoCo's momentum
# encoder and queue, paired comparisons, evaluation protocols, the one-factor diagnosis) and
# [03 · LRC](03_lrc.ipynb) (local contrast on decoder features, following regions into two views).
# Concepts: a U-Net's encoder, decoder and skip connections; softmax and cross-entropy; BatchNorm.
#
# > **Which pairs are positive?** Global contrast: the other view of the same slice, one vector
# > per image. IDEAL keeps the feature **map**: a 1×1-convolution head projects every location,
# > and a location of view 1 is positive with the **same place of the anatomy** in view 2 (we
# > undo the view's crop and rotation, and a flip where the preset has one, exactly); every other
# > sampled location of the batch is a negative.
#
# Then IDEAL fine-tunes semi-supervised: one shared encoder, two decoders of different
# architecture; labelled slices train both, and on unlabelled slices each stream's confident
# prediction is the (stop-gradient) pseudo-label of the other, in both directions.
#
# What you will do, on the built-in cardiac cine MRI phantom (LV, myocardium, RV; ACDC-like):
# 1. compare a global projection (one vector per image) with a dense one (one vector per location);
# 2. see the exact dense correspondences between two augmented views and the dense positive mask;
# 3. pretrain global MoCo vs IDEAL's dense contrast (MoCo + L_dense);
# 4. fine-tune supervised-only and two-stream semi-supervised at several label budgets, against
#    random init; Dice and HD95 per volume (defined in [00 · Quickstart, "Metrics used in every
#    chapter"](00_quickstart.ipynb#Metrics-used-in-every-chapter)) with fold spreads, the paper's
#    numbers beside ours, and paired verdicts (same fold and seed);
# 5. at the smallest budget, evaluate the encoders with a frozen encoder, a slower encoder and a
#    linear probe beside full fine-tuning;
# 6. look at both streams' predictions and where they disagree.

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

from medcl_lite import dense, diagnosis, reference, semi, viz
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
from medcl_lite.models import DenseProjectionHead, ProjectionHead, build_segmenter
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.semi import SemiConfig
from medcl_lite.train import FinetuneConfig, PretrainConfig, pretrain

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill sets these and, by name, any setting of REPRODUCTION below
# (medcl reproduce 04_ideal -f notebooks/params/ideal/<preset>.yaml -p ft_lr 1e-4).
smoke = None  # None: smoke run on a CPU, teaching run on a GPU; True or False forces it
preset = "auto"  # size when not smoke: cpu (a 2-core CPU), gpu, or auto
seed = 0  # data, split and pretraining seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/ideal-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
# Data: "phantom" (built in), or prepared folders (a path, or a name under $MEDCL_DATA/prepared).
pretrain_data = "phantom"  # unlabelled volumes for pretraining (phantom: every site-A volume)
finetune_data = "phantom"  # labelled volumes, k-fold by patient (phantom: site A)
methods = []  # empty: the size's pretraining methods (names of METHODS below)
# IDEAL dense contrast (unpublished in the paper: our choices, section 3 says why)
dense_weight = 1.0  # λ_dense in L_global + λ_dense·L_dense
dense_level = "decoder"  # feature map of the dense head: decoder (last U-Net stage) or encoder
label_counts = []  # empty: the size's budgets ("all" is 100 %)
diagnose = False  # run the diagnosis of section 8 (one factor at a time); False: show the recorded one
reproduction = {}  # other settings by name, e.g. {"ft_lr": 1e-4}: the REPRODUCTION cell below

# %% jupyter={"source_hidden": true} tags=["reproduction"]
# The settings of a paper reproduction, out of the reader's way: the presets in notebooks/params/ideal/
# set them (see its README). 0, -1 or empty: the size's value (SIZES below).
REPRODUCTION = dict(
    encoder="resnet18",  # smp encoder of the U-Net
    image_size=0,  # 0: the size's image side (phantom only)
    pretrain_epochs=0,  # 0: the size's value
    pretrain_batch=0,  # 0: the size's value
    lr=0.0,  # pretraining lr, 0: the size's value (SGD, momentum 0.9, wd 1e-5)
    warmup_epochs=-1,  # -1: the size's value
    queue_size=0,  # MoCo queue of global keys, 0: the size's value
    moco_momentum=0.0,  # 0: the size's value
    temperature=0.1,  # global InfoNCE τ
    proj_dim=0,  # 0: the size's value
    augment="quickstart",  # view preset (crop, rotation, intensity); the correspondence follows the geometry
    dense_per_image=64,  # query locations sampled per image
    dense_temperature=0.2,  # τ of the dense InfoNCE (DenseCL's value)
    dense_dim=128,  # channels of the 1x1-conv projection
    dense_queue_size=0,  # queue of dense keys, 0: negatives from the batch only
    label_unit="patients",  # what a label budget counts (IDEAL/ACDC: 1.25 % of 80 patients is 1)
    n_folds=0,  # 0: the size's value
    two_stream_inits=[],  # initialisations also fine-tuned two-stream, empty: the size's
    ft_steps=0,  # fine-tuning steps (both schemes), 0: the size's value
    ft_eval_every=0,  # steps between validation checks, 0: a sixth of the run
    ft_batch=0,  # labelled images per step, 0: the size's value
    unlabelled_batch=0,  # two-stream: unlabelled images per step, 0: ft_batch
    ft_lr=0.0,  # 0: the size's value (Adam)
    ft_loss="ce+dice",  # "ce" | "ce+dice"
    ft_augment="light",  # "none" | "light"
    eval_protocols=[],  # beside full fine-tuning (medcl_lite.experiment.EVALUATION_PROTOCOLS): "frozen encoder", "discriminative", "linear probe"; empty: the size's
    second_stream="linknet",  # two-stream: the second decoder (linknet, unetplusplus or fpn); the first is a U-Net
    cps_threshold=0.9,  # two-stream: pseudo-label confidence (max softmax)
    cps_weight=1.0,  # two-stream: weight of the pseudo-label loss after ramp-up
    cps_rampup=0,  # two-stream: ramp-up steps, 0: a third of the run
)

# %% [markdown]
# Values derived from the parameters. Three sizes: **smoke** (a quick check on a CPU that
# everything runs; numbers mean little), **cpu** (a 2-core CPU: 64² slices, 3 folds) and
# **gpu** (a Colab GPU: 128² slices, longer pretraining, 5 folds). The presets in
# `notebooks/params/ideal/` set the real-data values explicitly.

# %%
repro = reproduction_settings(REPRODUCTION, reproduction)  # repro.ft_lr, repro.encoder, ...
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, preset, run_device)  # smoke=None: smoke on a CPU
ALL_METHODS = ["MoCo", "IDEAL dense"]
SIZES = {
    "smoke": dict(image=64, patients=6, slices=(6, 8), epochs=1, batch=8, lr=0.05, warmup=0, queue=64, m=0.99,
                  proj=64, methods=ALL_METHODS, counts=[1], folds=2, two_stream=["random init", "IDEAL dense"],
                  ft_steps=4, ft_batch=4, ft_lr=1e-3, protocols=["frozen encoder", "linear probe"]),
    "cpu": dict(image=64, patients=24, slices=(8, 12), epochs=15, batch=32, lr=0.05, warmup=1, queue=256, m=0.99,
                proj=128, methods=ALL_METHODS, counts=[1, 2, "all"], folds=3,
                two_stream=["random init", "IDEAL dense"], ft_steps=200, ft_batch=8, ft_lr=1e-3,
                protocols=["frozen encoder", "linear probe"]),
    "gpu": dict(image=128, patients=60, slices=(10, 16), epochs=100, batch=32, lr=0.05, warmup=5, queue=1024,
                m=0.99, proj=128, methods=ALL_METHODS, counts=[1, 2, 8, "all"], folds=5,
                two_stream=["random init", "MoCo", "IDEAL dense"], ft_steps=600, ft_batch=10, ft_lr=1e-3,
                protocols=["frozen encoder", "discriminative", "linear probe"]),
}
if size not in SIZES:
    raise ValueError(f"preset={preset!r}: choose one of {sorted(SIZES)} or 'auto'")
S = SIZES[size]
methods = list(pick(methods, S["methods"]))
if sorted(set(methods) - set(ALL_METHODS)):
    raise ValueError(f"unknown methods {sorted(set(methods) - set(ALL_METHODS))}; choose from {ALL_METHODS}")
label_counts = list(pick(label_counts, S["counts"]))
n_folds = pick(repro.n_folds, S["folds"])
steps = pick(repro.ft_steps, S["ft_steps"])
two_stream_inits = [i for i in pick(repro.two_stream_inits, S["two_stream"]) if i == "random init" or i in methods]
eval_protocols = list(dict.fromkeys(repro.eval_protocols)) or list(S["protocols"])
PROTOCOL_CHOICES = [name for name in EVALUATION_PROTOCOLS if name != "full"]  # "full" is the main grid
if sorted(set(eval_protocols) - set(PROTOCOL_CHOICES)):
    raise ValueError(f"eval_protocols: unknown protocol(s) {sorted(set(eval_protocols) - set(PROTOCOL_CHOICES))}; "
                     f"choose from {PROTOCOL_CHOICES} (full fine-tuning always runs)")
run_dir = medcl_lite.run_folder(out_dir, f"ideal-{size}")  # out_dir, else $MEDCL_RUNS/ideal-{size}
medcl_lite.seed_everything(seed)
print(f"size={size}  device={run_device}  methods={methods}  dense: λ={dense_weight}, level={dense_level}, "
      f"{repro.dense_per_image} locations/image, τ={repro.dense_temperature}")
print(f"budgets={label_counts} {repro.label_unit}  folds={n_folds}  two-stream for {two_stream_inits}  "
      f"evaluation protocols={eval_protocols}  run folder: {run_dir}")

# %% [markdown]
# ## 1 · The data
# Phantom cine MRI, short-axis stacks from above the base to below the apex (one volume per
# patient, site A: the reference scanner): left ventricle (LV) cavity, myocardium and right
# ventricle (RV), with textured tissue around them. Patients fall into ACDC's five diagnostic
# groups (normal, dilated or hypertrophic cardiomyopathy, previous infarction, abnormal right
# ventricle), so hearts differ in size, wall thickness and RV size. Every site-A volume is
# unlabelled material for pretraining; the same volumes, k-fold by patient, are the fine-tuning set, where a few
# patients are labelled and the rest of each fold's pool is the unlabelled data of the
# two-stream scheme (the semi-supervised setting of IDEAL on ACDC).

# %%
sources = {"pretrain": pretrain_data, "finetune": finetune_data}
phantom = None
if "phantom" in sources.values():
    phantom = make_cardiac_volumes(n_patients=S["patients"], sites=("A",), size=pick(repro.image_size, S["image"]),
                                   slices=S["slices"], seed=seed)
roles = {role: load_role(value, phantom, "A") for role, value in sources.items()}
for role, (data, rows) in roles.items():
    part = data.meta.iloc[rows]
    print(f"{role:9s} {data.name}: {len(rows)} slices, {part.volume_id.nunique()} volumes, classes {data.classes}")
pool, pool_rows = roles["pretrain"]
ft_data, ft_rows = roles["finetune"]
# too few patients or labels for the folds and budgets: stop here, before any training
check_finetune_set(*roles["finetune"], role="finetune_data", n_folds=n_folds, label_counts=label_counts, seed=seed, unit=repro.label_unit)
classes = ft_data.classes
volume = ft_rows[ft_data.meta.volume_id.iloc[ft_rows].to_numpy() == ft_data.meta.volume_id.iloc[ft_rows[0]]]
shown = volume[np.linspace(0, len(volume) - 1, 6).round().astype(int)]
fig = viz.show_overlays(ft_data.images[shown], ft_data.masks[shown], ft_data.masks[shown], class_names=classes)
viz.save_figure(fig, run_dir / "figures" / "volume.png")

# %% [markdown]
# ## 2 · Global vs dense projection
# A global head pools the encoder's last map and returns one vector per image (what MoCo and
# SimCLR contrast). IDEAL's head is a 1×1 convolution: no pooling, one vector per location, so
# the loss can ask different places of one slice to differ. For a feature map $f$ with $C$
# channels and $h \times w$ locations, $f_u \in \mathbb{R}^C$ its vector at location $u$:
#
# $$
# \underbrace{z = W_2\,\mathrm{ReLU}\Big(W_1 \tfrac{1}{hw} \textstyle\sum_{u} f_u + b_1\Big) + b_2}_{\text{global head: one } z \text{ per image}}
# \qquad\qquad
# \underbrace{z_u = W f_u + b \;\text{ for every } u}_{\text{dense head: one } z_u \text{ per location}}
# $$
#
# Global: `ProjectionHead` (GAP → linear → ReLU → linear). Dense: `DenseProjectionHead`, with
# $W \in \mathbb{R}^{D \times C}$ the weights of one 1×1 convolution, $D$ = `dense_dim` (128 in the
# cell below) and $f$ the map at `dense_level`. Each $z_u$ depends on $f_u$ alone, so the head
# adds no spatial mixing of its own; the context of a location comes from the encoder (and
# decoder) below it. `DenseProjectionHead(..., hidden=n)` would give DenseCL's two-layer head; the
# pretraining here builds the single convolution, as IDEAL describes ("no MLP").
# The shapes, on a batch of 4 slices:

# %%
net = build_segmenter("unet", repro.encoder, classes=len(classes))
x = torch.from_numpy(ft_data.images[shown[:4]]).unsqueeze(1)
with torch.no_grad():
    stages = net.encoder(x)
    decoded = net.decoder(stages)
    global_head = ProjectionHead(stages[-1].shape[1], 128)
    dense_heads = {"encoder": DenseProjectionHead(stages[-1].shape[1], 128),
                   "decoder": DenseProjectionHead(decoded.shape[1], 128)}
    shapes = {
        "input": tuple(x.shape),
        "encoder map (bottleneck)": tuple(stages[-1].shape),
        "global head: GAP + MLP": tuple(global_head(stages[-1]).shape),
        "dense head on the bottleneck": tuple(dense_heads["encoder"](stages[-1]).shape),
        "decoder map (last U-Net stage)": tuple(decoded.shape),
        "dense head on the decoder": tuple(dense_heads["decoder"](decoded).shape),
    }
display(pd.Series({k: str(v) for k, v in shapes.items()}, name="shape [B, C, H, W]").to_frame())

# %% [markdown]
# **Our choice of level** (`dense_level`; IDEAL puts the head on the encoder's feature map): at
# the phantom's 64² the bottleneck is 2×2 — four "locations" per slice, too few to contrast
# places of the anatomy — so the dense head reads the last decoder stage (full resolution). That
# also trains the decoder, which fine-tuning keeps (as LRC in chapter 03). `dense_level="encoder"`
# is IDEAL's placement, sensible at 224-352² where the bottleneck is 7-11 cells wide.

# %% [markdown]
# ## 3 · Dense correspondences between two views
# The view augmentation warps a map of original pixel indices (`y·W + x`) with exactly the
# geometry of each view (nearest sampling, `TwoViewDataset(..., correspondence=True)`), so every
# view pixel knows which pixel of the slice it shows. A location of view 1 is matched to the
# location of view 2 that shows the nearest original pixel, within half a feature cell
# (`dense.match_locations`); locations outside the other view have no partner and are not used.
#
# In symbols: $\pi_1(u)$ and $\pi_2(v)$ are the original pixels shown at location $u$ of view 1
# and $v$ of view 2 (`pixels1`, `pixels2`, brought to the feature map's $h \times w$ by
# `dense.feature_pixels`; $-1$ outside the slice), $c(\cdot)$ their $(y, x)$ coordinates in the
# original slice of width $W$ = `image_width`. The partner of $u$ is
#
# $$
# m(u) = \operatorname*{arg\,min}_{v \,:\, \pi_2(v) \ne -1} \big\lVert c(\pi_1(u)) - c(\pi_2(v)) \big\rVert_2
# \quad \text{if that distance is} \le r, \qquad \text{otherwise } u \text{ has no partner},
# $$
#
# with $r$ = `max_distance`, by default half a feature cell, $r = \tfrac{1}{2}\, W / w$
# (`dense.default_max_distance`). The answer is read off the known augmentation, not guessed from
# feature similarity (DenseCL's rule); that is our choice, since IDEAL does not publish its own.
# At the decoder level (and in the cell below, which matches at pixel resolution) $w = W$, so
# $r$ is half a pixel: the partner must show exactly the same original pixel, and where the two
# views zoom differently some locations find none. Lines join sampled matches of one slice:

# %%
views = TwoViewDataset(pool, view_transform(pool.image_size[0], repro.augment), index=pool_rows, correspondence=True)
item = views[len(pool_rows) // 2]
width = pool.image_size[1]
match = dense.match_locations(item["pixels1"][None], item["pixels2"][None], width)[0]  # per view-1 pixel
cells = torch.nonzero(match >= 0).flatten()
pick_cells = cells[torch.randperm(len(cells), generator=torch.Generator().manual_seed(seed))[:24]]
side = item["pixels1"].shape[-1]
points1 = torch.stack([pick_cells // side, pick_cells % side], 1)
points2 = torch.stack([match[pick_cells] // side, match[pick_cells] % side], 1)
fig = viz.show_correspondences(item["view1"], item["view2"], points1, points2)
viz.save_figure(fig, run_dir / "figures" / "correspondences.png")
print(f"{len(cells)} of {match.numel()} view-1 pixels have a partner in view 2")

# %% [markdown]
# **The loss.** `dense.dense_loss` samples `dense_per_image` matched locations per image; each
# query location's positive is its matched key location, the negatives are every other sampled
# key of the batch (other places of the same slice and of other slices) and, optionally, a queue.
# It goes through the package's one masked InfoNCE (`losses.info_nce`; derivation in
# [00 · Quickstart](00_quickstart.ipynb), section 3), with the mask below: memory grows with the
# number of sampled locations, never with (H·W)².
#
# Sampled pair $i = 1, \dots, N$ (row $i$ of `out.pairs`: image, query cell $u_i$, key cell
# $m(u_i)$) gives the query $q_i$ = `q_map` at $u_i$ and the key $k_i$ = `k_map` at $m(u_i)$;
# $N$ = `out.n_pairs`, at most `per_image` per image (fewer where fewer locations have a partner).
# The keys $k_1, \dots, k_N$ are followed by $Q$ queue entries $k_{N+1}, \dots, k_{N+Q}$
# (`queue`, `dense_queue_size` in pretraining; none here). The positive set of query $i$ is
#
# $$
# P(i) = \{\, j \le N : j \text{ is from the same image as } i \text{ and } m(u_j) = m(u_i) \,\},
# $$
#
# the True entries of row $i$ of `dense.dense_positive_mask(image_idx, key_idx, Q)`: just
# $\{i\}$ unless two queries matched the same key cell; queue columns are never positive. The
# loss is 00's masked InfoNCE in its MoCo form (every key, the positives included, in the
# denominator):
#
# $$
# \mathcal{L}_{\text{dense}} = -\frac{1}{N} \sum_{i=1}^{N} \frac{1}{\lvert P(i) \rvert} \sum_{p \in P(i)}
# \log \frac{\exp\big(s(q_i, k_p)/\tau_d\big)}{\sum_{j=1}^{N+Q} \exp\big(s(q_i, k_j)/\tau_d\big)},
# $$
#
# with $s$ the cosine similarity and $\tau_d$ = `temperature` (`dense_temperature` in
# pretraining). It is the formula of
# [docs/methods.md, "IDEAL: positives and loss"](../docs/methods.md#ideal-positives-and-loss),
# with the rare duplicate keys averaged. It runs in one direction only (view-1 queries, view-2
# keys), and in pretraining $k$ comes from the momentum network, without gradient.

# %%
print(inspect.getsource(dense.dense_loss))
batch = torch.utils.data.default_collate([views[i] for i in range(3)])
torch.manual_seed(seed)
head = DenseProjectionHead(1, 8)
q_map, k_map = head(batch["view1"]), head(batch["view2"])
out = dense.dense_loss(q_map, k_map, batch["pixels1"], batch["pixels2"], per_image=6, image_width=width)
image_idx, key_idx = out.pairs[:, 0], out.pairs[:, 2]
fig = viz.show_mask(dense.dense_positive_mask(image_idx, key_idx),
                    title=f"{out.n_pairs} sampled locations: positive = the matched location, other view",
                    tick_labels=[f"{i}:{k}" for i, k in zip(image_idx.tolist(), key_idx.tolist(), strict=True)])
viz.save_figure(fig, run_dir / "figures" / "dense_mask.png")

# %% [markdown]
# ## 4 · Pretraining
# - **MoCo**: the global method (query and key views, a queue of negatives); trains the encoder.
# - **IDEAL dense**: MoCo + λ_dense·L_dense at `dense_level`; the key view's map comes from the
#   momentum network. At the decoder level it trains encoder **and** decoder; fine-tuning keeps both.
#
# The objective of one IDEAL step (`train.local_loss`):
#
# $$
# \mathcal{L} = \mathcal{L}_{\text{MoCo}} + \lambda_{\text{dense}}\, \mathcal{L}_{\text{dense}},
# $$
#
# with $\lambda_{\text{dense}}$ = `dense_weight` and $\mathcal{L}_{\text{dense}}$ from section 3.
# $\mathcal{L}_{\text{MoCo}}$ is the quickstart's global loss (one embedding per image, $P(i)$ = the
# other view of the same slice, a queue of `queue_size` global keys, $\tau$ = `temperature`;
# [00 · Quickstart](00_quickstart.ipynb), section 3). Both terms take their keys from the
# momentum network ($m$ = `moco_momentum`), updated once per step. The plain MoCo arm optimises
# $\mathcal{L}_{\text{MoCo}}$ alone.

# %%
METHODS = {
    "MoCo": dict(framework="moco"),
    "IDEAL dense": dict(framework="moco", dense_weight=dense_weight, dense_level=dense_level,
                        dense_per_image=repro.dense_per_image, dense_temperature=repro.dense_temperature, dense_dim=repro.dense_dim,
                        dense_queue_size=repro.dense_queue_size),
}
common = {
    "max_epochs": pick(repro.pretrain_epochs, S["epochs"]), "batch_size": pick(repro.pretrain_batch, S["batch"]),
    "seed": seed, "device": device, "progress": progress, "resume": True, "augment": repro.augment,
    "lr": pick(repro.lr, S["lr"]), "warmup_epochs": repro.warmup_epochs if repro.warmup_epochs >= 0 else S["warmup"],
    "queue_size": pick(repro.queue_size, S["queue"]), "moco_momentum": pick(repro.moco_momentum, S["m"]),
    "temperature": repro.temperature, "proj_dim": pick(repro.proj_dim, S["proj"]), "encoder": repro.encoder,
}
pretrained = {}
for name in methods:
    cfg = from_params(PretrainConfig, common, **METHODS[name],
                      out_dir=str(run_dir / f"pretrain_{name.lower().replace(' ', '_')}"))
    pretrained[name] = pretrain(cfg, pool, index=pool_rows)
    h = pretrained[name].history
    print(f"{name:12s} {len(h)} steps in {pretrained[name].seconds:.0f} s, final loss {h.loss.iloc[-3:].mean():.3f}"
          + (f" (dense {h.dense_loss.iloc[-3:].mean():.3f}, {h.dense_pairs.iloc[-3:].mean():.0f} pairs/step)"
             if "dense_loss" in h else ""))
curves = {n: r.history for n, r in pretrained.items() if "dense_loss" in r.history}
if curves:
    fig = viz.plot_curves(curves, x="step", y="dense_loss", title="dense loss during pretraining")
    viz.save_figure(fig, run_dir / "figures" / "dense_loss.png")

# %% [markdown]
# ## 5 · Fine-tuning: supervised-only and two-stream semi-supervised
# k-fold by patient; from each fold's label pool `n` patients are labelled (nested budgets), a
# validation split picks the step, the held-out fold is scored once. **Supervised**: a U-Net on the
# labelled slices. **Two-stream** (`semi.finetune_two_stream`): a shared encoder, a U-Net decoder
# and a second decoder of another architecture (`second_stream`; LinkNet by default: it adds skip
# connections instead of concatenating them, and predicts at full resolution); the labelled slices
# train both; on the rest of the fold's pool (unlabelled) each stream learns the other's confident
# hard predictions, with a ramped-up weight.
#
# Write $a$ for the U-Net stream, $b$ for the `second_stream`, and $p_a(k \mid x)$ for stream
# $a$'s softmax probability of class $k$ at pixel $x$. On an unlabelled batch each stream gives a
# hard label and a confidence flag, both computed without gradient (`semi.cross_pseudo_labels`):
#
# $$
# \hat y_a(x) = \arg\max_k p_a(k \mid x), \qquad
# c_a(x) = \big[\max_k p_a(k \mid x) \ge \theta\big],
# $$
#
# and likewise $\hat y_b$, $c_b$; $\theta$ = `cps_threshold` (`SemiConfig.threshold`; the code
# keeps a pixel when its maximum probability is $\ge \theta$, and $\theta = 0$ keeps every
# pixel, plain CPS). Each stream learns the other's confident labels (`semi.cross_pseudo_loss`, printed below):
#
# $$
# \mathcal{L}_{\text{cps}} = \frac{1}{\lvert U \rvert} \sum_{x \in U}
# \Big( c_b(x) \big[-\log p_a(\hat y_b(x) \mid x)\big] + c_a(x) \big[-\log p_b(\hat y_a(x) \mid x)\big] \Big),
# $$
#
# with $U$ every pixel of the unlabelled batch (`unlabelled_batch` images): only confident pixels
# add to the sum, but it is divided by the number of all pixels, so the term is small while few
# pixels are confident (our choice, as FixMatch and UniMatch; the paper does not say). One step's
# objective (`semi.two_stream_loss`, weight from `semi.consistency_weight`):
#
# $$
# \mathcal{L} = \mathcal{L}_{\text{sup}}(a) + \mathcal{L}_{\text{sup}}(b) + w(t)\, \mathcal{L}_{\text{cps}},
# \qquad
# w(t) = w_{\max} \exp\!\Big(-5 \big(1 - \min(1, t/T)\big)^2\Big),
# $$
#
# $w_{\max}$ = `cps_weight` (`SemiConfig.consistency`), $T$ = `cps_rampup` (`SemiConfig.rampup_steps`;
# here 0 means a third of the run, while `SemiConfig(rampup_steps=0)` itself means no ramp) and
# $t$ the step, counted from 0: the weight starts at $w_{\max} e^{-5}$ and reaches $w_{\max}$ at
# step $T$, the sigmoid ramp-up of Mean Teacher that CPS also uses. $\mathcal{L}_{\text{sup}}$ is
# the loss of the supervised scheme (`ft_loss`, `train._segmentation_loss`) on the labelled batch
# with masks $y$: cross-entropy, plus with `"ce+dice"` a soft Dice over the foreground classes
# $k = 1, \dots, K-1$, sums over every pixel of the batch:
#
# $$
# \mathcal{L}_{\text{sup}}(a) = \mathrm{CE}(p_a, y) + \frac{1}{K-1} \sum_{k=1}^{K-1}
# \Big(1 - \frac{2 \sum_x p_a(k \mid x)\,[y_x = k] + 1}{\sum_x p_a(k \mid x) + \sum_x [y_x = k] + 1}\Big).
# $$
#
# At the "all labels" budget there is no unlabelled image and only the two supervised terms remain.
# Validation Dice of the averaged streams (section 6, "The streams") picks the step. The table
# after the grid reports Dice and HD95 per volume, defined in [00 · Quickstart, "Metrics used in
# every chapter"](00_quickstart.ipynb#Metrics-used-in-every-chapter).
#
# > **Pitfall.** Labelled and unlabelled images must not share one forward pass: BatchNorm would
# > normalise both by the statistics of the mixed batch, and on the phantom that badly degraded the
# > U-Net stream. `semi.two_stream_loss` makes two passes, as the CPS code does (its docstring
# > records the measurement).
#
# > **Pitfall.** A second stream that predicts at low resolution (FPN: 1/4, upsampled) is too
# > coarse for a myocardium a few pixels thick at 64², and averaging with it can pull the result
# > down (the `semi` module docstring records the measurement). At small images, choose a
# > full-resolution decoder such as LinkNet or UNet++.

# %%
print(inspect.getsource(semi.cross_pseudo_loss))

# %%
eval_every = pick(repro.ft_eval_every, max(2, steps // 6))
ft_base = from_params(FinetuneConfig, {
    "max_steps": steps, "encoder": repro.encoder, "batch_size": pick(repro.ft_batch, S["ft_batch"]),
    "lr": pick(repro.ft_lr, S["ft_lr"]), "loss": repro.ft_loss, "augment": repro.ft_augment, "device": device,
    "paper_selection": False, "eval_every": eval_every,
})
semi_base = from_params(SemiConfig, {
    "max_steps": steps, "encoder": repro.encoder, "second_stream": repro.second_stream, "batch_size": ft_base.batch_size,
    "unlabelled_batch": pick(repro.unlabelled_batch, ft_base.batch_size), "lr": ft_base.lr, "loss": repro.ft_loss,
    "augment": repro.ft_augment, "device": device, "eval_every": eval_every, "threshold": repro.cps_threshold,
    "consistency": repro.cps_weight, "rampup_steps": pick(repro.cps_rampup, max(1, steps // 3)),
})
inits = {"random init": None} | {name: result.transfer_state for name, result in pretrained.items()}
folds = cross_validation_folds(ft_data.meta, ft_rows, k=n_folds, seed=seed)
grids = {
    "supervised": run_finetune_grid(ft_data, folds, inits, label_counts, [seed], ft_base,
                                    out_dir=run_dir / "supervised", progress=progress, unit=repro.label_unit),
    "two-stream": run_finetune_grid(ft_data, folds, {i: inits[i] for i in two_stream_inits}, label_counts, [seed],
                                    semi_base, out_dir=run_dir / "two_stream", progress=progress, unit=repro.label_unit),
}
rows = pd.concat([g.assign(scheme=scheme) for scheme, g in grids.items()], ignore_index=True)
rows["arm"] = rows["init"] + " · " + rows["scheme"]
atomic_write_text(run_dir / "results.csv", rows.to_csv(index=False))
pool_patients = ft_data.meta.patient_id.iloc[folds[0].label_pool].nunique()
print(f"{len(rows)} fine-tuning runs; a fold's label pool holds {pool_patients} patients, so the budgets are "
      + ", ".join(f"{n} = {100 * (pool_patients if n == 'all' else int(n)) / pool_patients:.0f} %"
                  for n in label_counts))


# %%
def budget_name(n) -> str:
    return "all labels" if str(n) == "all" else f"{n} {repro.label_unit[:-1] if str(n) == '1' else repro.label_unit}"


metrics = {"test_dice_volume": "Dice per volume"}
if "test_hd95_volume" in rows:
    metrics["test_hd95_volume"] = "HD95 per volume (mm)"
table = protocol_table(rows, ["init", "scheme"], [], metrics, budget_name)
display(table)
organ_columns = [f"test_dice_{c}" for c in classes[1:] if f"test_dice_{c}" in rows]
per_organ = rows.groupby(["arm", "n_labelled"], sort=False)[organ_columns].mean().round(3)
per_organ.columns = [c.removeprefix("test_dice_") for c in per_organ.columns]
display(per_organ)
if rows.n_labelled.nunique() > 1:
    fig = viz.plot_dice_vs_labels(rows, x="n_labelled", y="test_dice_volume", hue="arm",
                                  title=f"per-volume Dice vs labelled {repro.label_unit}")
    viz.save_figure(fig, run_dir / "figures" / "dice_vs_labels.png")

# %% [markdown]
# **The paper's numbers** (IDEAL, its table; ACDC cine MRI at 1.25 / 2.5 / 10 / 100 % of the
# training patients, MMWHS at 10 / 20 / 40 / 100 %; Dice). They are the paper's, on real data,
# with its protocol (the best epoch on the held-out fold, Dice pooled over slices): **not
# comparable** with the phantom numbers above, shown so a reproduction on ACDC
# (`notebooks/params/ideal/`) can be read next to them.

# %%
paper = pd.DataFrame(
    {
        "ACDC 1.25 %": [0.738, 0.725, 0.729, 0.671], "ACDC 2.5 %": [0.846, 0.789, None, 0.850],
        "ACDC 10 %": [0.879, 0.872, 0.847, 0.885], "ACDC 100 %": [0.882, None, None, None],
        "MMWHS 10 %": [0.626, 0.569, 0.500, None], "MMWHS 20 %": [0.791, 0.694, 0.659, None],
        "MMWHS 40 %": [0.815, 0.794, 0.785, None], "MMWHS 100 %": [0.826, None, None, None],
    },
    index=["IDEAL", "Chaitanya et al. (global + local)", "global CL", "PCL"],
)
display(paper.rename_axis("the paper's table (Dice, real data)").fillna("–"))

# %% [markdown]
# ## 6 · Reading the result
# Two arms that share a fold and a seed see the same labelled patients, the same validation and
# test volumes and start from the same seed, so compare them in **pairs**: for pair $i$ (a fold ×
# seed), $d_i = \text{Dice}(\text{arm}, i) - \text{Dice}(\text{baseline}, i)$, with Dice per 3-D volume
# (`test_dice_volume`, the step chosen on validation). Over the $n$ pairs the table gives the mean
# difference $\bar d$ (`mean_diff`) and its 95 % interval $\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt{n}$
# (`ci_low`, `ci_high`; `medcl_lite.paired`). The verdict is computed from it: "better" or "worse"
# only when the interval excludes 0, "no evidence" when it covers 0. With few folds the interval is
# wide ($t_{0.975,1} = 12.7$ for two pairs): "no evidence" then says the run is too small to tell,
# not that the arms are equal. First every arm against random init with supervised fine-tuning;
# several arms face one baseline, and the best of them, read off after the fact, overstates its
# difference (the winner's curse): each line is one comparison chosen before the run.

# %%
value = "test_dice_volume"  # the honest metric: Dice per volume, the step chosen on validation
pair_on = ["fold", "seed"]
baseline_arm = "random init · supervised"


def budget_label(row) -> str:
    return budget_name(row.n_labelled)


comparison = paired_comparison(rows.assign(init=rows["arm"]), groups=["n_labelled"], value=value,
                               baseline=baseline_arm, pair_on=pair_on)
atomic_write_text(run_dir / "comparison.csv", comparison.to_csv(index=False))
display(comparison.round(3))
fig = viz.plot_paired(comparison, ["n_labelled", "init"], baseline=baseline_arm,
                      title=f"each arm minus {baseline_arm}, paired on fold and seed")  # fmt: skip
viz.save_figure(fig, run_dir / "figures" / "paired.png")
summary_text = verdict_text(comparison, ["n_labelled"], baseline=baseline_arm, label=budget_label,
                            smoke=size == "smoke")
display(Markdown(summary_text))

# %% [markdown]
# **IDEAL's two questions**, each its own paired comparison on the same folds and seed:
# - does dense pretraining beat global MoCo? `IDEAL dense` against `MoCo` under the same
#   fine-tuning scheme (where both were fine-tuned with it);
# - does the two-stream scheme beat supervised-only fine-tuning? `two-stream` against `supervised`
#   from the same initialisation (`start`).

# %%
questions = []  # (title, rows with the compared methods in `init`, groups, baseline)
if {"MoCo", "IDEAL dense"} <= set(inits):
    questions.append(("dense vs global pretraining", rows[rows.init.isin(["MoCo", "IDEAL dense"])],
                      ["scheme", "n_labelled"], "MoCo"))
schemes = rows[rows.init.isin(two_stream_inits)].rename(columns={"init": "start"})
questions.append(("two-stream vs supervised fine-tuning", schemes.assign(init=schemes["scheme"]),
                  ["start", "n_labelled"], "supervised"))
ideal_texts = []
for title, compared, groups, baseline in questions:
    pair = paired_comparison(compared, groups=groups, value=value, baseline=baseline, pair_on=pair_on)
    display(Markdown(f"**{title}**"))
    display(pair.round(3))
    ideal_texts.append(verdict_text(pair, groups, baseline=baseline,
                                    label=lambda row, g=groups[0]: f"{getattr(row, g)}, {budget_name(row.n_labelled)}",
                                    smoke=size == "smoke"))
    display(Markdown(ideal_texts[-1]))
summary_text += "\n\nIDEAL's questions:\n\n" + "\n".join(ideal_texts)

# %% [markdown]
# **The streams.** Inference averages the two streams' softmax
# (`semi.TwoStreamSegmenter.predict_logits` returns the logarithm of this average):
#
# $$
# p(k \mid x) = \tfrac{1}{2}\big(p_a(k \mid x) + p_b(k \mid x)\big), \qquad
# \hat y(x) = \arg\max_k p(k \mid x).
# $$
#
# Is the average better than the
# U-Net stream alone, and how far behind is the second stream? Each two-stream run scores both
# streams alone on the same test volumes, so these pairs are *within* a run (same fold, seed and
# model): the average and the second stream against the U-Net stream, plus the fraction of
# unlabelled pixels where the streams disagree.

# %%
two = rows[rows.scheme == "two-stream"]
stream_columns = {"average": value, "U-Net stream": "test_unet_dice_volume",
                  f"{repro.second_stream} stream": f"test_{repro.second_stream}_dice_volume"}
if len(two) and all(c in two for c in stream_columns.values()):
    streams = pd.concat([two[["init", "n_labelled", *pair_on, column]]
                         .rename(columns={"init": "start", column: "dice"}).assign(init=name)
                         for name, column in stream_columns.items()], ignore_index=True)
    stream_comparison = paired_comparison(streams, groups=["start", "n_labelled"], value="dice",
                                          baseline="U-Net stream", pair_on=pair_on)
    disagreement = two.groupby(["init", "n_labelled"], sort=False)["unlabelled_disagreement"].mean()
    display(stream_comparison.merge(disagreement.rename("disagreement").reset_index()
                                    .rename(columns={"init": "start"}), on=["start", "n_labelled"]).round(3))
    stream_text = verdict_text(stream_comparison, ["start", "n_labelled"], baseline="the U-Net stream",
                               label=lambda row: f"{row.start}, {budget_name(row.n_labelled)}", caveat=False,
                               smoke=size == "smoke")
    display(Markdown(stream_text))
    summary_text += "\n\nThe streams of the two-stream runs:\n\n" + stream_text

# %% [markdown]
# **The reference run** of the `cpu` size, read from `notebooks/reference/04_ideal/` (recorded by
# `medcl reproduce 04_ideal -f notebooks/params/ideal/cpu.yaml --name ideal-reference --record`,
# never retyped): per-volume Dice (and HD95 in mm), mean ± std over the folds, then its paired
# comparisons. Your run prints its own tables above; runs are deterministic by seed on one machine.

# %%
print(reference.caption("04_ideal"))
recorded = reference.load_table("04_ideal", "results.csv")
if recorded is not None:
    recorded_metrics = {k: v for k, v in metrics.items() if k in recorded}
    display(protocol_table(recorded, ["init", "scheme"], [], recorded_metrics, budget_name))
    recorded_comparison = reference.load_table("04_ideal", "comparison.csv")
    if recorded_comparison is not None:
        display(recorded_comparison.round(3))

# %% [markdown]
# Means and fold spreads decide nothing alone; the paired intervals do. Questions to put to your
# run and the reference: does any arm's interval against random init (supervised) exclude 0, and
# at which budget? Does dense pretraining at the decoder level move the Dice above or below global
# MoCo? Where labels are fewest, does the two-stream scheme help one initialisation more than
# another? Is the average of the streams better than the U-Net stream alone, or does a weaker
# second stream pull it down (the stream table above)? Would UNet++ as the second stream
# (`second_stream="unetplusplus"`, slower) close that gap? With three folds and one seed there are
# three pairs per cell ($t_{0.975,2} = 4.3$): how large must a difference be before the interval
# can exclude 0?

# %% [markdown]
# ## 7 · Evaluation protocols: what did the encoder learn?
# Full fine-tuning lets every weight move: a pretrained encoder can be overwritten, or not be
# needed, when the labelled patients suffice. Self-supervised papers also measure the
# representation with lighter protocols (MoCo Sec. 4.1; SimCLR's linear evaluation). Here they run
# at the **smallest budget only**, on the **supervised** scheme (the two-stream `SemiConfig` has no
# encoder learning-rate scale), with the same initialisations, folds, seed and fine-tuning
# settings as its grid (`eval_protocols`, `medcl_lite.experiment.run_evaluation_protocols`):
# - **frozen encoder** (`encoder_lr_scale=0`): only the decoder and the head learn, on the
#   encoder's frozen weights and its frozen BatchNorm statistics, so the score measures what
#   pretraining put in the encoder.
# - **discriminative** (`encoder_lr_scale=0.1`): the encoder learns at 0.1 × the decoder's rate:
#   it adapts to the labels but keeps most of what pretraining learned.
# - **linear probe** (`medcl_lite.probe`): a 1×1 convolution on encoder stage 3 (stride 8)
#   predicts each cell's majority class (the coarse mask), upsampled to score; nothing else
#   learns. The standard self-supervised measurement, in its dense form.
#
# What is transferred (printed below): MoCo trains the encoder only. With `dense_level="decoder"`
# IDEAL's dense loss also trains the U-Net decoder, and the grid transfers encoder **and** decoder
# (`transfer_state`); under "frozen encoder" that decoder starts pretrained and keeps learning, so
# the row measures the encoder plus a decoder start. The linear probe reads the encoder only.
#
# The metric here is Dice per image (`test_dice`), the one the probe gives, so the full
# fine-tuning rows of this budget are compared in it too (not in section 6's Dice per volume).
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
protocols = protocol_report(grids["supervised"][grids["supervised"].n_labelled == smallest], extra, pair_on=pair_on)
atomic_write_text(run_dir / "protocols.csv", protocols.rows.to_csv(index=False))
display(Markdown(f"**Dice per image at {budget_name(smallest)}, supervised scheme, mean ± std over folds**"))
display(protocols.means)
display(protocols.comparison.round(3))
protocol_text = protocols.text(label=lambda row: f"{row.protocol}, {budget_name(row.n_labelled)}", smoke=size == "smoke")
display(Markdown(protocol_text))

# %% [markdown]
# ## 8 · Why? A diagnosis, one factor at a time
# When a pretrained encoder loses or ties, several explanations compete. Each row below changes
# **one** thing in the supervised recipe of section 5 (the chapter's method against random init, at
# the smallest budget, on the same folds and seed) and reads the paired difference again
# (`medcl_lite.diagnosis`, as in the quickstart's section 8):
#
# | factor | what the row changes |
# |---|---|
# | fine-tuning LR | 1e-4, the papers' fine-tuning rate, instead of 1e-3 |
# | fine-tuning length | twice the fine-tuning steps |
# | frozen vs full | the encoder frozen, learning 10x slower, or waiting for the first half of the steps (LP-FT) |
# | BatchNorm statistics | pretrained running statistics reset; frozen while the weights learn; or re-estimated at test time on the test images, no label used (AdaBN, the quickstart's section 8) |
# | encoder-only transfer | only stages 1-2 (stride 2 and 4) of the pretrained encoder kept |
# | pretraining length | the method pretrained for a third of the epochs |
# | label-budget ceiling | all labelled patients: how much room the smallest budget leaves |
#
# What is transferred stays as in the grid: with `dense_level="decoder"` IDEAL dense also starts
# the decoder, and the ablations that change the encoder (BatchNorm reset, stages) change only
# the encoder part. With `diagnose=False` (the default) the notebook shows the table recorded by
# the reference run (`notebooks/reference/04_ideal/`), when there is one.

# %%
diagnosed_method = "IDEAL dense" if "IDEAL dense" in pretrained else next(iter(pretrained))
if diagnose:
    short_cfg = from_params(PretrainConfig, common, **METHODS[diagnosed_method],
                            max_epochs=max(1, common["max_epochs"] // 3),
                            out_dir=str(run_dir / f"pretrain_{diagnosed_method.lower().replace(' ', '_')}_short"))
    short = pretrain(short_cfg, pool, index=pool_rows).transfer_state
    torch.manual_seed(seed)
    random_encoder = build_segmenter("unet", repro.encoder, 1, classes=len(classes)).encoder.state_dict()
    ablations = diagnosis.default_ablations(ft_base, random_encoder, short_pretraining="shorter", longer=2)
    diag_rows = diagnosis.run_diagnosis(ft_data, folds, {diagnosed_method: inits[diagnosed_method], "shorter": short},
                                        ft_base, ablations, label_counts[0], [seed], method=diagnosed_method,
                                        out_dir=run_dir / "diagnosis", progress=progress, unit=repro.label_unit)  # fmt: skip
    diagnosed = diagnosis.diagnosis_table(diag_rows, value="test_dice_volume")
    atomic_write_text(run_dir / "diagnosis.csv", diagnosed.to_csv(index=False))
    print(f"this run's diagnosis of {diagnosed_method} ({size}, {n_folds} folds, seed {seed}; Dice per volume)")
else:
    diagnosed = reference.load_table("04_ideal", "diagnosis.csv")
    print(reference.caption("04_ideal"))
if diagnosed is not None:
    display(diagnosed.round(3))
    display(Markdown(diagnosis.reading(diagnosed, smoke=diagnose and size == "smoke")))

# %% [markdown]
# ## 9 · Both streams and their disagreement
# Test slices of fold 0 at the smallest budget, fine-tuned two-stream from the initialisation with
# the highest mean (picked after the fact: the winner's curse applies to it): the U-Net stream, the second stream, their average (what inference uses), and the
# pixels where the two streams disagree — where the pseudo-labels of one stream corrected the other
# during training, and where uncertainty remains.

# %%
n_small = str(label_counts[0])
fold = folds[0]
show = fold.test[:: max(1, len(fold.test) // 4)][:4]
at = np.searchsorted(fold.test, show)
cell = rows[(rows.n_labelled == n_small) & (rows.scheme == "two-stream")]
if len(cell):
    best = cell.groupby("init").test_dice_volume.mean().idxmax()
    preds = {s or "average": load_predictions(run_dir / "two_stream", best, n_small, seed, fold=0, stream=s)[at]
             for s in ("unet", repro.second_stream, "")}
    for name, pred in preds.items():
        fig = viz.show_overlays(ft_data.images[show], ft_data.masks[show], pred, class_names=classes)
        fig.suptitle(f"{best}, two-stream, {name} stream" if name != "average" else f"{best}, two-stream, average",
                     y=1.03)
        viz.save_figure(fig, run_dir / "figures" / f"overlay_{name}.png")
    disagreement = (preds["unet"] != preds[repro.second_stream]).astype(np.float32)
    fig = viz.show_images(disagreement, titles=[f"{d.mean():.1%} of pixels" for d in disagreement],
                          suptitle=f"where the U-Net and {repro.second_stream} streams disagree")
    viz.save_figure(fig, run_dir / "figures" / "disagreement.png")

# %%
md = [
    f"# IDEAL results ({size}, {env['device']}, torch {env['torch']})",
    "",
    f"Data: pretrain={pretrain_data}, finetune={finetune_data}; dense λ={dense_weight}, level={dense_level}, "
    f"{repro.dense_per_image} locations/image, τ_dense={repro.dense_temperature}; "
    f"two-stream {repro.second_stream} stream, threshold={repro.cps_threshold}, "
    f"weight={repro.cps_weight}; budgets in {repro.label_unit}; {n_folds}-fold cross-validation; mean ± std over folds.",
    "",
    table.to_markdown(),
    "",
    "Per organ (mean over folds):",
    "",
    per_organ.reset_index().to_markdown(index=False),
    "",
    summary_text,
    "",
    f"Evaluation protocols at {budget_name(smallest)} (supervised scheme), Dice per image, mean ± std over folds:",
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
# outcome: [solutions/04_ideal.ipynb](solutions/04_ideal.ipynb).
#
# **Exercise 04.1 · How many cells does the dense head see?** *(about 1 min on 2 cores)*
# *Predict*: with `dense_per_image=64`, how many pairs per image can `dense_loss` sample when the
# head reads the encoder's bottleneck (`dense_level="encoder"`) of a 64² slice? Of a 128² and a 256²
# slice? And at the decoder level?
# *Run*: build the untrained network with `train.build_contrastive(PretrainConfig(dense_weight=1,
# dense_level=...))`, pass two views from `TwoViewDataset(..., correspondence=True)` through
# `forward_levels` and `dense_head`, and call `dense.dense_loss`, at image sides 64, 128 and 256;
# count the cells, the matched cells (`dense.match_locations` on `dense.feature_pixels`) and
# `n_pairs`.
# *Explain*: the encoder's output stride, the match radius of half a cell, and what a loss over a
# few cells per slice can and cannot teach.
#
# **Exercise 04.2 · Exact correspondences under crops, rotations and flips** *(about 1 min on 2 cores)*
# *Predict*: which view preset leaves the most view-1 pixels without an exact partner in view 2:
# `quickstart_no_crop` (rotation only), `quickstart` (crop 40-100 %) or `pcl` (flips, any
# rotation, zoom)? Is any preset at 100 %? And how often does the *same position* in both views
# show the same class, on organ pixels?
# *Run*: a batch of 16 slices per preset with `TwoViewDataset(..., correspondence=True,
# masks=True)`; `dense.match_locations(pixels1, pixels2, 64)` at full resolution; check that the
# matched pixels show the same original pixel and class, and compare with pairing equal positions
# (distance via `dense.pixel_coordinates`, class agreement).
# *Explain*: why matched pairs agree by construction, why pixels lack partners even without a
# crop, and what a dense loss with "same position" positives would teach.
#
# **Exercise 04.3 · The chance value of the dense loss** *(about 1 min on 2 cores)*
# *Predict*: with $N$ sampled pairs, no queue and τ = 0.2, what does `dense_loss` return when all
# embeddings are identical? When queries and keys are random $D$-dimensional vectors ($D$ = 16,
# 128)? With a queue of $Q$ = 256 random keys? And for an untrained IDEAL network?
# *Run*: `dense.dense_loss` on constant maps, on `torch.randn` maps (with and without a queue) and
# on an untrained network's decoder-level dense head, for `per_image` = 8, 32, 64, against $\log N$,
# $\log(N + Q)$ and $\log(N + Q) + 1/(2D\tau^2)$.
# *Explain*: where each closed form comes from, why an untrained network sits where it does, and
# how to read the `dense_loss` curve of a pretraining run whose $N$ (`dense_pairs`) changes every
# step.
#
# **Exercise 04.4 · How confident are the pseudo-labels?** *(about 1 min on 2 cores)*
# *Predict*: after a short two-stream run at θ = `cps_threshold` = 0.9, what share of the
# unlabelled pixels does the U-Net stream keep as pseudo-labels? Are the kept labels more accurate
# than all predictions (θ = 0)? Which class keeps the smallest share of its pixels?
# *Run*: `semi.finetune_two_stream` (1 labelled patient of fold 0, 120 steps, batch 4 + 4), then
# `semi.cross_pseudo_labels` and `semi.cross_pseudo_loss` on the unlabelled slices at θ = 0, 0.5,
# 0.7, 0.9, 0.95, 0.99, scored against the phantom's masks (never used in training).
# *Explain*: the trade between quantity and quality, why thin structures lose their pixels first
# and what that biases, and what the normalisation and ramp-up of the pseudo-label loss add.

# %% [markdown]
# ## Key takeaways
# - A dense head changes the unit of contrast from an image to a location. The loss is still the one
#   masked InfoNCE; what changes is the answer to "which pairs are positive?": the location of the
#   other view that shows the same original pixel.
# - When the augmentation is known, correspondence is exact rather than guessed from feature
#   similarity; locations without a partner (outside the other view, or lost to a different zoom)
#   are simply left out, so the number of pairs varies from step to step.
# - Where the dense head reads matters: a small bottleneck has too few locations to contrast, and
#   reading the decoder instead also pretrains the decoder, which changes what fine-tuning and the
#   evaluation protocols transfer.
# - Two-stream fine-tuning turns unlabelled slices into targets: each stream learns the other's
#   confident, stop-gradient predictions, with a weight ramped up while both are still poor. Two
#   different decoders and the confidence threshold are there to stop the streams from confirming
#   each other's errors; labelled and unlabelled batches go through BatchNorm separately.
# - IDEAL makes two claims (dense vs global pretraining; two-stream vs supervised fine-tuning): test
#   each as its own paired comparison on the same folds and seed, and read "no evidence" from a few
#   folds as "too small to tell".

# %% [markdown]
# ## Further reading
# - The authors' code: [github.com/hritam-98/IDEAL-ICASSP23](https://github.com/hritam-98/IDEAL-ICASSP23).
# - H. Basak, S. Chattopadhyay, R. Kundu, S. Nag, R. Mallipeddi, *IDEAL: Improved DEnse locAL
#   Contrastive Learning for Semi-Supervised Medical Image Segmentation*, ICASSP 2023,
#   [arXiv:2210.15075](https://arxiv.org/abs/2210.15075).
# - X. Wang, R. Zhang, C. Shen, T. Kong, L. Li, *Dense Contrastive Learning for Self-Supervised
#   Visual Pre-Training* (DenseCL), CVPR 2021, [arXiv:2011.09157](https://arxiv.org/abs/2011.09157):
#   the dense head and loss, with correspondence by feature similarity.
# - X. Chen, Y. Yuan, G. Zeng, J. Wang, *Semi-Supervised Semantic Segmentation with Cross Pseudo
#   Supervision* (CPS), CVPR 2021, [arXiv:2106.01226](https://arxiv.org/abs/2106.01226): the
#   two-stream cross pseudo-labels.
# - K. He, H. Fan, Y. Wu, S. Xie, R. Girshick, *Momentum Contrast for Unsupervised Visual
#   Representation Learning* (MoCo), CVPR 2020, [arXiv:1911.05722](https://arxiv.org/abs/1911.05722).
#
# Related methods:
# - K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, *Contrastive learning of global and local
#   features for medical image segmentation with limited annotations*, NeurIPS 2020,
#   [arXiv:2006.10511](https://arxiv.org/abs/2006.10511): a local loss on decoder feature maps, the
#   "Chaitanya et al." column of the paper's table.
# - Z. Xie, Y. Lin, Z. Zhang, Y. Cao, S. Lin, H. Hu, *Propagate Yourself: Exploring Pixel-Level
#   Consistency for Unsupervised Visual Representation Learning* (PixPro), CVPR 2021,
#   [arXiv:2011.10043](https://arxiv.org/abs/2011.10043): pixels of two views that lie close in the
#   original image are positives, a distance rule like this chapter's.
# - A. Tarvainen, H. Valpola, *Mean teachers are better role models: Weight-averaged consistency
#   targets improve semi-supervised deep learning results*, NeurIPS 2017,
#   [arXiv:1703.01780](https://arxiv.org/abs/1703.01780): the sigmoid ramp-up of the consistency
#   weight.
# - K. Sohn, D. Berthelot, C.-L. Li, Z. Zhang, N. Carlini, E. D. Cubuk, A. Kurakin, H. Zhang,
#   C. Raffel, *FixMatch: Simplifying Semi-Supervised Learning with Consistency and
#   Confidence*, NeurIPS 2020, [arXiv:2001.07685](https://arxiv.org/abs/2001.07685): hard
#   pseudo-labels kept only above a confidence threshold.
#
# [← 03 · LRC](03_lrc.ipynb) · [05 · LRCLR: regions and reports →](05_lrclr.ipynb)
