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
# # Worked answers · 02 PCL exercises
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/solutions/02_pcl.ipynb)
#
# **Paper.** D. Zeng et al., *Positional Contrastive Learning for Volumetric Medical Image
# Segmentation*, MICCAI 2021, arXiv:2106.09157. Baselines: SimCLR (T. Chen et al., ICML 2020,
# arXiv:2002.05709) and the global strategy $G^D$ of K. Chaitanya et al., NeurIPS 2020
# (arXiv:2006.10511), called GCL here.
#
# The worked answers to the exercises of [02 · PCL](../02_pcl.ipynb): every experiment is run here
# and every number in a reading is printed by the code above it. Try each exercise in the chapter
# first (predict, then run), then compare with the answer.
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

from medcl_lite import losses, pairing, train, viz
from medcl_lite.config import from_params
from medcl_lite.data.phantoms import make_cardiac_volumes
from medcl_lite.data.prepared import load_role
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.train import PretrainConfig, embed, pretrain

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill overrides these (papermill notebooks/solutions/02_pcl.ipynb out.ipynb -p smoke False)
smoke = None  # None: smoke run on a CPU, the exercise size on a GPU; True or False forces it
seed = 0  # phantom, batch and pretraining seed
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/solutions-02-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
threshold = 0.35  # PCL θ of exercise 02.4 (the chapter's default)
thetas = [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 0.9, 1.0]  # θ values of exercise 02.1
parts_list = [2, 4, 8]  # GCL partitions of exercise 02.2

# %% [markdown]
# Values derived from the parameters. The exercise size uses the chapter's `cpu` phantom (36
# patients, 10-18 slices per volume, 64² slices; site A is the pretraining pool) but trains far less.

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, "cpu", run_device)  # smoke=None: smoke on a CPU
SIZES = {
    "smoke": dict(image=64, patients=8, slices=(6, 8), batch=16, opt_steps=20, pre_volumes=3, pre_epochs=1,
                  pre_batch=8, seeds=[0, 1]),
    "cpu": dict(image=64, patients=36, slices=(10, 18), batch=32, opt_steps=300, pre_volumes=8, pre_epochs=8,
                pre_batch=32, seeds=[0, 1, 2]),
}
S = SIZES[size]
run_dir = medcl_lite.run_folder(out_dir, f"solutions-02-{size}")  # out_dir, else $MEDCL_RUNS/solutions-02-{size}
medcl_lite.seed_everything(seed)
print(f"size={size}  device={run_device}  run folder: {run_dir}")

# %% [markdown]
# The chapter's data: phantom cardiac short-axis MRI volumes, one per patient; site A is the
# unlabelled pool. Every slice carries its normalised depth $d = (s + 1)/N$ in the `depth` column.

# %%
phantom = make_cardiac_volumes(n_patients=S["patients"], sites=("A", "B"), size=S["image"], slices=S["slices"],
                               seed=seed, modality="mri")
pool, pool_rows = load_role("phantom", phantom, "A")
meta = pool.meta.iloc[pool_rows].reset_index(drop=True)
depth = meta.depth.to_numpy().copy()  # float64, as stored (a writable copy for torch)
volumes = np.unique(meta.volume_id.to_numpy(), return_inverse=True)[1]  # volume code 0..V-1 of each pool slice
off = ~np.eye(len(depth), dtype=bool)  # pairs of two different slices
gap = np.abs(depth[:, None] - depth[None, :])
print(f"pool: {len(pool_rows)} slices, {meta.volume_id.nunique()} volumes, "
      f"{meta.n_slices.min()}-{meta.n_slices.max()} slices per volume")

# %% [markdown]
# ## Exercise 02.1 · θ beyond 0.5: when every pair is positive
# Two readings. First the share of positive pairs (two different slices of the pool) against θ,
# beside its closed form: for two depths drawn independently and uniformly on (0, 1],
# $\Pr(|d_i - d_j| < \theta) = 2\theta - \theta^2$. Then the loss. In the SimCLR form a view $a$ of
# slice $i$ has $|P(a)| = 2 m_i - 1$ positives, with $m_i$ the number of batch slices within θ of
# $i$ (itself included: the mask's row sum). Each term $-\log p$ of the loss is at least
# $-\log$ of the softmax mass its positives share, so the loss cannot fall below
# $\frac{1}{2B}\sum_a \log |P(a)|$ (the positives share all the mass, equally). A collapsed encoder
# (every embedding the same) gives every candidate the same probability, a loss of $\log(2B - 1)$
# whatever the mask. The difference between the two is what the loss gains by *not* collapsing.
# Last, free embeddings (one learnable vector per slice, no encoder) are optimised on the loss of
# each mask with plain gradient descent, to see where each mask leads.

