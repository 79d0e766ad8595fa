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
# # Worked answers · 03 LRC exercises
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/solutions/03_lrc.ipynb)
#
# **Paper.** X. Yan, J. Naushad, C. You et al., *Localized Region Contrast for Enhancing
# Self-Supervised Learning in Medical Image Segmentation*, MICCAI 2023 (arXiv:2304.03406). Global
# method: MoCo (K. He et al., CVPR 2020, arXiv:1911.05722). Superpixels: P. Felzenszwalb and D.
# Huttenlocher, IJCV 2004.
#
# The exercises are in the chapter, [03 · LRC](../03_lrc.ipynb), section "Exercises". Each answer
# below runs the experiment, prints the evidence and then explains it. The numbers are this run's:
# the explanations give the mechanism and read the printed values, they do not quote numbers of
# their own. Under the default smoke size (a CPU without `smoke=False`) the runs are tiny plumbing
# checks and every reading says so; run with `smoke=False` for the sizes the chapter states.

# %% [markdown]
# ## Setup

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
import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from medcl_lite import regions as lrc
from medcl_lite import viz
from medcl_lite.config import from_params
from medcl_lite.data.datasets import TwoViewDataset, cross_validation_folds
from medcl_lite.data.phantoms import make_abdominal_volumes
from medcl_lite.data.superpixels import FelzenszwalbParams, region_counts, superpixels
from medcl_lite.data.transforms import view_transform
from medcl_lite.experiment import run_finetune_grid
from medcl_lite.models import RegionHead
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.train import FinetuneConfig, PretrainConfig, pretrain

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill overrides these (papermill ... -p smoke False for the stated sizes)
smoke = None  # None: smoke run on a CPU, the stated size on a GPU; True or False forces it
seed = 0  # data, split, sampling and pretraining seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/solutions-03-SIZE
progress = True  # tqdm progress bars
sp_sigma = 0.5  # Felzenszwalb pre-smoothing (pixels), as the chapter
sp_min_size = 20  # Felzenszwalb minimum region size (pixels), the chapter's cpu value
region_min_pixels = 16  # regions smaller than this in either view are not sampled (the chapter's value)

# %% [markdown]
# Values derived from the parameters. **smoke**: a plumbing check in about a minute; **cpu**: the
# sizes the chapter's exercises state (64² slices of 12 site-A phantom volumes, short runs).

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, "cpu", run_device)  # smoke=None: smoke on a CPU
SIZES = {
    "smoke": dict(patients=4, slices=(6, 8), scales=[20.0, 60.0, 200.0], batch=8, sample_scales=[60.0],
                  sample_r=[4, 8], weights=[0.0, 1.0], epochs=1, pt_batch=8, queue=32, folds=2, ft_steps=4,
                  ft_batch=4),
    "cpu": dict(patients=12, slices=(8, 12), scales=[10.0, 30.0, 60.0, 120.0, 250.0], batch=32,
                sample_scales=[30.0, 60.0, 120.0], sample_r=[4, 8, 16], weights=[0.0, 1.0, 4.0], epochs=6,
                pt_batch=16, queue=128, folds=3, ft_steps=80, ft_batch=8),
}
S = SIZES[size]
run_dir = medcl_lite.run_folder(out_dir, f"solutions-03-{size}")
medcl_lite.seed_everything(seed)
data = make_abdominal_volumes(n_patients=S["patients"], sites=("A",), size=64, slices=S["slices"], seed=seed)
rows = np.arange(len(data))
classes = data.classes
print(f"size={size}  device={run_device}  {len(data)} slices of {data.meta.volume_id.nunique()} volumes, "
      f"classes {classes}\nrun folder: {run_dir}")


def timed(label: str, t0: float) -> None:
    """Print an exercise's wall time (the minutes the chapter states are these, at the cpu size)."""
    print(f"Exercise {label} ran in {time.perf_counter() - t0:.0f} s ({size})")


