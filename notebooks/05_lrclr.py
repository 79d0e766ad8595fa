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
# # 05 · LRCLR: chest X-ray regions contrasted with report sentences, zero-shot findings
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/medcl-lite/medcl_lite/blob/main/notebooks/05_lrclr.ipynb)
#
# **Paper.** S. A. Rizvi, R. Tang, X. Jiang, X. Ma, X. Hu, *Local Contrastive Learning for Medical
# Image Recognition*, AMIA 2023 (arXiv:2303.14153). Image–text contrast: A. Radford et al., *CLIP*,
# ICML 2021; zero-shot scoring with prompt pairs: E. Tiu et al., *CheXzero*, Nat. Biomed. Eng.
# 2022. Details: [docs/methods.md, LRCLR](../docs/methods.md#lrclr--image-regions-and-report-sentences).
#
# **Learning goals.** After this chapter you can
# - write CLIP's image–report loss and LRCLR's region–sentence loss as the package's one masked
#   InfoNCE, and build each positive mask from a batch (an image's own report and every identical
#   report; the kept region a sentence attends to most);
# - follow an image through region selection (the top-k cells of an encoder map, gated by their
#   score) and cross-attention to its report's sentences, and draw a sentence's attention as a
#   heat map over the X-ray;
# - score a finding zero-shot with a positive and a negative prompt, and evaluate the score by ROC
#   AUC per finding on held-out patients, on the films where the finding can be seen;
# - judge a zero-shot AUC against chance and against a supervised reference with the same encoder,
#   and compare two methods paired on the seed;
# - test whether attention points at the finding with the pointing game, against its chance level.
#
# **Prerequisites.** [00 · Quickstart](00_quickstart.ipynb) (positive masks, the masked InfoNCE,
# paired comparisons, the metrics) and [03 · LRC](03_lrc.ipynb) (positives between regions rather
# than whole images). Concepts: cosine similarity and a softmax with a temperature; attention
# (queries, keys, values, several heads) as in a Transformer; splitting text into word ids; ROC AUC.
#
# > **Which pairs are positive?** CLIP: an image and **its own report** (every other report of the
# > batch is a negative; here, a report identical word for word counts as positive too). LRCLR adds a local answer: a report **sentence** and the image **region**
# > it attends to most, after a layer has selected the image's significant regions and a
# > cross-attention block has let them read the sentences.
#
# No labels are used for training: the reports are the supervision. The model is then asked,
# zero-shot, whether an unseen image shows a finding, by comparing it with a positive and a
# negative prompt ("Pleural effusion." / "No pleural effusion.").
#
# What you will do, on built-in phantom chest X-rays with findings and templated reports:
# 1. split reports into sentences and tokenize them with a vocabulary built here (no download);
# 2. see the image side's shapes: regions, the k kept ones, their attention over sentences;
# 3. train the CLIP baseline and LRCLR with the same data, seeds and schedule;
# 4. evaluate zero-shot on held-out patients: AUC per finding with seed spreads, ROC curves,
#    paired verdicts;
# 5. look at heat maps: which regions a finding's sentence attends to, against where the finding is.

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
from medcl_lite.config import from_params, pick, reproduction_settings
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
# Parameters: papermill sets these and, by name, any setting of REPRODUCTION below
# (medcl reproduce 05_lrclr -f notebooks/params/lrclr/<preset>.yaml -p epochs 20).
smoke = None  # None: smoke run on a CPU, teaching run on a GPU; True or False forces it
preset = "auto"  # size when not smoke: cpu (a 2-core CPU), gpu, or auto
seeds = []  # training seeds (one model per seed and method), empty: the size's
device = "auto"  # auto, cpu, cuda or mps
out_dir = ""  # run folder; empty: MEDCL_RUNS/lrclr-SIZE (default ~/.cache/medcl_lite/runs)
progress = True  # tqdm progress bars
data = "phantom"  # "phantom" (built in) or a prepared image-report folder (e.g. iu-xray-256)
methods = []  # empty: ["CLIP", "LRCLR"]
reference = True  # also train the same encoder WITH labels: what the images show at this size (not zero-shot)
# LRCLR (unpublished in the paper: our choices, section 2 says why)
regions = 8  # k regions kept by the selection layer
report_embedding = "sentences"  # a report is the mean of its sentence embeddings, or "tokens" (whole report pooled)
region_weight = 1.0  # weight of the region-sentence term
identical_positive = True  # identical templated reports (and sentences) are positives of each other
reproduction = {}  # other settings by name, e.g. {"epochs": 20}: the REPRODUCTION cell below

