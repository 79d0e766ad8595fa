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
# # 05 · LRCLR: chest X-ray regions contrasted with report sentences, zero-shot findings
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/05_lrclr.ipynb)
#
# **Paper.** S. A. Rizvi, R. Tang, X. Jiang, X. Ma, X. Hu, *Local Contrastive Learning for Medical
# Image Recognition*, AMIA 2023 (arXiv:2303.14153). Image–text contrast: A. Radford et al., *CLIP*,
# ICML 2021; zero-shot scoring with prompt pairs: E. Tiu et al., *CheXzero*, Nat. Biomed. Eng.
# 2022. Details: [docs/methods.md, LRCLR](../docs/methods.md#lrclr--image-regions-and-report-sentences).
#
# > **Which pairs are positive?** CLIP: an image and **its own report** (every other report of the
# > batch is a negative). LRCLR adds a local answer: a report **sentence** and the image **region**
# > it attends to most, after a layer has selected the image's significant regions and a
# > cross-attention block has let them read the sentences.
#
# No labels are used for training: the reports are the supervision. The model is then asked,
# zero-shot, whether an unseen image shows a finding, by comparing it with a positive and a
# negative prompt ("Left pleural effusion." / "No pleural effusion.").
#
# What you will do, on built-in phantom chest X-rays with findings and templated reports:
# 1. read reports, split them into sentences, tokenize them with a vocabulary built here (no download);
# 2. see the image side: every cell of the encoder's last map is a region; a learned score keeps
#    the top k; cross-attention ties them to sentences;
# 3. train the CLIP baseline and LRCLR with the same data, seeds and schedule;
# 4. evaluate zero-shot on held-out patients: AUC per finding with seed spreads, ROC curves;
# 5. look at heat maps: which regions a sentence attends to, against where the finding is.

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

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from medcl_lite import crossmodal, text, viz
from medcl_lite import reference as recorded
from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.config import from_params, pick
from medcl_lite.data.datasets import split_by_patient
from medcl_lite.data.phantoms import FINDINGS, make_chest_xray_reports
from medcl_lite.data.prepared import open_prepared
from medcl_lite.finding_classifier import finding_auc_table, train_finding_classifier
from medcl_lite.image_text import (
    ImageTextConfig,
    ReportDataset,
    build_model,
    collate_reports,
    train_image_text,
    zero_shot_table,
)
from medcl_lite.paired import interval, paired_comparison, verdict_text

env = medcl_lite.print_env()

# %% tags=["parameters"]
# Parameters: papermill overrides these (medcl reproduce 05_lrclr -f notebooks/params/lrclr/...)
smoke = None  # None: smoke run on a CPU, teaching run on a GPU; True or False forces it
preset = "auto"  # size when not smoke: cpu (a 2-core CPU), gpu, or auto
seeds = []  # training seeds (one model per seed and method), empty: the size's
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/lrclr-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
data = "phantom"  # "phantom" (built in) or a prepared image-report folder (e.g. iu-xray-256)
image_size = 0  # phantom image side, 0: the size's
n_patients = 0  # phantom patients (one image each), 0: the size's
test_fraction = 0.3  # held-out patients for zero-shot evaluation
methods = []  # empty: ["CLIP", "LRCLR"]
reference = True  # also train the same encoder WITH labels: what the images show at this size (not zero-shot)
encoder = "resnet18"  # smp encoder of the image side
# LRCLR (unpublished in the paper: our choices, section 2 says why)
regions = 8  # k regions kept by the selection layer
region_level = 0  # encoder stage whose cells are regions: -1 the last map (as LRCLR), -2 twice as fine; 0: the size's
report_embedding = "sentences"  # a report is the mean of its sentence embeddings, or "tokens" (whole report pooled)
region_weight = 1.0  # weight of the region-sentence term
dim = 128  # joint embedding size
temperature = 0.07  # τ of both InfoNCE terms (CLIP's initial value, fixed)
identical_positive = True  # identical templated reports (and sentences) are positives of each other
text_dim = 128  # text encoder width
text_layers = 2  # text encoder depth
max_len = 48  # tokens per report or sentence
epochs = 0  # 0: the size's value
batch_size = 0  # 0: the size's value
lr = 0.0  # AdamW, 0: the size's value
augment = "light"  # "none" | "light" (small affine and intensity; never a flip: sides are findings)

