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
# # 01 · CL-TCI: the same patient at another time is a positive
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/01_cl_tci.ipynb)
#
# **Paper.** D. Zeng, J. N. Kheir, P. Zeng, Y. Shi, *Contrastive Learning with Temporal Correlated
# Medical Images: A Case Study using Lung Segmentation in Chest X-Rays* (CL-TCI), ICCAD 2021,
# arXiv:2109.03233. Chest X-rays of one patient taken at different times are positive pairs, on top of
# SimCLR (T. Chen et al., ICML 2020, arXiv:2002.05709) and MoCo (K. He et al., CVPR 2020,
# arXiv:1911.05722), with U-Net and DeepLab-V3 segmenters, in a semi-supervised and a transfer
# setting. Method details and hyper-parameters:
# [docs/methods.md, CL-TCI](../docs/methods.md#cl-tci--temporal-pairs).
#
# > **Which pairs are positive?** Two views of one image (SimCLR, MoCo) **and every image of the same
# > patient** (CL-TCI): a patient's anatomy stays while inspiration, rotation, exposure, findings
# > and devices change, which is exactly what a lung segmenter should ignore.
#
# **Learning goals.** After this chapter you can
# - turn patient codes into CL-TCI's positive set with `pairing.temporal`, and read $P(i)$ off the
#   mask both in a SimCLR batch and against a MoCo queue that stores a patient code per key;
# - write the MoCo loss with a queue and the momentum update of the key encoder, and say what
#   goes wrong when the key encoder never moves or the queue is longer than the pool;
# - predict, then measure with `same_patient_rate`, how often a shuffled batch holds a
#   same-patient positive, and change that with `PatientBatchSampler`;
# - check with a nearest-neighbour probe whether an encoder groups images by patient, and keep
#   that question apart from whether it segments lungs better;
# - compare each pretraining with random init in the semi-supervised and the transfer setting:
#   patient-wise folds, paired differences with intervals, the paper's protocol beside an honest one.
#
# **Prerequisites.** [00 · Quickstart](00_quickstart.ipynb): positive pairs, the masked InfoNCE
# loss, SimCLR and MoCo, the Dice metrics and the paired comparison with random init. Concepts:
# encoder–decoder segmentation networks (U-Net), cosine similarity and softmax, k-fold
# cross-validation.
#
# What you will do, on built-in phantom chest X-rays (no download):
# 1. look at temporal pairs and at the temporal positive mask, in a batch and in MoCo's queue;
# 2. measure what a patient-aware batch sampler changes (k images per patient per batch);
# 3. pretrain SimCLR, CL-TCI-SimCLR (with and without the sampler), MoCo and CL-TCI-MoCo, on the
#    U-Net encoder and on the DeepLab-V3 encoder (only the encoder is transferred: shown below);
# 4. look at the embeddings, coloured by patient;
# 5. fine-tune in the **semi-supervised** setting (pretrain on all images of site A, fine-tune on a
#    few labelled site-A images) and the **transfer** setting (pretrain on site A, fine-tune on site
#    B), with patient-wise k-fold cross-validation, and report Dice under the paper's protocol and
#    an honest one, each pretraining paired with random init on the same fold and seed;
# 6. measure the encoders with less freedom than full fine-tuning (frozen encoder, discriminative
#    learning rates, a linear probe) at the smallest label budget.
#
# Real data: the same notebook runs on prepared chest X-ray folders (`medcl data download
# montgomery`, `medcl data check jsrt`, …) through the presets in `notebooks/params/cl_tci/`.

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
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from medcl_lite import pairing, reference, train, viz
from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.config import from_params, pick, reproduction_settings
from medcl_lite.data.datasets import TwoViewDataset, check_finetune_set, cross_validation_folds
from medcl_lite.data.phantoms import make_chest_xrays
from medcl_lite.data.prepared import load_role
from medcl_lite.data.samplers import PatientBatchSampler, same_patient_rate
from medcl_lite.data.transforms import view_transform
from medcl_lite.experiment import (
    EVALUATION_PROTOCOLS,
    load_predictions,
    protocol_report,
    protocol_table,
    run_evaluation_protocols,
    run_finetune_grid,
)
from medcl_lite.models import build_segmenter, load_encoder
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.train import FinetuneConfig, PretrainConfig, embed, pretrain

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill sets these and, by name, any setting of REPRODUCTION below
# (medcl reproduce 01_cl_tci -f notebooks/params/cl_tci/<preset>.yaml -p ft_lr 1e-4).
smoke = None  # None: smoke run on a CPU, teaching run on a GPU; True or False forces it
preset = "auto"  # size when not smoke: cpu (about 30 min on 2 cores), gpu, or auto
seed = 0  # data, split and pretraining seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/cl_tci-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
# Data: "phantom" (built in), or prepared folders (a path, or a name under $MEDCL_DATA/prepared).
pretrain_data = "phantom"  # unlabelled pretraining pool (phantom: every image of site A)
semi_data = "phantom"  # semi-supervised fine-tuning set (phantom: site A)
transfer_data = "phantom"  # transfer fine-tuning set (phantom: site B)
methods = []  # empty: the size's pretraining methods (names of METHODS below)
images_per_patient = 2  # k of the patient-aware sampler
label_counts = []  # empty: the size's budgets (paper: 10 labelled images, and all)
reproduction = {}  # other settings by name, e.g. {"ft_lr": 1e-4}: the REPRODUCTION cell below

# %% jupyter={"source_hidden": true} tags=["reproduction"]
# The settings of a paper reproduction, out of the reader's way: the presets in notebooks/params/cl_tci/
# set them (see its README). 0, -1 or empty: the size's value (SIZES below).
REPRODUCTION = dict(
    settings=[],  # empty: ["semi", "transfer"]
    archs=[],  # empty: the size's backbones, e.g. ["unet", "deeplabv3"]
    encoder="resnet18",  # smp encoder of every backbone (the public code's DeepLab-V3+: resnet50)
    deeplab_methods=[],  # empty: the size's methods for the DeepLab encoder
    image_size=0,  # 0: the size's image side (phantom only; prepared data keep their size)
    pretrain_epochs=0,  # 0: the size's value (paper: 500)
    pretrain_batch=0,  # 0: the size's value (paper: 32 SimCLR)
    moco_batch=0,  # 0: as pretrain_batch (paper: 16 for MoCo)
    lr=0.0,  # pretraining lr, 0: the size's value (paper: SGD 0.1)
    warmup_epochs=-1,  # -1: the size's value (paper: 10)
    queue_size=0,  # MoCo queue, 0: the size's value (paper: 3072)
    moco_momentum=0.0,  # 0: the size's value (paper: 0.999)
    temperature=0.1,  # paper: 0.1
    proj_dim=0,  # 0: the size's value (paper code: 512)
    augment="cl_tci",  # pretraining augmentation preset (paper's jitter, gamma, affine, crop)
    n_folds=0,  # 0: the size's value (paper: 5-fold cross-validation)
    ft_steps=0,  # fine-tuning steps, 0: the size's value
    ft_epochs=0,  # > 0: fine-tune for epochs over the labelled images instead (paper: 200)
    ft_eval_every=0,  # steps between validation checks, 0: a sixth of the run
    ft_batch=0,  # 0: the size's value (paper: 10)
    ft_lr=0.0,  # 0: the size's value (paper: Adam 1e-4, cosine to 1e-6)
    ft_loss="ce+dice",  # "ce" (paper) | "ce+dice"
    ft_augment="light",  # "none" | "light"
    eval_protocols=[],  # beside full fine-tuning (medcl_lite.experiment.EVALUATION_PROTOCOLS): "frozen encoder", "discriminative", "linear probe"; empty: the size's
)