# %% tags=["reproduction"] jupyter={"source_hidden": true}
# The settings of a paper reproduction, out of the reader's way: the presets in notebooks/params/lrclr/
# set them. 0, -1 or empty: the size's value (SIZES below).
REPRODUCTION = dict(
    image_size=0,  # phantom image side, 0: the size's
    n_patients=0,  # phantom patients (one image each), 0: the size's
    test_fraction=0.3,  # held-out patients for zero-shot evaluation
    encoder="resnet18",  # smp encoder of the image side
    region_level=0,  # encoder stage whose cells are regions: -1 the last map (as LRCLR), -2 twice as fine; 0: the size's
    dim=128,  # joint embedding size
    temperature=0.07,  # τ of both InfoNCE terms (CLIP's initial value, fixed)
    text_dim=128,  # text encoder width
    text_layers=2,  # text encoder depth
    max_len=48,  # tokens per report or sentence
    epochs=0,  # 0: the size's value
    batch_size=0,  # 0: the size's value
    lr=0.0,  # AdamW, 0: the size's value
    augment="light",  # "none" | "light" (small affine and intensity; never a flip: sides are findings)
)

# %% [markdown]
# Values derived from the parameters. Three sizes: **smoke** (a minute on a CPU: checks that
# everything runs; numbers mean little), **cpu** (a 2-core CPU: 64² images, 100 epochs = 1300
# steps per model, 3 seeds; about an hour for the six contrastive models, the supervised
# reference more) and **gpu** (a Colab GPU: 256² images, more
# patients). At 64² the last encoder map is 2×2, so the cpu size takes its regions from the stage
# before (4×4, `region_level=-2`). Why small images with many steps rather than larger images with
# few: the first pitfall in section 6.

# %%
repro = reproduction_settings(REPRODUCTION, reproduction)  # repro.lr, repro.epochs, ...
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
region_level = repro.region_level or S["level"]  # (pick() would also replace an explicit -1)
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
    dataset = make_chest_xray_reports(n_patients=pick(repro.n_patients, S["patients"]),
                                      size=pick(repro.image_size, S["image"]),
                                      seed=seeds[0])
else:
    dataset = open_prepared(data)
findings = [f for f in FINDINGS if f in dataset.meta]
split = split_by_patient(dataset.meta, {"train": 1 - repro.test_fraction, "test": repro.test_fraction}, seed=seeds[0])
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
# Reports are split into sentences (`text.split_sentences`) and words become ids with a word
# vocabulary (`text.Tokenizer`; no hub download); a word outside the vocabulary becomes `[UNK]`.
# Three vocabularies appear in this chapter, fitted on different texts:
# - the cell below fits one on the **training reports only**, to show the tokenizer at work (it
#   prints the zero-shot prompts but does not encode them);
# - every model of section 4 fits its own inside `train_image_text`: the **training reports plus
#   every zero-shot prompt**, so that no prompt word is `[UNK]`; zero-shot evaluation (section 5)
#   uses this one;
# - the shape probe of section 3 fits on **all reports, held-out ones included**; it only builds an
#   untrained model to print tensor shapes, and nothing that is trained or evaluated uses it.
#
# A 2-layer Transformer (`text.TextEncoder`), trained from scratch with the image side, turns the
# tokens of a sentence into vectors. LRCLR publishes no text-encoder size; ours is small so that a
# CPU trains it in minutes. A sentence $\ell$ and a report $b$ are embedded as
#
# $$
# e_\ell = W_t \, \frac{1}{|T_\ell|} \sum_{j \in T_\ell} h_{\ell j},
# \qquad
# t_b = \frac{1}{|S_b|} \sum_{\ell \in S_b} e_\ell ,
# $$
#
# where $T_\ell$ = the real tokens of the sentence (`[CLS]` and `[SEP]` included, padding not),
# $h_{\ell j}$ = the encoder's output for token $j$ (`TextEncoder` returns them as `tokens` and
# their masked mean as `pooled`), $W_t$ = `text_proj` (a linear layer into the joint space of size
# `dim`), $S_b$ = the sentences whose `owner` is image $b$, and $t_b$ = the report embedding
# (`crossmodal.mean_by_owner`, with `report_embedding="sentences"`, our choice). Every sentence,
# "No pleural effusion." as much as "The heart is enlarged.", weighs the same, and a one-sentence
# prompt is embedded exactly like a report sentence, so prompts and reports live in one space.
# The alternative, `report_embedding="tokens"`, feeds the whole report through the encoder at once:
# $t_b$ is then the mean over all of the report's tokens (the second pitfall in section 6 says what
# that loses). Nothing is normalised here; the losses and the zero-shot score use cosines.

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
# Every cell of an encoder feature map is a region (`crossmodal.region_features`): the map of stage
# `region_level` (-1: the last map, as in LRCLR; the cpu size takes -2, twice as fine), with
# $N = h \times w$ cells. For image $b$, with $f_{bn}$ = the feature vector of cell $n$,
# `RegionSelector` scores every region and keeps the top $k$:
#
# $$
# r_{bn} = W_r f_{bn}, \qquad a_{bn} = w_a^\top r_{bn} + c_a, \qquad
# K_b = \operatorname{top-}k_{\,n}\, a_{bn}, \qquad
# \tilde r_{bm} = \sigma(a_{b n_m})\, r_{b n_m} \quad (n_m \in K_b,\ m = 1, \dots, k)
# $$
#
# $W_r$ = `region_proj`, $(w_a, c_a)$ = the linear `scorer`, $a$ = `scores`, $K_b$ = `index`, $k$ =
# `regions`, $\sigma$ the logistic sigmoid. The indices of a top-k have no gradient; the gate
# $\sigma(a)$ is how the loss reaches the scorer. The kept regions then read their own report's
# sentences (`CrossModalAttention`: one `nn.MultiheadAttention` with $H = 4$ heads, queries =
# regions, keys = values = the sentence embeddings $e_\ell$ of section 2, a residual connection and
# LayerNorm):
#
# $$
# \hat r_{b} = \operatorname{LayerNorm}\big(\tilde r_{b} + \operatorname{MHA}(\tilde r_{b}, E_b, E_b)\big),
# \qquad
# \alpha_{bm\ell} = \frac{1}{H} \sum_{h=1}^{H} \operatorname{softmax}_{\ell \in S_b}
# \frac{(Q_h \tilde r_{bm})^\top (K_h e_\ell)}{\sqrt{D/H}}
# $$
#
# $E_b$ = the sentences of report $b$ (padded; padding is never attended to), $Q_h, K_h$ = the
# query and key projections of head $h$, $D$ = `dim`; $\hat r$ = `attended`, $\alpha$ = `attention`
# (averaged over the heads: for each kept region it sums to 1 over its own report's sentences and
# is 0 for the other reports' sentences). The global image embedding that CLIP and zero-shot use is
# separate: $x_b = W_x \operatorname{GAP}(F_b)$ with $F_b$ = the **last** encoder map, whatever
# `region_level` is, and $W_x$ = `image_proj`. The shapes on one batch:

