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
# # Worked answers · 04 IDEAL exercises
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/solutions/04_ideal.ipynb)
#
# **Paper.** H. Basak, S. Chattopadhyay, R. Kundu, S. Nag, R. Mallipeddi, *IDEAL: Improved DEnse
# locAL Contrastive Learning for Semi-Supervised Medical Image Segmentation*, ICASSP 2023
# (arXiv:2210.15075). Dense contrast: X. Wang et al., *DenseCL*, CVPR 2021 (arXiv:2011.09157). Two
# streams with cross pseudo-labels: X. Chen et al., *CPS*, CVPR 2021 (arXiv:2106.01226).
#
# The exercises are in the chapter, [04 · IDEAL](../04_ideal.ipynb), section "Exercises". Each
# answer below runs the experiment, prints the evidence and then explains it. The numbers are this
# run's: the explanations give the mechanism and read the printed values, they do not quote numbers
# of their own. Under the default smoke size (a CPU without `smoke=False`) the runs are tiny
# plumbing checks and the readings say so; run with `smoke=False` for the sizes the chapter states.

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
from IPython.display import Markdown, display

from medcl_lite import dense, semi, viz
from medcl_lite.config import from_params
from medcl_lite.data.datasets import TwoViewDataset, choose_labelled_by, cross_validation_folds
from medcl_lite.data.phantoms import make_cardiac_volumes
from medcl_lite.data.transforms import view_transform
from medcl_lite.semi import SemiConfig
from medcl_lite.train import PretrainConfig, build_contrastive

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill overrides these (papermill ... -p smoke False for the stated sizes)
smoke = None  # None: smoke run on a CPU, the stated size on a GPU; True or False forces it
seed = 0  # data, split, sampling and fine-tuning seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/solutions-04-SIZE
progress = True  # tqdm progress bars
dense_per_image = 64  # query locations sampled per image (the chapter's value)
dense_temperature = 0.2  # τ of the dense InfoNCE (the chapter's value)
cps_threshold = 0.9  # the pseudo-label confidence the two-stream run trains with (the chapter's value)

# %% [markdown]
# Values derived from the parameters. **smoke**: a plumbing check in about a minute; **cpu**: the
# sizes the chapter's exercises state (64² slices of 12 site-A cardiac phantom volumes).

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, "cpu", run_device)  # smoke=None: smoke on a CPU
SIZES = {
    "smoke": dict(patients=6, slices=(6, 8), sides=[64, 128], batch=4, per_image=[8, 64], dims=[16, 128],
                  folds=2, ft_steps=4, ft_batch=2),
    "cpu": dict(patients=12, slices=(8, 12), sides=[64, 128, 256], batch=16, per_image=[8, 32, 64],
                dims=[16, 128], folds=3, ft_steps=120, ft_batch=4),
}
S = SIZES[size]
run_dir = medcl_lite.run_folder(out_dir, f"solutions-04-{size}")
medcl_lite.seed_everything(seed)
data = make_cardiac_volumes(n_patients=S["patients"], sites=("A",), size=64, slices=S["slices"], seed=seed)
rows = np.arange(len(data))
classes = data.classes
width = data.image_size[1]
take = np.random.default_rng(seed).choice(rows, size=min(S["batch"], len(rows)), replace=False)
print(f"size={size}  device={run_device}  {len(data)} slices of {data.meta.volume_id.nunique()} volumes, "
      f"classes {classes}\nrun folder: {run_dir}")


def timed(label: str, t0: float) -> None:
    """Print an exercise's wall time (the minutes the chapter states are these, at the cpu size)."""
    print(f"Exercise {label} ran in {time.perf_counter() - t0:.0f} s ({size})")


def view_batch(sliceset, augment: str, index, masks: bool = False) -> dict:
    """One batch of two views of rows ``index`` with their pixel maps (and masks), seeded."""
    views = TwoViewDataset(sliceset, view_transform(sliceset.image_size[0], augment), index=index,
                           correspondence=True, masks=masks)
    torch.manual_seed(seed)
    return torch.utils.data.default_collate([views[i] for i in range(len(views))])