# %% [markdown]
# Values derived from the parameters. Three sizes: **smoke** (a minute on a CPU: checks that
# everything runs; numbers mean little), **cpu** (a 2-core CPU: 64² images, 100 epochs = 1300
# steps per model, 3 seeds; a step takes about 0.45 s on 2 cores, so the six contrastive models alone
# take about an hour, the supervised reference more) and **gpu** (a Colab GPU: 256² images, more
# patients). At 64² the last encoder map is 2×2, so the cpu size takes its regions from the stage
# before (4×4, `region_level=-2`). Why 64² and 1300 steps rather than 128² and 260 steps:
# section 6.

# %%
run_device = medcl_lite.get_device(device)
size = medcl_lite.run_size(smoke, preset, run_device)  # smoke=None: smoke on a CPU
SIZES = {
    "smoke": dict(image=64, patients=48, seeds=[0], epochs=1, batch=16, lr=1e-3, k=2, level=-1),
    "cpu": dict(image=64, patients=600, seeds=[0, 1, 2], epochs=100, batch=32, lr=1e-3, k=regions, level=-2),
    "gpu": dict(image=256, patients=2000, seeds=[0, 1, 2], epochs=60, batch=64, lr=1e-3, k=regions, level=-1),
}
if size not in SIZES:
    raise ValueError(f"preset={preset!r}: choose one of {sorted(SIZES)} or 'auto'")
S = SIZES[size]
region_level = region_level or S["level"]  # (pick() would also replace an explicit -1)
seeds = list(pick(seeds, S["seeds"]))
methods = list(pick(methods, ["CLIP", "LRCLR"]))
if sorted(set(methods) - {"CLIP", "LRCLR"}):
    raise ValueError(f"unknown methods {sorted(set(methods) - {'CLIP', 'LRCLR'})}; choose from CLIP, LRCLR")
run_dir = medcl_lite.run_folder(out_dir, f"lrclr-{size}")  # out_dir, else $MEDCL_RUNS/lrclr-{size}
medcl_lite.seed_everything(seeds[0])
print(f"size={size}  device={run_device}  methods={methods}  seeds={seeds}  k={S['k']}  "
      f"region_level={region_level}  run folder: {run_dir}")

# %% [markdown]
# ## 1 · The data
# Phantom chest X-rays (one study per patient; three sites with their own exposure and noise; AP
# films at one site) with up to four findings: **opacity** in a named lung zone, **nodule**,
# **cardiomegaly** (an enlarged heart, only assessable on PA films) and **effusion** at a
# costophrenic angle. The report names each finding and its place with one of several
# paraphrases, denies some absent findings ("No pleural effusion."), and shuffles its sentences.
# Labels exist only to evaluate: training sees images and reports.

# %%
if data == "phantom":
    dataset = make_chest_xray_reports(n_patients=pick(n_patients, S["patients"]), size=pick(image_size, S["image"]),
                                      seed=seeds[0])
else:
    dataset = open_prepared(data)
findings = [f for f in FINDINGS if f in dataset.meta]
split = split_by_patient(dataset.meta, {"train": 1 - test_fraction, "test": test_fraction}, seed=seeds[0])
train_rows, test_rows = split["train"], split["test"]
print(f"{dataset.name}: {len(dataset)} images of {dataset.meta.patient_id.nunique()} patients; "
      f"train {len(train_rows)}, held-out test {len(test_rows)}")
display(dataset.meta[findings].mean().rename("fraction of images").to_frame().T.round(3))
shown = [int(np.flatnonzero(dataset.meta[f].to_numpy())[0]) for f in findings if dataset.meta[f].any()]
fig = viz.show_images(dataset.images[shown], titles=[f for f in findings if dataset.meta[f].any()], ncols=4)
viz.save_figure(fig, run_dir / "figures" / "findings.png")
for row in shown:
    print(f"- {dataset.meta.report.iloc[row]}")

# %% [markdown]
# ## 2 · Text side: sentences, tokens, a small encoder trained from scratch
# Reports are split into sentences (`text.split_sentences`), words become ids with a vocabulary
# built from the training reports and the prompts (`text.Tokenizer`; no hub download), and a
# 2-layer transformer (`text.TextEncoder`) trained from scratch with the image side turns tokens
# into vectors (mean over real tokens). LRCLR publishes no text-encoder size; ours is small so a
# CPU trains it in minutes. A **report** is the mean of its sentences' vectors
# (`report_embedding="sentences"`, our choice): every sentence, "No pleural effusion." as much as
# "The heart is enlarged.", weighs the same, and a one-sentence prompt lives in the same space.
# The alternative, `"tokens"`, pools the whole report's ~30 tokens, where a negation is one word
# among many; section 6 shows what it measured.