# %%
cfg_probe = from_params(ImageTextConfig, regions=S["k"], region_level=region_level, max_len=repro.max_len, dim=repro.dim,
                        text_dim=repro.text_dim, text_layers=repro.text_layers, encoder=repro.encoder)
probe_tok = text.Tokenizer.fit(list(dataset.meta.report))
probe = build_model(cfg_probe, probe_tok.vocab_size)
batch = collate_reports([ReportDataset(dataset, train_rows)[i] for i in range(4)], probe_tok, repro.max_len)
with torch.no_grad():
    out = probe(batch["images"], batch["sentence_ids"], batch["sentence_mask"], batch["owner"],
                batch["report_ids"], batch["report_mask"])
display(pd.Series({k: str(tuple(v.shape)) for k, v in out.items() if torch.is_tensor(v)}, name="shape").to_frame())
print(f"region map {out['grid'][0]}x{out['grid'][1]} = {out['scores'].shape[1]} regions per image, {S['k']} kept")

# %% [markdown]
# **The losses**, both through the package's one masked InfoNCE (`losses.info_nce`, derived in
# [00 · Quickstart](00_quickstart.ipynb), section 3 "One loss for every answer"); only the positive
# sets are new. Below, $\cos(u, v) = u^\top v / (\lVert u \rVert \lVert v \rVert)$ and $\tau$ =
# `temperature`.
#
# *Global term, image ↔ report* (`crossmodal.image_text_loss`). A batch holds $B$ images with
# embeddings $x_i$ and reports with embeddings $t_j$. With `identical_positive=True` the positives
# of image $i$ are $P(i) = \{\, j : \text{report } j \text{ has the same token ids as report } i \,\}$,
# the True entries of row $i$ of `same_report` (built by `identical_rows`; $i \in P(i)$ always);
# with `identical_positive=False`, $P(i) = \{i\}$:
#
# $$
# \mathcal{L}_{x \to t} = -\frac{1}{B} \sum_{i=1}^{B} \frac{1}{|P(i)|} \sum_{p \in P(i)}
# \log \frac{\exp\big(\cos(x_i, t_p)/\tau\big)}{\sum_{j=1}^{B} \exp\big(\cos(x_i, t_j)/\tau\big)},
# \qquad
# \mathcal{L}_{\text{global}} = \tfrac{1}{2} \big( \mathcal{L}_{x \to t} + \mathcal{L}_{t \to x} \big),
# $$
#
# with $\mathcal{L}_{t \to x}$ the same sum with reports as queries and images as keys. CLIP itself
# has $P(i) = \{i\}$ (docs/methods.md, "LRCLR: positives and loss"). With templated reports many
# images share one report word for word, and marking them positive looks necessary. It changes
# less than it seems: identical token ids give identical text embeddings (up to dropout while
# training), so the duplicate that row $i$ counts as a negative is the positive of its own row, and
# summed over the batch both masks give the same loss (exercise 05.2 works it out). The false
# negatives that matter are reports that say the same thing in other words, which no
# word-for-word mask catches.
#
# *Local term, sentence ↔ region* (`crossmodal.region_sentence_loss`, LRCLR only). Each of the $S$
# sentences of the batch is a query, owned by image $b(\ell)$ (`owner`); the keys are all $Bk$
# attended regions $\hat r_{cm}$ of the batch. The positive of sentence $\ell$ is the kept region
# of its own image that it attends to most, $m^*(\ell) = \arg\max_m \alpha_{b(\ell) m \ell}$
# (`match_regions`: an index, computed without gradient), and with `identical_positive` also the
# matched regions of every identical sentence $\ell' \equiv \ell$ of the batch (`same_sentence`):
#
# $$
# P(\ell) = \{\, (b(\ell'), m^*(\ell')) : \ell' \equiv \ell \,\},
# \qquad
# \mathcal{L}_{\text{local}} = -\frac{1}{S} \sum_{\ell=1}^{S} \frac{1}{|P(\ell)|} \sum_{(c,m) \in P(\ell)}
# \log \frac{\exp\big(\cos(e_\ell, \hat r_{cm})/\tau\big)}
# {\sum_{c'=1}^{B} \sum_{m'=1}^{k} \exp\big(\cos(e_\ell, \hat r_{c'm'})/\tau\big)}
# $$
#
# It runs one way only, sentence → regions. LRCLR minimises
# $\mathcal{L} = \mathcal{L}_{\text{global}} + \lambda\, \mathcal{L}_{\text{local}}$ with $\lambda$ =
# `region_weight` (`LRCLRModel.loss`); the CLIP baseline (`use_regions=False`) minimises
# $\mathcal{L}_{\text{global}}$ alone. Where the paper leaves the details open, the code chooses: the keys are
# the regions *after* cross-attention ($\hat r$, which already carry some of the sentences they
# read; it is the only route by which the attention block and the scorer learn), the positive
# region is picked by the attention rather than by similarity, and $\tau$ is fixed. The local term
# as the package writes it:

