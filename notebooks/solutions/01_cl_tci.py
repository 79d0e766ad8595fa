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
# # Worked answers · 01 CL-TCI exercises
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/solutions/01_cl_tci.ipynb)
#
# **Paper.** D. Zeng, J. N. Kheir, P. Zeng, Y. Shi, *Contrastive Learning with Temporal Correlated
# Medical Images: A Case Study using Lung Segmentation in Chest X-Rays* (CL-TCI), ICCAD 2021,
# arXiv:2109.03233, on top of SimCLR (T. Chen et al., ICML 2020, arXiv:2002.05709) and MoCo
# (K. He et al., CVPR 2020, arXiv:1911.05722).
#
# The worked answers to the exercises of [01 · CL-TCI](../01_cl_tci.ipynb): every experiment is run
# here and every number in a reading is printed by the code above it. Try each exercise in the
# chapter first (predict, then run), then compare with the answer.
#
# Two sizes: **smoke** (the default on a CPU, about a minute: checks that every cell runs, the
# numbers mean little) and the **exercise** size (`smoke = False`, or the default on a GPU), the size
# the chapter's time estimates were measured at.

# %% [markdown]
# ## Setup
# On Colab this installs the package (Colab already has torch); elsewhere `pip install -e .`.

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
from scipy import stats

from medcl_lite import pairing, train, viz
from medcl_lite.config import from_params
from medcl_lite.data.datasets import cross_validation_folds
from medcl_lite.data.phantoms import make_chest_xrays
from medcl_lite.data.prepared import load_role
from medcl_lite.data.samplers import PatientBatchSampler, same_patient_rate
from medcl_lite.experiment import run_finetune_grid
from medcl_lite.losses import MoCoQueue
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.train import FinetuneConfig, PretrainConfig, embed, pretrain

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill overrides these (papermill notebooks/solutions/01_cl_tci.ipynb out.ipynb -p smoke False)
smoke = None  # None: smoke run on a CPU, the exercise size on a GPU; True or False forces it
seed = 0  # phantom, sampler, fold and pretraining seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/solutions-01-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
ks = [1, 2, 4]  # images_per_patient values of exercise 01.1
queue_sizes = [32, 128, 512, 3072]  # queue_size values of exercise 01.2 (3072: the paper)

# %% [markdown]
# Values derived from the parameters. The exercise size uses the chapter's `cpu` pool (60 phantom
# patients, 4 time points, 64² images; site A is the pretraining pool) but trains far less.

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, "cpu", run_device)  # smoke=None: smoke on a CPU
SIZES = {
    "smoke": dict(image=64, patients=12, times=4, batch=8, epochs=5, queue_steps=4, folds=2, counts=[1],
                  ft_steps=6, ft_batch=4, pre_patients=6, pre_epochs=1, pre_batch=8, seeds=[0, 1]),
    "cpu": dict(image=64, patients=60, times=4, batch=32, epochs=200, queue_steps=60, folds=3, counts=[1, 4],
                ft_steps=40, ft_batch=4, pre_patients=16, pre_epochs=10, pre_batch=16, seeds=[0, 1, 2]),
}
S = SIZES[size]
run_dir = medcl_lite.run_folder(out_dir, f"solutions-01-{size}")  # out_dir, else $MEDCL_RUNS/solutions-01-{size}
medcl_lite.seed_everything(seed)
print(f"size={size}  device={run_device}  run folder: {run_dir}")

# %% [markdown]
# The chapter's data: phantom chest X-rays, every patient at `times` time points; site A is the
# unlabelled pool (and, with its masks, the semi-supervised fine-tuning set).

# %%
phantom = make_chest_xrays(n_patients=S["patients"], n_times=S["times"], sites=("A", "B"), size=S["image"], seed=seed)
pool, pool_rows = load_role("phantom", phantom, "A")
codes = pool.codes("patient_id")[pool_rows]  # patient code of each pool position
N, T = len(pool_rows), S["times"]
P = len(np.unique(codes))
print(f"pool: {N} images, {P} patients, {N / P:.1f} images per patient")