# %%
report = dataset.meta.report.iloc[shown[0]]
sentences = text.split_sentences(report)
tokenizer = text.Tokenizer.fit(list(dataset.meta.report.iloc[train_rows]))
ids = tokenizer.encode(sentences[0])
print(f"report: {report}\nsentences: {sentences}\nfirst sentence -> ids {ids}\n  -> back: {tokenizer.decode(ids)!r}")
print(f"vocabulary: {tokenizer.vocab_size} tokens (4 special)")
for finding in findings:
    positives, negatives = text.prompts(finding)
    print(f"zero-shot prompts for {finding}: + {positives}  - {negatives}")

# %% [markdown]
# ## 3 · Image side: regions, their selection, cross-attention
# Every cell of the encoder's last feature map is a region (`crossmodal.region_features`); a
# linear score per region keeps the top k (`RegionSelector`; the kept features are multiplied by
# the sigmoid of their score, so the score learns through the loss); the kept regions attend to
# the report's sentences (`CrossModalAttention`). The shapes on one batch:

# %%
cfg_probe = from_params(ImageTextConfig, regions=S["k"], region_level=region_level, max_len=max_len, dim=dim,
                        text_dim=text_dim, text_layers=text_layers, encoder=encoder)
probe_tok = text.Tokenizer.fit(list(dataset.meta.report))
probe = build_model(cfg_probe, probe_tok.vocab_size)
batch = collate_reports([ReportDataset(dataset, train_rows)[i] for i in range(4)], probe_tok, max_len)
with torch.no_grad():
    out = probe(batch["images"], batch["sentence_ids"], batch["sentence_mask"], batch["owner"],
                batch["report_ids"], batch["report_mask"])
display(pd.Series({k: str(tuple(v.shape)) for k, v in out.items() if torch.is_tensor(v)}, name="shape").to_frame())
print(f"region map {out['grid'][0]}x{out['grid'][1]} = {out['scores'].shape[1]} regions per image, {S['k']} kept")

# %% [markdown]
# **The losses**, both through the package's one masked InfoNCE: image ↔ report (CLIP's
# symmetric loss; identical templated reports are positives of each other, or the loss would push
# apart two images that say the same thing), and sentence ↔ region (the positive region of a
# sentence is the kept region of its own image it attends to most; the other kept regions of the
# batch are negatives):

# %%
print(inspect.getsource(crossmodal.region_sentence_loss).split('"""')[-1])

# %% [markdown]
# ## 4 · Training: CLIP baseline vs LRCLR
# Same images, reports, tokenizer, schedule and seeds; LRCLR adds the region path and its loss.
# Unpublished choices (ours): k regions, the region weight, τ, the text encoder's size, the
# schedule; `regions`, `region_weight`, `temperature`, ... in the parameters cell.

# %%
results = {}
for seed in seeds:
    for method in methods:
        cfg = from_params(ImageTextConfig, {
            "use_regions": method == "LRCLR", "encoder": encoder, "dim": dim, "regions": S["k"],
            "region_level": region_level, "report_embedding": report_embedding,
            "region_weight": region_weight, "temperature": temperature, "identical_positive": identical_positive,
            "text_dim": text_dim, "text_layers": text_layers, "max_len": max_len, "augment": augment,
            "epochs": pick(epochs, S["epochs"]), "batch_size": pick(batch_size, S["batch"]), "lr": pick(lr, S["lr"]),
            "seed": seed, "device": device, "progress": progress,
            "out_dir": str(run_dir / f"{method.lower()}_s{seed}"),
        })
        results[(method, seed)] = train_image_text(cfg, dataset, train_rows)
        h = results[(method, seed)].history
        print(f"{method:5s} seed {seed}: {len(h)} steps in {results[(method, seed)].seconds:.0f} s, "
              f"loss {h.loss.iloc[:3].mean():.3f} -> {h.loss.iloc[-3:].mean():.3f}")
fig = viz.plot_curves({f"{m} (seed {s})": r.history for (m, s), r in results.items()}, title="training loss")
viz.save_figure(fig, run_dir / "figures" / "loss.png")