# %% [markdown]
# Values derived from the parameters. Three sizes: **smoke** (a minute or two on a CPU: checks
# that everything runs; numbers mean little), **cpu** (about 30 minutes on a 2-core laptop) and
# **gpu** (a Colab GPU: 128² images, longer pretraining, all methods on both backbones, 5 folds).
# Each size also names the evaluation protocols run beside full fine-tuning (section 8).
# The paper presets in `notebooks/params/cl_tci/` set every value explicitly.

# %%
repro = reproduction_settings(REPRODUCTION, reproduction)  # repro.ft_lr, repro.encoder, ...
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, preset, run_device)  # smoke=None: smoke on a CPU
ALL_METHODS = ["SimCLR", "CL-TCI-SimCLR", "CL-TCI-SimCLR + sampler", "MoCo", "CL-TCI-MoCo"]
SIZES = {
    "smoke": dict(image=64, patients=12, times=4, epochs=1, batch=8, lr=0.1, warmup=0, queue=64,
                  m=0.99, proj=64, archs=["unet", "deeplabv3"],
                  methods=["SimCLR", "CL-TCI-SimCLR + sampler", "CL-TCI-MoCo"],
                  deeplab=["CL-TCI-MoCo"], counts=[2], folds=2, ft_steps=8, ft_batch=4, ft_lr=1e-3,
                  protocols=["linear probe"]),
    "cpu": dict(image=64, patients=60, times=4, epochs=30, batch=32, lr=0.1, warmup=2, queue=512,
                m=0.99, proj=128, archs=["unet", "deeplabv3"], methods=ALL_METHODS,
                deeplab=["CL-TCI-MoCo"], counts=[1, 4], folds=3, ft_steps=40, ft_batch=4,
                ft_lr=1e-3, protocols=["frozen encoder", "linear probe"]),
    "gpu": dict(image=128, patients=120, times=4, epochs=200, batch=32, lr=0.1, warmup=10, queue=1024,
                m=0.99, proj=512, archs=["unet", "deeplabv3"], methods=ALL_METHODS,
                deeplab=ALL_METHODS, counts=[2, 5, 10, 20, "all"], folds=5, ft_steps=400, ft_batch=8,
                ft_lr=1e-3, protocols=["frozen encoder", "discriminative", "linear probe"]),
}
if size not in SIZES:
    raise ValueError(f"preset={preset!r}: choose one of {sorted(SIZES)} or 'auto'")
S = SIZES[size]


settings = list(pick(repro.settings, ["semi", "transfer"]))
archs = list(pick(repro.archs, S["archs"]))
methods = list(pick(methods, S["methods"]))
deeplab_methods = list(pick(repro.deeplab_methods, S["deeplab"]))
label_counts = list(pick(label_counts, S["counts"]))
n_folds = pick(repro.n_folds, S["folds"])
unknown = sorted(set(methods + deeplab_methods) - set(ALL_METHODS))
if unknown or not set(settings) <= {"semi", "transfer"}:
    raise ValueError(f"unknown methods {unknown} or settings {settings}; methods: {ALL_METHODS}")
eval_protocols = list(repro.eval_protocols) or S["protocols"]
choices = [p for p in EVALUATION_PROTOCOLS if p != "full"]  # full fine-tuning is the grid itself
if unknown := [p for p in eval_protocols if p not in choices]:
    raise ValueError(f"eval_protocols: unknown protocol(s) {unknown}; choose from {choices}")
run_dir = medcl_lite.run_folder(out_dir, f"cl_tci-{size}")  # out_dir, else $MEDCL_RUNS/cl_tci-{size}
medcl_lite.seed_everything(seed)
print(f"size={size}  device={run_device}  archs={archs}  methods={methods}  deeplab={deeplab_methods}")
print(f"settings={settings}  labels={label_counts}  folds={n_folds}  protocols={eval_protocols}")
print(f"run folder: {run_dir}")

# %% [markdown]
# ## 1 · The data and the two settings
# Phantom chest X-rays: each patient keeps their anatomy over `times` time points while
# inspiration, rotation, exposure, noise, findings and devices change. Site **A** is a clean PA
# department, site **B** another detector (contrast, noise, resolution). The CL-TCI settings:
#
# | setting | pretraining (unlabelled) | fine-tuning and test |
# |---|---|---|
# | semi-supervised | every image of site A | a few labelled site-A images, k-fold by patient |
# | transfer | every image of site A | labelled site-B images, k-fold by patient |
#
# Pretraining sees the site-A test folds' images without labels: that is the semi-supervised
# setting (all images of a dataset unlabelled, a few labelled). With prepared real data each role
# is a folder of its own (e.g. a temporal NIH ChestX-ray14 subset, JSRT, Montgomery).


# %%
sources = {"pretrain": (pretrain_data, "A"), "semi": (semi_data, "A"), "transfer": (transfer_data, "B")}
needed = ["pretrain", *settings]
phantom = None
if any(sources[role][0] == "phantom" for role in needed):
    side = pick(repro.image_size, S["image"])
    phantom = make_chest_xrays(n_patients=S["patients"], n_times=S["times"], sites=("A", "B"), size=side, seed=seed)
roles = {role: load_role(value, phantom, site) for role, (value, site) in sources.items() if role in needed}
for role, (data, rows) in roles.items():
    part = data.meta.iloc[rows]
    print(f"{role:9s} {data.name}: {len(rows)} images, {part.patient_id.nunique()} patients, "
          f"{len(rows) / part.patient_id.nunique():.1f} images per patient, masks: {data.masks is not None}")
for setting in settings:  # too few patients or labels for the folds and budgets: stop before training
    check_finetune_set(*roles[setting], role=f"{setting}_data", n_folds=n_folds, label_counts=label_counts, seed=seed)

# %% [markdown]
# **Temporal pairs.** Two patients of the pretraining pool, every time point: same anatomy, another
# day. These are the pairs CL-TCI calls positive; SimCLR would push them apart as negatives.