# %%
t_start = time.perf_counter()
share_rows = [{"θ": t, "positive pairs, pool": float(pairing.positional(depth, threshold=t).numpy()[off].mean()),
               "closed form 2θ - θ²": 2 * t - t * t} for t in thetas]
display(pd.DataFrame(share_rows).set_index("θ").round(3).T)
print(f"largest depth gap in the pool: {gap.max():.3f} (θ=1 is strict: every gap below 1 is positive)")

B = S["batch"]
batch = np.random.default_rng(seed).permutation(len(depth))[:B]
d_batch = torch.as_tensor(depth[batch], dtype=torch.float32)
masks = {"SimCLR (instance)": None, **{f"PCL θ={t}": pairing.positional(d_batch, threshold=t) for t in (0.1, 0.35, 1.0)}}
collapsed = torch.ones(B, 16)
loss_rows = []
for name, mask in masks.items():
    m = torch.ones(B) if mask is None else mask.sum(1).float()  # m_i, the anchor itself included
    floor = float(torch.log(2 * m - 1).mean())
    z = torch.nn.Parameter(torch.randn(B, 16, generator=torch.Generator().manual_seed(seed)))
    optimiser = torch.optim.Adam([z], lr=0.05)
    for _ in range(S["opt_steps"]):  # gradient descent on free embeddings: where does this mask lead?
        loss = losses.nt_xent(z, z, 0.1, pos_mask=mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    unit = torch.nn.functional.normalize(z.detach(), dim=1)
    cosine = (unit @ unit.T).numpy()
    pair = ~np.eye(B, dtype=bool)
    loss_rows.append({
        "mask": name, "positives per view, mean": float((2 * m - 1).mean()),
        "collapsed, log(2B-1)": float(losses.nt_xent(collapsed, collapsed, 0.1, pos_mask=mask)),
        "floor, mean log|P(a)|": floor, "room to gain": math.log(2 * B - 1) - floor,
        "optimised loss": float(loss.detach()), "mean cosine, other slices": float(cosine[pair].mean()),
        "Spearman(cosine, |Δdepth|)": float(stats.spearmanr(cosine[pair], gap[np.ix_(batch, batch)][pair])[0]),
    })
loss_table = pd.DataFrame(loss_rows).set_index("mask")
display(loss_table.round(3))
one = loss_table.loc["PCL θ=1.0"]
display(Markdown(
    f"At θ=1 a view has {one['positives per view, mean']:.0f} positives, all the other views; the collapsed "
    f"encoder scores {one['collapsed, log(2B-1)']:.3f} = log(2B-1) = {math.log(2 * B - 1):.3f}, and the floor is "
    f"{one['floor, mean log|P(a)|']:.3f}: room to gain {one['room to gain']:.3f}. Optimised free embeddings end at "
    f"loss {one['optimised loss']:.3f} with mean cosine {one['mean cosine, other slices']:.3f} between different "
    f"slices (SimCLR's mask: {loss_table.iloc[0]['mean cosine, other slices']:.3f})."
))
print(f"Exercise 02.1 ran in {time.perf_counter() - t_start:.1f} s ({size})")

# %% [markdown]
# **Worked answer.**
# - *The share.* Depths fill (0, 1] nearly uniformly (every volume contributes $1/N, 2/N, \dots, 1$),
#   so the share of positive pairs follows $2\theta - \theta^2$: it grows fast, passes one half well
#   before θ = 0.5, and reaches every pair at θ = 1, since two depths in (0, 1] always differ by less
#   than 1 and the inequality is strict. Small departures come from the discrete depths and from the
#   first slice sitting at $1/N$, not at 0.
# - *The loss at θ = 1.* With every candidate positive, $-\frac{1}{|P|}\sum_{p}\log p_p$ over a
#   distribution $p$ on the $2B - 1$ candidates is smallest when $p$ is uniform (Jensen), which is
#   exactly what a collapsed encoder produces: the floor equals $\log(2B-1)$ and there is no room
#   left. Any embedding in which each anchor sees all candidates as equally similar is optimal,
#   and a constant encoder is one. The free embeddings show it: at θ = 1 they drift towards equal
#   similarity and their cosine says nothing about depth, whereas the instance mask spreads them
#   apart and the small-θ masks order them by depth (the Spearman column: negative means more
#   similar when closer in depth).
# - *Between.* The room to gain shrinks as θ grows: every extra positive raises the floor, and the
#   collapse value never moves. A large θ therefore weakens the signal that keeps the encoder from
#   collapsing and blurs the anatomy it should tell apart (atria and apex become positives); the
#   chapter's sweep stays at or below 0.5. Read a θ sweep by its paired intervals on the Dice: the
#   loss level is not comparable across θ, since the floor moves with it.

# %% [markdown]
# ## Exercise 02.2 · GCL partitions vs PCL's window for the same slices
# For each number of partitions G, a PCL threshold with the same share of positive pairs: for
# uniform depths GCL's share is $1/G$ and PCL's $2\theta - \theta^2$, so
# $\theta_G = 1 - \sqrt{1 - 1/G}$. Over all pairs of different slices of the pool, the two masks
# are then compared on what they disagree about: close neighbours ($|\Delta d| < 0.05$, nearly the
# same anatomy) made negatives, and positives farther apart than $\theta_G$. For two depths δ apart a
# partition border falls between them with probability about $G\delta$ (for $\delta < 1/G$): that is
# the closed form of GCL's split neighbours.

# %%
t_start = time.perf_counter()
near = off & (gap < 0.05)
gcl_rows = []
for G in parts_list:
    theta_G = 1 - math.sqrt(1 - 1 / G)
    for name, mask in ((f"GCL, {G} parts", pairing.partition(depth, parts=G)),
                       (f"PCL, θ={theta_G:.3f}", pairing.positional(depth, threshold=theta_G))):
        m = mask.numpy()
        positive = m & off
        gcl_rows.append({
            "G": G, "mask": name, "positive pairs": positive.sum() / off.sum(), "closed form share 1/G": 1 / G,
            "close neighbours made negative": float((~m[near]).mean()),
            "closed form G·mean δ": G * gap[near].mean() if name.startswith("GCL") else 0.0,
            "positives farther than θ_G": float((gap[positive] >= theta_G).mean()),
            "mean |Δd| of positives": float(gap[positive].mean()), "largest |Δd| of a positive": float(gap[positive].max()),
        })
gcl_table = pd.DataFrame(gcl_rows).set_index(["G", "mask"])
display(gcl_table.round(3))
shown = np.sort(np.random.default_rng(seed).permutation(len(depth))[:16])
shown = shown[np.argsort(depth[shown])]
ticks = [f"{x:.2f}" for x in depth[shown]]
theta_4 = 1 - math.sqrt(1 - 1 / 4)
for name, mask in (("GCL, 4 parts", pairing.partition(depth[shown], parts=4)),
                   (f"PCL, θ={theta_4:.3f}", pairing.positional(depth[shown], threshold=theta_4))):
    fig = viz.show_mask(mask, title=f"{name}: 16 slices sorted by depth", tick_labels=ticks)
    viz.save_figure(fig, run_dir / "figures" / f"ex2_{name.split(',')[0].lower()}.png")
lines = []
for G in parts_list:
    gcl, pcl = gcl_table.loc[G].iloc[0], gcl_table.loc[G].iloc[1]  # the GCL row of this G, then the PCL row
    lines.append(f"- G={G}: GCL makes {gcl['close neighbours made negative']:.1%} of the close neighbours negatives "
                 f"(closed form {gcl['closed form G·mean δ']:.1%}); {gcl['positives farther than θ_G']:.1%} of its "
                 f"positives lie farther apart than the matched θ (PCL: {pcl['positives farther than θ_G']:.1%}, and "
                 f"{pcl['close neighbours made negative']:.1%} of close neighbours made negatives)")
display(Markdown("\n".join(lines)))
print(f"Exercise 02.2 ran in {time.perf_counter() - t_start:.1f} s ({size})")

# %% [markdown]
# **Worked answer.**
# - *Same budget of positives, different shape.* With matched shares the two masks give an anchor
#   about as many positives, but PCL's are always the slices nearest to it (a window centred on the
#   anchor, truncated only at the ends of the depth axis) while GCL's are the slices of its
#   partition, wherever the anchor sits in it. An anchor next to a border has its positives all on
#   one side, up to a whole partition away, and its nearest neighbours across the border are
#   negatives.
# - *Split neighbours.* The share of close neighbours that GCL makes negatives grows with G, as the
#   $G\delta$ approximation says: more partitions, more borders. The approximation assumes depths
#   spread evenly; the real ones sit on grids $(s+1)/N$ and some coincide with a border, so compare
#   the two columns for the trend, not to the last digit. PCL never splits a pair closer than θ,
#   by construction.
# - *Far positives.* GCL's positives reach up to a partition's width apart, wider than the matched
#   θ, so part of them lies farther apart than any of PCL's. Fewer partitions: fewer split
#   neighbours but wider, blurrier positive sets; more partitions: the reverse. PCL's window avoids
#   the trade-off, which is the paper's argument for it. Whether that shows in Dice is the chapter's
#   "PCL minus GCL" paired comparison, not this table.

# %% [markdown]
# ## Exercise 02.3 · Depth normalisation across slice counts
# The shortest and the longest volume of the pool, their depths $d = (s + 1)/N$, and how many
# slices of another volume fall within θ of an anchor, by the other volume's length. For an anchor
# depth spread uniformly over (0, 1) and a volume whose N depths fill (0, 1] evenly, the expected
# count is $N(2\theta - \theta^2)$. Last, pairs exactly θ apart in exact arithmetic: the mask's
# inequality is strict, and the depths are float32.

# %%
t_start = time.perf_counter()
lengths = meta.groupby("volume_id").n_slices.first()
short, long_ = lengths.idxmin(), lengths.idxmax()
for vol in (short, long_):
    print(f"{vol} ({lengths[vol]} slices): depths " + " ".join(f"{x:.2f}" for x in meta.depth[meta.volume_id == vol]))
onehot = torch.nn.functional.one_hot(torch.as_tensor(volumes)).float()  # [slices, volumes]
own = onehot.bool()  # the anchor's own volume, left out
n_of = np.zeros(onehot.shape[1], dtype=int)
n_of[volumes] = meta.n_slices.to_numpy()  # slices of each volume
count_rows = []
for t in (0.02, 0.05, 0.1):
    counts = pairing.positional(depth, threshold=t).float() @ onehot  # [anchor, volume]: positives per volume
    for n in sorted(set(n_of)):
        of_length = torch.as_tensor(n_of == n)
        cells = counts[:, of_length][~own[:, of_length]]
        count_rows.append({"θ": t, "other volume's slices N": n, "positives per anchor": float(cells.mean()),
                           "closed form N(2θ-θ²)": n * (2 * t - t * t),
                           "anchors with none": float((cells == 0).float().mean())})
count_table = pd.DataFrame(count_rows).set_index(["θ", "other volume's slices N"])
display(count_table.round(3).unstack(0))
s_, n_ = meta.slice_index.to_numpy() + 1, meta.n_slices.to_numpy()
numerator = np.abs(np.outer(s_, n_) - np.outer(s_, n_).T)  # |d_i - d_j| = numerator / (N_i N_j), exactly
tie = off & (10 * numerator == np.outer(n_, n_))  # exactly 0.1 apart
tied_positive = pairing.positional(depth, threshold=0.1).numpy()[tie]
print(f"θ=0.1: {int(tie.sum())} ordered pairs of slices lie exactly 0.1 apart; the strict mask marks "
      f"{tied_positive.mean() if tie.any() else float('nan'):.1%} of them positive")
ten = torch.arange(1, 11) / 10  # the depths of a 10-slice volume
print("a 10-slice volume, θ=0.1, the slice at d=0.5 and its positives in its own volume: "
      + " ".join(f"{x:.1f}" for x in ten[pairing.positional(ten, threshold=0.1)[4]].tolist()))
print(f"Exercise 02.3 ran in {time.perf_counter() - t_start:.1f} s ({size})")

# %% [markdown]
# **Worked answer.**
# - *The depths.* $d = (s+1)/N$ puts the last slice of every volume at exactly 1 and the first at
#   $1/N$, so the two ends are treated differently: the bottom slices of a short and a long volume
#   get the same depth, the top slices do not (the gap is $1/N_{short} - 1/N_{long}$). A centred
#   form $(s + 1/2)/N$ would be symmetric; PCL's eq. 1 is not, and the package follows the paper.
# - *Positives per volume.* An anchor's window has a fixed width in depth, so it catches about
#   $N(2\theta - \theta^2)$ slices of a volume of N: long volumes contribute more positives than short
#   ones, and in the SimCLR-form loss every positive has the same weight, so a long volume pulls
#   harder on its anchors than a short one. The table's measured counts follow the closed form.
# - *Empty windows.* When the window $2\theta$ is narrower than a volume's slice spacing $1/N$, an
#   anchor may fall between two of its slices and find no positive there: the "anchors with none"
#   column. In the interior of the depth axis this needs $2\theta < 1/N$; read the column for the
#   θ values where it happens: there PCL's extra positives come from fewer volumes, and PCL
#   approaches SimCLR.
# - *Exactly θ apart.* The chapter says a slice exactly θ away is a negative. The depths are
#   float32, and decimal depths such as 0.4, 0.5 and 0.6 are not exact in binary: 0.5 - 0.4 comes
#   out a hair below 0.1 and 0.6 - 0.5 a hair above, so a plain `< θ` would make one neighbour at
#   exactly 0.1 a positive and the other a negative. `pairing.positional` therefore counts a
#   difference within `pairing.DEPTH_TOLERANCE` (1e-5) of θ as θ: the count above checks that no
#   pair exactly θ apart is marked positive, and the printed row that the slice at 0.5 keeps only
#   itself. Floating-point ties are worth a test wherever a rule compares with a threshold.

# %% [markdown]
# ## Exercise 02.4 · False negatives and a short pretraining
# A small pool (a few volumes of site A). First, SimCLR's false negatives in the batches
# `pretrain` would draw (`train.pretrain_loader`): the share of an anchor's negatives that lie within
# θ of its depth, and that come from its own volume. Then SimCLR and PCL (θ = `threshold`) are
# pretrained briefly from the same start per seed, and the chapter's section 5 probe is read: for
# every slice, the depth gap $|\Delta d|$ to its nearest other-patient slice (cosine, pooled
# bottleneck features). The table reports it as **depth gain** = chance gap minus probe gap (higher:
# the embedding groups slices by position). Pairs: same seed.

# %%
t_start = time.perf_counter()
chosen = list(dict.fromkeys(meta.volume_id))[: S["pre_volumes"]]
pre_rows = pool_rows[meta.volume_id.isin(chosen).to_numpy()]
pre_depth = pool.meta.depth.to_numpy()[pre_rows]
pre_patients = pool.meta.patient_id.to_numpy()[pre_rows]
other_patient = pre_patients[:, None] != pre_patients[None, :]
chance = float(np.abs(pre_depth[:, None] - pre_depth[None, :])[other_patient].mean())
common = {"framework": "simclr", "augment": "pcl_elastic", "max_epochs": S["pre_epochs"], "batch_size": S["pre_batch"],
          "lr": 0.1, "warmup_epochs": 1 if S["pre_epochs"] > 1 else 0, "proj_dim": 64, "temperature": 0.1,
          "threshold": threshold, "device": device, "progress": progress}

near_share, own_share, both_share = [], [], []
for b in train.pretrain_loader(from_params(PretrainConfig, common, seed=seed), pool, pre_rows):
    negatives = ~torch.eye(len(b["depth"]), dtype=torch.bool)
    close = pairing.positional(b["depth"], threshold=threshold)
    same_volume = pairing.equal_codes(b["volume"])
    near_share.append(close[negatives].float().mean().item())
    own_share.append(same_volume[negatives].float().mean().item())
    both_share.append((close & same_volume)[negatives].float().mean().item())
print(f"{len(chosen)} volumes, {len(pre_rows)} slices, batches of {S['pre_batch']}: of SimCLR's negatives "
      f"{np.mean(near_share):.1%} lie within θ={threshold} of the anchor's depth (closed form 2θ-θ² "
      f"{2 * threshold - threshold**2:.1%}), {np.mean(own_share):.1%} come from the anchor's own volume, "
      f"{np.mean(both_share):.1%} are both")


def depth_gap(features: np.ndarray) -> float:
    """The chapter's probe: mean |Δdepth| from each slice to its nearest other-patient slice (cosine)."""
    unit = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-8)
    nearest = np.where(other_patient, unit @ unit.T, -np.inf).argmax(1)
    return float(np.abs(pre_depth - pre_depth[nearest]).mean())


