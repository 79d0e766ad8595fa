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
# # 00 · Quickstart: contrastive pretraining for segmentation, in one question
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/00_quickstart.ipynb)
#
# **Papers.** T. Chen, S. Kornblith, M. Norouzi, G. Hinton, *A Simple Framework for Contrastive
# Learning of Visual Representations* (SimCLR), ICML 2020, arXiv:2002.05709. K. He, H. Fan, Y. Wu,
# S. Xie, R. Girshick, *Momentum Contrast for Unsupervised Visual Representation Learning* (MoCo),
# CVPR 2020, arXiv:1911.05722. The multi-positive form used by later chapters: P. Khosla et al.,
# *Supervised Contrastive Learning*, NeurIPS 2020, arXiv:2004.11362.
#
# **Learning goals.** After this chapter you can
# - turn a pairing rule into a boolean positive mask and write the masked InfoNCE loss that uses it,
#   checking the code against the equation by hand;
# - pretrain a U-Net encoder with SimCLR and with MoCo, and say what each needs that the other does
#   not (a large batch of views; a momentum key encoder and a queue of keys);
# - compare a pretrained and a randomly initialised network fairly: in pairs over seeds, with a 95 %
#   interval, and state only the verdict the interval supports;
# - tell what an encoder learned from what fine-tuning did with it (frozen encoder, linear probe),
#   and where it helps or breaks (per-site scores, one-factor-at-a-time ablations, BatchNorm
#   statistics).
#
# **Prerequisites.** This is the first chapter. You should know PyTorch modules and training loops,
# the U-Net encoder-decoder for segmentation, softmax and cross-entropy, BatchNorm, and what a
# confidence interval of a mean is.
#
# Labelled medical images are scarce; unlabelled ones are not. Contrastive self-supervised learning
# pretrains an encoder on unlabelled images by pulling together embeddings of *positive pairs* and
# pushing apart everything else; the encoder then starts a segmentation network that is fine-tuned
# on the few labelled images. Every method in this package is an answer to one question:
#
# > **Which pairs are positive?**
#
# In this notebook the answer is SimCLR's and MoCo's: two augmented views of the same image. Later
# chapters give other answers (the same patient at another time, a slice at the same depth of
# another volume, the same superpixel, the same pixel, the sentence describing a region), and the
# code stays the same: a pairing strategy builds a boolean mask, one masked InfoNCE loss uses it.
#
# What you will do, on built-in phantom chest X-rays (no download), in minutes on a CPU:
# 1. look at the data and the protocol: few labels from one hospital, a broad unlabelled pool;
# 2. see positive pairs and the positive mask as pictures, and read the loss;
# 3. pretrain a U-Net encoder with SimCLR and with MoCo;
# 4. fine-tune with 1, 4 and all labelled images from five seeds, against random
#    initialisation, and read the Dice table honestly: in pairs, with intervals;
# 5. ask what the encoders learned (frozen encoder, linear probe), on which scanner it helps and
#    where it breaks, and why (a diagnosis that changes one factor at a time).

# %% [markdown]
# ## Setup
# On Colab this installs the package (Colab already has torch); elsewhere install it once with
# `pip install -e .` from the repository (or run `make demo`).
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
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from medcl_lite import diagnosis, losses, pairing, reference, viz
from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.config import from_params
from medcl_lite.data.datasets import TwoViewDataset, make_protocol
from medcl_lite.data.phantoms import make_chest_xrays
from medcl_lite.data.transforms import view_transform
from medcl_lite.experiment import (
    EVALUATION_PROTOCOLS,
    by_site,
    load_predictions,
    protocol_report,
    results_table,
    run_evaluation_protocols,
    run_finetune_grid,
)
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.train import FinetuneConfig, PretrainConfig, embed, pretrain

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill overrides these (medcl reproduce 00_quickstart -f notebooks/params/...)
smoke = None  # None: smoke run on a CPU, teaching run on a GPU; True or False forces it
preset = "auto"  # size when not smoke: cpu (make demo, under 15 min on 2 cores), gpu, or auto
seed = 0  # data and pretraining seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/quickstart-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
pretrain_epochs = 0  # 0: the value of the size preset
label_counts = []  # empty: the value of the size preset, e.g. [1, 4, "all"]
seeds = []  # empty: the fine-tuning seeds of the size preset
eval_protocols = []  # beside full fine-tuning: "frozen encoder", "discriminative", "linear probe"; empty: the size's
diagnose = False  # run the diagnosis of section 8 (about 30 min on 2 cores); False: show the recorded one

# %% [markdown]
# Values derived from the parameters (papermill does not re-run the parameter cell's expressions,
# so they live here). Three sizes: **smoke** (about a minute on a CPU: checks that everything runs,
# numbers mean little), **cpu** (`make demo`: the strongest run that fits 15 minutes on a 2-core
# laptop) and **gpu** (a few minutes on a Colab GPU, 128² images, longer pretraining).

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, preset, run_device)  # smoke=None: smoke on a CPU
SIZES = {  # image side, phantom patients x time points, pretraining epochs and batch, fine-tuning
    "smoke": dict(image=64, patients=18, times=3, epochs=1, batch=16, ft_steps=30, ft_batch=4,
                  counts=[1, "all"], seeds=[0], protocols=["frozen encoder", "linear probe"]),
    "cpu": dict(image=64, patients=60, times=4, epochs=40, batch=32, ft_steps=60, ft_batch=4,
                counts=[1, 4, "all"], seeds=[0, 1, 2, 3, 4], protocols=["frozen encoder", "linear probe"]),
    "gpu": dict(image=128, patients=120, times=4, epochs=200, batch=64, ft_steps=400, ft_batch=8,
                counts=[1, 2, 4, 8, "all"], seeds=[0, 1, 2, 3, 4],
                protocols=["frozen encoder", "discriminative", "linear probe"]),
}
if size not in SIZES:
    raise ValueError(f"preset={preset!r}: choose one of {sorted(SIZES)} or 'auto'")