# %%
print(inspect.getsource(crossmodal.region_sentence_loss).split('"""')[-1])
print(inspect.getsource(crossmodal.region_sentence_mask).split('"""')[-1])

# %% [markdown]
# **Both answers as pictures.** The two positive masks of one batch of 12 training images, as the
# losses receive them. Left: image ↔ report (`same_report` from `identical_rows`: the diagonal is
# each image's own report; off-diagonal cells are other images whose report is identical word for
# word). Right: sentence ↔ kept region (`region_sentence_mask`, the untrained model of the shape
# cell above): one column per kept region of the batch, `k` per image, one positive per sentence in
# its own image's block, plus the matched regions of identical sentences of other images. The
# untrained attention picks the region here; training is what makes that choice meaningful.

# %%
mask_items = [ReportDataset(dataset, train_rows)[i] for i in range(12)]
mask_batch = collate_reports(mask_items, probe_tok, repro.max_len)
with torch.no_grad():
    mask_out = probe(mask_batch["images"], mask_batch["sentence_ids"], mask_batch["sentence_mask"],
                     mask_batch["owner"], mask_batch["report_ids"], mask_batch["report_mask"])  # fmt: skip
same_report = crossmodal.identical_rows(mask_batch["report_ids"], mask_batch["report_mask"])
same_sentence = crossmodal.identical_rows(mask_batch["sentence_ids"], mask_batch["sentence_mask"])
local_mask = crossmodal.region_sentence_mask(mask_out["attended"], mask_out["sentences"], mask_batch["owner"],
                                             mask_out["attention"], same_sentence)  # fmt: skip
fig = viz.show_mask(same_report, title="image ↔ report positives", row_label="image", col_label="report")
viz.save_figure(fig, run_dir / "figures" / "mask_image_report.png")
fig = viz.show_mask(local_mask, title="sentence ↔ region positives", row_label="sentence",
                    col_label=f"kept region ({S['k']} per image)")  # fmt: skip