# %% [markdown]
# ## 5 · Zero-shot evaluation on held-out patients
# Score = cos(image, mean positive prompt) − cos(image, mean negative prompt), from the global
# image embedding (the region path needs the report, which zero-shot has not; LRCLR changes the
# shared encoder and text space it uses). AUC per finding, mean ± std over seeds; cardiomegaly
# only on PA films (an AP film cannot show it).
#
# **The supervised reference** (`reference=True`, not part of LRCLR): the same image encoder with
# a linear layer, trained on the same images, schedule and seed but *with the finding labels*
# the contrastive models never see. Zero-shot cannot read from an image what the encoder cannot
# see at this size and budget; this column shows how much there is to see.

# %%
def eval_rows(finding: str) -> np.ndarray:
    if finding == "cardiomegaly" and "projection" in dataset.meta:
        return test_rows[dataset.meta.projection.iloc[test_rows].to_numpy() == "PA"]
    return test_rows


rows, all_scores = [], {}
for (method, seed), result in results.items():
    for finding in findings:
        table, scores = zero_shot_table(result, dataset, eval_rows(finding), [finding])
        rows.append(table.assign(method=method, seed=seed))
        all_scores[(method, seed, finding)] = scores[finding]
REFERENCE = "supervised (labels)"
if reference:  # the same encoder, schedule and seed, trained with the labels: a reference, not zero-shot
    for seed in seeds:  # one per seed, with the first method's schedule
        classifier = train_finding_classifier(results[(methods[0], seed)].config, dataset, train_rows, findings)
        rows.append(finding_auc_table(classifier, dataset, eval_rows).assign(method=REFERENCE, seed=seed))
auc = pd.concat(rows, ignore_index=True)
atomic_write_text(run_dir / "results.csv", auc.to_csv(index=False))


def summarise_auc(auc: pd.DataFrame) -> pd.DataFrame:
    """AUC per finding (rows) and method (columns), "mean ± std" over seeds, with the positives."""
    columns = list(dict.fromkeys(auc.method))
    summary = auc.groupby(["finding", "method"], sort=False).auc.agg(["mean", "std"]).unstack("method")
    table = summary.apply(lambda r: {m: f"{r['mean'][m]:.3f}" + ("" if np.isnan(r["std"][m]) else f" ± {r['std'][m]:.3f}")
                                     for m in columns}, axis=1, result_type="expand")  # fmt: skip
    table.insert(0, "positives / images", [f"{int(auc[auc.finding == f].positives.iloc[0])} / "
                                           f"{int(auc[auc.finding == f].images.iloc[0])}" for f in summary.index])  # fmt: skip
    return table.rename_axis("zero-shot AUC")


summary_text = summarise_auc(auc)
display(summary_text)
for finding in findings:
    labels = dataset.meta[finding].to_numpy(dtype=bool)[eval_rows(finding)]
    if labels.any() and not labels.all():
        fig = viz.plot_roc({m: all_scores[(m, seeds[0], finding)] for m in methods}, labels,
                           title=f"{finding} (seed {seeds[0]})")
        viz.save_figure(fig, run_dir / "figures" / f"roc_{finding}.png")

# %% [markdown]
# ## 6 · Reading the result
# CLIP and LRCLR of the same seed see the same images, reports, tokenizer and schedule, so compare
# them in **pairs**: for seed $i$, $d_i = \text{AUC}(\text{LRCLR}, i) - \text{AUC}(\text{CLIP}, i)$ per
# finding, reported as the mean $\bar d$ with its 95 % interval $\bar d \pm t_{0.975,\,n-1}\, s_d/\sqrt{n}$
# (`medcl_lite.paired`): "better" or "worse" only when the interval excludes 0, "no evidence" when
# it covers 0, "too few pairs" with one seed. Four findings are four comparisons: one of them
# crossing its interval by chance is not unlikely. The second table asks whether each model finds a
# finding at all: its AUC minus chance (0.5), with the same kind of interval over seeds.

# %%
def lrclr_vs_clip(auc: pd.DataFrame) -> pd.DataFrame | None:
    """LRCLR minus CLIP per finding, paired on the seed (None without both methods)."""
    if not {"CLIP", "LRCLR"} <= set(auc.method):
        return None
    pairs = auc[auc.method.isin(["CLIP", "LRCLR"])].rename(columns={"method": "init"})
    return paired_comparison(pairs, groups=["finding"], value="auc", baseline="CLIP", pair_on=["seed"])