# %% [markdown]
# ## Exercise 01.1 · How many same-patient positives does a batch hold?
# For every batching, over many epochs at the pretraining batch size: the share of anchors with a
# same-patient positive besides their own second view (`same_patient_rate`), the number
# $n_b(v) - 1$ of other images of the anchor's patient in its batch (read off the temporal mask:
# row sums minus the diagonal), the size of the SimCLR-form positive set $|P(v)| = 2\,n_b(v) - 1$,
# and how many patients a batch holds. The shuffled row is checked against its closed form: an
# anchor's $B - 1$ batch mates are drawn without replacement from the other $PT - 1$ images, $T - 1$
# of which are its patient's, so $n_b(v) - 1$ is hypergeometric with mean $(T-1)(B-1)/(PT-1)$ and
# $P(n_b(v) \ge 2) = 1 - \Pr[\text{none of the } T-1]$.

# %%
t_start = time.perf_counter()
B = S["batch"]
gen = torch.Generator().manual_seed(seed)


def shuffled_batches(generator: torch.Generator, batch: int) -> list[np.ndarray]:
    """One epoch of a plain shuffle cut into full batches (what the paper's loader does)."""
    order = torch.randperm(N, generator=generator).numpy()
    return [order[s : s + batch] for s in range(0, N - batch + 1, batch)]


def batch_reading(name: str, batches: list) -> dict:
    """The temporal mask of every batch, read: same-patient partners per anchor, patients per batch."""
    partners, patients = [], []
    for b in batches:
        batch_codes = torch.as_tensor(codes[np.asarray(b)])
        partners.append(pairing.temporal(batch_codes).sum(1).numpy() - 1)  # n_b(v) - 1
        patients.append(len(torch.unique(batch_codes)))
    partners = np.concatenate(partners)
    return {"batches": name, "anchors with a same-patient positive": same_patient_rate(batches, codes),
            "same-patient images per anchor, n_b - 1": partners.mean(), "fewest, n_b - 1": partners.min(),
            "|P(v)| = 2 n_b - 1": (2 * partners + 1).mean(), "patients per batch": np.mean(patients)}


readings = [batch_reading("shuffled", [b for _ in range(S["epochs"]) for b in shuffled_batches(gen, B)])]
for k in ks:
    sampled = [b for _ in range(S["epochs"]) for b in PatientBatchSampler(codes, B, k, gen)]
    readings.append(batch_reading(f"patient-aware, k={k}", sampled))
others = stats.hypergeom(P * T - 1, T - 1, B - 1)  # same-patient images among an anchor's B - 1 batch mates
readings.append({"batches": "closed form, shuffled", "anchors with a same-patient positive": 1 - others.pmf(0),
                 "same-patient images per anchor, n_b - 1": (T - 1) * (B - 1) / (P * T - 1)})
batch_table = pd.DataFrame(readings).set_index("batches")
display(batch_table.round(3))

# %% [markdown]
# The masks of one batch of 12 per k (dark: same patient). With k = 1 the groups are single images,
# so the batch is a plain shuffle again.

# %%
for k in ks:
    first_batch = np.asarray(next(iter(PatientBatchSampler(codes, 12, k, torch.Generator().manual_seed(seed)))))
    fig = viz.show_mask(pairing.temporal(torch.as_tensor(codes[first_batch])), title=f"temporal mask, k={k}",
                        tick_labels=list(pool.meta.patient_id.iloc[pool_rows[first_batch]]))
    viz.save_figure(fig, run_dir / "figures" / f"ex1_mask_k{k}.png")
shuffled, closed = batch_table.loc["shuffled"], batch_table.loc["closed form, shuffled"]
by_k = {k: batch_table.loc[f"patient-aware, k={k}"] for k in ks}
display(Markdown(
    f"Shuffled: {shuffled.iloc[0]:.3f} of the anchors have a same-patient positive (closed form "
    f"{closed.iloc[0]:.3f}), with {shuffled.iloc[1]:.3f} same-patient images per anchor on average (closed "
    f"form {closed.iloc[1]:.3f}). "
    + " ".join(f"k={k}: rate {r.iloc[0]:.3f}, at least {r.iloc[2]:.0f} partner(s) for every anchor, "
               f"{r.iloc[4]:.1f} patients per batch." for k, r in by_k.items())
))
print(f"Exercise 01.1 ran in {time.perf_counter() - t_start:.1f} s ({size})")

