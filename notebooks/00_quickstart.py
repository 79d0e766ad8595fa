# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
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
# 4. fine-tune with 1, 2, 4, 8 and all labelled images from several seeds, against random
#    initialisation, and read the Dice table honestly: in pairs, with intervals;
# 5. ask what the encoders learned (a frozen encoder, a linear probe), on which scanner it helps and
#    where it breaks, and why (a diagnosis that changes one factor at a time, down to the
#    BatchNorm statistics each scanner needs).

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
label_counts = []  # empty: the value of the size preset, e.g. [1, 2, 4, 8, "all"]
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
                counts=[1, 2, 4, 8, "all"], seeds=[0, 1, 2], protocols=["frozen encoder", "linear probe"]),
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

# %%
protocol = make_protocol(data.meta, labelled_sites=("A",), seed=seed)
display(protocol.summary())

# %% [markdown]
# ## 2 · Which pairs are positive?
# SimCLR's answer: two random augmentations ("views") of the same image. The augmentation decides
# what the encoder must ignore: crops, small rotations, exposure, gamma, noise and blur. (No
# horizontal flip: left and right lungs are different labels.)

# %%
augment = view_transform(image_size, "quickstart")
pairs = TwoViewDataset(data, augment, index=protocol.pretrain)
batch = [pairs[i] for i in range(6)]
fig = viz.show_pairs(torch.stack([b["view1"] for b in batch]), torch.stack([b["view2"] for b in batch]),
                     suptitle="positive pairs: two views of one image")
viz.save_figure(fig, run_dir / "figures" / "positive_pairs.png")

# %% [markdown]
# A pairing strategy turns batch metadata into a boolean mask: entry (i, j) says whether sample j is
# a positive for anchor i. For SimCLR it is the identity; CL-TCI (chapter 01) marks every image of
# the same patient. Same batch, two answers:

# %%
patients = torch.as_tensor(data.codes("patient_id")[protocol.pretrain[:12]])
fig = viz.show_mask(pairing.instance(12), title="instance (SimCLR, MoCo)")
fig2 = viz.show_mask(pairing.temporal(patients), title="temporal (CL-TCI): same patient")

# %% [markdown]
# ## 3 · One loss for every answer
# The loss is InfoNCE with a mask: for each anchor, the mean over its positives of
# $-\log \frac{\exp(s(z_i, z_p)/\tau)}{\sum_{a \ne i} \exp(s(z_i, z_a)/\tau)}$, with cosine similarity
# $s$ and temperature $\tau$. This is the package's code:

# %%
print(inspect.getsource(losses.info_nce))
print(inspect.getsource(losses.nt_xent))

# %% [markdown]
# A check you can do by hand: if all 2N embeddings are identical, every candidate is as likely as
# the positive, so the loss is $\log(2N-1)$.

# %%
z = torch.ones(8, 16)
print(f"nt_xent = {losses.nt_xent(z, z).item():.5f}   log(2N-1) = {math.log(15):.5f}")

# %% [markdown]
# MoCo answers the same question with a memory: keys come from a slowly moving copy of the encoder
# (momentum update) and a queue of keys from earlier batches provides many negatives. One step of
# each framework, as the training loop runs it:

# %%
from medcl_lite import train  # noqa: E402

print(inspect.getsource(train.simclr_loss))
print(inspect.getsource(train.moco_loss))

# %% [markdown]
# ## 4 · Pretraining: SimCLR and MoCo on the unlabelled pool
# Both train the encoder of a U-Net (ResNet-18) with the global projection head
# (pool → linear → ReLU → linear). Runs write a checkpoint after every epoch; running the cell
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
# Note the MoCo settings: the papers' queue of 3072 keys and momentum 0.999 suit hundreds of
# epochs over thousands of images; on a few hundred phantom images and a short run, a smaller queue
# (1024) and momentum 0.99 keep the keys from going stale. The presets in `notebooks/params/` use
# the papers' values.
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
# covers 0 (one seed gives no interval). Two methods are compared with one baseline here: reading
# off the better of the two inflates its difference.

# %%
comparison = paired_comparison(rows, groups=["n_labelled"], pair_on=["seed"])
display(comparison.round(3))
summary_text = verdict_text(comparison)
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
protocol_text = protocols.text(label=lambda r: f"{r.protocol}, {r.n_labelled} labelled")
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
site_text = verdict_text(site_comparison, ["site", "protocol"], label=lambda r: f"site {r.site}, {r.protocol}")
display(Markdown(site_text))

# %% [markdown]
# The same reading of the recorded reference run (`cpu` size, 3 seeds), from its `protocols.csv`:

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
# The diagnosis pretrains three more encoders and fine-tunes 96 short runs (30 minutes of the reference
# run's 43 on 2 cores); with `diagnose=False` (the default) the notebook shows
# the table recorded by the reference run instead (`notebooks/reference/00_quickstart/`).

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
    display(Markdown(diagnosis.reading(diagnosed)))

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
def bn_site_reading(rows: pd.DataFrame, ablation: str = "BN statistics per test site") -> str:
    """Each site's mean Dice with the training statistics and with per-site statistics, per
    initialisation, then the paired SimCLR minus random init difference under each."""
    means = diagnosis.site_means(rows, ["reference", ablation])
    lines = []
    for site in means.columns:
        moves = [f"{init} {means.loc[('reference', init), site]:.3f} → {means.loc[(ablation, init), site]:.3f}"
                 for init in dict.fromkeys(rows["init"])]  # fmt: skip
        lines.append(f"- {site}: " + ", ".join(moves))
    gaps = paired_comparison(by_site(rows[rows.ablation.isin(["reference", ablation])]),
                             groups=["site", "ablation", "n_labelled"], pair_on=["seed"])  # fmt: skip
    return "\n".join(lines) + "\n\n" + verdict_text(gaps, ["site", "ablation"],
                                                    label=lambda r: f"{r.ablation}, site {r.site}")  # fmt: skip


if diag_rows is not None and "BN statistics per test site" in set(diag_rows.ablation):
    display(diagnosis.site_means(diag_rows, ["reference", "BN statistics per test site"]).round(3))
    display(Markdown(bn_site_reading(diag_rows)))
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