def above_chance(auc: pd.DataFrame) -> pd.DataFrame:
    """Each method's AUC minus chance (0.5) per finding, with its 95 % interval over seeds."""
    chance = []
    for (finding, method), block in auc.groupby(["finding", "method"], sort=False):
        mean, low, high = interval(block.auc - 0.5)
        chance.append({"finding": finding, "method": method, "seeds": len(block), "AUC - 0.5": mean,
                       "ci_low": low, "ci_high": high,
                       "above chance": "too few seeds" if len(block) < 2 else "yes" if low > 0 else
                       "no evidence" if high >= 0 else "below"})  # fmt: skip
    return pd.DataFrame(chance)


comparison = lrclr_vs_clip(auc)
if comparison is not None:
    display(comparison.round(3))
    fig = viz.plot_paired(comparison, ["finding", "init"], baseline="CLIP", unit="AUC",
                          title="LRCLR minus CLIP per finding, paired on the seed")  # fmt: skip
    viz.save_figure(fig, run_dir / "figures" / "paired.png")
    reading = verdict_text(comparison, ["finding"], baseline="CLIP", unit="AUC")
else:
    reading = "(one method only: nothing to compare)"
display(Markdown(reading))
display(above_chance(auc).round(3))

# %% [markdown]
# **The reference run of the cpu size**, recorded with `medcl reproduce 05_lrclr -f
# notebooks/params/lrclr/cpu.yaml --record` into `notebooks/reference/05_lrclr/` (600 patients at
# 64², 100 epochs = 1300 steps per model, 3 seeds): the same tables as above, computed from its
# `results.csv`, when this checkout has it (the cell says so when it has not).

# %%
print(recorded.caption("05_lrclr"))  # medcl_lite.reference, imported as `recorded`: `reference` is a parameter here
recorded_auc = recorded.load_table("05_lrclr", "results.csv")
if recorded_auc is not None:
    display(summarise_auc(recorded_auc))
    recorded_comparison = lrclr_vs_clip(recorded_auc)
    if recorded_comparison is not None:
        display(Markdown(verdict_text(recorded_comparison, ["finding"], baseline="CLIP", unit="AUC")))
    display(above_chance(recorded_auc).round(3))

# %% [markdown]
# **How to read it.** The supervised column is what the encoder *can* see at this size and budget:
# where it is near 1, the finding is plain in the images; where it is itself low (a small nodule at
# 64²), no zero-shot model can be expected to find it. A zero-shot AUC near the supervised one means
# the reports taught the encoder what the labels would have; an AUC whose interval covers 0.5 means
# the model learned nothing about that finding from the reports. LRCLR against CLIP: read the
# paired lines, not the gap between two means. The paper's gains come from MIMIC-scale data and a
# pretrained model, which a CPU run on a phantom does not have; section 7 asks whether the region
# path learned *where* findings are.
#
# **How this setting was found** (measured on the same phantom, 420 / 180 patients):
#
# | run | report embedding | CLIP cardiomegaly (PA) | CLIP opacity | CLIP effusion |
# |---|---|---|---|---|
# | 128², 260 steps, lr 3e-4, 3 seeds | tokens (whole report pooled) | .518 ± .053 | .498 ± .016 | .497 ± .038 |
# | 128², 260 steps, lr 3e-4, 3 seeds | sentences | .470 ± .035 | .474 ± .039 | .460 ± .027 |
# | 64², 1300 steps, lr 1e-3, seed 0 | tokens | .509 | .454 | .532 |
# | 64², 1300 steps, lr 1e-3, seed 0 | sentences | .911 | .631 | .581 |
#
# Two things were needed together:
# - **Enough steps.** At 128² for 260 steps both models stayed at chance (LRCLR too: .459-.544),
#   although the same encoder trained with labels for those 260 steps reached cardiomegaly .986.
#   The contrastive loss barely moved (3.53 → 2.78, log 32 = 3.47), and the models told films
#   apart by projection (AP or PA), not by findings: cardiomegaly scored over *all* held-out films
#   gave .69, over PA films alone .47. A 64² step costs about a quarter of a 128² one, so 1300
#   steps take 51 minutes where 260 steps at 128² took 26.
# - **A report as the mean of its sentences.** With 1300 steps, reports pooled over their ~30
#   tokens still scored chance. The prompts did not even sort held-out *reports* by finding (text
#   against text: cardiomegaly .50), because "No pleural effusion." and "Pleural effusion." differ
#   by one word among thirty. Embedded sentence by sentence, every finding sentence counts as much
#   as the others, and the prompts, which are sentences, live in the same space (text against
#   text: cardiomegaly .73).
#
# The first two rows are 3-seed runs of the earlier cpu size; the last two are single probes
# (`report_embedding` is a notebook parameter, so any row can be rerun).

