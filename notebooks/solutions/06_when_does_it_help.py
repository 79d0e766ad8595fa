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
# # Worked answers · 06 When does contrastive pretraining help segmentation?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/solutions/06_when_does_it_help.ipynb)
#
# The exercises of [chapter 06](../06_when_does_it_help.ipynb), run and explained. The chapter reads
# the recorded reference runs of the course (SimCLR, arXiv:2002.05709; PCL, arXiv:2106.09157; and the
# other chapters' papers). Try each exercise before reading its answer.

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
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from medcl_lite import pairing, reference, synthesis
from medcl_lite.data.phantoms import make_cardiac_volumes
from medcl_lite.paired import interval, paired_differences

env = medcl_lite.print_env()

# %% tags=["parameters"]
smoke = None  # None: smoke on a CPU (fewer repetitions, a smaller phantom)
seed = 0  # random seed of the simulation and the phantom
device = "auto"  # unused (nothing is trained)

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, "cpu", run_device)
REPETITIONS = {"smoke": 200, "cpu": 2000}[size]
VOLUMES = {"smoke": 6, "cpu": 24}[size]
print(f"size {size}: {REPETITIONS} repetitions, {VOLUMES} cardiac volumes")

# %% [markdown]
# ## Exercise 06.1 · The winner's curse
# Five methods, each *truly* equal to random init, compared over 3 paired seeds. The spread of the
# paired differences is taken from the recorded quickstart run (the standard deviation of its
# pretrained-minus-random differences at 1 labelled image, SimCLR and MoCo together); without a
# recording, 0.05 Dice.

# %%
start = time.perf_counter()
rows = reference.load_table("00_quickstart", "results.csv")
if rows is not None:
    diffs = paired_differences(rows[rows.n_labelled == "1"], ["n_labelled"], "test_dice", "random init", ["seed"])
    spread = float(diffs["diff"].std(ddof=1))
else:
    spread = 0.05
rng = np.random.default_rng(seed)
k, pairs = 5, 3
best, best_better = [], 0
for _ in range(REPETITIONS):
    draws = rng.normal(0.0, spread, size=(k, pairs))  # true difference 0 for every method
    means = draws.mean(axis=1)
    winner = int(means.argmax())
    best.append(means[winner])
    best_better += interval(draws[winner])[1] > 0  # its own interval excludes 0
best = np.array(best)
print(f"spread of one paired difference: {spread:.3f} Dice")
print(f"best of {k} equal methods: mean difference {best.mean():+.3f}; at least +0.03 in {np.mean(best >= 0.03):.1%} "
      f"of {REPETITIONS} repetitions; its own interval excludes 0 in {best_better / REPETITIONS:.1%}")
print(f"Exercise 06.1 ran in {time.perf_counter() - start:.1f} s ({size})")

# %% [markdown]
# **Why.** Each method's mean difference is an unbiased estimate of its true difference (here 0),
# but the *maximum* of five such estimates is not: it is the largest of five noisy draws, so its
# expected value is positive (for normal noise, about 1.16 standard errors for k = 5). Picking the
# best after looking and then reporting its difference reports that upward bias as an effect. With
# only 3 pairs, the standard error of a mean is the spread divided by $\sqrt 3$, so the bias is of
# the same size as the differences the chapters discuss. The remedy: fix the comparison before
# looking, or correct the interval for the number of comparisons (e.g. Bonferroni: a 99 % interval
# for each of five).

# %% [markdown]
# ## Exercise 06.2 · t or bootstrap?
# The recorded quickstart differences, per budget and method, with both intervals
# (`paired.interval(..., method="t")` and `method="bootstrap"`).

# %%
start = time.perf_counter()
if rows is not None:
    diffs = paired_differences(rows, ["n_labelled"], "test_dice", "random init", ["seed"])
    table = []
    for (budget, init), block in diffs.groupby(["n_labelled", "init"], sort=False):
        _, t_low, t_high = interval(block["diff"], method="t")
        _, b_low, b_high = interval(block["diff"], method="bootstrap", resamples=REPETITIONS * 5, seed=seed)
        table.append({"budget": budget, "init": init, "pairs": len(block), "t width": t_high - t_low,
                      "bootstrap width": b_high - b_low})  # fmt: skip
    table = pd.DataFrame(table)
    display(table.round(3))
    narrower = (table["bootstrap width"] < table["t width"]).mean()
    print(f"the bootstrap interval is narrower than the t interval in {narrower:.0%} of {len(table)} rows")
else:
    print("no recorded quickstart results in this checkout")
print(f"Exercise 06.2 ran in {time.perf_counter() - start:.1f} s ({size})")

# %% [markdown]
# **Why.** The t interval is $\bar d \pm t_{0.975,\,n-1}\, s / \sqrt n$; with $n = 3$ pairs,
# $t_{0.975,2} = 4.30$, so it is wide: it pays honestly for estimating the spread from three
# numbers. The percentile bootstrap resamples the three differences with replacement: it can only
# produce means between the smallest and the largest of them, and it ignores the uncertainty of the
# spread itself, so with so few pairs it is too narrow (it covers the truth less often than 95 %).
# With 3 pairs, trust the t interval (the package's default); the bootstrap earns its keep with
# dozens of pairs and skewed differences.

# %% [markdown]
# ## Exercise 06.3 · θ and the false negatives

# %%
start = time.perf_counter()
hearts = make_cardiac_volumes(n_patients=VOLUMES, sites=("A",), size=64, seed=seed)
depth = hearts.meta["depth"].to_numpy()
sweep = []
for theta in (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0):
    positive = pairing.positional(depth, threshold=theta).numpy()
    sweep.append({"θ": theta, "positives per slice": (positive.sum(axis=1) - 1).mean(),
                  **synthesis.mask_agreement(hearts.masks, positive, len(hearts.classes))})  # fmt: skip
sweep = pd.DataFrame(sweep).set_index("θ")
display(sweep.round(3))
low, high = sweep.iloc[0], sweep.iloc[-1]
display(Markdown(
    f"From θ = {sweep.index[0]} to θ = {sweep.index[-1]}, the positives' mask Dice goes from "
    f"{low['mask Dice of positives']:.3f} to {high['mask Dice of positives']:.3f}, the false-negative share from "
    f"{low['false-negative share']:.1%} to {high['false-negative share']:.1%}, and the positives per slice from "
    f"{low['positives per slice']:.1f} to {high['positives per slice']:.1f}."
))
print(f"Exercise 06.3 ran in {time.perf_counter() - start:.1f} s ({size})")

# %% [markdown]
# **Why.** A larger θ admits slices further away in depth as positives. Expect them to show less of
# the same cut through the heart (the positives' mask agreement falls) and expect fewer look-alike
# slices to be left among the negatives (the false-negative share falls); the table shows how far
# each moves on this phantom. At θ = 1 every slice is a positive of every other one, since two
# depths $d = (i + 1) / N$ differ by at most $1 - 1/N < 1$: the loss has no negatives left (the
# table's negative pairs: 0), and a contrastive loss without negatives is minimised by mapping
# every slice to the same embedding, which carries no information. The useful θ keeps positives
# that share their masks and negatives that do not: the paper's 0.1 (CHD) and 0.35 (ACDC, fewer
# slices per volume) sit between the extremes.
