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
# # Worked answers · 05 LRCLR exercises
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/solutions/05_lrclr.ipynb)
#
# **Paper.** S. A. Rizvi, R. Tang, X. Jiang, X. Ma, X. Hu, *Local Contrastive Learning for Medical
# Image Recognition*, AMIA 2023 (arXiv:2303.14153). Image–text contrast: A. Radford et al., *CLIP*,
# ICML 2021 (arXiv:2103.00020); zero-shot scoring with prompt pairs: E. Tiu et al., *CheXzero*,
# Nat. Biomed. Eng. 2022.
#
# The worked answers to the exercises of [05 · LRCLR](../05_lrclr.ipynb). Each answer runs its
# experiment with the package's own calls, prints the evidence, and explains it; every number in a
# reading is printed by the code above it, none is typed by hand. Under the **smoke** size (the
# default on a CPU, about a minute) the sizes are tiny and the readings say so; run with
# `smoke=False` for the stated sizes (the times the chapter quotes were measured on 2 cores). The
# chapter trains each model for about 14 minutes; no answer here needs that: one trains a CLIP
# model for a tenth of the chapter's steps, the others train nothing.

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
import torch.nn.functional as F
from IPython.display import Markdown, display

from medcl_lite import crossmodal, text
from medcl_lite import reference as recorded
from medcl_lite.data.datasets import split_by_patient
from medcl_lite.data.phantoms import FINDINGS, make_chest_xray_reports
from medcl_lite.image_text import (
    ImageTextConfig,
    ReportDataset,
    build_model,
    collate_reports,
    train_image_text,
)

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill overrides these
smoke = None  # None: smoke run on a CPU, the stated sizes on a GPU; True or False forces it
seed = 0  # data, batch and training seed
device = "auto"  # auto, cpu, cuda or mps (the short CLIP training of exercise 05.3)
out_dir = ""  # run folder; empty: MEDCL_RUNS/solutions-05-SIZE
progress = True  # tqdm progress bars
draws = 20  # random batches (05.1, 05.2) and random region selections per box (05.4)
max_len = 48  # tokens per report or sentence, as in the chapter

# %% [markdown]
# Values derived from the parameters. The cpu size uses the chapter's data (600 phantom patients
# at 64², 30 % held out) and its regions (the 4×4 map of encoder stage -2, k = 8); its one training
# run is CLIP for 10 epochs (130 steps; the chapter trains 1300).

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, "cpu", run_device)  # smoke=None: smoke on a CPU
SIZES = {
    "smoke": dict(image=64, patients=48, batch=16, epochs=1),
    "cpu": dict(image=64, patients=600, batch=32, epochs=10),
}
S = SIZES["smoke" if size == "smoke" else "cpu"]
K_REGIONS, REGION_LEVEL = 8, -2  # the chapter's cpu-size regions: the 4x4 map at 64², 8 kept
run_dir = medcl_lite.run_folder(out_dir, "solutions-05-" + size)
smoke_note = "*Smoke run: tiny sizes, a plumbing check; the numbers below mean little.* " if size == "smoke" else ""
medcl_lite.seed_everything(seed)
print(f"size={size}  device={run_device}  run folder: {run_dir}")

# %% [markdown]
# The chapter's data and split (its section 1), shared by the answers below.

# %%
t_data = time.perf_counter()
dataset = make_chest_xray_reports(n_patients=S["patients"], size=S["image"], seed=seed)
findings = [f for f in FINDINGS if f in dataset.meta]
split = split_by_patient(dataset.meta, {"train": 0.7, "test": 0.3}, seed=seed)
train_rows, test_rows = split["train"], split["test"]
B = min(S["batch"], len(train_rows))
tokenizer = text.Tokenizer.fit(list(dataset.meta.report.iloc[train_rows]))
items = ReportDataset(dataset, train_rows)  # no augmentation: these answers look at one batch as it is
rng = np.random.default_rng(seed)


