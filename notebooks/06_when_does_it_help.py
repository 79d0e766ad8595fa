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
# # 06 · When does contrastive pretraining help segmentation?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/06_when_does_it_help.ipynb)
#
# **The course so far.** Five answers to "which pairs are positive?": two views of one image
# (SimCLR, arXiv:2002.05709; MoCo, arXiv:1911.05722), the same patient at another time (CL-TCI,
# arXiv:2109.03233), a slice at the same depth of another volume (PCL, arXiv:2106.09157), the same
# superpixel (LRC, arXiv:2304.03406), the same pixel (IDEAL, arXiv:2210.15075) and the sentence that
# describes a region (LRCLR, arXiv:2303.14153). This chapter trains nothing: it reads the recorded
# reference run of every chapter (`notebooks/reference/`, never retyped) and asks when pretraining
# helped, when it did not, and what was measured about why.
#
# **Learning goals.** After this chapter you can
# - read a whole course's results as paired differences with intervals, and say which claims they
#   support and which they do not;
# - check whether a benchmark leaves room for pretraining to help (the ceiling) before reading any
#   difference;
# - name the recipe choices that decide the outcome (label budget, fine-tuning learning rate and
#   length, what is transferred, pretraining length, BatchNorm statistics) and find the measurement
#   of each;
# - measure how well a pairing rule's positives agree with the segmentation target, and explain
#   with it why positional pairs suit volumes.
#
# **Prerequisites.** Chapters 00 (the loss, the paired comparison, the metrics) and at least one of
# 01-04; 05 is read for contrast.

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

medcl_lite.set_threads()

# %%
import pandas as pd
from IPython.display import Markdown, display

from medcl_lite import diagnosis, pairing, reference, synthesis, viz
from medcl_lite.data.phantoms import make_cardiac_volumes, make_chest_xrays
from medcl_lite.paired import verdict_text

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill overrides these (medcl reproduce 06_when_does_it_help -p ...)
smoke = None  # None: smoke on a CPU (smaller phantoms in section 6); the recorded tables are read either way
seed = 0  # phantom seed of section 6
device = "auto"  # unused here (nothing is trained); kept for the shared command line
out_dir = ""  # run folder for the figures; empty: MEDCL_RUNS/when_does_it_help-SIZE
room_target = 0.10  # Dice the smallest budget should leave below the largest (the course's aim)
theta = 0.1  # PCL threshold for section 6 (the chapter's CHD value; ACDC uses 0.35)

# %% [markdown]
# Derived values: the size (smoke: small phantoms in section 6) and the run folder.

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, "cpu", run_device)
PHANTOM = {"smoke": dict(patients=8, times=3, volumes=6), "cpu": dict(patients=30, times=4, volumes=24)}[size]
run_dir = medcl_lite.run_folder(out_dir, f"when_does_it_help-{size}")
for chapter in synthesis.CHAPTERS + ("05_lrclr",):
    print(reference.caption(chapter))

# %% [markdown]
# ## 1 · The course in two figures
# **Figure 1** shows, for every chapter, each pretrained initialisation minus random init at the
# chapter's *smallest* label budget (where pretraining should matter most): the dot is the mean
# paired difference in test Dice, the bar its 95 % interval (green: better, red: worse, grey: no
# evidence). **Figure 2** shows how much room that budget leaves: random init's Dice at the smallest
# budget (open dot) and at the largest one (filled dot). A method cannot gain more than the room,
# and a difference inside the intervals of figure 1 is not a finding.

# %%
comparisons, missing = synthesis.gather("comparison.csv")
smallest = synthesis.at_smallest_budget(comparisons)
if missing:
    print("no recorded comparison (yet) for:", ", ".join(missing))
if not smallest.empty:
    fig = viz.plot_paired(smallest, ["where", "n_labelled", "init"],
                          title="pretrained minus random init, smallest label budget")  # fmt: skip
    viz.save_figure(fig, run_dir / "figures" / "smallest_budget.png")