viz.save_figure(fig, run_dir / "figures" / "mask_sentence_region.png")
print(f"{int(same_report.sum()) - len(same_report)} off-diagonal identical-report pairs among 12 images; "
      f"{len(local_mask)} sentences, {int(local_mask.sum())} sentence-region positives "
      f"({int(local_mask.sum()) - len(local_mask)} more from identical sentences)")

# %% [markdown]
# ## 4 · Training: CLIP baseline vs LRCLR
# Same images, reports, tokenizer, schedule and seeds; LRCLR adds the region path and its loss.
# Unpublished choices (ours): k regions, the region weight, τ, the text encoder's size, the
# schedule; `regions` and `region_weight` are in the parameters cell, `temperature` and the rest
# in `REPRODUCTION`. Each run writes its model to the run folder; running the cell again loads a
# finished run of the same configuration instead of training it again (`resume=True`).

# %%
results = {}
for seed in seeds:
    for method in methods:
        cfg = from_params(ImageTextConfig, {
            "use_regions": method == "LRCLR", "encoder": repro.encoder, "dim": repro.dim, "regions": S["k"],
            "region_level": region_level, "report_embedding": report_embedding,
            "region_weight": region_weight, "temperature": repro.temperature, "identical_positive": identical_positive,
            "text_dim": repro.text_dim, "text_layers": repro.text_layers, "max_len": repro.max_len, "augment": repro.augment,
            "epochs": pick(repro.epochs, S["epochs"]), "batch_size": pick(repro.batch_size, S["batch"]),
            "lr": pick(repro.lr, S["lr"]),
            "seed": seed, "device": device, "progress": progress,
            "out_dir": str(run_dir / f"{method.lower()}_s{seed}"), "resume": True,
        })
        results[(method, seed)] = train_image_text(cfg, dataset, train_rows)
        h = results[(method, seed)].history
        print(f"{method:5s} seed {seed}: {len(h)} steps in {results[(method, seed)].seconds:.0f} s, "
              f"loss {h.loss.iloc[:3].mean():.3f} -> {h.loss.iloc[-3:].mean():.3f}"
              + (" (finished earlier, loaded)" if results[(method, seed)].loaded else ""))
fig = viz.plot_curves({f"{m} (seed {s})": r.history for (m, s), r in results.items()}, title="training loss")
viz.save_figure(fig, run_dir / "figures" / "loss.png")

# %% [markdown]
# ## 5 · Zero-shot evaluation on held-out patients
# A finding's prompts (`text.prompts(finding)`: the positive templates $Q^+$ that name no location,
# and the negative templates $Q^-$, printed in section 2) give each image a score, as
# `crossmodal.zero_shot_scores` computes it:
#
# $$
# \text{score}(x) = \cos(x, \bar q^{+}) - \cos(x, \bar q^{-}),
# \qquad
# \bar q^{\pm} = \frac{u^{\pm}}{\lVert u^{\pm} \rVert}, \quad
# u^{\pm} = \frac{1}{|Q^{\pm}|} \sum_{q \in Q^{\pm}} \frac{e_q}{\lVert e_q \rVert}
# $$
#
# with $x$ = the global image embedding of section 3 and $e_q$ = a prompt embedded as a sentence
# (section 2). CheXzero reports a softmax over the two similarities instead,
# $\exp(c^+) / (\exp(c^+) + \exp(c^-)) = \sigma(c^+ - c^-)$ with $c^\pm = \cos(x, \bar q^\pm)$: an
# increasing function of the same difference (with or without a temperature), so it ranks the
# images identically and gives the same AUC. Only the global embedding is used: the region path
# needs the report, which zero-shot has not; LRCLR changes the shared encoder and text space that
# the global embedding comes from. Each finding's scores on the held-out patients give one ROC AUC
# (`crossmodal.finding_auc`; defined in [00 · Quickstart, "Metrics used in every
# chapter"](00_quickstart.ipynb#Metrics-used-in-every-chapter)), reported as mean ± std over seeds;
# cardiomegaly is scored on PA films only (an AP film cannot show it; `eval_rows` below).
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
# them in **pairs**, per finding, over the $n$ seeds $i$:
#
# $$
# d_i = \text{AUC}(\text{LRCLR}, i) - \text{AUC}(\text{CLIP}, i),
# \qquad
# \bar d \pm t_{0.975,\,n-1}\, \frac{s_d}{\sqrt{n}}
# $$
#
# the mean difference $\bar d$ with its 95 % interval ($s_d$ = the standard deviation of the $d_i$;
# `medcl_lite.paired`): "better" or "worse" only when the interval excludes 0, "no evidence" when
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
    reading = verdict_text(comparison, ["finding"], baseline="CLIP", unit="AUC", smoke=size == "smoke")
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
# where it is near 1, the finding is plain in the images; where it is itself low (a small finding
# such as a nodule covers few pixels at 64²), no zero-shot model can be expected to find it. A
# zero-shot AUC near the supervised one means the reports taught the encoder what the labels would
# have; an AUC whose interval covers 0.5 means the model learned nothing about that finding from
# the reports. LRCLR against CLIP: read the paired lines, not the gap between two means. The
# paper's gains come from MIMIC-scale data and a pretrained model, which a CPU run on a phantom does
# not have; section 7 asks whether the region path learned *where* findings are.
#
# > **Pitfall: too few steps.** Trained too briefly, the loss stays near its chance level $\log B$
# > and the models separate films by projection (AP or PA), the largest difference between them,
# > not by findings. A finding tied to projection (cardiomegaly: PA films only) can then look
# > learned over all films yet sit at chance on PA films. Score it where it can be seen
# > (`eval_rows`) and train until the loss is well below $\log B$; on a CPU, smaller images buy the steps.
#
# > **Pitfall: pooling a report over its tokens loses negation.** "No pleural effusion." and
# > "Pleural effusion." differ by one word, which barely moves the mean over a whole report's tokens.
# > A report as the mean of its sentences (`report_embedding="sentences"`) weighs every finding
# > sentence equally and matches the one-sentence prompts; rerun with `"tokens"` to compare.