# %% [markdown]
# ## Exercise 04.1 · How many cells does the dense head see?
# For each image side, a batch of two views goes through a freshly built IDEAL network
# (`build_contrastive` with `dense_weight=1` and `dense_level` = encoder or decoder, no training:
# the number of cells and matches does not depend on the weights). The table gives the map the
# dense head reads, its cells per image, the cells of view 1 that have a partner in view 2
# (`dense.match_locations` at that resolution, radius half a cell) and the pairs `dense_loss`
# actually samples per image with `per_image` = `dense_per_image`.

# %%
t0 = time.perf_counter()
records = []
for side in S["sides"]:
    part = make_cardiac_volumes(n_patients=2, sites=("A",), size=side, slices=(6, 6), seed=seed)
    batch = view_batch(part, "quickstart", np.arange(min(S["batch"], len(part))))
    n_images = len(batch["index"])
    for level in ("encoder", "decoder"):
        torch.manual_seed(seed)
        net = build_contrastive(from_params(PretrainConfig, dense_weight=1.0, dense_level=level)).eval()
        with torch.no_grad():
            _, bottleneck, decoded = net.forward_levels(torch.cat([batch["view1"], batch["view2"]]),
                                                        decode=level == "decoder")
            q_map, k_map = net.dense_head(decoded if level == "decoder" else bottleneck).chunk(2)
            h, w = q_map.shape[-2:]
            match = dense.match_locations(dense.feature_pixels(batch["pixels1"], (h, w)),
                                          dense.feature_pixels(batch["pixels2"], (h, w)), side)
            out = dense.dense_loss(q_map, k_map, batch["pixels1"], batch["pixels2"], per_image=dense_per_image,
                                   temperature=dense_temperature, image_width=side,
                                   generator=torch.Generator().manual_seed(seed))
        records.append({"image": f"{side}²", "level": level, "map": f"{h}x{w}", "cells per image": h * w,
                        "match radius (px)": dense.default_max_distance(side, w),
                        "matched cells per image": float((match >= 0).sum(1).float().mean()),
                        "pairs per image": out.n_pairs / n_images, "N (batch)": out.n_pairs})
cells = pd.DataFrame(records).set_index(["image", "level"])
display(cells.round(2))
enc = cells.xs("encoder", level="level")
display(Markdown(
    f"At the encoder level the dense head reads {enc['map'].iloc[0]} cells per image at {enc.index[0]} and samples "
    f"{enc['pairs per image'].iloc[0]:.1f} pairs per image of the {dense_per_image} asked for; at "
    f"{enc.index[-1]} it reads {enc['map'].iloc[-1]} and samples {enc['pairs per image'].iloc[-1]:.1f}. "
    f"At the decoder level every side gives {cells.xs('decoder', level='level')['pairs per image'].min():.0f} "
    f"pairs per image or more." + (" *Smoke run: a small batch.*" if size == "smoke" else "")))
timed("04.1", t0)

# %% [markdown]
# **Explanation.** A ResNet-18 encoder has output stride 32, so the bottleneck of an $H \times W$
# slice has $(H/32) \times (W/32)$ cells: four at 64², and only at a few hundred pixels does it
# reach the 7-11 cells per side IDEAL's images give. Matching works on those cells with a radius
# of half a cell (16 original pixels at every side, since the radius scales with $W/w$): most cells
# find a partner, some lose it where the views crop differently, and `per_image` is capped by the
# cells there are, far below the 64 asked for at small sides. A loss over a handful of pairs per
# image has few negatives (chance value $\log N$, exercise 04.3) and contrasts places so coarse
# that each covers a quarter of a 64² slice: it asks the encoder to tell the quadrants of a slice
# apart, not the myocardium from the ventricle. The decoder's last stage is at full resolution,
# one cell per pixel, so thousands of cells match and the sampler draws the full `per_image`: this
# is why the chapter reads the decoder at 64², and why that choice also pretrains the decoder.