def random_batch() -> tuple[dict, np.ndarray]:
    """A batch of B training images with their reports, as the chapter's loader builds it, and its rows."""
    picks = rng.choice(len(train_rows), B, replace=False)
    return collate_reports([items[int(i)] for i in picks], tokenizer, max_len), train_rows[picks]


print(f"{len(dataset)} images; train {len(train_rows)}, held out {len(test_rows)}; batches of B = {B} "
      f"(data ready in {time.perf_counter() - t_data:.0f} s)")

# %% [markdown]
# ## Exercise 05.1 · Chance level and floor of the image-report loss
# The global term (`crossmodal.image_text_loss`) is the masked InfoNCE of $B$ images against $B$
# reports and back. Two closed forms:
# - **chance**: constant embeddings make every logit equal, so each direction is $\log B$;
# - **floor**: suppose a model embeds every image exactly like its report, and reports in
#   orthogonal directions, one per *group*. The softmax of row $i$ then spreads evenly over the
#   $m_i$ members of its group and (at τ = 0.07) nearly nothing elsewhere, so row $i$ costs
#   $\log m_i$ and the loss is $\frac{1}{B}\sum_i \log m_i$, with or without the group as positives.
#   Two groupings matter: reports identical word for word (what `identical_rows` and
#   `identical_positive` see), and reports that say the same thing (same findings, sides, zones,
#   projection and number of devices, in any words and order). A model that encodes only what the
#   report *means*, the ideal for zero-shot, sits at the second floor.

# %%
t0 = time.perf_counter()


def meaning(row: int) -> tuple:
    """What a report says, not how: projection, device count, each finding with its side and zone."""
    m = dataset.meta.iloc[row]
    return (m.projection, int(m.devices),
            *[(bool(m[f]), m[f"{f}_side"], m.get(f"{f}_zone", "")) for f in findings])  # fmt: skip


def floor(codes: np.ndarray) -> tuple[float, float]:
    """Closed form mean log m_i, and image_text_loss of one orthogonal direction per group."""
    _, group = np.unique(codes, return_inverse=True)
    same = torch.as_tensor(group[:, None] == group[None, :])
    closed = float(same.sum(1).double().log().mean())
    z = torch.eye(int(group.max()) + 1)[torch.as_tensor(group)]  # image = its report = its group's direction
    return closed, float(crossmodal.image_text_loss(z, z, 0.07, pos_mask=same))