# %% [markdown]
# ## 7 · Which regions does a sentence attend to?
# For held-out images with a finding, LRCLR (seed 0) reads the image with its report: the heat map
# is the attention of the finding's sentence over the kept regions; the green box is where the
# phantom drew the finding. The pointing game (Zhang et al. 2018) asks whether the most attended
# region overlaps the box. The model attends at the resolution of its regions, the cells of an
# $h \times w$ grid, so the game is played on cells: with $\alpha_{s\ell}$ the attention of the
# finding's sentence $s$ over the kept cells $\ell \in K$ (`crossmodal.pointing_game`),
#
# $$
# \text{hit} = \mathbf{1}\big[\, \operatorname{cell}\big(\operatorname{argmax}_{\ell \in K}
# \alpha_{s\ell}\big) \cap \text{box} \neq \emptyset \,\big],
# \qquad
# \text{chance} = \frac{|\{\ell \in K : \operatorname{cell}(\ell) \cap \text{box} \neq \emptyset\}|}{|K|},
# $$
#
# chance being the hit rate of attention spread evenly over the same kept cells. A third number,
# `kept`, says whether the region selector kept any cell of the box at all: when it did not, no
# attention can hit, and the miss is the selector's.
#
# > **Pitfall.** Score at the resolution the model works at. Taking the single most attended
# > *pixel* of the nearest-upsampled heat map (the top-left pixel of a cell, as `argmax` returns it)
# > can only hit when the box happens to contain that corner: a finding smaller than a cell then
# > scores zero even when attention picks its cell every time.
#
# The printed line averages the three (the finding sentences of held-out images, at most 200).

# %%
if "LRCLR" in methods and f"{findings[0]}_box" in dataset.meta:
    model = results[("LRCLR", seeds[0])]
    cases = [(int(r), f) for f in findings for r in test_rows
             if dataset.meta[f].iloc[r] and dataset.meta[f"{f}_sentence"].iloc[r]][:200]
    game_rows, pictures = [], []
    model.model.eval()
    for row, finding in cases:
        item = {"image": torch.from_numpy(dataset.images[row])[None], "report": dataset.meta.report.iloc[row]}
        batch = collate_reports([item], model.tokenizer, repro.max_len)
        batch = {k: v.to(next(model.model.parameters()).device) for k, v in batch.items()}
        with torch.no_grad():
            out = model.model(batch["images"], batch["sentence_ids"], batch["sentence_mask"], batch["owner"],
                              batch["report_ids"], batch["report_mask"])
        sentences = text.split_sentences(dataset.meta.report.iloc[row])
        s = sentences.index(dataset.meta[f"{finding}_sentence"].iloc[row])
        attention, kept_cells = out["attention"][0, :, s].cpu(), out["index"][0].cpu()
        heat = crossmodal.sentence_heatmap(attention, kept_cells, out["grid"], dataset.image_size).numpy()
        r0, c0, r1, c1 = dataset.meta[f"{finding}_box"].iloc[row]
        game_rows.append(crossmodal.pointing_game(attention, kept_cells, out["grid"], dataset.image_size,
                                                  (r0, c0, r1, c1)))
        if len(pictures) < 8:
            pictures.append((dataset.images[row], heat, (r0, c0, r1, c1), sentences[s]))
    if pictures:
        fig = viz.show_heatmaps([p[0] for p in pictures], [p[1] for p in pictures], [p[2] for p in pictures],
                                titles=[p[3][:40] for p in pictures])
        viz.save_figure(fig, run_dir / "figures" / "heatmaps.png")
    pointing = pd.DataFrame({"row": [r for r, _ in cases], "finding": [f for _, f in cases]}).join(
        pd.DataFrame(game_rows, columns=["hit", "chance", "kept"]))
    print(f"pointing game on {len(pointing)} finding sentences: {pointing.hit.mean():.2f} hits "
          f"(attention spread evenly over the kept regions: {pointing.chance.mean():.2f}); "
          f"the selector kept a cell of the box in {pointing.kept.mean():.2f}")
    atomic_write_text(run_dir / "pointing.csv", pointing.to_csv(index=False))

