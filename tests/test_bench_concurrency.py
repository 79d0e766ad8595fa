"""benchmarks/bench_concurrency.py: the children's thread settings per scenario (not their speed),
the slowdown arithmetic and the record, on a tiny run."""

import json

import pytest
from conftest import import_benchmark

from medcl_lite.threads import available_cores


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (it imports ``_common`` from its own folder)."""
    yield from import_benchmark("bench_concurrency")


def test_children_do_not_inherit_thread_settings(bench, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("MEDCL_THREADS", "7")
    env = bench.scenario_env("pair", cores=4)
    assert not set(bench.CLEARED) & set(env)
    assert bench.scenario_env("pair_split", cores=4)["MEDCL_THREADS"] == "2"
    assert bench.scenario_env("pair_split", cores=1)["MEDCL_THREADS"] == "1"


def test_slowdown_is_against_the_alone_run_with_the_same_settings(bench):
    results = [{"scenario": s, "work_s": w} for s, w in
               [("alone", 10.0), ("pair", 17.0), ("alone_torch", 9.0), ("pair_torch", 90.0)]]  # fmt: skip
    bench.add_slowdowns(results)
    assert [r["slowdown"] for r in results] == [1.0, 1.7, 1.0, 10.0]


@pytest.mark.parametrize("option", ["--batch", "--pretrain-steps", "--finetune-steps", "--rounds"])
def test_bad_option_values_name_the_option(bench, option, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args([option, "0"])
    assert f"{option} must be >= 1" in capsys.readouterr().err


def test_tiny_run_children_use_the_project_settings(bench, tmp_path, capsys):
    record = bench.main(["--scenarios", "alone", "pair_split", "alone_torch", "--size", "32", "--batch", "2",
                         "--pretrain-steps", "1", "--finetune-steps", "2", "--rounds", "1", "--out", str(tmp_path)])  # fmt: skip
    assert record == json.loads((tmp_path / f"concurrency_cpu_{available_cores()}cores.json").read_text())
    assert [len(r["rounds"]) for r in record["results"]] == [1, 1, 1]
    runs = {r["scenario"]: r["rounds"][0]["runs"] for r in record["results"]}
    (alone,), (torch_default,) = runs["alone"], runs["alone_torch"]
    assert (alone["torch_threads"], alone["omp_wait_policy"]) == (available_cores(), "PASSIVE")
    assert torch_default["omp_wait_policy"] == "DEFAULT"  # torch imported first: OpenMP spins
    assert len(runs["pair_split"]) == 2 and len({r["pid"] for r in runs["pair_split"]}) == 2
    for run in runs["pair_split"]:
        assert (run["torch_threads"], run["omp_wait_policy"]) == (max(1, available_cores() // 2), "PASSIVE")
        assert run["pretrain_steps"] == 1
    assert record["meets_target"] is None  # no "pair" scenario was run
    assert "| pair_split | 2 | " in capsys.readouterr().out