records = []
for _ in range(draws):
    batch, rows = random_batch()
    same_report = crossmodal.identical_rows(batch["report_ids"], batch["report_mask"])
    word_group = same_report.float().argmax(1).numpy()  # the first identical report names the group
    meaning_group = np.unique([str(meaning(int(r))) for r in rows], return_inverse=True)[1]
    same_sentence = crossmodal.identical_rows(batch["sentence_ids"], batch["sentence_mask"])
    other_report = batch["owner"][:, None] != batch["owner"][None, :]
    (word_closed, word_lib), (meaning_closed, meaning_lib) = floor(word_group), floor(meaning_group)
    records.append({
        "identical report pairs": int((same_report.sum() - B) // 2),
        "same-meaning report pairs": int(((meaning_group[:, None] == meaning_group[None, :]).sum() - B) // 2),
        "sentences with a twin in another report": float((same_sentence & other_report).any(1).float().mean()),
        "floor, identical words (closed form)": word_closed, "floor, identical words (library)": word_lib,
        "floor, same meaning (closed form)": meaning_closed, "floor, same meaning (library)": meaning_lib,
    })  # fmt: skip
records = pd.DataFrame(records)
constant = float(crossmodal.image_text_loss(torch.ones(B, 8), torch.ones(B, 8), 0.07))
display(Markdown(f"**Mean over {draws} random training batches of B = {B}**"))
display(records.mean().rename("mean").to_frame().round(3))
common = pd.Series(text.split_sentences(" ".join(dataset.meta.report.iloc[train_rows]))).value_counts()
print(f"{smoke_note}constant embeddings: image_text_loss = {constant:.4f}, log B = {math.log(B):.4f}")
print(f"floors (mean over the batches): identical words {records['floor, identical words (library)'].mean():.3f}, "
      f"same meaning {records['floor, same meaning (library)'].mean():.3f}; chance log B = {math.log(B):.3f}")
print(f"most frequent training sentences: {dict(common.head(3))}")
print(f"Exercise 05.1 ran in {time.perf_counter() - t0:.1f} s ({size})")

# %% [markdown]
# **Explanation.** Constant embeddings give $\log B$ exactly, whatever the mask: equal logits make
# every softmax term $1/B$, and a mean of equal terms over any positive set is the same term. The
# floors show what the mask can and cannot see. The phantom's reports shuffle their sentences and
# pick one of several paraphrases per sentence, so two reports rarely match word for word; read
# the identical-pairs row and the identical-words floor, which stays near 0 when they are rare.
# Reports that *say the same thing* in other words or another order are a different matter (read
# the same-meaning pairs row beside the identical pairs): they are negatives of each other in
# every batch, whatever `identical_positive` says. A model that embedded only the meaning of a report could
# not go below the same-meaning floor. Read a training curve against both numbers: a loss below the
# same-meaning floor means the model tells apart reports that mean the same, i.e. it has learned
# wording or sentence order, which zero-shot prompts cannot use. Sentences, by contrast, repeat
# across reports ("No pneumothorax." is in every report, and the negations have few paraphrases):
# the printed share of sentences with a twin in another report is what `identical_positive` acts
# on in the region term.

# %% [markdown]
# ## Exercise 05.2 · Identical reports as positives: what the mask changes
# One batch through an untrained LRCLR model (the chapter's cpu regions), its loss computed with
# `identical_positive=True` and `False` from the *same* forward pass: once in eval mode (no dropout)
# and once in train mode (the text encoder's dropout on, as during training).

# %%
t0 = time.perf_counter()
batch, _ = random_batch()
cfg = ImageTextConfig(regions=K_REGIONS, region_level=REGION_LEVEL, max_len=max_len, seed=seed)
medcl_lite.seed_everything(seed)
model = build_model(cfg, tokenizer.vocab_size)
inputs = [batch[k] for k in ("images", "sentence_ids", "sentence_mask", "owner", "report_ids", "report_mask")]
losses_by_mask = []
for mode in ("eval", "train"):
    model.train(mode == "train")
    with torch.no_grad():
        out = model(*inputs)
    for flag in (True, False):
        _, parts = model.loss(out, cfg.region_weight, cfg.temperature, identical_positive=flag)
        losses_by_mask.append({"mode": mode, "identical_positive": flag, **parts})
    if mode == "eval":
        grid = tuple(out["grid"])  # the region map, used again in exercise 05.4
losses_by_mask = pd.DataFrame(losses_by_mask).set_index(["mode", "identical_positive"])
display(losses_by_mask.round(5))
gap = (losses_by_mask.xs(True, level=1) - losses_by_mask.xs(False, level=1)).abs().max(axis=1)
n_sentence_pairs = int((out["same_sentence"].sum() - len(out["same_sentence"])) // 2)
print(f"{smoke_note}{len(out['same_sentence'])} sentences, {n_sentence_pairs} identical sentence pairs, "
      f"{int((out['same_report'].sum() - B) // 2)} identical report pairs in this batch.")
print(f"largest difference between the two masks: eval mode {gap['eval']:.1e}, train mode {gap['train']:.1e}")
print(f"Exercise 05.2 ran in {time.perf_counter() - t0:.1f} s ({size})")

# %% [markdown]
# **Explanation.** In eval mode the two masks give the same loss up to float rounding, and this is
# no accident of the batch. Identical texts go through the same deterministic encoder, so they get
# *identical* embeddings. Take a group $G$ of identical texts with embedding $t$ and keys
# $k_1, \dots, k_{|G|}$ (their images, or their matched regions). Without the mask, the group's
# queries contribute $-\sum_{j \in G} \log p(k_j \mid t)$, one own key each; with it, each of the
# $|G|$ queries averages $-\log p(k_j \mid t)$ over all $|G|$ keys, and their sum is the same
# number. The denominators are identical too, so the two losses, and their gradients, are equal
# (the other direction, image → report, is symmetric: the keys $t$ are equal, so each image gives
# every report of the group the same softmax weight either way). The only difference in training
# comes from dropout, which gives identical texts slightly different embeddings: the train-mode
# row. So `identical_positive` does not remove a false-negative force for verbatim duplicates; the
# summed InfoNCE already treats them as one text. The false negatives that do matter are the
# same-meaning pairs of exercise 05.1, in different words, which no token-identity mask can find
# (MedCLIP's semantic matching, in the chapter's further reading, targets them).

# %% [markdown]
# ## Exercise 05.3 · A shortcut that passes for a finding: the projection
# Cardiomegaly is drawn only on PA films (an AP film cannot show it; AP reports say "Heart size
# cannot be assessed on an AP film."). First a score that knows **only the projection**, $s = [\text{PA}]$,
# scored as a cardiomegaly detector on the held-out films; with ties counted half, its AUC has the
# closed form $\big(n_{\text{AP}} + \tfrac12 n_{\text{PA}}^{-}\big) / n^{-}$ over all films
# ($n^{-}$ films without cardiomegaly, $n_{\text{PA}}^{-}$ of them PA) and $\tfrac12$ on PA films.
# Then a CLIP model trained for a tenth of the chapter's steps, scored zero-shot on both sets,
# and its cardiomegaly score used to tell PA from AP.

# %%
t0 = time.perf_counter()


def auc_or_nan(scores, labels) -> float:
    """crossmodal.finding_auc, NaN when one class is missing (tiny smoke sets)."""
    labels = np.asarray(labels, dtype=bool)
    return crossmodal.finding_auc(scores, labels) if 0 < labels.sum() < len(labels) else float("nan")


meta = dataset.meta.iloc[test_rows]
is_pa, cardio = (meta.projection == "PA").to_numpy(), meta.cardiomegaly.to_numpy(dtype=bool)
n_neg = int((~cardio).sum())
closed = ((~is_pa & ~cardio).sum() + 0.5 * (is_pa & ~cardio).sum()) / max(n_neg, 1)
print(f"{smoke_note}held-out films: {int(is_pa.sum())} PA, {int((~is_pa).sum())} AP; cardiomegaly on "
      f"{int((cardio & is_pa).sum())} PA and {int((cardio & ~is_pa).sum())} AP films")
print(f"projection-only score: AUC {auc_or_nan(is_pa.astype(float), cardio):.3f} on all films "
      f"(closed form {closed:.3f}), {auc_or_nan(is_pa[is_pa].astype(float), cardio[is_pa]):.3f} on PA films")
ap_sentence = "Heart size cannot be assessed on an AP film."
train_meta = dataset.meta.iloc[train_rows]
says = train_meta.report.str.contains(ap_sentence, regex=False)
print(f"training reports with {ap_sentence!r}: {int(says[train_meta.projection == 'AP'].sum())} of "
      f"{int((train_meta.projection == 'AP').sum())} AP, {int(says[train_meta.projection == 'PA'].sum())} of "
      f"{int((train_meta.projection == 'PA').sum())} PA")

# %%
clip_cfg = ImageTextConfig(use_regions=False, regions=K_REGIONS, region_level=REGION_LEVEL, max_len=max_len,
                           epochs=S["epochs"], batch_size=B, lr=1e-3, seed=seed, device=device, progress=progress,
                           out_dir=str(run_dir / "clip_short"), resume=True)  # fmt: skip
clip = train_image_text(clip_cfg, dataset, train_rows)
h = clip.history
where = next(clip.model.parameters()).device
positives, negatives = text.prompts("cardiomegaly")
prompt_pos = tuple(t.to(where) for t in clip.tokenizer.encode_batch(positives, max_len))
prompt_neg = tuple(t.to(where) for t in clip.tokenizer.encode_batch(negatives, max_len))
images = torch.from_numpy(np.ascontiguousarray(dataset.images[test_rows], dtype=np.float32)).unsqueeze(1).to(where)
score = crossmodal.zero_shot_scores(clip.model, images, prompt_pos, prompt_neg).cpu().numpy()
shortcut = pd.Series({
    "cardiomegaly, all films": auc_or_nan(score, cardio),
    "cardiomegaly, PA films only": auc_or_nan(score[is_pa], cardio[is_pa]),
    "PA vs AP (the projection)": auc_or_nan(score, is_pa),
}, name="AUC of the zero-shot cardiomegaly score").to_frame()  # fmt: skip
display(shortcut.round(3))
print(f"{smoke_note}CLIP, {len(h)} steps: loss {h.loss.iloc[:3].mean():.3f} -> {h.loss.iloc[-3:].mean():.3f} "
      f"(chance log B = {math.log(B):.3f}; same-meaning floor of 05.1 = {records['floor, same meaning (library)'].mean():.3f})")
reference_auc = recorded.load_table("05_lrclr", "results.csv")
if reference_auc is not None:
    ref = reference_auc[(reference_auc.method == "CLIP") & (reference_auc.finding == "cardiomegaly")].auc
    print(f"the chapter's recorded CLIP (1300 steps, PA films): cardiomegaly AUC {ref.mean():.3f} over {len(ref)} seeds")
stronger = shortcut.iloc[2, 0] > shortcut.iloc[1, 0]
print(f"{smoke_note}The short CLIP model's cardiomegaly score separates PA from AP with AUC {shortcut.iloc[2, 0]:.3f} "
      f"and cardiomegaly on PA films with {shortcut.iloc[1, 0]:.3f}: the projection is "
      f"{'the stronger' if stronger else 'not the stronger'} signal in it (one model, one seed).")
print(f"Exercise 05.3 ran in {time.perf_counter() - t0:.1f} s ({size})")

# %% [markdown]
# **Explanation.** The projection alone is a cardiomegaly detector on mixed films: every positive
# is PA, so every AP film ranks below every positive, and only the PA normals tie with them (the
# closed form and the library's AUC agree). On PA films the same score is constant and its AUC is
# one half. The reports make this shortcut easy to learn: the AP sentence appears in the AP
# reports and never in PA ones (the printed counts), and projection changes the whole film, while
# an enlarged heart changes the width of one structure. A briefly trained CLIP model is where to
# look for the shortcut: read whether its cardiomegaly score separates PA from AP better than it separates
# cardiomegaly on PA films, and compare its all-films AUC with the projection-only score. An
# all-films AUC near the projection-only value, with a PA-only AUC near one half, is the
# projection, not the heart. This is why the chapter scores cardiomegaly on PA films only
# (`eval_rows`), and why it trains until the loss is well below chance; compare the printed loss
# with log B and with the same-meaning floor of 05.1. One seed and one model: a look at a
# mechanism, not a comparison of methods (the chapter pairs seeds for that).

# %% [markdown]
# ## Exercise 05.4 · The pointing game's chance level and a fixed-cell baseline
# The pointing game counts a hit when the most attended kept cell overlaps the finding's box; its
# chance level is the share of *kept* cells that overlap it (`crossmodal.pointing_game`). Three
# baselines on the held-out boxes, with no model at all, on the chapter's region grid:
# - uniform attention over **all** $N$ cells: chance $= o / N$ for a box that overlaps $o$ cells;
# - a **random selector** keeping $k$ of the $N$ cells, attention uniform over them: the hit goes
#   to the first kept cell, so the expected hit rate is $o/N$ for every $k$, while the chance that
#   the selector kept any box cell is $1 - \binom{N-o}{k} / \binom{N}{k}$;
# - a **fixed cell**: always point at the one cell that overlapped the most boxes of that finding
#   in the *training* images (where findings tend to sit).

# %%
t0 = time.perf_counter()
h_cells, w_cells = grid
n_cells = h_cells * w_cells
everywhere = torch.arange(n_cells)


def overlap_row(box) -> np.ndarray:
    """[n_cells] bool: which cells the box overlaps, from the library's game with one-hot attention."""
    return np.array([crossmodal.pointing_game(F.one_hot(torch.tensor(c), n_cells).float(), everywhere, grid,
                                              dataset.image_size, box)["hit"] for c in range(n_cells)])  # fmt: skip


def boxes(rows: np.ndarray, finding: str) -> list:
    column = dataset.meta[f"{finding}_box"].iloc[rows]
    return [tuple(b) for b in column if b is not None and not (isinstance(b, float) and np.isnan(b))]


game, k_values = [], [k for k in (1, 2, 4, 8, 16) if k <= n_cells]
for finding in findings:
    test_boxes, train_boxes = boxes(test_rows, finding), boxes(train_rows, finding)
    if not test_boxes or not train_boxes:
        continue
    test_overlap = np.stack([overlap_row(b) for b in test_boxes])  # [boxes, cells]
    best_cell = int(np.stack([overlap_row(b) for b in train_boxes]).mean(0).argmax())
    o = test_overlap.sum(1)
    row = {"finding": finding, "boxes": len(test_boxes), "cells per box": o.mean(),
           "uniform over all cells": (o / n_cells).mean(), "fixed cell": test_overlap[:, best_cell].mean()}  # fmt: skip
    for k in k_values:
        hits, kept = [], []
        for b in test_boxes:
            for _ in range(draws):
                keep = torch.randperm(n_cells)[:k]
                result = crossmodal.pointing_game(torch.ones(k), keep, grid, dataset.image_size, b)
                hits.append(result["hit"])
                kept.append(result["kept"])
        row[f"random k={k}: hit"] = np.mean(hits)
        row[f"random k={k}: kept"] = np.mean(kept)
        row[f"k={k}: kept, closed form"] = np.mean([1 - math.comb(n_cells - int(x), k) / math.comb(n_cells, k) for x in o])
    game.append(row)
game = pd.DataFrame(game, columns=["finding", "boxes", "cells per box", "uniform over all cells", "fixed cell"]
                    if not game else None).set_index("finding")  # fmt: skip
display(Markdown(f"**Pointing-game baselines on the {h_cells}×{w_cells} region grid ({n_cells} cells)**"))
display(game.T.round(3))
for finding, r in game.iterrows():
    print(f"{smoke_note}{finding}: uniform chance {r['uniform over all cells']:.2f}, "
          f"random selector (k=8) {r.get('random k=8: hit', float('nan')):.2f}, fixed cell {r['fixed cell']:.2f}")
recorded_pointing = recorded.load_table("05_lrclr", "pointing.csv")
if recorded_pointing is not None:
    print("the chapter's recorded LRCLR pointing game (kept cells only), per finding:")
    rec = recorded_pointing.groupby("finding", sort=False)[["hit", "chance"]].mean()
    display(rec.round(3))
    for finding in rec.index.intersection(game.index):
        print(f"{smoke_note}{finding}: recorded hit rate {rec.loc[finding, 'hit']:.2f}, its kept-cell chance "
              f"{rec.loc[finding, 'chance']:.2f}, the fixed cell here {game.loc[finding, 'fixed cell']:.2f}")
print(f"Exercise 05.4 ran in {time.perf_counter() - t0:.1f} s ({size})")

# %% [markdown]
# **Explanation.** On a coarse grid a box overlaps several cells, so the uniform chance level is
# far from zero, and it differs between findings with the size of their boxes (the cells-per-box
# row): a heart spans more cells than a small nodule. A random selector does not change the expected hit rate (every kept cell is a box cell
# with the same probability $o/N$), only how often the box is kept at all: compare the simulated
# "kept" rates with the closed form, and the random-selector hits with the uniform chance. The fixed cell is the honest bar for a finding that always
# sits in the same place: where it scores far above uniform chance, "attention beats chance" says
# little, since a model that ignored the image and always pointed at, say, the heart's usual cell
# would beat it too. Compare the recorded model's hit rate per finding with both baselines
# (keeping in mind that the model can only point at the cells its selector kept, while the fixed
# cell is always available here). A hit rate above the fixed cell is evidence that attention
# follows *this* image's finding; between chance and the fixed cell, it may have learned only where
# findings usually are.