# %%
results, _ = synthesis.gather("results.csv")
room = synthesis.headroom(results)
if not room.empty:
    fig = viz.plot_headroom(room, target=room_target, title="room left by the smallest budget (random init)")
    viz.save_figure(fig, run_dir / "figures" / "headroom.png")
    display(room.round(3))

# %% [markdown]
# The reading of both figures, computed from the recorded tables:

# %%
def course_reading(smallest: pd.DataFrame, room: pd.DataFrame, target: float) -> str:
    """Verdict counts per chapter at the smallest budget, and which settings leave the target room."""
    lines = []
    for chapter, block in smallest.groupby("chapter", sort=False):
        counts = block["verdict"].value_counts()
        parts = [f"{counts.get(v, 0)} {v}" for v in ("better", "worse", "no evidence") if counts.get(v, 0)]
        lines.append(f"- {chapter}: {len(block)} comparison(s) at {block.n_labelled.iloc[0]} labelled: {', '.join(parts)}.")
    if not room.empty:
        enough = room[room["room"] >= target]
        lines.append(f"- Room of at least {target:.2f} Dice between the smallest and largest budget: "
                     f"{len(enough)} of {len(room)} setting(s)"
                     + (f" ({', '.join(enough['where'])})." if len(enough) else "."))  # fmt: skip
    return "\n".join(lines)


if not smallest.empty:
    display(Markdown(course_reading(smallest, room, room_target)))

# %% [markdown]
# ## 2 · The ceiling: is there anything to gain?
# Pretraining can only help where the few labels leave the segmenter wrong. Write $D_{\text{rand}}(n)$
# for random init's test Dice with $n$ labelled images and $n_{\max}$ for the largest budget run;
# the **room** at the smallest budget $n_0$ is
#
# $$
# R = D_{\text{rand}}(n_{\max}) - D_{\text{rand}}(n_0),
# $$
#
# `synthesis.headroom` in the code. Any gain from pretraining at $n_0$ is bounded by roughly $R$
# (more only if pretraining also beats the all-labels network). Where $R$ is a few hundredths, a
# phantom whose few labels already show everything the test set needs, no initialisation can show
# a clear win, and a loss of a few hundredths is as likely as a gain. This is the first thing to
# check in any paper's table, too: MONAI's self-supervised BTCV tutorial shows random init 63.1 →
# pretrained 70.1 Dice at 6 volumes, a gap that vanishes at 24 labelled volumes.
#
# > **Pitfall.** A benchmark at its ceiling makes every method look the same, and then the noise
# > picks a "winner". Read the room before the differences.

# %% [markdown]
# ## 3 · The label budget: does the gap close with more labels?
# The same paired differences at every budget each chapter ran (rows: chapter, setting and method;
# columns: labelled images or volumes). The papers' claim is a gap that is largest at the smallest
# budget and shrinks as labels grow.

# %%
if not comparisons.empty:
    by_budget = comparisons.assign(cell=[f"{r.mean_diff:+.3f} {'*' if r.verdict in ('better', 'worse') else ''}".strip()
                                         for r in comparisons.itertuples()])  # fmt: skip
    budgets = sorted(by_budget["n_labelled"].unique(), key=synthesis.budget_key)
    table = by_budget.pivot_table(index=["where", "init"], columns="n_labelled", values="cell", aggfunc="first",
                                  sort=False)[budgets]  # fmt: skip
    display(table.fillna(""))
    print("* the 95 % interval excludes 0 (better if positive, worse if negative)")