# %% [markdown]
# The pointing game of the recorded reference run, per finding (hits against attention spread
# evenly over the kept regions, 95 % interval over the cases of the hit rate minus chance; `kept`:
# share of cases whose box the selector kept):

# %%
recorded_pointing = recorded.load_table("05_lrclr", "pointing.csv")
if recorded_pointing is not None:
    game = []
    for finding, block in recorded_pointing.groupby("finding", sort=False):
        mean, low, high = interval(block.hit.astype(float) - block.chance)
        game.append({"finding": finding, "cases": len(block), "kept": block.kept.mean() if "kept" in block else np.nan,
                     "hits": block.hit.mean(), "chance": block.chance.mean(),
                     "hits - chance": mean, "ci_low": low, "ci_high": high})  # fmt: skip
    display(pd.DataFrame(game).round(3))

# %%
md = [
    f"# LRCLR results ({size}, {env['device']}, torch {env['torch']})",
    "",
    f"Data: {dataset.name}, {len(train_rows)} training and {len(test_rows)} held-out images; k={S['k']}, "
    f"region weight={region_weight}, τ={repro.temperature}; seeds {seeds}; zero-shot AUC, mean ± std over seeds.",
    "",
    summary_text.to_markdown(),
    "",
    reading,
    "",
]
atomic_write_text(run_dir / "results.md", "\n".join(md))
print((run_dir / "results.md").read_text())

# %% [markdown]
# ## Exercises
# Predict first (write your guess down), then run, then explain what you saw. Each exercise names
# the parameter or function to change; the worked answers run every experiment and explain the
# outcome: [solutions/05_lrclr.ipynb](solutions/05_lrclr.ipynb).
#
# **Exercise 05.1 · Chance level and floor of the image-report loss** *(about 1 min on 2 cores)*
# *Predict*: with B = 32 and τ = 0.07, what does `crossmodal.image_text_loss` give for constant
# embeddings? In a random training batch, how many report pairs are identical word for word, and
# how many say the same thing (same findings, sides, zones, projection)? How low can the loss go
# for a model that embeds only what a report means?
# *Run*: `collate_reports` on random batches of `train_rows`, `crossmodal.identical_rows` on the
# report and sentence ids, then `image_text_loss(z, z, 0.07, pos_mask=...)` with `z` one direction
# per group, against the closed form $\frac{1}{B}\sum_i \log m_i$ ($m_i$: the size of row $i$'s group).
# *Explain*: why the chance value is $\log B$ whatever the mask, and what a training loss below the
# same-meaning floor would mean for zero-shot use.
#
# **Exercise 05.2 · Identical reports as positives: what the mask changes** *(about 1 min on 2 cores)*
# *Predict*: on one batch, how much does the loss of an untrained LRCLR model (`build_model`,
# k = 8, `region_level=-2`) change between `identical_positive=True` and `False`: the global term,
# the region term, in eval mode and in train mode?
# *Run*: one forward pass per mode, then `model.loss(out, ..., identical_positive=...)` with both
# values on the same outputs.
# *Explain*: show that summing InfoNCE over a group of identical texts gives the same loss with or
# without the group as positives; which false negatives remain that no token-identity mask finds?
#
# **Exercise 05.3 · A shortcut that passes for a finding: the projection** *(about 2 min on 2 cores)*
# *Predict*: cardiomegaly is drawn only on PA films. What AUC does a score that knows only the
# projection (1 for PA, 0 for AP) reach for cardiomegaly on all held-out films, and on PA films
# only? After a short CLIP training (10 epochs instead of 100), does the zero-shot cardiomegaly
# score separate cardiomegaly on PA films, or PA from AP?
# *Run*: `crossmodal.finding_auc` on the projection score; `train_image_text` with
# `ImageTextConfig(use_regions=False, epochs=10)`, then `crossmodal.zero_shot_scores` with
# `text.prompts("cardiomegaly")`, scored on all films, on PA films, and against the projection.
# *Explain*: derive the projection-only AUC, $(n_{AP} + n^-_{PA}/2)/n^-$, and say why the chapter
# scores cardiomegaly on PA films only and trains until the loss is well below $\log B$.
#
# **Exercise 05.4 · The pointing game's chance level and a fixed-cell baseline** *(about 1 min on 2 cores)*
# *Predict*: on the cpu size's 4×4 region grid, what hit rate does attention spread evenly over
# all cells reach for a nodule, an effusion, an enlarged heart? Does a random region selector that
# keeps k of the 16 cells change it? And an "attention" that always points at the same cell?
# *Run*: `crossmodal.pointing_game` on the held-out boxes (`<finding>_box`) with uniform attention
# over all cells, over k = 1, 2, 4, 8, 16 randomly kept cells, and with one-hot attention on the
# cell that overlapped most training boxes of the finding.
# *Explain*: why a random selector leaves the expected hit rate at $o/N$, what the "kept" rate
# follows, and which baseline a model's hit rate must beat to show that attention follows the
# finding of *this* image.