S = SIZES[size]
image_size, n_patients, n_times, batch_size, ft_steps = S["image"], S["patients"], S["times"], S["batch"], S["ft_steps"]
epochs = S["epochs"]
default_counts, default_seeds = S["counts"], S["seeds"]
epochs = pretrain_epochs or epochs
label_counts = list(label_counts) or default_counts
seeds = list(seeds) or default_seeds
eval_protocols = list(eval_protocols) or S["protocols"]
unknown = sorted(set(eval_protocols) - set(EVALUATION_PROTOCOLS))
if unknown:
    raise ValueError(f"eval_protocols: unknown {unknown}; choose from {list(EVALUATION_PROTOCOLS)}")
run_dir = medcl_lite.run_folder(out_dir, f"quickstart-{size}")  # out_dir, else $MEDCL_RUNS/quickstart-{size}
medcl_lite.seed_everything(seed)
print(f"size={size}  device={run_device}  image {image_size}²  epochs={epochs}  labels={label_counts}  seeds={seeds}")
print(f"run folder: {run_dir}")

# %% [markdown]
# ## 1 · The data: phantom chest X-rays from three hospitals
# `make_chest_xrays` draws patients whose anatomy (lung shape, heart, ribs, body habitus) stays
# fixed across their time points, while inspiration, rotation, exposure, noise, findings and
# devices change. Patients come from three sites with different detectors: **A** (a clean PA
# department), **B** (another detector: contrast, noise, resolution) and **C** (portable ICU
# images). Labels: right lung and left lung (radiological convention: the patient's right is on the
# image's left).
#
# Two things make a few labels too few, as in real departments: patients differ in body size,
# lung shape and centring more than fine-tuning's light augmentation undoes, and about 70 % of
# the studies carry a finding, mostly a dense consolidation that looks like soft tissue but is
# labelled lung. One labelled image shows one patient and at most one finding; the unlabelled
# pool shows them all. (How much room this leaves, measured: [docs/methods.md, "Built-in
# data"](../docs/methods.md#built-in-data-room-for-pretraining-to-help).)

# %%
data = make_chest_xrays(n_patients=n_patients, n_times=n_times, size=image_size, seed=seed)
print(data.name, len(data), "images of", data.meta.patient_id.nunique(), "patients;", data.classes)
first = data.meta.patient_id.iloc[0]
one_patient = np.flatnonzero(data.meta.patient_id == first)
fig = viz.show_images(
    data.images[one_patient], titles=[f"t={t}" for t in data.meta.time.iloc[one_patient]],
    suptitle=f"patient {first}: one anatomy, {len(one_patient)} time points",
)

# %%
per_site = [np.flatnonzero(data.meta.site == s)[: 4 * n_times : n_times] for s in sorted(data.meta.site.unique())]
idx = np.concatenate(per_site)
fig = viz.show_overlays(data.images[idx], data.masks[idx], class_names=data.classes, n=len(idx),
                        titles=[f"site {s}" for s in data.meta.site.iloc[idx]])
viz.save_figure(fig, run_dir / "figures" / "sites.png")

# %% [markdown]
# **The protocol.** Self-supervision pays where labels are a narrow slice of the data. So the
# labelled images come from site A only (the label pool; a few are chosen per run), the unlabelled
# pretraining pool holds the training patients of *all* sites, and the test set holds unseen
# patients of all sites. The validation split (site A, labelled) picks the fine-tuning step; the
# test set is used once, at the end. Splits are made by patient, never by image.
#
# > **Pitfall.** Splitting by image puts other time points of a test patient into training: the
# > model has then seen that patient's anatomy, and the test score measures recall, not
# > generalisation. `make_protocol` splits by patient, stratified by site.

# %%
protocol = make_protocol(data.meta, labelled_sites=("A",), seed=seed)
display(protocol.summary())

# %% [markdown]
# ## 2 · Which pairs are positive?
# SimCLR's answer: two random augmentations ("views") of the same image. The augmentation decides
# what the encoder must ignore: crops, small rotations, exposure, gamma, noise and blur.
#
# > **Pitfall.** Views that differ by a horizontal flip teach the encoder to ignore left and right,
# > but the right and left lungs are different labels here. The `quickstart` views never flip
# > (`view_transform(..., hflip=0.5)` turns flips on for data whose labels are symmetric).

# %%
augment = view_transform(image_size, "quickstart")
pairs = TwoViewDataset(data, augment, index=protocol.pretrain)
batch = [pairs[i] for i in range(6)]
fig = viz.show_pairs(torch.stack([b["view1"] for b in batch]), torch.stack([b["view2"] for b in batch]),
                     suptitle="positive pairs: two views of one image")
viz.save_figure(fig, run_dir / "figures" / "positive_pairs.png")

# %% [markdown]
# A pairing strategy turns batch metadata into a boolean mask $M$: entry $M_{ij}$ says whether
# sample $j$ is a positive for anchor $i$. For SimCLR and MoCo it is the identity
# (`pairing.instance`); CL-TCI (chapter 01) marks every image of the same patient
# (`pairing.temporal`):
#
# $$
# M^{\text{instance}}_{ij} = [\, i = j \,], \qquad
# M^{\text{temporal}}_{ij} = [\, \text{patient}_i = \text{patient}_j \,],
# $$
#
# with $[\cdot]$ = 1 when the condition holds and $\text{patient}_i$ = the integer patient code of
# sample $i$ (`patients` below; a negative code, e.g. an empty queue slot, matches nothing). Same
# batch, two answers:

# %%
patients = torch.as_tensor(data.codes("patient_id")[protocol.pretrain[:12]])
fig = viz.show_mask(pairing.instance(12), title="instance (SimCLR, MoCo)")
fig2 = viz.show_mask(pairing.temporal(patients), title="temporal (CL-TCI): same patient")