# %% [markdown]
# ## Exercise 03.1 · Superpixel scale and organ boundaries
# For each `scale` (with `sigma` and `min_size` fixed) the cell computes the superpixels of every
# slice (`superpixels`, no cache) and scores them against the organ masks:
# - **regions per slice** (median over slices);
# - **achievable accuracy**: label every region with its majority class and count the pixels that
#   come out right (the chapter's section 2);
# - **pure regions**: the share of regions whose pixels are at least 90 % one class;
# - **per organ**: the share of the organ's pixels that lie in a region whose majority is that organ
#   (how much of the organ the best region labelling can recover).

# %%
t0 = time.perf_counter()
records = []
for scale in S["scales"]:
    params = FelzenszwalbParams(scale=scale, sigma=sp_sigma, min_size=sp_min_size)
    maps = superpixels(data, params)  # [N, H, W], ids 0..K-1 per slice
    right, pure, n_regions = 0, 0, 0
    organ_hit = np.zeros(len(classes), np.int64)
    for regions, truth in zip(maps, data.masks, strict=True):
        counts = np.zeros((regions.max() + 1, len(classes)), np.int64)  # pixels of each class per region
        np.add.at(counts, (regions.ravel(), truth.ravel()), 1)
        majority = counts.argmax(1)
        right += counts.max(1).sum()
        pure += int((counts.max(1) >= 0.9 * counts.sum(1)).sum())
        n_regions += len(counts)
        organ_hit += np.bincount(majority, weights=counts[np.arange(len(counts)), majority],
                                 minlength=len(classes)).astype(np.int64)  # pixels recovered per class
    organ_pixels = np.bincount(data.masks.ravel(), minlength=len(classes))
    records.append({"scale": scale, "regions per slice": float(np.median(region_counts(maps))),
                    "achievable accuracy": right / data.masks.size, "pure regions": pure / n_regions,
                    **{c: organ_hit[k] / max(1, organ_pixels[k]) for k, c in enumerate(classes) if k > 0}})
quality = pd.DataFrame(records).set_index("scale")
display(quality.round(3))
last = quality.iloc[-1]
worst = last[list(classes[1:])].idxmin()
display(Markdown(
    f"From scale {quality.index[0]:g} to {quality.index[-1]:g} the median number of regions per slice goes from "
    f"{quality['regions per slice'].iloc[0]:.0f} to {last['regions per slice']:.0f}, the achievable accuracy from "
    f"{quality['achievable accuracy'].iloc[0]:.3f} to {last['achievable accuracy']:.3f} and the share of pure "
    f"regions from {quality['pure regions'].iloc[0]:.2f} to {last['pure regions']:.2f}. At the largest scale the "
    f"organ recovered worst is **{worst}** ({last[worst]:.2f} of its pixels)."
    + (" *Smoke run: few slices and scales.*" if size == "smoke" else "")))
timed("03.1", t0)

# %% [markdown]
# **Explanation.** Felzenszwalb merges two neighbouring components while the intensity step between
# them is below $\mathrm{Int}(C) + k/|C|$ with $k$ = `scale`/255. A larger `scale` lets every
# component grow across larger steps before it stops, so there are fewer, larger regions, and more
# of them can straddle a boundary where the contrast is low (organ against organ, or against soft
# tissue of similar density). Read the columns with care: the achievable accuracy is weighted by
# pixels, and most pixels of a slice are background tissue that any region labelling gets right,
# so it can stay near 1 while an organ is lost; the per-organ columns show where the regions fail.
# The organ that suffers first is the one with few pixels or low contrast to its neighbours: a
# small organ swallowed whole by a neighbour's region takes the neighbour's majority label, and
# none of its pixels is recovered. The phantom's organs have sharp contrast, which is why the
# regions can follow them over a wide range of `scale`; real CT is less kind. At a small `scale`
# the regions stay small (`min_size` sets their floor), but a region of 20 pixels at 64² covers
# little more than `region_min_pixels` after a crop, so many regions are never sampled (exercise
# 03.2) and the pooled features average over very little tissue. LRC's region pairs can only be as
# meaningful as the regions: a region that straddles liver and fat makes a positive pair of two
# mixtures.