# %% [markdown]
# ## 4 · What the diagnosis measured
# Chapter 00 changed one recipe choice at a time and read the paired difference again (section 8
# there; `medcl_lite.diagnosis`). Each row below is such a change; the x axis is SimCLR minus random
# init under it. The factors, and what a row that moves would mean:
#
# | factor | a row that moves toward "better" would say |
# |---|---|
# | fine-tuning learning rate | the recipe's rate (10-20x the papers') overwrote what pretraining learned |
# | fine-tuning length | fine-tuning was too short for either initialisation to converge |
# | frozen vs full / LP-FT | the features help, but full fine-tuning from a random decoder distorts them (Kumar et al. 2022) |
# | BatchNorm statistics | the encoder's *units* (running statistics) misfit the other scanners, not its features |
# | encoder-only transfer | only the shallow, generic stages transfer; deep stages fit the pretext task |
# | pretraining length | pretraining was too short to learn anything worth transferring |
# | augmentation mismatch | the views taught invariances the segmenter needs (or lacks) |
# | label-budget ceiling | (the room of section 2) |

# %%
for chapter in ("00_quickstart", "04_ideal"):
    diagnosed = reference.load_table(chapter, "diagnosis.csv")
    if diagnosed is None:
        print(f"{chapter}: no recorded diagnosis")
        continue
    display(Markdown(f"**{chapter}**"))
    fig = viz.plot_paired(diagnosed, ["ablation"], baseline="random init",
                          title=f"{chapter}: one factor at a time, smallest budget")  # fmt: skip
    viz.save_figure(fig, run_dir / "figures" / f"diagnosis_{chapter}.png")
    display(Markdown(diagnosis.reading(diagnosed)))

# %% [markdown]
# ## 5 · What did the encoder learn? The evaluation protocols
# Full fine-tuning measures a recipe; a frozen encoder or a linear probe measures the features
# themselves (chapter 00, section 7). Where pretraining wins under a frozen encoder but not under
# full fine-tuning, the features were good and fine-tuning lost them; where it loses everywhere,
# the features do not carry what the masks need.

# %%
protocol_rows, missing_protocols = synthesis.gather("protocols.csv")
protocols = synthesis.compare_protocols(protocol_rows)
if not protocols.empty:
    fig = viz.plot_paired(protocols, ["where", "protocol", "init"],
                          title="each protocol: pretrained minus random init, smallest budget")  # fmt: skip
    viz.save_figure(fig, run_dir / "figures" / "protocols.png")
    display(Markdown(verdict_text(protocols, ["where", "protocol"], label=lambda r: f"{r.where}, {r.protocol}")))
if missing_protocols:
    print("no recorded protocols (yet) for:", ", ".join(missing_protocols))

# %% [markdown]
# ## 6 · Why do positional pairs suit volumes? Positives that share their masks
# A contrastive loss pulls positives together and pushes negatives apart. For segmentation, the
# pull is useful when positives would get *the same label map* from a good segmenter, and the push
# is harmful when a negative would: that negative is a **false negative**. So measure it directly:
# for every pair of images $(i, j)$ take the Dice $D_{ij}$ between their ground-truth masks
# (`synthesis.pairwise_mask_dice`, averaged over the classes either mask holds), and compare its
# mean over a rule's positive pairs $P$ with its mean over the negative pairs $N$
# (`synthesis.mask_agreement`):
#
# $$
# \bar D_P = \frac{1}{|P|} \sum_{(i, j) \in P} D_{ij}, \qquad
# \bar D_N = \frac{1}{|N|} \sum_{(i, j) \in N} D_{ij}, \qquad
# \text{false-negative share} = \frac{|\{(i, j) \in N : D_{ij} > 0.8\}|}{|N|}.
# $$
#
# Instance pairing (SimCLR, MoCo) has no positive pair between two different images: every other
# image is a negative, however alike its mask. On cardiac volumes, slices at the same normalised
# depth of different patients show the same cut through the heart; on chest X-rays, every image
# shows two lungs. The rules below are the package's own masks (`medcl_lite.pairing`), on the
# chapters' phantoms (masks only; nothing is trained).