PRETRAIN = {"SimCLR": dict(pairing="instance"), "PCL": dict(pairing="positional")}
probe_rows = []
for s in S["seeds"]:
    medcl_lite.seed_everything(s)  # what pretrain does before it builds the network
    start = train.build_contrastive(from_params(PretrainConfig, common, seed=s)).to(run_device)
    probe_rows.append({"init": "random init", "seed": s, "probe gap": depth_gap(embed(start, pool, pre_rows))})
    for name, extra in PRETRAIN.items():
        cfg = from_params(PretrainConfig, common, **extra, seed=s, resume=True,
                          out_dir=str(run_dir / f"ex4_{name.lower()}_s{s}"))
        result = pretrain(cfg, pool, index=pre_rows)
        probe_rows.append({"init": name, "seed": s, "steps": len(result.history),
                           "probe gap": depth_gap(embed(result.net, pool, pre_rows))})
probe = pd.DataFrame(probe_rows).assign(pool=f"{len(pre_rows)} slices")
probe["depth gain"] = chance - probe["probe gap"]
display(probe.pivot(index="seed", columns="init", values="depth gain").round(3))
vs_random = paired_comparison(probe, groups=["pool"], value="depth gain", pair_on=["seed"])
vs_simclr = paired_comparison(probe[probe.init != "random init"], groups=["pool"], value="depth gain",
                              baseline="SimCLR", pair_on=["seed"])