# %% [markdown]
# ## Exercise 03.2 · Same-organ negatives in the region loss
# The region positive mask is the identity over the $M$ sampled regions: a region's only positive
# is itself in the other view; the $2M - 2$ other projected regions (both views, the whole batch)
# are negatives. How many of those negatives are pieces of the *same* class? The cell labels each
# region by pooling a one-hot encoding of the view's mask with the library's own `region_pool`
# (the mean of a one-hot map over a region is its class histogram), samples regions with
# `sample_regions` as pretraining does, builds `region_positive_mask`, and counts over all
# (anchor, negative) pairs of the $2M$ projected regions those whose two regions have the same
# majority class: an organ, or background (fat, muscle, bone ...). Same image or another.

# %%
t0 = time.perf_counter()


def negatives_by_class(batch: dict, per_image: int, generator: torch.Generator) -> dict:
    """Sample regions as pretraining does; count the region loss's negatives by their classes."""
    k = len(classes)
    onehot = [F.one_hot(batch[f"mask{v}"], k).permute(0, 3, 1, 2).float() for v in (1, 2)]
    top = int(max(batch["regions1"].max(), batch["regions2"].max())) + 1
    hist1, counts1 = lrc.region_pool(onehot[0], batch["regions1"], top)  # [B, K_regions, classes]
    _, counts2 = lrc.region_pool(onehot[1], batch["regions2"], top)
    image_idx, region_idx = lrc.sample_regions(counts1, counts2, per_image, region_min_pixels, generator)
    m = len(image_idx)
    label = hist1[image_idx, region_idx].argmax(1).repeat(2)  # the 2M projected regions: view 1, view 2
    image = image_idx.repeat(2)
    positive = lrc.region_positive_mask(image_idx, region_idx).repeat(2, 2)  # i ~ the same region, other view
    negative = ~positive  # over the 2M x 2M candidates, the anchor itself counts as positive here
    same_class = label[:, None] == label[None, :]
    organ = same_class & (label[:, None] > 0)
    same_image = image[:, None] == image[None, :]
    n_neg = int(negative.sum())
    return {"sampled M": m, "M per image": m / len(batch["index"]), "positives per anchor": 1,
            "negatives per anchor": n_neg / (2 * m) if m else math.nan,
            "same class": float((negative & same_class).sum()) / n_neg,
            "same organ": float((negative & organ).sum()) / n_neg,
            "same organ, same image": float((negative & organ & same_image).sum()) / n_neg,
            "mask": lrc.region_positive_mask(image_idx, region_idx),
            "ticks": [f"{i}:{r}" for i, r in zip(image_idx.tolist(), region_idx.tolist(), strict=True)]}


take = np.random.default_rng(seed).choice(rows, size=min(S["batch"], len(rows)), replace=False)
records, shown = [], None
for scale in S["sample_scales"]:
    maps = superpixels(data, FelzenszwalbParams(scale=scale, sigma=sp_sigma, min_size=sp_min_size),
                       cache_dir=run_dir / "superpixels")
    views = TwoViewDataset(data, view_transform(64, "quickstart"), index=take, regions=maps, masks=True)
    torch.manual_seed(seed)  # the same views for every R at this scale
    batch = torch.utils.data.default_collate([views[i] for i in range(len(views))])
    for per_image in S["sample_r"]:
        out = negatives_by_class(batch, per_image, torch.Generator().manual_seed(seed))
        if shown is None:
            shown = (scale, per_image, out)
        records.append({"scale": scale, "R": per_image} | {k: v for k, v in out.items() if k not in ("mask", "ticks")})