# %% [markdown]
# **Worked answer.** Three mechanisms explain the table.
# - *Shuffled.* Same-patient images meet only by chance, and the chance is the hypergeometric one
#   above: for a pool of many patients with few images each it is small, so most anchors of
#   CL-TCI-SimCLR have only their own second view. For them the temporal loss *is* SimCLR's. The
#   measured row matches the closed form up to sampling noise (the dropped incomplete batch does not
#   bias it: the shuffle is uniform).
# - *k = 1.* `PatientBatchSampler` cuts each patient into chunks of k images and shuffles the chunks;
#   chunks of one image are a plain shuffle, so the row reads like the shuffled one. The sampler
#   changes nothing unless k ≥ 2.
# - *k ≥ 2.* When the batch size is a multiple of k, every chunk lies inside one batch, so every
#   anchor has at least k − 1 same-patient images, hence a rate of 1 (a patient with fewer than k
#   images would have a shorter chunk). A patient's other chunks can land in the same batch by
#   chance, so the mean exceeds k − 1 a little. With k equal to the number of time points the whole
#   patient is in one batch and $|P(v)| = 2T - 1$ exactly.
# - *The price.* A batch of B holds about B / k patients: the more positives per anchor, the fewer
#   other patients among its negatives. The mask pictures show the same: blocks of size k on the
#   diagonal, and fewer distinct tick labels as k grows. Whether more positives or more distinct
#   negatives serve segmentation better is an empirical question (the chapter's
#   "CL-TCI-SimCLR + sampler minus CL-TCI-SimCLR" comparison), not one this table answers.

# %% [markdown]
# ## Exercise 01.2 · Same-patient keys in a MoCo queue
# A `MoCoQueue` of each size is fed the pool in shuffled batches, as `pretrain` feeds it (the keys
# themselves are random here: only the metadata matters for the mask). Once the queue is full, every
# batch's queries are compared with it: same-patient keys (`pairing.temporal` against
# `queue.meta["patient"]`, what CL-TCI-MoCo counts as positives) and older keys of the query's own
# image (`pairing.equal_codes` against `queue.meta["sample"]`, which `train.moco_objective` leaves
# out of plain MoCo's denominator).
#
# Rough closed forms, for a queue of K keys over a pool of N images of P patients with T images each
# and batches of B: the queue spans K / N epochs and its oldest key is K / B steps old; a query meets
# about K (T − 1) / N keys of its patient's *other* images; its own image's older keys lie in the
# part of the queue filled in earlier epochs (the last $K - sB$ keys when the query's batch is step
# $s$ of its epoch, with one copy of each image per N keys), so on average over the epoch about
# $\frac{1}{S}\sum_{s=0}^{S-1} \max(0, K - sB)/N$ of them (S steps per epoch).

# %%
t_start = time.perf_counter()
queue_rows = []
for K in queue_sizes:
    queue = MoCoQueue(K, dim=8)
    g = torch.Generator().manual_seed(seed)
    steps_needed, step = math.ceil(K / B) + S["queue_steps"], 0
    same, own, distinct = [], [], []
    while step < steps_needed:
        for b in shuffled_batches(g, B):
            q_codes, q_rows = torch.as_tensor(codes[b]), torch.as_tensor(pool_rows[b])
            if int(queue.filled) == K:  # measure on a full queue only
                same.append(pairing.temporal(q_codes, queue.meta["patient"]).sum(1).float().mean().item())
                own.append(pairing.equal_codes(q_rows, queue.meta["sample"]).sum(1).float().mean().item())
                distinct.append(len(torch.unique(queue.meta["sample"])))
            queue.enqueue(torch.randn(len(b), 8, generator=g), patient=q_codes, sample=q_rows,
                          depth=torch.full((len(b),), float("nan")))
            step += 1
            if step >= steps_needed:
                break
    per_epoch = N // B  # steps per epoch (the incomplete batch is dropped)
    queue_rows.append({
        "queue_size K": K, "epochs spanned, K/N": K / N, "oldest key, steps": K / B,
        "distinct images in the queue": np.mean(distinct),
        "same-patient keys per query": np.mean(same), "own-image older keys": np.mean(own),
        "other time points": np.mean(same) - np.mean(own),
        "closed form, other time points": K * (T - 1) / N,
        "closed form, own image": np.mean([max(0, K - s * B) / N for s in range(per_epoch)]),
    })