# %% [markdown]
# ## 7 · Which regions does a sentence attend to?
# For held-out images with a finding, LRCLR (seed 0) reads the image with its report: the heat map
# is the attention of the finding's sentence over the kept regions; the green box is where the
# phantom drew the finding. The pointing game counts how often the most attended region lies in
# the box (against the box's share of the image: what a random region would score).

# %%
if "LRCLR" in methods and f"{findings[0]}_box" in dataset.meta:
    model = results[("LRCLR", seeds[0])]
    cases = [(int(r), f) for f in findings for r in test_rows
             if dataset.meta[f].iloc[r] and dataset.meta[f"{f}_sentence"].iloc[r]][:200]
    hits, chance, pictures = [], [], []
    model.model.eval()
    for row, finding in cases:
        item = {"image": torch.from_numpy(dataset.images[row])[None], "report": dataset.meta.report.iloc[row]}
        batch = collate_reports([item], model.tokenizer, max_len)
        batch = {k: v.to(next(model.model.parameters()).device) for k, v in batch.items()}
        with torch.no_grad():
            out = model.model(batch["images"], batch["sentence_ids"], batch["sentence_mask"], batch["owner"],
                              batch["report_ids"], batch["report_mask"])
        sentences = text.split_sentences(dataset.meta.report.iloc[row])
        s = sentences.index(dataset.meta[f"{finding}_sentence"].iloc[row])
        heat = crossmodal.sentence_heatmap(out["attention"][0, :, s].cpu(), out["index"][0].cpu(), out["grid"],
                                           dataset.image_size).numpy()
        r0, c0, r1, c1 = dataset.meta[f"{finding}_box"].iloc[row]
        peak = np.unravel_index(heat.argmax(), heat.shape)
        hits.append(r0 <= peak[0] < r1 and c0 <= peak[1] < c1)
        chance.append((r1 - r0) * (c1 - c0) / heat.size)
        if len(pictures) < 8:
            pictures.append((dataset.images[row], heat, (r0, c0, r1, c1), sentences[s]))
    if pictures:
        fig = viz.show_heatmaps([p[0] for p in pictures], [p[1] for p in pictures], [p[2] for p in pictures],
                                titles=[p[3][:40] for p in pictures])
        viz.save_figure(fig, run_dir / "figures" / "heatmaps.png")
        print(f"pointing game on {len(hits)} finding sentences: {np.mean(hits):.2f} hits "
              f"(a random region: {np.mean(chance):.2f})")
    pointing = pd.DataFrame({"row": [r for r, _ in cases], "finding": [f for _, f in cases], "hit": hits,
                             "chance": chance})  # fmt: skip
    atomic_write_text(run_dir / "pointing.csv", pointing.to_csv(index=False))

# %% [markdown]
# The pointing game of the recorded reference run, per finding (hits against a random region's
# chance, 95 % interval over the cases of the hit rate minus chance):

# %%
recorded_pointing = recorded.load_table("05_lrclr", "pointing.csv")
if recorded_pointing is not None:
    game = []
    for finding, block in recorded_pointing.groupby("finding", sort=False):
        mean, low, high = interval(block.hit.astype(float) - block.chance)
        game.append({"finding": finding, "cases": len(block), "hits": block.hit.mean(), "chance": block.chance.mean(),
                     "hits - chance": mean, "ci_low": low, "ci_high": high})  # fmt: skip
    display(pd.DataFrame(game).round(3))

# %%
md = [
    f"# LRCLR results ({size}, {env['device']}, torch {env['torch']})",
    "",
    f"Data: {dataset.name}, {len(train_rows)} training and {len(test_rows)} held-out images; k={S['k']}, "
    f"region weight={region_weight}, τ={temperature}; seeds {seeds}; zero-shot AUC, mean ± std over seeds.",
    "",
    summary_text.to_markdown(),
    "",
    reading,
    "",
]
atomic_write_text(run_dir / "results.md", "\n".join(md))
print((run_dir / "results.md").read_text())