# %% [markdown]
# ## Exercise 04.2 · Exact correspondences under crops, rotations and flips
# For three view presets (`quickstart_no_crop`: rotation and intensity only; `quickstart`: also a
# crop of 40-100 % of the area; `pcl`: flips, any rotation, zoom 0.7-1.3), a batch of two views with
# their pixel maps and masks. At full resolution (`match_locations`, radius half a pixel) a view-1
# pixel is matched only to a view-2 pixel that shows the *same* original pixel. The cell counts the
# view-1 pixels inside the slice that find one, checks that the matched pixels show the same
# original pixel and the same class, and compares with the naive rule "the same position in both
# views" (what a dense loss without geometry would pair): how far apart the two original pixels
# are, and how often the two positions show the same class, among view-1 pixels inside an organ.

# %%
t0 = time.perf_counter()
records = []
for augment in ("quickstart_no_crop", "quickstart", "pcl"):
    batch = view_batch(data, augment, take, masks=True)
    p1, p2 = batch["pixels1"].flatten(1), batch["pixels2"].flatten(1)
    m1, m2 = batch["mask1"].flatten(1), batch["mask2"].flatten(1)
    match = dense.match_locations(batch["pixels1"], batch["pixels2"], width)  # [B, H*W], radius 0.5 px
    matched = match >= 0
    partner = match.clamp(min=0)
    inside, organ = p1 >= 0, m1 > 0
    both = inside & (p2 >= 0)
    naive_distance = (dense.pixel_coordinates(p1, width) - dense.pixel_coordinates(p2, width)).norm(dim=-1)
    records.append({
        "preset": augment,
        "view-1 pixels with a partner": float(matched[inside].float().mean()),
        "matched: same original pixel": float((p2.gather(1, partner) == p1)[matched].float().mean()),
        "matched: same class (organ pixels)": float((m2.gather(1, partner) == m1)[matched & organ].float().mean()),
        "same position: distance (px)": float(naive_distance[both].mean()),
        "same position: same class (organ pixels)": float((m1 == m2)[both & organ].float().mean()),
    })
    if augment == "pcl":
        shown = batch, match