display(pd.concat([vs_random.assign(baseline="random init"), vs_simclr.assign(baseline="SimCLR")]).round(3))
display(Markdown(verdict_text(vs_random, ["pool"], unit="depth gain", smoke=size == "smoke") + "\n\n"
                 + verdict_text(vs_simclr, ["pool"], baseline="SimCLR", unit="depth gain", smoke=size == "smoke")))
gaps = probe.groupby("init")["probe gap"].mean()
print(f"chance gap {chance:.3f}; mean probe gap over {len(S['seeds'])} seeds: "
      + ", ".join(f"{name} {value:.3f}" for name, value in gaps.items())
      + f"; {probe.steps.max():.0f} pretraining steps per run")
print(f"Exercise 02.4 ran in {time.perf_counter() - t_start:.1f} s ({size})")

# %% [markdown]
# **Worked answer.**
# - *False negatives.* In a random batch a share of about $2\theta - \theta^2$ of SimCLR's negatives
#   lie within θ of the anchor's depth: at the chapter's θ that is a large part of the batch, and
#   it does not shrink with a bigger batch, since it is a share. With only a few volumes in the
#   pool, a sizeable share of the negatives are also slices of the anchor's own heart, often its
#   direct neighbours, which look almost the same: SimCLR must push apart what a segmenter should
#   treat alike. PCL makes the near ones positives, whatever volume they come from.
# - *The probe.* PCL's loss rewards embedding slices of similar depth close together, across
#   patients, so its nearest other-patient neighbour should lie closer in depth than SimCLR's: a
#   higher depth gain. Random init is not at chance: the phantom's anatomy depends on depth, and
#   even random features carry some of it.
# - *Reading it.* Each comparison is paired on the seed, which fixes the starting weights and the
#   batches. With a few seeds and a short schedule the interval is wide; where it covers 0 there is
#   no evidence either way, whatever the means say. The probe measures the premise (does the
#   encoder order slices by position?), not the Dice: the chapter's fine-tuning grid answers that.