negatives = pd.DataFrame(records).set_index(["scale", "R"])
display(negatives.round(3))
scale0, r0, first = shown
small = min(len(first["ticks"]), 24)
fig = viz.show_mask(first["mask"][:small, :small], tick_labels=first["ticks"][:small],
                    title=f"scale {scale0:g}, R={r0}: the first {small} sampled regions (image:region)")
viz.save_figure(fig, run_dir / "figures" / "region_mask.png")
spread = negatives.groupby(level="scale")["same class"].agg(["min", "max"])
display(Markdown(
    f"Over every setting, between {negatives['same class'].min():.2f} and {negatives['same class'].max():.2f} of a "
    f"region's negatives have its own majority class, and between {negatives['same organ'].min():.2f} and "
    f"{negatives['same organ'].max():.2f} are pieces of the same organ (the rest of the same-class share is "
    f"background with background). Within one scale, changing R moves the same-class share by at most "
    f"{(spread['max'] - spread['min']).max():.3f}, while M grows with R."
    + (" *Smoke run: one small batch.*" if size == "smoke" else "")))
timed("03.2", t0)

# %% [markdown]
# **Explanation.** The mask has exactly one positive per anchor (the identity over sampled regions,
# repeated over the two views), so everything else is pushed away, whatever it shows. The share of
# negatives that have the anchor's class is set by the class mix of the sampled regions, roughly
# $\sum_c p_c^2$ with $p_c$ the share of sampled regions of class $c$: regions are drawn uniformly
# among the eligible ones, so raising $R$ adds more of the same mix. It changes how many negatives
# there are ($2M - 2$ per anchor) but barely their composition. The `scale` changes the
# composition, through how many regions each structure is cut into. Most regions are background
# (fat, muscle, bone, bowel: every unlabelled tissue), so background-with-background pairs make up
# most of the same-class share; they are not wrong negatives for segmentation, since those tissues
# are distinct. Same-organ pairs are the contested ones: two pieces of liver must end up in one
# class after fine-tuning, yet the region loss pushes them apart. At 64² the phantom's organs come
# out as one or a few regions per slice, so such pairs are rare and, when they occur, can come from
# two different slices of the batch (the same organ of another patient or another depth) rather
# than from one slice (the last column separates them); on larger images, where an organ is cut
# into many superpixels, the same-image share grows. Either way the rule pushes apart what
# segmentation groups, which is why LRC adds the region term to a global or supervised loss instead
# of using it alone, and why the chapter's takeaways call it the instance rule one level down.

# %% [markdown]
# ## Exercise 03.3 · The LRC weight λ and the region loss's chance value
# First the closed form, checked against the library: when every pooled region has the same
# embedding, each of the $2M$ anchors sees its positive and $2M - 2$ negatives with equal
# similarity, so NT-Xent gives exactly $\log(2M - 1)$. The cell feeds `region_loss` a constant
# feature map (every region pools to the same vector) and compares. Then MoCo + LRC is pretrained
# for a few epochs with λ = `region_weight` at each value of the table (λ = 0 is MoCo alone), all
# else equal, and the last steps' global (MoCo) and region losses are read beside the chance
# value $\log(2M - 1)$ of each step's own $M$.

# %%
t0 = time.perf_counter()
check_maps = superpixels(data, FelzenszwalbParams(scale=60.0, sigma=sp_sigma, min_size=sp_min_size),
                         cache_dir=run_dir / "superpixels")
views = TwoViewDataset(data, view_transform(64, "quickstart"), index=take, regions=check_maps)
torch.manual_seed(seed)
batch = torch.utils.data.default_collate([views[i] for i in range(len(views))])
constant = torch.ones(len(take), 16, 64, 64)  # 16 channels, as the last U-Net decoder stage
loss, m = lrc.region_loss(constant, constant, batch["regions1"], batch["regions2"], RegionHead(16, 128),
                          min_pixels=region_min_pixels, generator=torch.Generator().manual_seed(seed))