# %% [markdown]
# ## 3 · One loss for every answer
# An encoder $f$ (the U-Net's encoder) and a projection head $g$ map an image $x$ to an embedding
# $z = g(f(x))$. `losses.info_nce` scores $N$ queries $q_i$ (rows of `query`) against $M$ keys
# $k_j$ (rows of `keys`). For query $i$,
#
# - $P(i)$ = its positives: the $j$ where `pos_mask[i, j]` is True and `exclude[i, j]` is not
#   (every row needs at least one, or the function raises an error);
# - $A(i)$ = every key it is compared with: the $j$ where `exclude[i, j]` is not True, so all $M$
#   keys when `exclude` is `None`. $A(i)$ contains $P(i)$: positives sit in the denominator too.
#
# The loss is the mean over queries of the mean over positives of a log-softmax:
#
# $$
# \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N} \frac{-1}{|P(i)|} \sum_{p \in P(i)}
# \log \frac{\exp\big(s(q_i, k_p)/\tau\big)}{\sum_{a \in A(i)} \exp\big(s(q_i, k_a)/\tau\big)},
# \qquad s(u, v) = \frac{u^\top v}{\lVert u \rVert\, \lVert v \rVert},
# $$
#
# with $\tau$ = `temperature` (`PretrainConfig.temperature` = 0.1, the value of the CL-TCI and PCL
# papers; the quickstart keeps it). With one positive per query this is InfoNCE; with several it is
# the "$L_{out}$" form of supervised contrastive learning (Khosla et al., eq. 2), which every later
# chapter uses ([docs/methods.md, "Shared loss"](../docs/methods.md#shared-loss--one-masked-infonce)).
# The public CL-TCI and PCL code also multiplies the loss by $\tau / 0.07$; the package leaves this
# constant factor out.
#
# **SimCLR's positives.** `losses.nt_xent` stacks the two views of $N$ images into $2N$
# embeddings, $z_1, \dots, z_N$ (view 1, `z1`) and $z_{N+1}, \dots, z_{2N}$ (view 2, `z2`), so that
# rows $i$ and $i + N$ come from the same image. It calls `info_nce` with these $2N$ embeddings as
# both queries and keys, each embedding's pair with itself in `exclude`, and
#
# $$
# P(i) = \{\, j \ne i : \sigma(j) = \sigma(i) \text{ or } M_{\sigma(i)\sigma(j)} \,\}, \qquad
# A(i) = \{1, \dots, 2N\} \setminus \{i\},
# $$
#
# where $\sigma(i)$ is the image of view $i$ ($\sigma(i) = \sigma(i + N) = i$ for $i \le N$) and
# $M$ = the optional `pos_mask` of a pairing strategy. SimCLR passes none, so $P(i)$ is the other
# view of the same image alone: SimCLR's NT-Xent (eq. 1 of its paper). This is the package's code:

# %%
print(inspect.getsource(losses.info_nce))
print(inspect.getsource(losses.nt_xent))

# %% [markdown]
# A check you can do by hand: if all $2N$ embeddings are identical, every term of the denominator
# equals the numerator and $|A(i)| = 2N - 1$, so the loss is $\log(2N-1)$.

# %%
z = torch.ones(8, 16)
print(f"nt_xent = {losses.nt_xent(z, z).item():.5f}   log(2N-1) = {math.log(15):.5f}")

# %% [markdown]
# MoCo answers the same question with a memory. The query $q_i$ comes from view 1 through the
# online network (`net`, weights $\theta_q$); the key comes from view 2 through a key network
# (`key_net`, weights $\theta_k$) that receives no gradient. Before computing the keys of each step,
# `models.momentum_update` moves the key network towards the online one (MoCo's eq. 2):
#
# $$
# \theta_k \leftarrow m\, \theta_k + (1 - m)\, \theta_q,
# $$
#
# with $m$ = `moco_momentum`, for every parameter. BatchNorm running statistics are buffers, not
# parameters: the key network keeps its own. `train.moco_loss` then calls `info_nce` with the $B$
# queries of the batch against $B + K$ keys: the batch's own keys first, then the $K$ =
# `queue_size` keys of the queue (`losses.MoCoQueue`, first in, first out, refilled with this
# batch's keys after the loss):
#
# $$
# P(i) = \{\, \text{own key } i \,\} \cup \{\, j : M_{ij} \,\}, \qquad
# A(i) = \{\text{the } B \text{ batch keys}\} \cup \{\text{the } K \text{ queue keys}\},
# $$
#
# with $M$ the pairing strategy's mask over batch and queue keys (empty for instance pairing). One
# difference from the paper: MoCo's denominator holds the own key and the queue; here the other
# keys of the batch are negatives too (one step later they would be in the queue anyway). MoCo's
# paper uses $\tau = 0.07$; the quickstart keeps 0.1 for both frameworks. One step of each
# framework, as the training loop runs it:

# %%
from medcl_lite import train  # noqa: E402

print(inspect.getsource(train.simclr_loss))
print(inspect.getsource(train.moco_loss))

# %% [markdown]
# ## 4 · Pretraining: SimCLR and MoCo on the unlabelled pool
# Both train the encoder of a U-Net (ResNet-18) with the global projection head $g$
# (pool → linear → ReLU → linear, `models.ProjectionHead`; 128-dimensional output, the default
# `proj_dim`). The learning rate grows linearly with the batch (`0.1 * batch_size / 32` for SimCLR,
# `0.05 * batch_size / 32` for MoCo); MoCo's queue length $K$ and momentum $m$ of section 3 are
# `queue_size` and `moco_momentum`. Runs write a checkpoint after every epoch; running the cell
# again resumes (or loads a finished run) instead of starting over.