queue_table = pd.DataFrame(queue_rows).set_index("queue_size K")
display(queue_table.round(2))
lines = [f"- K={K}: {r['same-patient keys per query']:.1f} same-patient keys per query, of which "
         f"{r['own-image older keys']:.1f} are older keys of its own image; the queue spans "
         f"{r['epochs spanned, K/N']:.2f} epochs" for K, r in queue_table.iterrows()]
display(Markdown("\n".join(lines)))
print(f"Exercise 01.2 ran in {time.perf_counter() - t_start:.1f} s ({size})")

# %% [markdown]
# **Worked answer.** The queue is the last K keys, so what it holds is counting, not learning:
# - *Same patient.* Every key of the query's patient is a positive for CL-TCI-MoCo, and there are
#   about K/P of them once the queue is full (T/N of the keys per patient). A short queue over a
#   large pool may hold none, and CL-TCI-MoCo then reduces to MoCo for that query; a queue of the
#   paper's length over this small pool holds many (the last row).
# - *Own image.* As soon as K exceeds what one epoch enqueues before the query's batch, the queue
#   also holds older keys of the query's own image, made by older key encoders (the oldest one K/B
#   steps ago). The temporal mask counts them as positives, since they carry the same patient code;
#   plain MoCo's objective leaves them out of the denominator (`stale_own` in
#   `train.moco_objective`), so no image is pushed away from itself. Compare the closed forms with
#   the measured columns: the other-time-point count follows K(T − 1)/N closely, and the own-image
#   count follows the epoch average; below one epoch's worth of keys it is small.
# - *The pitfall.* Once the queue spans several epochs the "distinct images" column sits at the
#   pool size: a longer queue adds no new image, only copies of the same images made by older
#   encoders. That is why the chapter's sizes use a short queue and a lower momentum on the
#   phantom pool, and why the paper's K = 3072 belongs to a large pretraining set.

# %% [markdown]
# ## Exercise 01.3 · The paper's protocol vs the honest one
# Random-init U-Nets fine-tuned on site A with 1 and 4 labelled images, patient-wise k-fold. Each
# run reports three numbers on its test fold: `test_dice` (**honest**: per-image Dice at the step
# picked on validation), `test_dice_pooled` (pooled Dice at the same step) and
# `paper_test_dice_pooled` (**paper**: pooled Dice at the step with the best pooled Dice on the test
# fold itself). The gap splits into two parts,
#
# $$
# \underbrace{\text{paper} - \text{honest}}_{\text{total}}
# = \underbrace{\text{paper} - \text{pooled at the val step}}_{\text{selection on test}}
# + \underbrace{\text{pooled at the val step} - \text{honest}}_{\text{pooled vs per image}},
# $$
#
# each paired on the same run. First, the folds themselves: patient-wise folds never put a test
# patient's other time points in the label pool, folds cut by image do.

# %%
t_start = time.perf_counter()
patients_of = pool.meta.patient_id.to_numpy()
folds = cross_validation_folds(pool.meta, pool_rows, k=S["folds"], seed=seed)
by_image = cross_validation_folds(pool.meta.assign(patient_id=pool.meta.sample_id), pool_rows, k=S["folds"], seed=seed)
for name, split in (("by patient", folds), ("by image", by_image)):
    leaked = [np.isin(patients_of[f.test], patients_of[np.concatenate([f.label_pool, f.val])]).mean() for f in split]
    print(f"folds {name}: share of test images whose patient is also in the fold's training patients: "
          + ", ".join(f"{x:.2f}" for x in leaked))