# %%
pool, pool_rows = roles["pretrain"]
pool_patients = pool.meta.patient_id.to_numpy()[pool_rows]
first_two = list(dict.fromkeys(pool_patients))[:2]
for patient in first_two:
    rows = pool_rows[pool_patients == patient]
    fig = viz.show_images(pool.images[rows], titles=[f"t={t}" for t in pool.meta.time.iloc[rows]],
                          suptitle=f"patient {patient}: {len(rows)} time points")
    viz.save_figure(fig, run_dir / "figures" / f"temporal_pairs_{patient}.png")

# %% [markdown]
# After augmentation (the `augment` preset: the paper's brightness/contrast jitter, gamma, small
# translation and rotation, crop scale 0.95–1), top row: one view of each image; bottom row: a view
# of **another time point of the same patient**, the extra positive CL-TCI adds.

# %%
views = TwoViewDataset(pool, view_transform(pool.image_size[0], repro.augment), index=pool_rows)
anchors, partners = [], []
for patient in list(dict.fromkeys(pool_patients))[:6]:
    rows = np.flatnonzero(pool_patients == patient)
    anchors.append(views[int(rows[0])]["view1"])
    partners.append(views[int(rows[-1])]["view2"])
fig = viz.show_pairs(torch.stack(anchors), torch.stack(partners),
                     suptitle="temporal positives: same patient, other time, both augmented")
viz.save_figure(fig, run_dir / "figures" / "temporal_views.png")

# %% [markdown]
# ## 2 · The temporal positive mask, in a batch and in the queue
# `pairing.temporal` compares patient codes: entry (i, j) is positive when anchor i and candidate j
# are the same patient. In SimCLR the candidates are the batch; in MoCo they are the batch's keys
# **and the queue**, which stores each key's patient id so the mask reaches it too. What the
# function computes, for anchors with codes $c_i$ and candidates with codes $c'_j$:
#
# $$
# M_{ij} = [\,c_i = c'_j\,] \wedge [\,c_i \ge 0\,] \wedge [\,c'_j \ge 0\,]
# $$
#
# $c_i$ = `patient_ids_q[i]` (integer patient codes, here from `pool.codes("patient_id")`),
# $c'_j$ = `patient_ids_k[j]` (the same codes when no keys are passed), $M$ = the returned
# `[Nq, Nk]` boolean mask. A negative code means "unknown" (an empty queue slot) and matches
# nothing. In a batch $M_{ii}$ is True: an image always matches itself.
#
# **The SimCLR form.** A batch of $N$ images (`batch_size`) gives $2N$ views; write $n(v)$ for the
# image of view $v$. `losses.nt_xent` turns $M$ into a mask over views (`pos_mask | eye`, repeated
# for both views, each view's pair with itself left out):
#
# $$
# P(v) = \{\, u \ne v \;:\; M_{n(v)\,n(u)} \,\}, \qquad A(v) = \{\, u \;:\; u \ne v \,\}
# $$
#
# so $P(v)$ = the other view of the same image (SimCLR's positive) plus **both views of every
# other image of the same patient in the batch**, and $|P(v)| = 2\,n_b(v) - 1$, with $n_b(v)$ the
# number of images of $v$'s patient in the batch, $v$'s own image included. The loss over these
# sets is the masked InfoNCE of [00 · Quickstart](00_quickstart.ipynb) (section "One loss for
# every answer"), averaged over the $2N$ views, with $\tau$ = `temperature`. The public CL-TCI
# code also multiplies the loss by $\tau / 0.07$; the package leaves that constant factor out.

# %%
print(inspect.getsource(pairing.temporal))
codes = pool.codes("patient_id")
batch_rows = pool_rows[np.random.default_rng(seed).permutation(len(pool_rows))[:12]]
fig = viz.show_mask(pairing.temporal(torch.as_tensor(codes[batch_rows])),
                    title="temporal mask, a shuffled batch of 12", tick_labels=list(pool.meta.patient_id.iloc[batch_rows]))
viz.save_figure(fig, run_dir / "figures" / "mask_random_batch.png")
sampler = PatientBatchSampler(codes[pool_rows], batch_size=12, k=images_per_patient,
                              generator=torch.Generator().manual_seed(seed))
grouped = pool_rows[next(iter(sampler))]
fig = viz.show_mask(pairing.temporal(torch.as_tensor(codes[grouped])),
                    title=f"temporal mask, patient-aware batch (k={images_per_patient})",
                    tick_labels=list(pool.meta.patient_id.iloc[grouped]))
viz.save_figure(fig, run_dir / "figures" / "mask_patient_batch.png")

# %% [markdown]
# **The MoCo form.** A query $q_i$ of a batch of $B$ images is scored against this batch's keys
# $k_1, \dots, k_B$ and then the $K$ queue keys $\tilde k_1, \dots, \tilde k_K$ (`queue.keys`).
# `losses.MoCoQueue` stores a patient code $\tilde c_l$ beside each key (`queue.meta["patient"]`),
# so the same rule reaches the queue:
#
# $$
# P(i) = \{\, j \le B \;:\; j = i \ \text{or}\ M_{ij} \,\}
# \;\cup\; \{\, B + l \;:\; [\,c_i = \tilde c_l\,] \wedge [\,\tilde c_l \ge 0\,] \,\}
# $$
#
# (in `train.moco_objective`: `own | pairing.positives(...)` over the batch's keys, then
# `pairing.positives(...)` against `queue.meta`). Its own key is always a positive; every queue key
# of the same patient is one too, whichever image and time point it came from. A queue of
# `queue_size` keys over a small pool holds several keys of each patient. A queue of 48 keys from
# this pool, as the mask sees it:
#
# > **Pitfall.** A queue longer than the pool. The queue keeps the keys of the last
# > `queue_size` / batch steps; once that spans more than an epoch it holds older keys of the
# > query's **own image**, made by an older key encoder. The temporal mask counts them as positives
# > (same patient); with instance pairing `train.moco_objective` leaves them out of the
# > denominator, so that no image is pushed away from itself. Compare `queue_size` with the pool
# > size of section 1.

# %%
queue_rows = pool_rows[np.random.default_rng(seed + 1).permutation(len(pool_rows))[:48]]
fig = viz.show_mask(pairing.temporal(torch.as_tensor(codes[grouped[:8]]), torch.as_tensor(codes[queue_rows])),
                    title="8 queries vs 48 queue keys: same patient", row_label="query", col_label="queue key")
viz.save_figure(fig, run_dir / "figures" / "mask_queue.png")