# %%
common = {
    "max_epochs": epochs, "batch_size": batch_size, "seed": seed, "device": device,
    "progress": progress, "resume": True, "augment": "quickstart",
}
runs = {
    "SimCLR": from_params(PretrainConfig, common, framework="simclr", lr=0.1 * batch_size / 32,
                          out_dir=str(run_dir / "pretrain_simclr")),
    "MoCo": from_params(PretrainConfig, common, framework="moco", lr=0.05 * batch_size / 32,
                        queue_size=1024, moco_momentum=0.99, out_dir=str(run_dir / "pretrain_moco")),
}
pretrained = {name: pretrain(cfg, data, index=protocol.pretrain) for name, cfg in runs.items()}
for name, res in pretrained.items():
    print(f"{name}: {len(res.history)} steps, final loss {res.history.loss.iloc[-5:].mean():.3f}")
fig = viz.plot_curves({n: r.history for n, r in pretrained.items()}, x="step", y="loss",
                      title="contrastive loss during pretraining")
viz.save_figure(fig, run_dir / "figures" / "pretrain_loss.png")

# %% [markdown]
# **The MoCo settings.** The cell above sets `queue_size=1024` and `moco_momentum=0.99` for every
# size (smoke, cpu, gpu); the notebook has no parameter for them and no file in
# `notebooks/params/quickstart/` changes them. Both published references use more: MoCo's paper a
# queue of $K = 65{,}536$ keys with $m = 0.999$ (on ImageNet), CL-TCI's public code $K = 3072$ with
# $m = 0.999$. The latter are `PretrainConfig`'s defaults and what the presets of the later chapters
# set (e.g. `notebooks/params/cl_tci/`). The quickstart's run is short: the key network averages
# the online one over roughly the last $1/(1-m)$ steps (100 at $m = 0.99$, 1000 at $m = 0.999$;
# compare the step counts printed above), and the queue holds the keys of the last $K / B$ steps,
# so smaller values keep the keys closer to the current encoder.
#
# > **Pitfall.** MoCo assumes a queue much shorter than the data set. Compare `queue_size` with the
# > `pretrain` row of the protocol table in section 1: when the queue is longer than the pool, it
# > holds older keys of the query's *own image*. Counted as negatives, they would push each image
# > away from itself. `train.moco_objective` recognises them by the sample row the queue stores
# > (`queue.meta["sample"]`) and leaves them out of the denominator (`info_nce(..., exclude=...)`).
#
# **What did the encoders learn?** Below, the pooled bottleneck features of the test images,
# projected to 2-D with PCA and coloured by site, and two numbers per encoder, measured with a
# 5-nearest-neighbour classifier on the features (cross-validated): how well the features tell the
# **site** (scanner) apart, and how often an image's nearest neighbour is **the same patient**.
# Scanner information is what fine-tuning on site A must *not* rely on; patient identity is what
# CL-TCI (chapter 01) uses as its positive pairs.

# %%
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from medcl_lite.train import build_contrastive  # noqa: E402

random_net = build_contrastive(runs["SimCLR"]).to(run_device)
sites = data.meta.site.to_numpy()[protocol.test]
test_patients = data.meta.patient_id.to_numpy()[protocol.test]
probe = []
for name, net in {"random init": random_net, **{k: r.net for k, r in pretrained.items()}}.items():
    feats = embed(net, data, protocol.test)
    fig = viz.plot_embeddings(feats, sites, method="pca", title=f"{name}: test features by site", label_name="site")
    viz.save_figure(fig, run_dir / "figures" / f"embedding_{name.split()[0].lower()}.png")
    unit = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)
    similarity = unit @ unit.T - 2 * np.eye(len(unit))  # exclude each image itself
    probe.append({
        "encoder": name,
        "site from features (5-NN accuracy)": cross_val_score(KNeighborsClassifier(5), unit, sites, cv=3).mean(),
        "nearest neighbour is same patient": (test_patients[similarity.argmax(1)] == test_patients).mean(),
    })
display(pd.DataFrame(probe).set_index("encoder").round(3))

# %% [markdown]
# ## 5 · Fine-tuning with few labels, against random initialisation
# Each run trains the whole U-Net (the decoder always starts at random; only the encoder is
# transferred) on *n* labelled site-A images, picks its best step on the site-A validation split
# and is scored once on the test set of all sites. The same seed gives every initialisation the same
# labelled images (the subsets are nested: the 2 images of seed 0 contain its 1 image).