print(f"identical region embeddings: region_loss = {float(loss.detach()):.6f} over M = {m} regions; "
      f"log(2M - 1) = {math.log(2 * m - 1):.6f}")

common = dict(framework="moco", max_epochs=S["epochs"], batch_size=S["pt_batch"], lr=0.05, warmup_epochs=0,
              queue_size=S["queue"], moco_momentum=0.99, proj_dim=64, seed=seed, device=device, progress=progress,
              augment="quickstart", regions_per_image=8, region_min_pixels=region_min_pixels, sp_scale=60.0,
              sp_sigma=sp_sigma, sp_min_size=sp_min_size, superpixel_cache=str(run_dir / "superpixels"))
runs, records = {}, []
for weight in S["weights"]:
    cfg = from_params(PretrainConfig, common, region_weight=weight, out_dir=str(run_dir / f"pretrain_lambda{weight:g}"))
    runs[weight] = pretrain(cfg, data, index=rows)
    h = runs[weight].history
    tail = h.tail(max(1, len(h) // 4))  # the last quarter of the steps
    record = {"λ": weight, "steps": len(h), "seconds": runs[weight].seconds,
              "global loss, last quarter": (tail["global_loss"] if "global_loss" in h else tail["loss"]).mean()}
    if "region_loss" in h:
        chance = np.log(2 * h["regions"] - 1)
        record |= {"region loss, first step": h["region_loss"].iloc[0], "chance, first step": chance.iloc[0],
                   "region loss, last quarter": tail["region_loss"].mean(),
                   "chance, last quarter": chance.loc[tail.index].mean(), "M per step": h["regions"].mean()}
    records.append(record)
weights_table = pd.DataFrame(records).set_index("λ")
display(weights_table.round(3))
curves = {f"λ={w:g}": r.history for w, r in runs.items() if "region_loss" in r.history}
if curves:
    fig = viz.plot_curves(curves, x="step", y="region_loss", title="region loss (chance: log(2M - 1))")
    viz.save_figure(fig, run_dir / "figures" / "region_loss.png")
lines = []
for w, row in weights_table.iterrows():
    if "region loss, last quarter" in row and not math.isnan(row["region loss, last quarter"]):
        gap = row["chance, last quarter"] - row["region loss, last quarter"]
        lines.append(f"- λ={w:g}: the region loss ends {gap:+.3f} below its chance value; global loss "
                     f"{row['global loss, last quarter']:.3f}")
    else:
        lines.append(f"- λ={w:g}: no region term; global loss {row['global loss, last quarter']:.3f}")
display(Markdown("\n".join(lines) + ("\n\n*Smoke run: one epoch, the losses mean little.*" if size == "smoke" else "")))
timed("03.3", t0)

# %% [markdown]
# **Explanation.** The closed form is exact: with identical embeddings every cosine is 1, each
# anchor's softmax is uniform over its $2M - 1$ candidates and the loss is $\log(2M - 1)$, which the
# library reproduces to rounding. It is the value a collapsed network (all regions alike) sits at;
# random, unrelated embeddings would sit slightly above it. A freshly initialised network can start
# *below* it: its pooled decoder features are a fixed function of the region's content (intensity,
# texture), which the two views of one region share up to the intensity augmentation, so the
# positive can already be more similar than the negatives before any training (the table's
# first-step columns show where this run started). So read a region loss against $\log(2M - 1)$
# of the same step, and against its untrained start, not against 0: $M$ can change from step to
# step (how many regions survive the crop in both views), so the raw curve can move even when
# nothing is learned. λ scales the region term's gradient against MoCo's. The two terms share the
# encoder, so a larger λ gives the region term more of the encoder's updates: the region loss can
# fall further below chance, and the global loss may end higher than with λ = 0 when the
# objectives compete, or barely move when the region term's gradient mostly trains the decoder.
# Whether either matters for segmentation is not answered by pretext losses: that takes
# fine-tuning in pairs (exercise 03.4 and the chapter's section 7).

# %% [markdown]
# ## Exercise 03.4 · Encoder-only vs encoder + decoder transfer
# The λ = 1 run of exercise 03.3 trained the encoder and, through the region term, the decoder. The
# cell fine-tunes, on the same folds, labelled volume and seed: random init, `MoCo + LRC` (encoder
# and decoder, `transfer_state`) and `MoCo + LRC (encoder only)` (decoder at random,
# `encoder_state`), at a budget of one labelled volume, and reads two paired comparisons of Dice per
# volume.

# %%
t0 = time.perf_counter()
lrc_run = runs[1.0]  # MoCo + LRC, λ = 1 (the chapter's default)
inits = {"random init": None, "MoCo + LRC": lrc_run.transfer_state,
         "MoCo + LRC (encoder only)": lrc_run.encoder_state}
print(f"MoCo + LRC trained the decoder: {lrc_run.trains_decoder}; transfer_state holds {sorted(inits['MoCo + LRC'])}")
ft_base = from_params(FinetuneConfig, {"max_steps": S["ft_steps"], "batch_size": S["ft_batch"], "lr": 1e-3,
                                       "loss": "ce+dice", "augment": "light", "device": device,
                                       "eval_every": max(2, S["ft_steps"] // 6)})
folds = cross_validation_folds(data.meta, rows, k=S["folds"], seed=seed)
ft_rows = run_finetune_grid(data, folds, inits, [1], [seed], ft_base, out_dir=run_dir / "finetune",
                            progress=progress, unit="volumes")
display(ft_rows.groupby("init", sort=False)[["test_dice_volume", *[f"test_dice_{c}" for c in classes[1:]]]]
        .mean().round(3))
value = "test_dice_volume"
vs_random = paired_comparison(ft_rows, groups=["n_labelled"], value=value, pair_on=["fold", "seed"])
decoder = paired_comparison(ft_rows[ft_rows.init != "random init"], groups=["n_labelled"], value=value,
                            baseline="MoCo + LRC", pair_on=["fold", "seed"])
display(pd.concat([vs_random.assign(baseline="random init"), decoder.assign(baseline="MoCo + LRC")]).round(3))
display(Markdown(verdict_text(vs_random, ["n_labelled"], label=lambda r: "1 volume", smoke=size == "smoke")
                 + "\n\n" + verdict_text(decoder, ["n_labelled"], baseline="MoCo + LRC", label=lambda r: "1 volume",
                                         smoke=size == "smoke")))
timed("03.4", t0)

# %% [markdown]
# **Explanation.** The second comparison isolates one factor: both arms share the pretrained
# encoder, fold, labelled volume, seed and fine-tuning recipe; only the decoder's start differs. A
# negative difference is what dropping the pretrained decoder costs; a positive one would mean the
# region-trained decoder is a worse start than a random one for this segmentation (its features
# were shaped to tell superpixels apart, exercise 03.2). Two mechanisms argue for a cost: a random
# decoder's first gradients reach the pretrained encoder before the decoder is useful, and with one
# labelled volume the decoder has little data to learn from. Two argue against: a few pretraining
# epochs give the decoder little, and fine-tuning can relearn a decoder quickly. Read the
# per-organ table before the verdicts (the chapter's pitfall): with this short fine-tuning the
# small organs can stay near 0 for every initialisation, and the comparison then measures mostly
# the large ones. With as many pairs as folds the 95 % interval is wide ($t_{0.975,2} = 4.3$ for
# three pairs): "no evidence" then means the run is too small to tell, not that the decoders are
# equal. The chapter's reference table has the longer run's means; only a paired interval from
# more folds, seeds and fine-tuning steps settles the question.