# %% [markdown]
# **What the sampler changes.** With a plain shuffle, same-patient images meet in a batch only by
# chance; the patient-aware sampler puts k images of a patient side by side. In the SimCLR form the
# sampler changes nothing but $n_b(v)$, and through it $|P(v)| = 2\,n_b(v) - 1$:
# - **shuffled**: with $P$ patients of $T$ images each and batch size $B$ (`batch_size`), an image
#   shares its batch with $\mathbb{E}[n_b(v) - 1] = (T-1)(B-1)/(PT-1)$ other images of its patient
#   on average (hypergeometric). For a pool of many patients this is small, and an anchor with
#   $n_b(v) = 1$ has only its other view: for it CL-TCI-SimCLR is plain SimCLR.
# - **`PatientBatchSampler`**, $k$ = `images_per_patient`: each patient's images are shuffled and cut
#   into chunks of $k$, the chunks are shuffled, laid end to end and cut into batches. An image
#   whose chunk is whole and inside one batch has $n_b(v) \ge k$, so at least $2(k-1)$
#   same-patient views in $P(v)$ besides its other view; a patient with a single image still has
#   none. The price: a batch holds at most about $B/k$ patients, so fewer other-patient negatives.
#
# The cell measures, over one epoch at the pretraining batch size, the fraction of anchors that
# have a same-patient positive besides their own second view (`same_patient_rate`):
#
# $$
# r = \frac{1}{\sum_b |b|} \sum_b \sum_{i \in b} [\, n_b(i) \ge 2 \,]
# $$
#
# Before running it, put section 1's patients and images per patient, and the batch size of your
# size, into the expectation above and predict the shuffled row.

# %%
batch_size = pick(repro.pretrain_batch, S["batch"])
gen = torch.Generator().manual_seed(seed)
plain = torch.randperm(len(pool_rows), generator=gen).numpy()
plain_batches = [plain[s : s + batch_size] for s in range(0, len(plain) - batch_size + 1, batch_size)]
grouped_batches = list(PatientBatchSampler(codes[pool_rows], batch_size, images_per_patient, gen))
rates = pd.DataFrame({
    "batches": ["shuffled (paper's code)", f"patient-aware, k={images_per_patient}"],
    "anchors with a same-patient positive": [same_patient_rate(plain_batches, codes[pool_rows]),
                                             same_patient_rate(grouped_batches, codes[pool_rows])],
}).set_index("batches")
display(rates.round(3))

# %% [markdown]
# ## 3 · Pretraining on the unlabelled pool
# Five methods, the same code: a pairing (`instance` or `temporal`), a framework (`simclr` or
# `moco`) and a sampler. Each trains an encoder plus the global projection head (GAP → Linear →
# ReLU → Linear) and saves a checkpoint every epoch; running the cell again resumes or reuses.
# The sizes use a shorter queue and a lower `moco_momentum` than the paper ($K$ = 3072,
# $m$ = 0.999, which the paper presets in `notebooks/params/cl_tci/` keep): on a small pool and a
# short schedule, a long queue holds old keys (the pitfall of section 2) and a key encoder with
# $m$ close to 1 trails the online one by many steps.
#
# > **Pitfall.** Comparing loss curves across pairings. With $|P(i)|$ positives the mean
# > $-\log$ softmax over them cannot fall below $\log |P(i)|$, not 0: a temporal method's curve
# > can sit higher because its floor is higher, not because it learns less. Compare methods by what
# > their encoders do (sections 4 to 8), not by the level of their loss.

# %%
METHODS = {
    "SimCLR": dict(framework="simclr", pairing="instance"),
    "CL-TCI-SimCLR": dict(framework="simclr", pairing="temporal"),
    "CL-TCI-SimCLR + sampler": dict(framework="simclr", pairing="temporal", sampler="patient"),
    "MoCo": dict(framework="moco", pairing="instance"),
    "CL-TCI-MoCo": dict(framework="moco", pairing="temporal"),
}
common = {
    "max_epochs": pick(repro.pretrain_epochs, S["epochs"]), "batch_size": batch_size, "seed": seed,
    "device": device, "progress": progress, "resume": True, "augment": repro.augment,
    "lr": pick(repro.lr, S["lr"]), "warmup_epochs": repro.warmup_epochs if repro.warmup_epochs >= 0 else S["warmup"],
    "queue_size": pick(repro.queue_size, S["queue"]), "moco_momentum": pick(repro.moco_momentum, S["m"]),
    "temperature": repro.temperature, "proj_dim": pick(repro.proj_dim, S["proj"]),
    "images_per_patient": images_per_patient, "encoder": repro.encoder,
}
plan = [(arch, name) for arch in archs for name in (methods if arch == "unet" else deeplab_methods)]
pretrained = {}
for arch, name in plan:
    slug = name.lower().replace(" + ", "_").replace("-", "_")
    batch = pick(repro.moco_batch, batch_size) if METHODS[name]["framework"] == "moco" else batch_size
    cfg = from_params(PretrainConfig, common, **METHODS[name], arch=arch, batch_size=batch,
                      out_dir=str(run_dir / f"pretrain_{arch}_{slug}"))
    pretrained[arch, name] = pretrain(cfg, pool, index=pool_rows)
    print(f"{arch:10s} {name:24s} {len(pretrained[arch, name].history)} steps "
          f"in {pretrained[arch, name].seconds:.0f} s, final loss "
          f"{pretrained[arch, name].history.loss.iloc[-3:].mean():.3f}")
fig = viz.plot_curves({f"{a} {n}": r.history for (a, n), r in pretrained.items()}, x="step", y="loss",
                      title="pretraining loss (temporal losses have more positives: not comparable in level)")
viz.save_figure(fig, run_dir / "figures" / "pretrain_loss.png")

# %% [markdown]
# One MoCo step as the loop runs it: the mask has one row per query and one column per key (the
# batch's keys, then the queue); `pairing.positives` turns "same patient" into extra True cells.
# With $P(i)$ of section 2 the step computes
#
# $$
# \mathcal{L} = -\frac{1}{B} \sum_{i=1}^{B} \frac{1}{|P(i)|} \sum_{p \in P(i)}
# \log \frac{\exp\big(s(q_i, \kappa_p)/\tau\big)}{\sum_{j=1}^{B+K} \exp\big(s(q_i, \kappa_j)/\tau\big)},
# \qquad \kappa = (k_1, \dots, k_B, \tilde k_1, \dots, \tilde k_K)
# $$
#
# $q_i$ = row $i$ of `q = net(v1)` (online encoder and head; gradients flow through $q$ only),
# $k_j$ = row $j$ of `k = key_net(v2)` (no gradient), $\kappa$ = `torch.cat([keys, queue.keys])`,
# $K$ = `queue_size`, $\tau$ = `temperature`, $s$ = cosine similarity (`losses.info_nce`
# normalises both sides). Two details differ from MoCo's paper: the batch's other keys sit in the
# denominator too (negatives, or positives when of the same patient), as they would one step later
# from the queue; and queue slots not yet filled hold random unit keys with code $-1$, negatives
# that are never positives. After the loss, `queue.enqueue` overwrites the oldest $B$ entries with
# this batch's keys and their patient codes.
#
# Before the keys are computed, `models.momentum_update` moves the key encoder towards the online
# one (MoCo eq. 2):
#
# $$
# \theta_k \leftarrow m\,\theta_k + (1 - m)\,\theta_q
# $$
#
# $\theta_q$ = the parameters of `net` (encoder and projection head), $\theta_k$ = those of
# `key_net` (a copy of `net` made once by `models.momentum_copy`, never trained by gradients),
# $m$ = `moco_momentum`. Buffers are not averaged: the key encoder keeps its own BatchNorm
# statistics.
#
# > **Pitfall.** A key encoder that never moves. The public CL-TCI code never calls its momentum
# > update, so its keys come from the key encoder's initial weights all along; nothing raises an
# > error. The package calls the update every step, and `tests/test_models.py` checks that the key
# > encoder's weights change.