# %% [markdown]
# ### Metrics used in every chapter
# Every score compares a predicted label map (the argmax over classes) with the truth, class by
# class, over the foreground classes $k = 1, \dots, K$ (the background, class 0, is not scored).
# $\hat Y_{nk}$ and $Y_{nk}$ are the pixels of image (or slice) $n$ that the prediction and the
# truth label $k$.
#
# **Dice per image** (`medcl_lite.metrics.dice_per_image`, an $N \times K$ array):
#
# $$
# D_{nk} = \frac{2\, |\hat Y_{nk} \cap Y_{nk}|}{|\hat Y_{nk}| + |Y_{nk}|} .
# $$
#
# A class absent from both the prediction and the target of an image gives $0/0$: NaN, left out
# of every mean (`np.nanmean`). The reported number (`test_dice`, and `test_dice_site_A` ... on one
# site's images) is the mean of the defined entries, i.e. over images and the classes present:
#
# $$
# \bar D = \frac{1}{|\mathcal{D}|} \sum_{(n, k) \in \mathcal{D}} D_{nk}, \qquad
# \mathcal{D} = \{ (n, k) : |\hat Y_{nk}| + |Y_{nk}| > 0 \} .
# $$
#
# **Dice pooled over all slices** (`medcl_lite.metrics.dice_pooled`, column `test_dice_pooled`):
# overlaps and sizes are summed over all $N$ images first, then one Dice per class, averaged over
# the classes. This is how the public CL-TCI and PCL code report Dice (the papers' way):
#
# $$
# D^{\text{pooled}}_k = \frac{2 \sum_{n} |\hat Y_{nk} \cap Y_{nk}|}
# {\sum_{n} \big(|\hat Y_{nk}| + |Y_{nk}|\big)} .
# $$
#
# Large structures dominate it and empty slices cannot lower it, so it is usually higher than
# $\bar D$.
#
# **Dice per 3-D volume** (`medcl_lite.metrics.dice_per_volume`; `dice_volume` in the chapters on
# CT and MRI): the same sums over the slices $n \in v$ of one volume $v$, which equals the Dice of
# the stacked volume; then the mean over classes (NaN left out) and over volumes:
#
# $$
# D_{vk} = \frac{2 \sum_{n \in v} |\hat Y_{nk} \cap Y_{nk}|}
# {\sum_{n \in v} \big(|\hat Y_{nk}| + |Y_{nk}|\big)} .
# $$
#
# The volume is the unit a clinician looks at. (This chapter's X-rays are 2-D: no volumes.)
#
# **HD95** (`medcl_lite.metrics.hd95_per_volume`, one value per volume and class, built on
# `medcl_lite.metrics.hd95`): the boundary $\partial S$ of a mask $S$ is the voxels that one erosion
# step (face neighbours) removes, and $d(x, S) = \min_{y \in S} \lVert x - y \rVert$ is measured in
# mm with the volume's voxel spacing (in voxels when no spacing is given). The distances of both directions are pooled and their 95th
# percentile taken:
#
# $$
# \mathrm{HD95}(\hat Y, Y) = \mathrm{P}_{95}\Big( \{ d(x, \partial Y) : x \in \partial \hat Y \}
# \cup \{ d(y, \partial \hat Y) : y \in \partial Y \} \Big) .
# $$
#
# Lower is better. It is undefined (NaN) when the prediction or the truth is empty; a mean of the
# defined values must report how many were undefined (`medcl_lite.metrics.summarize_hd95`).
#
# **ROC AUC** (chapter 05, `medcl_lite.crossmodal.finding_auc`, scikit-learn's `roc_auc_score`):
# for scores $s$ of the images with a finding ($\mathcal{P}$) and without it ($\mathcal{N}$),
#
# $$
# \mathrm{AUC} = \frac{1}{|\mathcal{P}|\, |\mathcal{N}|}
# \sum_{p \in \mathcal{P}} \sum_{q \in \mathcal{N}}
# \Big( [\, s_p > s_q \,] + \tfrac{1}{2} [\, s_p = s_q \,] \Big),
# $$
#
# the probability that a random positive case scores above a random negative one (ties count
# half): 0.5 is chance, 1 a perfect ranking.
#
# > **Pitfall.** Counting a class absent from both prediction and truth as Dice 1, as some code
# > does, inflates the score on every image or slice without the structure. Say which Dice you
# > report: per image, pooled, or per volume answer different questions.
#
# The cell below reports `test_dice` and `test_dice_pooled` for every run.

