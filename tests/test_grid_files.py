"""The shipped grid files (``notebooks/params/*/grid*.yaml``): they load, expand against their
notebook, dry-run through the CLI, carry exactly the published values of docs/methods.md, and their
``paper:`` labels line up with the labels our results table uses.
"""

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl_lite import grid, repro

PARAMS = Path(__file__).resolve().parents[1] / "notebooks" / "params"
GRID_FILES = sorted(PARAMS.glob("*/grid*.yaml"))


def _name(path: Path) -> str:
    return path.relative_to(PARAMS).as_posix()


# Published values, copied by hand from docs/methods.md (the tests hold their own copy): a typo in
# a grid file's ``paper:`` table fails here.
PUBLISHED = {
    # docs/methods.md, "PCL: headline numbers": ACDC Dice 0.671 (2 patients), 0.850 (6 patients).
    "pcl/grid_acdc.yaml": {"PCL": {"2": 0.671, "6": 0.850}},
    # docs/methods.md, "IDEAL: headline Dice": ACDC 1.25 / 2.5 / 10 / 100 % (1, 2, 8 of
    # 80 patients, all); global CL 0.729 / – / 0.847 at 1.25 / 2.5 / 10 %.
    "ideal/grid_acdc.yaml": {
        "IDEAL dense · two-stream": {"1": 0.738, "2": 0.846, "8": 0.879, "all": 0.882},
        "MoCo · supervised": {"1": 0.729, "8": 0.847},
    },
    # docs/methods.md, "IDEAL: headline Dice": MMWHS 10 / 20 / 40 / 100 % (2, 4, 8 of 20 volumes,
    # all); global CL 0.500 / 0.659 / 0.785 at 10 / 20 / 40 %.
    "ideal/grid_mmwhs.yaml": {
        "IDEAL dense · two-stream": {"2": 0.626, "4": 0.791, "8": 0.815, "all": 0.826},
        "MoCo · supervised": {"2": 0.500, "4": 0.659, "8": 0.785},
    },
}
# Grid files without a ``paper:`` section, and why (docs/methods.md gives no numbers for them).
NO_PAPER = {
    "quickstart/grid_smoke.yaml": "phantoms only",
    "cl_tci/grid_jsrt.yaml": "results table not public in machine-readable form",
    "cl_tci/grid_montgomery.yaml": "results table not public in machine-readable form",
    "lrc/grid_btcv.yaml": "the paper's datasets are not public; no BTCV numbers",
    "lrc/grid_amos.yaml": "the paper's datasets are not public; no AMOS numbers",
    "lrclr/grid.yaml": "docs/methods.md gives no published numbers",
}

# Columns of each notebook's results.csv a table may use (the cell that writes results.csv:
# run_finetune_grid's rows plus the notebook's own columns; 05_lrclr: zero_shot_table's rows).
FINETUNE = {"init", "n_labelled", "n_images", "seed", "fold", "test_dice", "test_dice_pooled"}
RESULT_COLUMNS = {
    "00_quickstart": FINETUNE - {"fold"},
    "01_cl_tci": FINETUNE | {"setting", "arch", "paper_test_dice_pooled"},
    "02_pcl": FINETUNE | {"setting", "test_dice_volume", "paper_test_dice_pooled"},
    "03_lrc": FINETUNE | {"test_dice_volume"},
    "04_ideal": FINETUNE | {"scheme", "arm", "test_dice_volume", "test_hd95_volume"},
    "05_lrclr": {"finding", "method", "seed", "auc", "positives", "images"},
}


def _labels(key: str, params: dict) -> list[str]:
    """The labels a notebook writes in results column ``key`` for a run with ``params``."""
    if key == "init":
        return ["random init", *(params.get("methods") or ["SimCLR"])]
    if key == "n_labelled":
        return [str(n) for n in params.get("label_counts") or [1, "all"]]
    labels = {
        "scheme": ["supervised", "two-stream"],  # 04_ideal: the keys of its `grids`
        "arch": params.get("archs") or ["unet"],
        "setting": params.get("settings") or ["semi", "transfer"],
        "method": params.get("methods") or ["CLIP", "LRCLR"],
        "finding": ["opacity", "cardiomegaly"],
    }
    if key not in labels:
        raise KeyError(f"no fake labels for table key {key!r}: add them to _labels")
    return [str(v) for v in labels[key]]