# %% [markdown]
# ## Key takeaways
# - CLIP and LRCLR answer "which pairs are positive?" at two scales: an image and its report (and,
#   with templated text, every identical report), and a sentence and the kept region it attends to
#   most. Both are boolean masks handed to the same masked InfoNCE.
# - Which texts count as negatives is a modelling choice: reports that say the same thing in other
#   words are false negatives, and a word-for-word identity mask cannot mark them (identical texts
#   already share one embedding); that takes a rule on meaning, as MedCLIP's semantic matching.
# - How a report becomes one vector decides what can be learned from it: a mean over tokens drowns
#   a negation, a mean over sentences keeps each finding sentence and matches the prompts.
# - A zero-shot AUC means little alone: read it against chance and against a supervised reference
#   with the same encoder and budget, and score a finding only on the films that can show it, or a
#   shortcut such as the projection passes for a finding.
# - Attention maps are a claim about localisation that can be tested: in the recorded pointing-game
#   table above, look for findings whose hits-minus-chance interval excludes 0.

# %% [markdown]
# ## Further reading
# - The paper: S. A. Rizvi, R. Tang, X. Jiang, X. Ma, X. Hu, *Local Contrastive Learning for Medical
#   Image Recognition*, AMIA Annual Symposium 2023, arXiv:2303.14153. docs/methods.md names no public
#   code for it; the method choices it leaves open are listed in docs/methods.md, "LRCLR: hyper-parameters".
# - A. Radford, J. W. Kim, C. Hallacy, A. Ramesh, G. Goh, S. Agarwal, G. Sastry, A. Askell,
#   P. Mishkin, J. Clark, G. Krueger, I. Sutskever, *Learning Transferable Visual Models From Natural
#   Language Supervision* (CLIP), ICML 2021, arXiv:2103.00020; code: https://github.com/openai/CLIP.
# - E. Tiu, E. Talius, P. Patel, C. P. Langlotz, A. Y. Ng, P. Rajpurkar, *Expert-level detection of
#   pathologies from unannotated chest X-ray images via self-supervised learning* (CheXzero), Nature
#   Biomedical Engineering 2022; code, with the positive/negative prompt softmax:
#   https://github.com/rajpurkarlab/CheXzero.
# - Y. Zhang, H. Jiang, Y. Miura, C. D. Manning, C. P. Langlotz, *Contrastive Learning of Medical
#   Visual Representations from Paired Images and Text* (ConVIRT), MLHC 2022, arXiv:2010.00747: the
#   symmetric image–report loss on chest X-rays, before CLIP.
# - S.-C. Huang, L. Shen, M. P. Lungren, S. Yeung, *GLoRIA: A Multimodal Global-Local Representation
#   Learning Framework for Label-efficient Medical Image Recognition*, ICCV 2021: a local term between
#   image sub-regions and report words through attention; code: https://github.com/marshuang80/gloria.
# - Z. Wang, Z. Wu, D. Agarwal, J. Sun, *MedCLIP: Contrastive Learning from Unpaired Medical Images
#   and Text*, EMNLP 2022, arXiv:2210.10163: replaces the one-positive mask by semantic matching, so
#   that reports with the same findings are not false negatives.

# %% [markdown]
# [← 04 · IDEAL](04_ideal.ipynb) · [06 · When does it help? →](06_when_does_it_help.ipynb)