# %%
print(inspect.getsource(train.moco_loss))

# %% [markdown]
# ## 4 · What did the encoders learn? Embeddings coloured by patient
# Pooled bottleneck features of eight patients of the pool, projected with t-SNE, for a random
# encoder and two pretrained ones; and, for every encoder, how often an image's nearest neighbour
# (cosine similarity, itself excluded) is another image of the same patient. CL-TCI asks for
# exactly this clustering. With $f_i$ the pooled bottleneck feature of image $i$ (`embed`) and
# $c_i$ its patient, the probe's number is
#
# $$
# \frac{1}{N} \sum_{i=1}^{N} \big[\, c_{\nu(i)} = c_i \,\big], \qquad \nu(i) = \arg\max_{j \ne i} s(f_i, f_j)
# $$
#
# over the $N$ images of the pool. It is 0 when no pool patient has a second image.

# %%
eight = list(dict.fromkeys(pool_patients))[:8]
random_net = train.build_contrastive(from_params(PretrainConfig, common, resume=False)).to(run_device)
encoders_to_probe = {"random init": random_net, **{f"{a} {n}": r.net for (a, n), r in pretrained.items()}}
probe = []
for name, net in encoders_to_probe.items():
    feats = embed(net, pool, pool_rows)
    unit = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)
    similarity = unit @ unit.T - 2 * np.eye(len(unit))
    probe.append({"encoder": name, "nearest neighbour is same patient":
                  float((pool_patients[similarity.argmax(1)] == pool_patients).mean())})
    if name in ("random init", "unet SimCLR", "unet CL-TCI-MoCo"):
        shown = np.isin(pool_patients, eight)  # the eight patients, among the features just computed
        fig = viz.plot_embeddings(feats[shown], pool_patients[shown],
                                  method="tsne", title=f"{name}: 8 patients", seed=seed)
        viz.save_figure(fig, run_dir / "figures" / f"tsne_{name.replace(' ', '_').lower()}.png")
probe = pd.DataFrame(probe).set_index("encoder").round(3)
display(probe)

# %% [markdown]
# ## 5 · Only the encoder is transferred
# Fine-tuning builds a fresh segmenter and loads the pretrained weights into `model.encoder`; the
# decoder (U-Net's up-sampling path, DeepLab-V3's ASPP head) and the segmentation head start at
# random, and the projection head is dropped. For each backbone:

# %%
n_classes = len(roles[settings[0]][0].classes)
parts = []
for (arch, name), result in pretrained.items():
    if (arch, name) != next(k for k in pretrained if k[0] == arch):
        continue
    model = build_segmenter(arch, repro.encoder, 1, classes=n_classes)
    load_encoder(model, result.encoder_state)
    for part in ("encoder", "decoder", "segmentation_head"):
        module = getattr(model, part)
        parts.append({"backbone": arch, "part": part,
                      "parameters": sum(p.numel() for p in module.parameters()),
                      "starts from": f"pretrained ({name})" if part == "encoder" else "random"})
display(pd.DataFrame(parts).set_index(["backbone", "part"]))

# %% [markdown]
# ## 6 · Fine-tuning: semi-supervised and transfer, k-fold by patient
# For each setting, the patients of the fine-tuning set are dealt into `n_folds` folds; each fold
# is the test set once. Within the other folds a few patients form a **validation** split and the
# rest the label pool, from which `n` labelled images are chosen (nested budgets). Every run reports
# two numbers; pooled and per-image Dice are defined in [00 · Quickstart](00_quickstart.ipynb)
# (section "Metrics used in every chapter"), and the two differ here also in how the step is chosen:
# - **paper** (`paper_test_dice_pooled`): pooled Dice at the step with the best pooled Dice *on
#   the held-out fold itself*, as the public code of CL-TCI and PCL does. Choosing on the test data
#   is optimistic; it is here for comparability.
# - **honest** (`test_dice`): per-image Dice at the step chosen on the validation split; the test
#   fold is scored once.