def _fake_rows(spec: dict, cells: list[grid.Cell]) -> pd.DataFrame:
    """Results rows as the notebook would write them: every label combination of the table's
    keys seen in any cell, two seeds each, value = 0.5 + 0.01 * combination number + 0.1 * seed."""
    table = {**grid.DEFAULT_TABLE, **(spec.get("table") or {})}
    keys = [*table["index"], *table["columns"]]
    combos = dict.fromkeys(
        combo
        for cell in cells
        for combo in itertools.product(*(_labels(k, cell.params) for k in keys))
    )
    rows = [
        {**dict(zip(keys, combo, strict=True)), "seed": s, table["value"]: 0.5 + 0.01 * i + 0.1 * s}
        for i, combo in enumerate(combos)
        for s in (0, 1)
    ]
    return pd.DataFrame(rows)


def test_every_grid_file_is_registered():
    names = {_name(p) for p in GRID_FILES}
    assert names == set(PUBLISHED) | set(NO_PAPER), "register new grid files in PUBLISHED/NO_PAPER"
    assert not set(PUBLISHED) & set(NO_PAPER)


@pytest.mark.parametrize("path", GRID_FILES, ids=_name)
def test_grid_file_loads_expands_and_uses_real_columns(path):
    spec = grid.load_grid(path)
    cells = grid.expand_grid(spec)  # checks every parameter against the notebook
    assert len(cells) >= 1 and len({c.id for c in cells}) == len(cells)
    assert all(Path(base).is_file() for base in spec["base"]), spec["base"]
    table = {**grid.DEFAULT_TABLE, **(spec.get("table") or {})}
    known = RESULT_COLUMNS[spec["notebook"]] | set(spec.get("axes") or {})
    for key in [*table["index"], *table["columns"], table["value"]]:
        assert key in known, f"{_name(path)}: table key {key!r} is not a results.csv column"


@pytest.mark.parametrize("path", GRID_FILES, ids=_name)
def test_grid_file_header_names_its_own_run_command(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    run = f"medcl reproduce --grid notebooks/params/{_name(path)}"
    assert any(run in line for line in header), f"{_name(path)}: no '{run}' in the header"


@pytest.mark.parametrize("path", [p for p in GRID_FILES if "quickstart" not in p.parts], ids=_name)
def test_paper_grids_cover_three_seeds(path):
    spec = grid.load_grid(path)
    seeds = (spec.get("axes") or {}).get("seed") or (spec.get("params") or {}).get("seeds")
    assert seeds == [0, 1, 2], f"{_name(path)}: seeds {seeds!r}"


@pytest.mark.parametrize("path", GRID_FILES, ids=_name)
def test_dry_run_through_the_cli_lists_every_cell(path, tmp_path, capsys):
    cells = grid.expand_grid(grid.load_grid(path))
    out = tmp_path / "out"
    code = repro.main(["reproduce", "--grid", str(path), "--out", str(out), "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0 and not out.exists()  # nothing ran, nothing written
    assert all(f"{c.id}: run (new)" in printed for c in cells), printed
    assert f"{len(cells)} runs; {len(cells)} to run" in printed


@pytest.mark.parametrize("path", GRID_FILES, ids=_name)
def test_paper_values_are_the_published_ones(path):
    spec = grid.load_grid(path)
    paper = spec.get("paper") or {}
    if _name(path) in NO_PAPER:
        assert not paper, f"{_name(path)}: docs/methods.md has no numbers for it"
        return
    assert paper["source"].strip() and "docs/methods.md" in paper["source"]
    got = {str(r): {str(c): v for c, v in cols.items()} for r, cols in paper["table"].items()}
    assert got == PUBLISHED[_name(path)]
    assert all(isinstance(v, float) for cols in got.values() for v in cols.values())


@pytest.mark.parametrize("path", GRID_FILES, ids=_name)
def test_grid_table_puts_paper_values_beside_ours(path):
    spec = grid.load_grid(path)
    rows = _fake_rows(spec, grid.expand_grid(spec))
    table_spec = {**grid.DEFAULT_TABLE, **(spec.get("table") or {})}
    table = grid.grid_table(rows, table_spec, spec.get("paper"))
    value, columns = table_spec["value"], table_spec["columns"]
    first = rows.iloc[0]
    row = " · ".join(str(first[k]) for k in table_spec["index"])
    col = " · ".join(str(first[k]) for k in columns)
    name = f"{' · '.join(columns)}={col}" if columns else value
    ours = table.loc[row, f"{name} · ours" if spec.get("paper") else name]
    values = rows[value].iloc[:2]  # the first combination's two seeds
    assert ours == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    for label, published in (spec.get("paper") or {}).get("table", {}).items():
        assert label in table.index, (
            f"{_name(path)}: paper row {label!r} not in {list(table.index)}"
        )
        for column, number in published.items():
            cell = f"{' · '.join(columns)}={column}"
            assert table.loc[label, f"{cell} · paper"] == f"{number:.3f}", (label, column)
            assert re.fullmatch(r"\d\.\d{3} ± \d\.\d{3}", table.loc[label, f"{cell} · ours"])