ft_cfg = from_params(FinetuneConfig, {
    "max_steps": S["ft_steps"], "batch_size": S["ft_batch"], "lr": 1e-3, "loss": "ce+dice", "augment": "light",
    "device": device, "paper_selection": True, "eval_every": max(5, S["ft_steps"] // 6),
})
grid = run_finetune_grid(pool, folds, {"random init": None}, S["counts"], [seed], ft_cfg,
                         out_dir=run_dir / "ex3_finetune", progress=progress)
READINGS = {"honest": "test_dice", "pooled, val step": "test_dice_pooled", "paper": "paper_test_dice_pooled"}
long = pd.concat([grid.assign(init=name, dice=grid[column]) for name, column in READINGS.items()], ignore_index=True)
display(grid[["n_labelled", "fold", *READINGS.values(), "best_step", "paper_best_step"]].round(3))
total = paired_comparison(long, groups=["n_labelled"], value="dice", baseline="honest", pair_on=["fold", "seed"])
selection = paired_comparison(long[long.init != "honest"], groups=["n_labelled"], value="dice",
                              baseline="pooled, val step", pair_on=["fold", "seed"])
display(pd.concat([total.assign(baseline="honest"), selection.assign(baseline="pooled, val step")]).round(3))
label = lambda r: f"{r.n_labelled} labelled image(s)"  # noqa: E731
display(Markdown(verdict_text(total, ["n_labelled"], baseline="honest", label=label, caveat=False,
                              smoke=size == "smoke")))
display(Markdown(verdict_text(selection, ["n_labelled"], baseline="pooled, val step", label=label,
                              caveat=False, smoke=size == "smoke")))
gap = grid.paper_test_dice_pooled - grid.test_dice_pooled
print(f"selection part per run: min {gap.min():+.4f}, max {gap.max():+.4f} "
      f"(never below 0: {bool((gap >= -1e-9).all())}); runs where the two protocols pick another step: "
      f"{int((grid.best_step != grid.paper_best_step).sum())} of {len(grid)}")
print(f"t quantile of the interval with {S['folds']} folds: t_0.975,{S['folds'] - 1} = {stats.t.ppf(0.975, S['folds'] - 1):.2f}")
print(f"Exercise 01.3 ran in {time.perf_counter() - t_start:.1f} s ({size})")

# %% [markdown]
# **Worked answer.**
# - *Leakage.* The patient-wise folds print a share of 0 by construction: every split of this package
#   is made by patient. Folds cut by image put most test patients' other time points into training
#   (the printed shares), and for CL-TCI's data (the same anatomy at every time point) a segmenter
#   trained on them has seen the test patients' lungs at other time points: that is the leakage a
#   patient-wise split prevents. (The semi-supervised setting does let *pretraining* see the test
#   images, without labels: that is the setting's definition, not a leak of labels.)
# - *Selection on test.* The paper's number is the maximum of the pooled test Dice over the
#   evaluated steps, and the validation-picked step is one of them, so the selection part can never
#   be negative: the printed minimum checks it. It is zero exactly where validation and test pick the
#   same step (count the runs above), and as large as the test curve rises above its value at the
#   validation pick elsewhere. A short run with few checks, whose last step is usually best, leaves
#   it little room; longer schedules with many checks (the paper's 200 epochs) give it more. Either
#   way it is optimism bought by looking at the test fold, and no method earns it.
# - *Pooled vs per image.* This part has no sign fixed in advance: pooling sums overlaps over all
#   images before dividing, so large lungs dominate and one bad small-lung image costs little, while
#   the per-image mean weights every image equally. Read its sign off the table.
# - *How to report.* The two parts add up to the total, so "paper minus honest" is not one effect.
#   Report the honest number; if you quote the paper's for comparability, say which protocol each
#   number uses. With few folds the interval of each paired difference is wide (the printed
#   $t_{0.975,\,n-1}$ multiplies the standard error): read the verdicts, not the means.

# %% [markdown]
# ## Exercise 01.4 · Temporal vs instance pairs in a short pretraining
# SimCLR and CL-TCI-SimCLR with the patient-aware sampler (k = 2), pretrained briefly on a small
# part of the pool, from the same random start for each seed (`pretrain` seeds the network with
# `cfg.seed`, so the random-init encoder of a seed is exactly where its pretrainings start). The
# probe is the chapter's section 4: how often an image's nearest neighbour (cosine, pooled bottleneck
# features, itself excluded) is another image of the same patient. Chance is $(T - 1)/(N' - 1)$ for
# $N'$ images with $T$ per patient. Pairs: same seed.

# %%
t_start = time.perf_counter()
chosen = list(dict.fromkeys(patients_of[pool_rows]))[: S["pre_patients"]]
pre_rows = pool_rows[np.isin(patients_of[pool_rows], chosen)]
pre_labels = patients_of[pre_rows]
chance = (T - 1) / (len(pre_rows) - 1)


def nearest_same_patient(features: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose nearest neighbour (cosine, itself excluded) has the same label."""
    unit = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-8)
    similarity = unit @ unit.T - 2 * np.eye(len(unit))
    return float((labels[similarity.argmax(1)] == labels).mean())


PRETRAIN = {
    "SimCLR": dict(pairing="instance"),
    "CL-TCI-SimCLR + sampler": dict(pairing="temporal", sampler="patient", images_per_patient=2),
}
common = {"framework": "simclr", "augment": "cl_tci", "max_epochs": S["pre_epochs"], "batch_size": S["pre_batch"],
          "lr": 0.1, "warmup_epochs": 1 if S["pre_epochs"] > 1 else 0, "proj_dim": 64, "temperature": 0.1,
          "device": device, "progress": progress}
probe_rows = []
for s in S["seeds"]:
    medcl_lite.seed_everything(s)  # what pretrain does before it builds the network
    start = train.build_contrastive(from_params(PretrainConfig, common, seed=s)).to(run_device)
    probe_rows.append({"init": "random init", "seed": s, "nn_same_patient": nearest_same_patient(
        embed(start, pool, pre_rows), pre_labels)})
    for name, extra in PRETRAIN.items():
        cfg = from_params(PretrainConfig, common, **extra, seed=s, resume=True,
                          out_dir=str(run_dir / f"ex4_{name.split()[0].lower().replace('-', '_')}_s{s}"))
        result = pretrain(cfg, pool, index=pre_rows)
        probe_rows.append({"init": name, "seed": s, "steps": len(result.history),
                           "nn_same_patient": nearest_same_patient(embed(result.net, pool, pre_rows), pre_labels)})
probe = pd.DataFrame(probe_rows).assign(pool=f"{len(pre_rows)} images")
display(probe.pivot(index="seed", columns="init", values="nn_same_patient").round(3))
vs_random = paired_comparison(probe, groups=["pool"], value="nn_same_patient", pair_on=["seed"])
vs_simclr = paired_comparison(probe[probe.init != "random init"], groups=["pool"], value="nn_same_patient",
                              baseline="SimCLR", pair_on=["seed"])
display(pd.concat([vs_random.assign(baseline="random init"), vs_simclr.assign(baseline="SimCLR")]).round(3))
unit = "nearest-neighbour same-patient rate"
display(Markdown(verdict_text(vs_random, ["pool"], unit=unit, smoke=size == "smoke")
                 + "\n\n" + verdict_text(vs_simclr, ["pool"], baseline="SimCLR", unit=unit, smoke=size == "smoke")))
means = probe.groupby("init").nn_same_patient.mean()
print(f"chance {chance:.3f}; headroom above random init {1 - means['random init']:.3f}; "
      f"means over {len(S['seeds'])} seeds: "
      + ", ".join(f"{name} {value:.3f}" for name, value in means.items())
      + f"; {probe.steps.max():.0f} pretraining steps per run")
print(f"Exercise 01.4 ran in {time.perf_counter() - t_start:.1f} s ({size})")

# %% [markdown]
# **Worked answer.**
# - *What the loss asks for.* CL-TCI's positive set contains the other images of the anchor's
#   patient, so its loss is lowest when those images embed close together: the probe measures
#   exactly that, and it is the one thing the temporal mask asks for that the instance mask does not.
#   SimCLR asks the opposite for the same images: they are negatives, pushed apart.
# - *Why random init is not at chance.* The phantom keeps a patient's anatomy over time, so even a
#   random convolutional encoder maps a patient's images to similar features; the random-init row
#   is the baseline every pretraining must beat, not the chance line. It also leaves little room:
#   the probe cannot exceed 1, and the printed headroom above random init bounds any gain. A
#   difference squeezed under a ceiling says little about the encoders; a harder probe (e.g.
#   augmented views, or more patients) would separate them better.
# - *Reading it.* The comparison is paired on the seed, which fixes the starting weights, so the
#   difference is what the pretraining did. With a few seeds and a short schedule the interval is
#   wide; where it covers 0 the run has no evidence either way. SimCLR can still raise the rate over
#   random init: instance discrimination learns features that happen to separate patients, because
#   the anatomy that identifies a patient is also what makes an image distinct.
# - *What it does not say.* A higher same-patient rate shows that the premise was learned, not that
#   lungs are segmented better: the chapter's fine-tuning grid and its paired intervals answer that.

# %% [markdown]
# [← 01 · CL-TCI](../01_cl_tci.ipynb)