correspondence = pd.DataFrame(records).set_index("preset")
display(correspondence.round(3))
batch, match = shown
found = torch.nonzero(match[0] >= 0).flatten()
chosen = found[torch.randperm(len(found), generator=torch.Generator().manual_seed(seed))[:20]]
points1 = torch.stack([chosen // width, chosen % width], 1)
points2 = torch.stack([match[0, chosen] // width, match[0, chosen] % width], 1)
fig = viz.show_correspondences(batch["view1"][0], batch["view2"][0], points1, points2,
                               title="pcl preset: exact partners (flips and rotation undone)")
viz.save_figure(fig, run_dir / "figures" / "correspondences_pcl.png")
display(Markdown(
    f"Matched pixels show the same original pixel in a share of {correspondence['matched: same original pixel'].min():.3f} "
    f"or more, and the same class in {correspondence['matched: same class (organ pixels)'].min():.3f} or more of the "
    f"organ pixels, under every preset. The same-position rule gives the same class in "
    f"{correspondence['same position: same class (organ pixels)'].min():.2f} to "
    f"{correspondence['same position: same class (organ pixels)'].max():.2f} of the organ pixels."
    + (" *Smoke run: a small batch.*" if size == "smoke" else "")))
timed("04.2", t0)

# %% [markdown]
# **Explanation.** The pixel index map $y W + x$ is warped by the same transform call as the view,
# with nearest sampling, so every view pixel carries the original pixel it shows; undoing a crop, a
# rotation or a flip is then a lookup, and a matched pair shows the same original pixel by
# construction, hence the same class (the masks are warped alike). Not every view-1 pixel finds a
# partner, even without a crop: a rotation resampled with nearest neighbour shows some original
# pixels twice and skips others, the corners rotate out of the frame, and where the views zoom
# differently (the crop's scale, `pcl`'s zoom) the zoomed-out view skips original pixels that the
# other one shows, so at radius half a pixel those queries have no key. They are left out, so the
# number of pairs varies from step to step. The naive rule pairs different tissue: after a flip or
# a large rotation the same position shows another part of the slice, and even a mild crop shifts
# it by many pixels, which at 64² is the thickness of the myocardium. A dense loss with those
# positives would teach the network that different structures should look alike: geometry, not
# position and not feature similarity, answers "which pairs are positive?" here.

# %% [markdown]
# ## Exercise 04.3 · The chance value of the dense loss
# With $N$ sampled pairs and no queue, each query has $N$ candidates (its key and $N - 1$ other keys,
# the MoCo form). If every embedding is the same, each candidate gets probability $1/N$ and
# $\mathcal{L}_{\text{dense}} = \log N$ exactly. If queries and keys are independent random unit
# vectors in $D$ dimensions, a cosine $s$ has mean 0 and variance $1/D$, and to first order
# $\mathbb{E}\,\mathcal{L} \approx \log\big(N\,\mathbb{E}\,e^{s/\tau}\big) \approx \log N + \frac{1}{2 D \tau^2}$
# (the Gaussian approximation of $s$); the exact $\mathbb{E}\,e^{s/\tau}$ on the sphere, from the
# density of $s$, $\propto (1 - s^2)^{(D-3)/2}$, is computed too. A queue of $Q$ random keys adds $Q$
# candidates: $\log(N + Q)$. The cell checks all three against `dense.dense_loss` on real pixel
# maps, and adds an untrained IDEAL network's dense head (decoder level) for comparison.

# %%
t0 = time.perf_counter()
batch = view_batch(data, "quickstart", take)
n_images, tau = len(take), dense_temperature


def sphere_mean_exp(dim: int, temperature: float) -> float:
    """E[exp(s / τ)] for the cosine s of two independent uniform unit vectors in ``dim`` dimensions."""
    s = np.linspace(-1.0, 1.0, 200_001)[1:-1]
    density = (1.0 - s**2) ** ((dim - 3) / 2)
    return float((np.exp(s / temperature) * density).sum() / density.sum())


def loss_of(q_map, k_map, per_image, queue=None) -> tuple[float, int]:
    out = dense.dense_loss(q_map, k_map, batch["pixels1"], batch["pixels2"], per_image=per_image, temperature=tau,
                           queue=queue, image_width=width, generator=torch.Generator().manual_seed(seed))
    return float(out.loss), out.n_pairs


records = []
g = torch.Generator().manual_seed(seed)
for dim in S["dims"]:
    for per_image in S["per_image"]:
        for queue_size in (0, 256):
            q_map = torch.randn(n_images, dim, *data.image_size, generator=g)
            k_map = torch.randn(n_images, dim, *data.image_size, generator=g)
            queue = torch.randn(queue_size, dim, generator=g) if queue_size else None
            random_loss, n = loss_of(q_map, k_map, per_image, queue)
            ones = torch.ones(n_images, dim, *data.image_size)
            same_loss, _ = loss_of(ones, ones, per_image, torch.ones(queue_size, dim) if queue_size else None)
            candidates = n + queue_size
            records.append({"D": dim, "per_image": per_image, "Q": queue_size, "N": n,
                            "identical: loss": same_loss, "log(N+Q)": math.log(candidates),
                            "random: loss": random_loss,
                            "log(N+Q) + 1/(2Dτ²)": math.log(candidates) + 1 / (2 * dim * tau**2),
                            "log((N+Q) E e^(s/τ)), sphere": math.log(candidates * sphere_mean_exp(dim, tau))})
chance = pd.DataFrame(records).set_index(["D", "per_image", "Q"])
display(chance.round(4))
torch.manual_seed(seed)
net = build_contrastive(from_params(PretrainConfig, dense_weight=1.0, dense_level="decoder", dense_dim=128)).eval()
with torch.no_grad():
    _, _, decoded = net.forward_levels(torch.cat([batch["view1"], batch["view2"]]))
    q_map, k_map = net.dense_head(decoded).chunk(2)
    init_loss, n = loss_of(q_map, k_map, dense_per_image)
exact_gap = (chance["identical: loss"] - chance["log(N+Q)"]).abs().max()
sphere_gap = (chance["random: loss"] - chance["log((N+Q) E e^(s/τ)), sphere"]).abs()
gauss_gap = (chance["random: loss"] - chance["log(N+Q) + 1/(2Dτ²)"]).abs()
display(Markdown(
    f"Identical embeddings: the library's loss equals log(N+Q) to within {exact_gap:.1e} in every row. Random "
    f"embeddings: it lies within {sphere_gap.max():.3f} of log((N+Q) E e^(s/τ)) (sphere), and the Gaussian "
    f"approximation lies within {gauss_gap.max():.3f}, at D = {min(S['dims'])} within "
    f"{gauss_gap.xs(min(S['dims']), level='D').max():.3f}. An untrained IDEAL network (decoder level, D = 128, "
    f"{n} pairs): {init_loss:.3f} against log N = {math.log(n):.3f}." + (" *Smoke run: a small batch.*" if size == "smoke" else "")))
timed("04.3", t0)

# %% [markdown]
# **Explanation.** The identical case is exact: every logit is $1/\tau$, the softmax is uniform
# over the $N + Q$ candidates, and the positive's log-probability is $-\log(N + Q)$; rare duplicate
# keys (two queries matched to one key cell) change nothing, since every positive has the same
# probability. For random embeddings the positive's similarity has mean 0, so the loss is the
# log-sum-exp of $N + Q$ random logits, $\approx \log(N + Q) + \log \mathbb{E}\,e^{s/\tau}$; at $D = 128$,
# $\tau = 0.2$ the correction is small, at $D = 16$ the cosines spread widely and the Gaussian
# approximation ignores that $|s| \le 1$, while both closed forms ignore that
# $\mathbb{E} \log < \log \mathbb{E}$ for a finite sum (the table shows by how much each is off). An
# untrained network is neither case: its dense features are a fixed function of the local image,
# and a query and its key show the same original pixel (up to the intensity augmentation), so the
# positive can already be more similar than the other locations, and the loss can start *below*
# $\log N$ with no training at all; the printed value says where this one starts. How to read a
# training curve: $N$ = `dense_pairs` varies with the views (exercises 04.1, 04.2), so compare each
# step with $\log N$ of that step, and count as learned only the drop below the untrained start,
# not the distance to $\log N$ or to 0. A loss that never leaves its start means the locations
# were never told apart better than a random network does.

# %% [markdown]
# ## Exercise 04.4 · How confident are the pseudo-labels?
# A short two-stream fine-tuning run (`semi.finetune_two_stream`, U-Net and LinkNet streams, one
# labelled patient of fold 0, the rest of the fold's pool unlabelled, threshold `cps_threshold`,
# random init). Then both streams predict the unlabelled slices, and `semi.cross_pseudo_labels`
# is applied at several thresholds θ: the share of pixels each stream keeps as a pseudo-label, the
# accuracy of the kept labels against the phantom's true masks (never seen in training), the share
# of each true class that the U-Net stream's kept labels cover, and `cross_pseudo_loss`.

# %%
t0 = time.perf_counter()
folds = cross_validation_folds(data.meta, rows, k=S["folds"], seed=seed)
fold = folds[0]
labelled = choose_labelled_by("patients", data.meta, fold.label_pool, 1, seed)
unlabelled = np.setdiff1d(fold.label_pool, labelled)
steps = S["ft_steps"]
cfg = from_params(SemiConfig, {"max_steps": steps, "batch_size": S["ft_batch"], "unlabelled_batch": S["ft_batch"],
                               "threshold": cps_threshold, "rampup_steps": max(1, steps // 3),
                               "eval_every": max(2, steps // 6), "seed": seed, "device": device,
                               "progress": progress, "out_dir": str(run_dir / "two_stream")})
result = semi.finetune_two_stream(cfg, data, labelled, unlabelled, fold.val, fold.test)
print(f"{len(labelled)} labelled and {len(unlabelled)} unlabelled slices; test Dice per volume "
      f"{result.metrics['test_dice_volume']:.3f} (average of the streams), best step {result.metrics['best_step']}")
model = result.model.eval()
with torch.no_grad():
    x = torch.from_numpy(data.images[unlabelled]).unsqueeze(1).to(next(model.parameters()).device)
    logits_a, logits_b = (torch.cat(part) for part in zip(*(model(chunk) for chunk in x.split(32)), strict=True))
truth = torch.from_numpy(data.masks[unlabelled]).long().to(logits_a.device)
records = []
for theta in (0.0, 0.5, 0.7, 0.9, 0.95, 0.99):
    pseudo = semi.cross_pseudo_labels(logits_a, logits_b, theta)
    record = {"θ": theta}
    for name, labels, keep in (("U-Net", pseudo.labels_a, pseudo.confident_a),
                               ("second", pseudo.labels_b, pseudo.confident_b)):
        record[f"{name}: kept"] = float(keep.float().mean())
        record[f"{name}: accuracy of kept"] = float((labels == truth)[keep].float().mean()) if keep.any() else math.nan
    for k, c in enumerate(classes):
        record[f"U-Net kept of {c}"] = float(pseudo.confident_a[truth == k].float().mean())
    record["cross_pseudo_loss"] = float(semi.cross_pseudo_loss(logits_a, logits_b, theta))
    records.append(record)
confidence = pd.DataFrame(records).set_index("θ")
display(confidence.round(3))
h = result.history
display(h[["step", "weight", "confident", "disagree"]].iloc[[0, len(h) // 2, -1]].round(3).set_index("step"))
at = confidence.loc[cps_threshold] if cps_threshold in confidence.index else confidence.iloc[-3]
organ_kept = at[[f"U-Net kept of {c}" for c in classes[1:]]]
display(Markdown(
    f"At θ = {at.name:g} the U-Net stream keeps {at['U-Net: kept']:.2f} of the unlabelled pixels, with accuracy "
    f"{at['U-Net: accuracy of kept']:.3f} on them, against {confidence.loc[0.0, 'U-Net: accuracy of kept']:.3f} for "
    f"all pixels (θ = 0); the {cfg.second_stream} stream keeps {at['second: kept']:.2f}. Of the true classes, "
    f"**{organ_kept.idxmin().removeprefix('U-Net kept of ')}** keeps the "
    f"smallest share ({organ_kept.min():.2f}), background {at['U-Net kept of background']:.2f}."
    + (" *Smoke run: a few steps; the network is barely trained.*" if size == "smoke" else "")))
timed("04.4", t0)

# %% [markdown]
# **Explanation.** A pixel becomes a pseudo-label when a stream's maximum softmax reaches θ; θ = 0
# keeps every pixel (plain CPS). Raising θ trades quantity for quality: the kept share falls and,
# when confidence means anything, the accuracy of what is kept rises, because the network's errors
# concentrate where it is unsure, at organ boundaries and in thin or small structures. The classes
# do not lose pixels evenly: the background is large and easy, so it tends to stay confident, while
# a thin class (on 64² slices the myocardium is a ring a few pixels wide) has most of its pixels
# near a boundary, so it is the one expected to lose the largest share; the reading above names the
# class that did. A high θ thus biases the pseudo-labels towards the background and the cavity
# interiors, where labels are least needed. The two streams need not be equally confident: compare
# the two "kept" columns. Where one stream rarely reaches θ, it hands the other almost no
# pseudo-labels while still learning from the other's, and the exchange becomes one-sided; one θ
# for two differently calibrated decoders is a choice, not a neutral setting. Two safeguards work
# with θ: the loss divides by *all* unlabelled pixels, so it stays small while few are confident,
# and the weight $w(t)$ ramps up (the history's `weight` column) while both streams are still poor.
# Confidence is not correctness: a stream can be confidently wrong, and the two streams share an
# encoder, so their errors are correlated; the accuracy of kept labels, measurable here only
# because the phantom has masks, is what the threshold is meant to raise. With one short run and
# one fold this describes one model, not a verdict on θ; testing θ would take paired two-stream
# runs over folds (the chapter's section 6).