# %%
ft_base = from_params(FinetuneConfig, {"max_steps": ft_steps, "eval_every": max(10, ft_steps // 4),
                                       "batch_size": S["ft_batch"], "lr": 1e-3, "device": device})
encoders = {"random init": None, **{name: r.encoder_state for name, r in pretrained.items()}}
rows = run_finetune_grid(data, protocol, encoders, label_counts, seeds, ft_base,
                         out_dir=run_dir / "finetune", progress=progress)
atomic_write_text(run_dir / "results.csv", rows.to_csv(index=False))
table = results_table(rows, "test_dice")
pooled = results_table(rows, "test_dice_pooled")
display(Markdown("**Test Dice, mean over images (mean ± std over seeds)**"))
display(table)

# %%
fig = viz.plot_dice_vs_labels(rows, x="n_labelled", y="test_dice", hue="init",
                              title="test Dice vs labelled images (all sites)")
viz.save_figure(fig, run_dir / "figures" / "dice_vs_labels.png")

# %% [markdown]
# Per site: the labelled images come from site A; B and C are the domain shift.

# %%
site_cols = sorted(c for c in rows.columns if c.startswith("test_dice_site_"))
per_site = rows.groupby(["init", "n_labelled"], sort=False)[site_cols].mean().round(3)
display(per_site)

# %% [markdown]
# ## 6 · What the numbers say
# A pretrained run and the random-init run of the same seed see the same labelled images and start
# the same decoder, so compare them in **pairs**: for seed $i$,
# $d_i = \text{Dice}(\text{pretrained}, i) - \text{Dice}(\text{random init}, i)$. Over the $n$ seeds the
# table gives the mean difference $\bar d$ (`mean_diff`) and its 95 % interval
# $\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt{n}$ (`ci_low`, `ci_high`; `medcl_lite.paired`). The verdict
# is computed from it: "better" or "worse" only when the interval excludes 0, "no evidence" when it
# covers 0 (one seed gives no interval).
#
# > **Pitfall.** Two pretrained encoders face one baseline here. Choosing the better of the two
# > after seeing the test scores and quoting its interval overstates its advantage: the choice and
# > the interval use the same numbers. Decide which comparison you will read before you look.

# %%
comparison = paired_comparison(rows, groups=["n_labelled"], pair_on=["seed"])
display(comparison.round(3))
summary_text = verdict_text(comparison, smoke=size == "smoke")
atomic_write_text(run_dir / "comparison.csv", comparison.to_csv(index=False))
display(Markdown(summary_text))

# %% [markdown]
# The same comparison from the recorded reference run of the `cpu` size (`make demo`), read from
# `notebooks/reference/00_quickstart/` (on the same machine and seeds, your `cpu` run reproduces it):

# %%
print(reference.caption("00_quickstart"))
recorded = reference.load_table("00_quickstart", "comparison.csv")
if recorded is not None:
    display(recorded.round(3))

# %% [markdown]
# ## 7 · Evaluation protocols: what did the encoder learn?
# Full fine-tuning lets every weight move, so it measures the *starting point* more than the
# representation. Self-supervised papers also measure the representation itself (SimCLR Sec. 2.3,
# MoCo Sec. 4.1), and so does this section, at the smallest label budget and on the same images and
# seeds as above:
# - **frozen encoder**: only the decoder and head learn; the encoder keeps its weights and its
#   BatchNorm statistics (`FinetuneConfig(encoder_lr_scale=0)`). Random init here is a random
#   feature extractor with full-resolution skip connections, a strong baseline for a task this local.
# - **discriminative** (gpu size): the encoder learns at a tenth of the decoder's rate
#   (`encoder_lr_scale=0.1`), a common way to keep what pretraining learned.
# - **linear probe**: a 1x1 convolution on encoder stage 3 (stride 8) predicts each cell's majority
#   class, $p(k \mid c) = \mathrm{softmax}_k(W_k \cdot f_3(c) + b_k)$; nothing else learns
#   (`medcl_lite.probe`). It asks how linearly the lungs can be read off the features.
#
# If pretraining wins under a frozen encoder or the probe but not under full fine-tuning, the
# features hold something that full fine-tuning on these few images does not need, or overwrites.

# %%
first = label_counts[:1]
extra = run_evaluation_protocols(data, protocol, encoders, first, seeds, ft_base, eval_protocols,
                                 out_dir=run_dir / "protocols", progress=progress)  # fmt: skip
protocols = protocol_report(rows[rows.n_labelled == str(first[0])], extra, pair_on=["seed"])
atomic_write_text(run_dir / "protocols.csv", protocols.rows.to_csv(index=False))
display(protocols.means)
display(protocols.comparison.round(3))
protocol_text = protocols.text(label=lambda r: f"{r.protocol}, {r.n_labelled} labelled", smoke=size == "smoke")
display(Markdown(protocol_text))

# %% [markdown]
# ### Where does the representation help? The same runs, per site
# The test set mixes three scanners, and its mean hides where a representation helps and where it
# breaks. Every run above also scored each site (`test_dice_site_A`, ...); `by_site` turns those
# columns into rows, so the same pairs (same seed, same labelled image) can be compared **per
# site**. Site A is where the labels come from; B (a computed-radiography plate: noisier, blurred,
# edge-enhanced, darker) and C (portable: scatter, rotation, lines) are only in the unlabelled pool
# and the test set. The forest plot draws each paired difference with its 95 % interval: a bar
# clear of 0 on the right is "better", on the left "worse".

# %%
def paired_by_site(protocol_rows: pd.DataFrame) -> pd.DataFrame:
    """Pretrained minus random init, per site and protocol, paired on the seed."""
    return paired_comparison(by_site(protocol_rows), groups=["site", "protocol", "n_labelled"], pair_on=["seed"])


site_comparison = paired_by_site(protocols.rows)
fig = viz.plot_paired(site_comparison, ["site", "protocol", "init"],
                      title=f"this run: pretrained minus random init per site, {first[0]} labelled")  # fmt: skip
viz.save_figure(fig, run_dir / "figures" / "paired_by_site.png")
site_text = verdict_text(site_comparison, ["site", "protocol"], label=lambda r: f"site {r.site}, {r.protocol}",
                         smoke=size == "smoke")
display(Markdown(site_text))

# %% [markdown]
# The same reading of the recorded reference run (`cpu` size, five seeds), from its `protocols.csv`:

# %%
recorded_protocols = reference.load_table("00_quickstart", "protocols.csv")
if recorded_protocols is not None:
    recorded_sites = paired_by_site(recorded_protocols)
    fig = viz.plot_paired(recorded_sites, ["site", "protocol", "init"],
                          title="reference run: pretrained minus random init per site")  # fmt: skip
    display(Markdown(verdict_text(recorded_sites, ["site", "protocol"], label=lambda r: f"site {r.site}, {r.protocol}")))

# %% [markdown]
# **How to read it.** Compare the rows of one protocol across sites. Where a frozen pretrained
# encoder beats a frozen random one on site A, pretraining put something into the encoder that
# reads these lungs; where it loses on another site, the features that the decoder learned to read
# on site A change on that scanner, and the decoder misreads them. The views of SimCLR and MoCo
# vary exposure, gamma, blur and noise, but contrastive learning only makes the *projection head's
# output* invariant to them; the encoder stages that a U-Net decoder reads through its skip
# connections may still carry the scanner. The diagnosis below tests two versions of this. Either
# the *features* carry the scanner (then encoders pretrained on views that also vary what tells the
# scanners apart, noise up to site B's, blur, edge enhancement, the `quickstart_scanners` preset,
# should close the gap), or only the *units* do: every BatchNorm layer of the encoder normalises
# with a mean and variance estimated on site A's images, and a darker, noisier scanner shifts them
# (then re-estimating them on each site's own images should close it).

# %% [markdown]
# ## 8 · Why? A diagnosis, one factor at a time
# When pretraining loses or ties, several explanations compete. Each row below changes **one**
# thing in the recipe of section 5 (SimCLR against random init, smallest label budget, the same
# seeds) and reads the paired difference again (`medcl_lite.diagnosis`):
#
# | factor | what the row changes |
# |---|---|
# | fine-tuning LR | 1e-4, the papers' fine-tuning rate, instead of 1e-3 |
# | fine-tuning length | 5x the fine-tuning steps |
# | frozen vs full | the encoder frozen, learning 10x slower, or waiting for the first half of the steps while the decoder learns to read it (LP-FT, Kumar et al. 2022) |
# | BatchNorm statistics | pretrained running statistics reset; frozen while the weights learn; or re-estimated at test time on each site's own images, no label used (AdaBN: `FinetuneConfig(test_bn="per_site")`) |
# | encoder-only transfer | only stages 1-2 (stride 2 and 4) of the pretrained encoder kept |
# | pretraining length | SimCLR pretrained for a quarter of the epochs |
# | augmentation mismatch | SimCLR pretrained without random crops (fine-tuning never crops), or with views that also vary the scanners' noise, blur and edge enhancement |
# | label-budget ceiling | all labelled images: how much room the smallest budget leaves |
#
# The diagnosis pretrains three more encoders and fine-tunes many short runs (about 30 minutes on
# 2 cores with `diagnose=True`); with `diagnose=False` (the default) the notebook shows the table
# recorded by the reference run instead (`notebooks/reference/00_quickstart/`).

# %%
if diagnose:
    variants = {  # name: (pretraining changes, run folder)
        "SimCLR, 1/4 of the epochs": ({"max_epochs": max(1, epochs // 4)}, "pretrain_simclr_short"),
        "SimCLR, no crops": ({"augment": "quickstart_no_crop"}, "pretrain_simclr_no_crop"),
        "SimCLR, scanner views": ({"augment": "quickstart_scanners"}, "pretrain_simclr_scanners"),
    }
    extra = {}
    for name, (change, folder) in variants.items():
        cfg = replace(runs["SimCLR"], **change, out_dir=str(run_dir / folder))
        extra[name] = pretrain(cfg, data, index=protocol.pretrain).encoder_state
    random_encoder = build_contrastive(runs["SimCLR"]).encoder.state_dict()
    ablations = diagnosis.default_ablations(ft_base, random_encoder, *variants)
    diag_rows = diagnosis.run_diagnosis(data, protocol, {"SimCLR": pretrained["SimCLR"].encoder_state, **extra},
                                        ft_base, ablations, label_counts[0], seeds, method="SimCLR",
                                        out_dir=run_dir / "diagnosis", progress=progress)  # fmt: skip
    diagnosed = diagnosis.diagnosis_table(diag_rows)
    atomic_write_text(run_dir / "diagnosis.csv", diagnosed.to_csv(index=False))
    atomic_write_text(run_dir / "diagnosis_rows.csv", diag_rows.to_csv(index=False))  # every run, per site too
    print(f"this run's diagnosis ({size}, seeds {seeds})")
else:
    diagnosed = reference.load_table("00_quickstart", "diagnosis.csv")
    diag_rows = reference.load_table("00_quickstart", "diagnosis_rows.csv")
    print(reference.caption("00_quickstart"))
if diagnosed is not None:
    display(diagnosed.round(3))
    display(Markdown(diagnosis.reading(diagnosed, smoke=diagnose and size == "smoke")))

# %% [markdown]
# **The diagnosis per site.** As in section 7, the mean over three scanners can hide an ablation
# that helps on the labelled site and hurts on another. Each cell: SimCLR minus random init on that
# site's test images, with its 95 % interval over the seeds (`diagnosis.site_table`).

# %%
if diag_rows is not None:
    display(diagnosis.site_table(diag_rows))

# %% [markdown]
# ### Scanner units: BatchNorm statistics per site
# A BatchNorm layer computes $\hat x = (x - \mu) / \sqrt{\sigma^2 + \epsilon}$ per channel, with
# $\mu, \sigma^2$ the running statistics of the images it trained on: here site A's. AdaBN (Li et
# al. 2017) keeps every weight and re-estimates $\mu, \sigma^2$ on a new site's unlabelled images
# (`medcl_lite.batchnorm.adapt_batchnorm`, PyTorch's `update_bn`); the row "BN statistics per test
# site" does it on each test site's own images before predicting them. No label of B or C is used,
# and the same is done for random init. If a score rises on B and C, what the few labels of A left
# wrong there was partly the scanner's units, not what the encoder learned.

# %%
if diag_rows is not None and "BN statistics per test site" in set(diag_rows.ablation):
    display(diagnosis.site_means(diag_rows, ["reference", "BN statistics per test site"]).round(3))
    display(Markdown(diagnosis.site_reading(diag_rows, "BN statistics per test site", smoke=diagnose and size == "smoke")))
elif diag_rows is not None:
    print("the recorded diagnosis predates the per-site BatchNorm row: run with diagnose=True")

# %% [markdown]
# ## 9 · Overlays and results on disk
# Test predictions of the smallest label budget (seed 0), for each initialisation: contours are the
# ground truth, filled colours the prediction. Then the table as Markdown and CSV (what
# `medcl reproduce` prints).

# %%
n_small = str(label_counts[0])
show = np.concatenate([rows_[:: max(1, len(rows_) // 2)][:2] for rows_ in protocol.test_by_site().values()])
for init in encoders:
    pred = load_predictions(run_dir / "finetune", init, n_small, seeds[0])
    pick = np.searchsorted(protocol.test, show)
    fig = viz.show_overlays(data.images[show], data.masks[show], pred[pick], class_names=data.classes,
                            titles=[f"site {s}" for s in data.meta.site.iloc[show]])
    fig.suptitle(f"{init}, {n_small} labelled image(s)", y=1.03)
    viz.save_figure(fig, run_dir / "figures" / f"overlay_{init.split()[0].lower()}.png")

# %%
md = [
    f"# Quickstart results ({size}, {env['device']}, torch {env['torch']})",
    "",
    "Test Dice (mean over images and lungs; mean ± std over fine-tuning seeds "
    f"{seeds}; labelled images from site A, test on all sites):",
    "",
    table.to_markdown(),
    "",
    "Pooled Dice (the papers' way):",
    "",
    pooled.to_markdown(),
    "",
    summary_text,
    "",
    f"Evaluation protocols at {first[0]} labelled (test Dice per image, paired over seeds):",
    "",
    protocol_text,
    "",
    f"Per site at {first[0]} labelled (pretrained minus random init, paired over seeds):",
    "",
    site_text,
    "",
]
atomic_write_text(run_dir / "results.md", "\n".join(md))
print((run_dir / "results.md").read_text())

# %% [markdown]
# ## Exercises
# Predict first (write your guess down), then run, then explain what you saw. Each exercise names
# the parameter or function to change; the worked answers run every experiment and explain the
# outcome: [solutions/00_quickstart.ipynb](solutions/00_quickstart.ipynb).
#
# **Exercise 00.1 · The loss at chance: identical, random and untrained embeddings** *(about 1 min on 2 cores)*
# *Predict*: for a batch of N = 32 images (64 views), τ = 0.1 and 128-dimensional embeddings, what
# does `losses.nt_xent` return when all embeddings are identical? When they are independent random
# vectors: higher, lower or the same? Does τ change either value? Where do the untrained encoder
# with its projection head, and MoCo's first step against a queue of K = 1024 random keys, land?
# *Run*: `losses.nt_xent(z, z)` with `z = torch.ones(32, 128)`, and with `torch.randn` views, for τ
# from 0.05 to 1; `train.moco_objective` against a fresh `losses.MoCoQueue(1024, 128)`;
# `train.simclr_loss` of `build_contrastive(PretrainConfig())` on one batch of `TwoViewDataset`.
# *Explain*: derive $\log(2N-1)$ and the random-embedding value $\approx \log|A(i)| + 1/(2D\tau^2)$,
# and say what the first value of a pretraining curve tells you.
#
# **Exercise 00.2 · Instance vs temporal positives in one batch** *(about 1 min on 2 cores)*
# *Predict*: in a random batch of 32 images of `protocol.pretrain`, how many positives does a view
# get under instance pairing, and under temporal pairing? With CL-TCI's patient sampler? Which
# NT-Xent does an encoder reach that gives every *patient* one direction, under each mask?
# *Run*: `pairing.temporal` on the patient codes (`data.codes("patient_id")`) of random batches and
# of `PatientBatchSampler(..., k=2)` batches; then `losses.nt_xent(z, z, 0.1, pos_mask=...)` with
# `z` one-hot per image and one-hot per patient.
# *Explain*: why SimCLR with random batches barely pushes a patient's time points apart, why
# CL-TCI needs its sampler, and why a multi-positive loss has a floor above 0.
#
# **Exercise 00.3 · The fine-tuning learning rate at one labelled image** *(about 5 min on 2 cores)*
# *Predict*: at 1 labelled image and the chapter's 60 fine-tuning steps, does Adam at lr 1e-4 (the
# papers' rate) beat lr 1e-3 (this chapter's), for random init and for SimCLR? Does SimCLR minus
# random init change sign between the two rates?
# *Run*: pretrain SimCLR as in section 4, then `run_finetune_grid(..., [1], seeds=[0, 1, 2])` with
# `FinetuneConfig(lr=1e-3)` and with `lr=1e-4`; read `paired_comparison(..., pair_on=["seed"])`
# once per initialisation across the rates and once per rate across the initialisations.
# *Explain*: what a ten times lower rate does in a fixed number of steps, which step validation
# picked, and what the intervals allow you to say.

# %% [markdown]
# ## Key takeaways
# - A contrastive method is defined by its positive set $P(i)$. SimCLR and MoCo share one masked
#   InfoNCE loss and one answer (two views of the same image); they differ in where the negatives
#   come from (the other views of the batch, or a queue of keys from a momentum encoder).
# - The augmentations decide what the encoder learns to ignore, and the loss makes only the
#   projection head's output invariant: the encoder stages a U-Net decoder reads, and their
#   BatchNorm statistics, can still carry the scanner.
# - Compare initialisations in pairs (same seed, same labelled images) with an interval, and read
#   "no evidence" as a result. In the recorded reference table above, look at whether each
#   interval covers 0 before you look at the mean difference.
# - Full fine-tuning measures a starting point; a frozen encoder and a linear probe measure the
#   representation; per-site scores show where it helps and where it breaks, which a mean over
#   mixed scanners hides.
# - When pretraining ties or loses, change one factor at a time. The later chapters keep this
#   protocol and change which pairs are positive, then measure the effect.
#
# ## Further reading
# - **Papers of this chapter.** T. Chen, S. Kornblith, M. Norouzi, G. Hinton, *A Simple Framework
#   for Contrastive Learning of Visual Representations*, ICML 2020, arXiv:2002.05709. K. He, H. Fan,
#   Y. Wu, S. Xie, R. Girshick, *Momentum Contrast for Unsupervised Visual Representation
#   Learning*, CVPR 2020, arXiv:1911.05722. P. Khosla et al., *Supervised Contrastive Learning*,
#   NeurIPS 2020, arXiv:2004.11362.
# - **Authors' code.** SimCLR: https://github.com/google-research/simclr · MoCo:
#   https://github.com/facebookresearch/moco. The package's own version of the shared loss, with
#   the values of the papers and of the public CL-TCI code:
#   [docs/methods.md, "Shared loss"](../docs/methods.md#shared-loss--one-masked-infonce).
# - **Related methods.**
#   A. van den Oord, Y. Li, O. Vinyals, *Representation Learning with Contrastive Predictive
#   Coding*, arXiv:1807.03748, 2018 (the InfoNCE loss).
#   X. Chen, H. Fan, R. Girshick, K. He, *Improved Baselines with Momentum Contrastive Learning*
#   (MoCo v2), arXiv:2003.04297, 2020.
#   K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, *Contrastive learning of global and local
#   features for medical image segmentation with limited annotations*, NeurIPS 2020,
#   arXiv:2006.10511 (the GCL baseline of chapter 02).
#   A. Kumar, A. Raghunathan, R. Jones, T. Ma, P. Liang, *Fine-Tuning can Distort Pretrained
#   Features and Underperform Out-of-Distribution*, ICLR 2022, arXiv:2202.10054 (LP-FT, section 8).
# - **BatchNorm across sites.** Y. Li, N. Wang, J. Shi, J. Liu, X. Hou, *Revisiting Batch
#   Normalization For Practical Domain Adaptation* (AdaBN), arXiv:1603.04779.
#
# [01 · CL-TCI: temporal pairs →](01_cl_tci.ipynb)