# %%
def agreement_table(data, rules: dict) -> pd.DataFrame:
    """mask_agreement of every named rule's positive mask on ``data``'s masks."""
    rows = [{"rule": name, **synthesis.mask_agreement(data.masks, mask, len(data.classes))}
            for name, mask in rules.items()]  # fmt: skip
    return pd.DataFrame(rows).set_index("rule")


hearts = make_cardiac_volumes(n_patients=PHANTOM["volumes"], sites=("A",), size=64, seed=seed)
depth = hearts.meta["depth"].to_numpy()
hearts_rules = {
    "instance (SimCLR, MoCo)": pairing.instance(len(hearts)).numpy(),
    f"positional θ={theta} (PCL)": pairing.positional(depth, threshold=theta).numpy(),
    "partition, 4 parts (GCL)": pairing.partition(depth, parts=4).numpy(),
    "same volume": pairing.temporal(hearts.codes("volume_id")).numpy(),
}
chests = make_chest_xrays(n_patients=PHANTOM["patients"], n_times=PHANTOM["times"], sites=("A",), size=64, seed=seed)
chest_rules = {
    "instance (SimCLR, MoCo)": pairing.instance(len(chests)).numpy(),
    "temporal (CL-TCI)": pairing.temporal(chests.codes("patient_id")).numpy(),
}
agreement = pd.concat({"cardiac volumes (02, 04)": agreement_table(hearts, hearts_rules),
                       "chest X-rays (00, 01)": agreement_table(chests, chest_rules)})  # fmt: skip
display(agreement.round(3))

# %%
def agreement_reading(table: pd.DataFrame) -> str:
    """Per data set: how far each rule's positives agree above its negatives."""
    lines = []
    for data_name, block in table.groupby(level=0, sort=False):
        for rule, row in block.droplevel(0).iterrows():
            if row["positive pairs"]:
                lines.append(f"- {data_name}, {rule}: positives' masks agree at Dice {row['mask Dice of positives']:.3f}, "
                             f"negatives' at {row['mask Dice of negatives']:.3f}; {row['false-negative share']:.1%} "
                             "of the negatives are near-duplicates (Dice > 0.8).")  # fmt: skip
            else:
                lines.append(f"- {data_name}, {rule}: no positive pair between two images; "
                             f"{row['false-negative share']:.1%} of its negatives are near-duplicates.")  # fmt: skip
    return "\n".join(lines)


display(Markdown(agreement_reading(agreement)))

# %% [markdown]
# Read the table with the loss in mind. A rule helps a segmenter when its positives agree far more
# than its negatives *and* few negatives are near-duplicates. Instance pairing's false-negative
# share is the share of all image pairs that look alike to a segmenter; a positional rule turns
# those at the same depth into positives, and what it leaves among its negatives is its own share.
# Compare, too, the negatives' agreement across the two data sets: where the masks of unrelated
# images already agree closely, the target varies little from image to image, and a few labelled
# images show most of it, the ceiling of section 2 seen from the data side.
#
# > **Pitfall.** "Positives that agree" is necessary, not sufficient: a rule whose positives are
# > every image (θ = 1) agrees on average but contrasts nothing. The false-negative share and the
# > number of positives per anchor matter together.

# %% [markdown]
# ## 7 · Image–text (05), for contrast
# LRCLR's answer pairs a region with a sentence; it is evaluated zero-shot by AUC per finding, not
# by Dice. Its recorded comparison of LRCLR minus CLIP:

# %%
lrclr = reference.load_table("05_lrclr", "results.csv")
if lrclr is not None:
    display(lrclr.groupby(["finding", "method"], sort=False)["auc"].agg(["mean", "std"]).unstack().round(3))