# %%
ft_base = from_params(FinetuneConfig, {
    "max_steps": pick(repro.ft_steps, S["ft_steps"]), "max_epochs": repro.ft_epochs, "encoder": repro.encoder,
    "batch_size": pick(repro.ft_batch, S["ft_batch"]), "lr": pick(repro.ft_lr, S["ft_lr"]), "loss": repro.ft_loss,
    "augment": repro.ft_augment, "device": device, "paper_selection": True,
    "eval_every": pick(repro.ft_eval_every, max(5, pick(repro.ft_steps, S["ft_steps"]) // 6)),
})
all_rows, folds_of = [], {}
for setting in settings:
    data, rows = roles[setting]
    if data.masks is None:
        raise ValueError(f"{setting}: {data.name} has no masks; choose a labelled prepared folder")
    folds_of[setting] = cross_validation_folds(data.meta, rows, k=n_folds, seed=seed)
    for arch in archs:
        encoders = {"random init": None, **{n: r.encoder_state for (a, n), r in pretrained.items() if a == arch}}
        cfg = replace(ft_base, arch=arch)
        grid = run_finetune_grid(data, folds_of[setting], encoders, label_counts, [seed], cfg,
                                 out_dir=run_dir / f"finetune_{setting}_{arch}", progress=progress)
        all_rows.append(grid.assign(setting=setting, arch=arch))
rows = pd.concat(all_rows, ignore_index=True)
atomic_write_text(run_dir / "results.csv", rows.to_csv(index=False))
print(f"{len(rows)} fine-tuning runs")

# %% [markdown]
# **The table.** Mean ± std over the folds, for each backbone, setting and label budget; "paper"
# and "honest" as defined above. The paper's own numbers are not published in machine-readable
# form, so no column of them is shown (none is invented).


# %%
PROTOCOLS = {"paper_test_dice_pooled": "paper: pooled, test-fold pick", "test_dice": "honest: per image, val pick"}
table = protocol_table(rows, ["arch", "init"], ["setting"], PROTOCOLS)
display(table)

# %%
for setting in settings:
    part = rows[(rows.setting == setting) & (rows.arch == archs[0])]
    if part.n_labelled.nunique() > 1:
        fig = viz.plot_dice_vs_labels(part, x="n_labelled", y="test_dice", hue="init",
                                      title=f"{archs[0]}, {setting}: honest Dice vs labelled images")
        viz.save_figure(fig, run_dir / "figures" / f"dice_vs_labels_{setting}.png")

# %% [markdown]
# ## 7 · Reading the result
# A pretrained run and the random-init run of the same fold and seed see the same labelled images,
# validation and test patients, and start the same decoder, so compare them in **pairs**: for pair
# $i$ (a fold × seed), $d_i = \text{Dice}(\text{pretrained}, i) - \text{Dice}(\text{random init}, i)$,
# honest Dice. Over the $n$ pairs of a backbone, setting and budget the table gives the mean
# difference $\bar d$ (`mean_diff`) and its 95 % interval
# $\bar d \pm t_{0.975,\,n-1}\, s_d / \sqrt{n}$ (`ci_low`, `ci_high`; `medcl_lite.paired`). The verdict
# is computed from it: "better" or "worse" only when the interval excludes 0, "no evidence" when it
# covers 0. With 2 folds ($t_{0.975,1} = 12.7$) or 3 ($4.3$) the interval is wide: few folds buy
# little certainty. Several methods face one baseline here: each row is one comparison, and reading
# off the best of them overstates its difference (the winner's curse).


# %%
def budget_name(n) -> str:
    """'1 labelled image', '4 labelled images', 'all labels'."""
    return "all labels" if str(n) == "all" else f"{n} labelled image{'' if str(n) == '1' else 's'}"


GROUPS = ["arch", "setting", "n_labelled"]
comparison = paired_comparison(rows, groups=GROUPS, value="test_dice", pair_on=["fold", "seed"])
display(comparison.round(3))
fig = viz.plot_paired(comparison, ["arch", "setting", "n_labelled", "init"], title="pretrained minus random init, paired on fold and seed")
viz.save_figure(fig, run_dir / "figures" / "paired.png")
summary_text = verdict_text(comparison, GROUPS, label=lambda r: f"{r.arch}, {r.setting}, {budget_name(r.n_labelled)}",
                            smoke=size == "smoke")
display(Markdown(summary_text))

# %% [markdown]
# **The chapter's own questions**, paired the same way but against another pretraining instead of
# random init: does the temporal positive help SimCLR (CL-TCI-SimCLR, with and without the
# sampler, minus SimCLR) and MoCo (CL-TCI-MoCo minus MoCo)? And what does the patient-aware sampler
# add (CL-TCI-SimCLR + sampler minus CL-TCI-SimCLR)? Only the questions whose methods this run
# pretrained are asked.

# %%
QUESTIONS = {  # baseline -> the methods compared with it, each pair on the same fold and seed
    "SimCLR": ["CL-TCI-SimCLR", "CL-TCI-SimCLR + sampler"],
    "MoCo": ["CL-TCI-MoCo"],
    "CL-TCI-SimCLR": ["CL-TCI-SimCLR + sampler"],  # the sampler effect
}
method_parts, method_text = [], []
for base, others in QUESTIONS.items():
    asked = rows[rows.init.isin([base, *others])]
    if base not in set(asked.init) or set(asked.init) == {base}:
        continue
    answer = paired_comparison(asked, groups=GROUPS, value="test_dice", baseline=base, pair_on=["fold", "seed"])
    method_parts.append(answer.assign(baseline=base))
    method_text.append(verdict_text(answer, GROUPS, baseline=base,
                                    label=lambda r: f"{r.arch}, {r.setting}, {budget_name(r.n_labelled)}",
                                    smoke=size == "smoke"))
method_comparison = pd.concat(method_parts, ignore_index=True) if method_parts else pd.DataFrame()
if method_parts:
    display(method_comparison.round(3))
    display(Markdown("\n\n".join(method_text)))
else:
    print("no method-vs-method question: this run lacks SimCLR, MoCo or their CL-TCI variants")
all_comparisons = pd.concat([comparison.assign(baseline="random init"), method_comparison], ignore_index=True)
atomic_write_text(run_dir / "comparison.csv", all_comparisons.to_csv(index=False))

# %% [markdown]
# Two more readings computed from this run: how much higher the paper's protocol (pooled Dice, step
# picked on the test fold) reads than the honest one, per run, and what the sampler changed in the
# batches (section 2) and in the embeddings (section 4).

# %%
gap = (rows.paper_test_dice_pooled - rows.test_dice).groupby([rows.arch, rows.setting, rows.n_labelled]).mean()
reading = [f"- paper minus honest protocol, mean over folds per cell: {gap.min():+.3f} to {gap.max():+.3f} "
           f"({(gap > 0).sum()} of {len(gap)} cells higher)"]
sampled = [f"{a} CL-TCI-SimCLR + sampler" for a in archs if f"{a} CL-TCI-SimCLR + sampler" in probe.index]
reading.append(f"- anchors with a same-patient positive in a batch: shuffled {rates.iloc[0, 0]:.3f}, "
               f"patient-aware {rates.iloc[1, 0]:.3f}")
for name in sampled:
    near = probe.iloc[:, 0]
    unsampled = name.replace(" + sampler", "")
    without = f", without it {near[unsampled]:.3f}" if unsampled in near.index else ""
    reading.append(f"- nearest neighbour is the same patient: {name} {near[name]:.3f}{without}, "
                   f"random init {near['random init']:.3f}")
reading_text = "\n".join(reading)
display(Markdown(reading_text))

# %% [markdown]
# **The reference run** of the `cpu` size, read from `notebooks/reference/01_cl_tci/` (recorded by
# `medcl reproduce ... --record`, never retyped): honest Dice (per image, step chosen on
# validation), mean ± std over the folds, then its paired comparisons. Your run prints its own
# tables above; runs are deterministic by seed on one machine.

# %%
print(reference.caption("01_cl_tci"))
recorded = reference.load_table("01_cl_tci", "results.csv")
if recorded is not None:
    display(protocol_table(recorded, ["arch", "init"], ["setting"], {"test_dice": "honest"}))
    recorded_comparison = reference.load_table("01_cl_tci", "comparison.csv")
    if recorded_comparison is not None:
        display(recorded_comparison.round(3))

# %% [markdown]
# Its means alone decide nothing: whether a difference between two rows is evidence is what the
# paired intervals decide, and they are computed for your run above, not for this table. Questions
# to put to your run's tables: in the clean site A (semi-supervised), is any pretraining better than
# random init at one label, or worse? On site B (transfer)? Does the temporal positive beat plain
# SimCLR or MoCo anywhere, and does the sampler, which gives more anchors a same-patient positive,
# also give a better Dice or an encoder that finds the same patient more often?
#
# How to read it. The premise of CL-TCI holds on the phantom by construction (a patient's anatomy
# is fixed over time), and the embedding probe of section 4 shows whether the encoders picked it up.
# Whether that turns into better lung Dice is a separate question: global contrast trains only the
# encoder, the decoder starts from scratch, and the quickstart's diagnosis
# ([00 · Quickstart](00_quickstart.ipynb), section "Why? A diagnosis, one factor at a time")
# measures which parts of the recipe move the difference (fine-tuning rate and length, frozen vs
# full, BatchNorm statistics, pretraining length, crops, the room the label budget leaves).
#
# The paper reports the MoCo-based CL-TCI as better than the SimCLR-based one in most settings;
# MoCo's queue can give every query several same-patient keys, which a shuffled SimCLR batch does
# only by chance (section 2 measures how often). This run does not pair CL-TCI-MoCo with
# CL-TCI-SimCLR directly: its questions compare each with random init or with its own baseline
# (CL-TCI-MoCo minus MoCo). Reading the two rows against random init side by side is a hint, not a
# paired test of one method against the other. The `gpu` size and the paper presets run the longer
# schedules.

# %% [markdown]
# ## 8 · Evaluation protocols: what did the encoder learn?
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
# They run at the smallest label budget only, on the first backbone, with the same encoders, folds,
# seed and fine-tuning settings as the grid, so every run pairs with the grid's runs; the grid's
# runs of that budget are the **full** protocol. Each protocol compares its pretrained runs with its
# own random-init runs, paired on fold and seed as in section 7. The metric is per-image Dice
# (`test_dice`) for every protocol (the probe scores no other). How to read it: if pretraining wins
# under the frozen encoder or the probe but not under full fine-tuning, the representation holds
# something that full fine-tuning at this size does not need, or overwrites.

# %%
first_arch, budget = archs[0], label_counts[:1]
encoders = {"random init": None, **{n: r.encoder_state for (a, n), r in pretrained.items() if a == first_arch}}
full_parts, extra_parts = [], []
for setting in settings:
    data = roles[setting][0]
    extra = run_evaluation_protocols(data, folds_of[setting], encoders, budget, [seed],
                                     replace(ft_base, arch=first_arch), eval_protocols,
                                     out_dir=run_dir / f"protocols_{setting}", progress=progress)
    full_parts.append(rows[(rows.setting == setting) & (rows.arch == first_arch) & (rows.n_labelled == str(budget[0]))])
    extra_parts.append(extra.assign(setting=setting, arch=first_arch))
protocols = protocol_report(pd.concat(full_parts), pd.concat(extra_parts), ["setting"])
atomic_write_text(run_dir / "protocols.csv", protocols.rows.to_csv(index=False))
display(Markdown(f"Per-image Dice, mean ± std over folds, {first_arch}, {budget_name(budget[0])}:"))
display(protocols.means)
display(protocols.comparison.round(3))
protocol_text = protocols.text(label=lambda r: f"{r.setting}, {r.protocol}, {budget_name(r.n_labelled)}",
                               smoke=size == "smoke")
display(Markdown(protocol_text))

# %% [markdown]
# ## 9 · Overlays
# Test images of fold 0 at the smallest label budget, first backbone: contours are the ground
# truth, colours the prediction, for random init and the best pretraining of that cell.

# %%
n_small = str(label_counts[0])
for setting in settings:
    data = roles[setting][0]
    fold = folds_of[setting][0]
    show = fold.test[:: max(1, len(fold.test) // 4)][:4]
    part = rows[(rows.setting == setting) & (rows.arch == archs[0]) & (rows.n_labelled == n_small)]
    best = part[part.init != "random init"].groupby("init").test_dice.mean().idxmax()
    for init in ("random init", best):
        pred = load_predictions(run_dir / f"finetune_{setting}_{archs[0]}", init, n_small, seed, fold=0)
        fig = viz.show_overlays(data.images[show], data.masks[show], pred[np.searchsorted(fold.test, show)],
                                class_names=data.classes)
        fig.suptitle(f"{setting}: {init}, {n_small} labelled", y=1.03)
        viz.save_figure(fig, run_dir / "figures" / f"overlay_{setting}_{init.split()[0].lower()}.png")

# %%
md = [
    f"# CL-TCI results ({size}, {env['device']}, torch {env['torch']})",
    "",
    f"Data: pretrain={pretrain_data}, semi={semi_data}, transfer={transfer_data}; {n_folds}-fold "
    "cross-validation by patient; mean ± std over folds.",
    "",
    "- paper: pooled Dice at the step with the best pooled Dice on the held-out fold (the public "
    "code's protocol; optimistic).",
    "- honest: per-image Dice at the step chosen on a separate validation split.",
    "",
    table.to_markdown(),
    "",
    "Same-patient positives per batch:",
    "",
    rates.round(3).to_markdown(),
    "",
    "Nearest neighbour is the same patient:",
    "",
    probe.to_markdown(),
    "",
    f"Paired comparisons (honest Dice, pairs: same fold and seed; {n_folds} folds x seed {seed}):",
    "",
    comparison.round(3).to_markdown(index=False),
    "",
    summary_text,
    "",
    *([method_comparison.round(3).to_markdown(index=False), "", "\n\n".join(method_text), ""] if method_parts else []),
    reading_text,
    "",
    f"Evaluation protocols ({first_arch}, {budget_name(budget[0])}; per-image Dice, mean ± std over folds):",
    "",
    protocols.means.to_markdown(),
    "",
    protocols.comparison.round(3).to_markdown(index=False),
    "",
    protocol_text,
    "",
    "The paper's own numbers are not public in machine-readable form: no column of them is shown.",
    "",
]
atomic_write_text(run_dir / "results.md", "\n".join(md))
print((run_dir / "results.md").read_text())

# %% [markdown]
# ## Exercises
# Predict first (write your guess down), then run, then explain what you saw. Each exercise names
# the parameter or function to change; the worked answers run every experiment and explain the
# outcome: [solutions/01_cl_tci.ipynb](solutions/01_cl_tci.ipynb).
#
# **Exercise 01.1 · How many same-patient positives does a batch hold?** *(about 1 min on 2 cores)*
# *Predict*: on the `cpu` pool (section 1: 30 patients × 4 time points) with batches of 32, what share
# of anchors has a same-patient positive under a plain shuffle, and under `PatientBatchSampler` with
# `images_per_patient` k = 1, 2 and 4? How many patients does a batch hold for each k, and what is
# $|P(v)|$ when k = 4?
# *Run*: the cells of section 2 for k in 1, 2, 4 (`PatientBatchSampler(codes, 32, k, gen)`,
# `same_patient_rate`, and `pairing.temporal(...).sum(1) - 1` for each anchor's same-patient images),
# over many epochs; draw `viz.show_mask` of one batch of 12 per k. Check the shuffled row against
# $(T-1)(B-1)/(PT-1)$.
# *Explain*: why k = 1 reads like the shuffle, why k ≥ 2 gives every anchor a partner when the batch
# size is a multiple of k, and what the sampler costs in other-patient negatives.
#
# **Exercise 01.2 · Same-patient keys in a MoCo queue** *(about 1 min on 2 cores)*
# *Predict*: with a pool of 120 images and batches of 32, how many keys of the query's own patient
# does a full queue of `queue_size` K = 32, 128, 512 and 3072 hold, and how many of those are older
# keys of the query's *own image*?
# *Run*: fill a `losses.MoCoQueue(K, dim)` batch by batch from a shuffled pool, enqueueing random
# keys with each image's `patient` and `sample` (row) codes; once it is full, count per query
# `pairing.temporal(q_codes, queue.meta["patient"])` and `pairing.equal_codes(q_rows, queue.meta["sample"])`.
# *Explain*: the counts from K, N, T and B; what the temporal mask and `train.moco_objective` do with
# the own-image keys; why a queue longer than the pool adds no new image.
#
# **Exercise 01.3 · The paper's protocol vs the honest one** *(about 2 min on 2 cores)*
# *Predict*: for random-init U-Nets with 1 and 4 labelled images (3 patient-wise folds), is the
# paper's number (`paper_test_dice_pooled`) above the honest one (`test_dice`)? Which part of the gap
# can never be negative: the step picked on the test fold, or pooled vs per-image Dice? And what
# share of test images has its patient in the training folds when folds are cut by image instead?
# *Run*: `run_finetune_grid(pool, folds, {"random init": None}, [1, 4], [seed], cfg)` with
# `FinetuneConfig(max_steps=40, batch_size=4, paper_selection=True)` on site A, then
# `paired_comparison` of the three readings (`test_dice`, `test_dice_pooled`,
# `paper_test_dice_pooled`) on the same runs; for the leak, `cross_validation_folds` on a copy of
# `meta` whose `patient_id` is the `sample_id`.
# *Explain*: the decomposition paper − honest = selection on test + pooled vs per image, the sign of
# each part, and why the package splits by patient.
#
# **Exercise 01.4 · Temporal vs instance pairs in a short pretraining** *(about 2 min on 2 cores)*
# *Predict*: after 10 short epochs on 16 patients (64 images), how often is an image's nearest
# neighbour another image of the same patient, for the random start, SimCLR and
# CL-TCI-SimCLR + sampler? Above chance $(T-1)/(N-1)$ already at random init, and how much room
# does that leave below the ceiling of 1?
# *Run*: `pretrain` with `PretrainConfig(pairing="instance")` and
# `PretrainConfig(pairing="temporal", sampler="patient", images_per_patient=2)` (batch 16, seeds 0,
# 1, 2), `embed` the pool, take each image's cosine nearest neighbour (section 4), and compare with
# `paired_comparison(..., pair_on=["seed"])` against random init and against SimCLR.
# *Explain*: what the temporal mask asks of the embedding that the instance mask does not, why
# random init is not at chance, what the ceiling does to the differences, and what the paired
# intervals allow you to claim.

# %% [markdown]
# ## Key takeaways
# - CL-TCI changes one thing: the positive mask. Patient codes go into `pairing.temporal`; the
#   loss, the encoder and the head are those of SimCLR and MoCo. Metadata you already have is a
#   pseudo-label for "what should look alike".
# - A positive that never shares a batch teaches nothing. In the SimCLR form, temporal pairs exist
#   only where same-patient images meet; the shuffled and patient-aware rows of section 2 show how
#   often, and the sampler buys more positives with fewer patients per batch.
# - In the MoCo form the queue supplies the same-patient keys, but only because it stores a
#   patient code beside every key, and only as well as the key encoder behind it: it must move
#   (momentum update) and its keys must not be too old for the pool and schedule.
# - An encoder that groups images by patient (section 4) has learned the premise; whether that
#   helps lung segmentation is a separate question, answered by the paired intervals against
#   random init, not by the means of the recorded reference table above.
# - A protocol that picks its step on the test fold is optimistic by construction: report the
#   honest one, and read the "paper minus honest" line of section 7 for how far apart the two are
#   in your run.

# %% [markdown]
# ## Further reading
# - The paper: D. Zeng, J. N. Kheir, P. Zeng, Y. Shi, *Contrastive Learning with Temporal
#   Correlated Medical Images: A Case Study using Lung Segmentation in Chest X-Rays*, ICCAD 2021,
#   arXiv:2109.03233. Public code: https://github.com/dewenzeng/CL-TCI
# - The frameworks it builds on: T. Chen, S. Kornblith, M. Norouzi, G. Hinton, *A Simple Framework
#   for Contrastive Learning of Visual Representations* (SimCLR), ICML 2020, arXiv:2002.05709, code
#   https://github.com/google-research/simclr; K. He, H. Fan, Y. Wu, S. Xie, R. Girshick, *Momentum
#   Contrast for Unsupervised Visual Representation Learning* (MoCo), CVPR 2020, arXiv:1911.05722,
#   code https://github.com/facebookresearch/moco
# - P. Khosla et al., *Supervised Contrastive Learning*, NeurIPS 2020, arXiv:2004.11362: the
#   multi-positive loss ("$L_{out}$") that the masked InfoNCE follows.
# - X. Chen, H. Fan, R. Girshick, K. He, *Improved Baselines with Momentum Contrastive Learning*
#   (MoCo v2), arXiv:2003.04297, 2020: the MLP head and stronger augmentation on top of MoCo.
# - S. Azizi et al., *Big Self-Supervised Models Advance Medical Image Classification*, ICCV 2021,
#   arXiv:2101.05224: Multi-Instance Contrastive Learning (MICLe), positives from several images of
#   the same patient case.
# - Y. N. T. Vu, R. Wang, N. Balachandar, C. Liu, A. Y. Ng, P. Rajpurkar, *MedAug: Contrastive
#   learning leveraging patient metadata improves representations for chest X-ray interpretation*,
#   MLHC 2021, arXiv:2102.10663: positives chosen by patient, study and laterality.
# - Method notes of this package: [docs/methods.md, CL-TCI](../docs/methods.md#cl-tci--temporal-pairs).

# %% [markdown]
# [← 00 · Quickstart](00_quickstart.ipynb) · [02 · PCL: positional pairs →](02_pcl.ipynb)