# %% [markdown]
# ## Summary: when does it help?
# What the recorded runs of this course support (sections 1-5 compute the verdicts; nothing below
# goes beyond them):
# - **Only where there is room.** The first question about any comparison is the ceiling of
#   section 2: where one label already gives random init most of the all-labels Dice, pretraining
#   has little to add and the intervals cover 0.
# - **When the positives match the target.** Section 6 measures it: a rule whose positives share
#   their masks and that leaves few near-duplicate negatives pulls the encoder toward what the
#   segmenter needs.
# - **When fine-tuning keeps what was learned.** The diagnosis and the protocols separate the
#   features from the recipe: frozen encoders, linear probes, LP-FT, learning rate and BatchNorm
#   statistics each test one way a good encoder can be lost.
# - **Read in pairs, with intervals, and mind the winner's curse**: with several methods against one
#   baseline, the best-looking one is the most inflated.

# %% [markdown]
# ## Exercises
# Predict first (write your guess down), then run, then explain what you saw. The worked answers
# compute every answer from the recorded tables or the phantoms:
# [solutions/06_when_does_it_help.ipynb](solutions/06_when_does_it_help.ipynb).
#
# **Exercise 06.1 · The winner's curse** *(about 1 min on 2 cores)*
# *Predict*: five methods, each truly equal to random init, are compared over 3 paired seeds with a
# spread like the quickstart's; how often does the best of them look "better" by at least 0.03 Dice?
# *Run*: simulate it with `numpy` draws and `medcl_lite.paired.interval`, 2000 repetitions.
# *Explain*: why the best of k methods, picked after the fact, overstates its difference.
#
# **Exercise 06.2 · t or bootstrap?** *(about 1 min on 2 cores)*
# *Predict*: with 3 pairs, is the bootstrap interval of the recorded quickstart differences wider or
# narrower than the t interval? *Run*: recompute the intervals of the recorded `comparison` rows with
# `paired.interval(..., method="bootstrap")` from the recorded `results.csv`. *Explain*: what each
# interval assumes, and which to trust with 3 pairs.
#
# **Exercise 06.3 · θ and the false negatives** *(about 1 min on 2 cores)*
# *Predict*: as PCL's θ grows from 0.02 to 1, how do the positives' mask agreement and the
# false-negative share of section 6 move? *Run*: `synthesis.mask_agreement` over θ in
# `[0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0]` on the cardiac phantom. *Explain*: the trade-off, and
# why θ = 1 cannot work although its false-negative share is 0.

# %% [markdown]
# ## Key takeaways
# - Check the ceiling first: the room between the smallest and the largest label budget bounds what
#   any initialisation can show.
# - A pairing rule is good for segmentation when its positives share their masks and its negatives
#   do not: measurable before any training.
# - Separate what the encoder learned (frozen encoder, probe) from what fine-tuning did with it
#   (learning rate, length, LP-FT, BatchNorm statistics); change one factor at a time.
# - Compare in pairs, report intervals, say "no evidence" when they cover 0, and distrust the best
#   of many.

# %% [markdown]
# ## Further reading
# - A. Kumar, A. Raghunathan, R. Jones, T. Ma, P. Liang, *Fine-Tuning can Distort Pretrained Features
#   and Underperform Out-of-Distribution*, ICLR 2022, arXiv:2202.10054 (LP-FT).
# - K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, *Contrastive learning of global and local
#   features for medical image segmentation with limited annotations*, NeurIPS 2020,
#   arXiv:2006.10511 (GCL's partitions, the false-negative argument for volumes).
# - Y. Li, N. Wang, J. Shi, J. Liu, X. Hou, *Revisiting Batch Normalization For Practical Domain
#   Adaptation*, ICLR workshop 2017, arXiv:1603.04779 (AdaBN).
# - Y. Tang, D. Yang, W. Li et al., *Self-Supervised Pre-Training of Swin Transformers for 3D Medical
#   Image Analysis*, CVPR 2022, arXiv:2111.14791, and MONAI's self-supervised tutorials: the label
#   budget at which pretraining stops helping.

# %% [markdown]
# [← 05 · LRCLR](05_lrclr.ipynb) · Back to the [README](../README.md)
