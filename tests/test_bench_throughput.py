"""benchmarks/bench_throughput.py: method table, size and rate rules, a tiny end-to-end run."""

import json

import pytest
import torch
from conftest import import_benchmark

from medcl_lite.train import pretrain_loader


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (it imports ``_common`` from its own folder)."""
    yield from import_benchmark("bench_throughput")


def test_image_size_is_paper_size_capped_unless_forced(bench):
    pcl = bench.METHODS["pcl"]
    assert bench.image_size(pcl, None, None) == 352
    assert bench.image_size(pcl, None, 128) == 128
    assert bench.image_size(pcl, None, 512) == 352
    assert bench.image_size(pcl, 64, 128) == 64


def test_images_per_s_is_batch_over_median_after_warmup(bench):
    assert bench.images_per_s([10.0, 1.0, 2.0, 100.0], batch=4, warmup=1) == pytest.approx(2.0)
    assert bench.images_per_s([10.0, 1.0, 3.0], batch=4, warmup=0) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="warmup=2"):
        bench.images_per_s([1.0, 2.0], batch=4, warmup=2)


def test_method_configs_match_their_papers(bench):
    args = bench.parse_args(["--device", "cpu"])
    cfgs = {
        k: bench.make_config(m, m.paper_batch, args, torch.device("cpu"))
        for k, m in bench.METHODS.items()
    }
    assert set(cfgs) == {"simclr", "moco", "cl_tci", "pcl", "gcl", "moco_lrc", "ideal_dense"}
    assert (cfgs["simclr"].framework, cfgs["simclr"].pairing) == ("simclr", "instance")
    assert (cfgs["moco"].framework, cfgs["moco"].batch_size) == ("moco", 16)
    tci = cfgs["cl_tci"]
    assert (tci.framework, tci.pairing, tci.sampler) == ("moco", "temporal", "patient")
    assert (cfgs["pcl"].pairing, cfgs["pcl"].threshold) == ("positional", 0.35)
    assert (cfgs["gcl"].pairing, cfgs["gcl"].parts) == ("partition", 4)
    assert (cfgs["moco_lrc"].framework, cfgs["moco_lrc"].region_weight) == ("moco", 1.0)
    assert (cfgs["ideal_dense"].framework, cfgs["ideal_dense"].dense_weight) == ("moco", 1.0)
    assert all(m.phantom in bench.PHANTOMS for m in bench.METHODS.values())


@pytest.mark.parametrize(
    ("key", "extra"), [("moco_lrc", {"regions1", "regions2"}), ("ideal_dense", {"pixels1"})]
)
def test_loader_serves_what_the_method_needs(bench, key, extra):
    method = bench.METHODS[key]
    args = bench.parse_args(["--device", "cpu", "--batch", "2"])
    cfg = bench.make_config(method, 2, args, torch.device("cpu"))
    data = bench.make_phantom(method.phantom, 32, 4)
    assert len(data) == 4
    batch = next(iter(pretrain_loader(cfg, data, regions=bench.region_maps(cfg, data))))
    assert extra <= set(batch)
    assert batch["view1"].shape == (2, 1, 32, 32)


@pytest.mark.parametrize("option", ["--steps", "--batch", "--size"])
def test_bad_option_values_name_the_option(bench, option, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args([option, "0"])
    assert f"{option} must be >=" in capsys.readouterr().err


def test_result_name_encodes_the_settings(bench):
    args = bench.parse_args(["--max-size", "128", "--workers", "4", "--channels-last"])
    assert bench.result_name(args, torch.device("cuda"), amp=True) == (
        "throughput_cuda_max128px_w4_amp_cl.json"
    )
    args = bench.parse_args(["--size", "32", "--batch", "4"])
    assert (
        bench.result_name(args, torch.device("cpu"), amp=False) == "throughput_cpu_32px_b4_w0.json"
    )


def test_tiny_run_writes_record_and_table(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        bench.main(
            ["--size", "32", "--batch", "2", "--steps", "1", "--warmup", "1", "--device", "cpu",
             "--threads", "1", "--methods", "simclr", "--out", str(tmp_path)]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)  # main sets the process-wide thread count
    record = json.loads((tmp_path / "throughput_cpu_32px_b2_w0.json").read_text())
    (row,) = record["results"]
    assert (row["method"], row["size"], row["batch"], row["steps_timed"]) == ("SimCLR", 32, 2, 1)
    assert len(row["step_seconds_all"]) == len(row["loader_batch_seconds_all"]) == 2
    assert row["step_images_per_s"] == pytest.approx(2 / row["step_seconds_all"][1])
    assert row["loader_images_per_s"] == pytest.approx(2 / row["loader_batch_seconds_all"][1])
    out = capsys.readouterr().out
    assert (
        "| method | size | batch | device | amp | channels_last | step img/s | loader img/s |"
        in out
    )
    assert "| SimCLR | 32² | 2 | cpu | False | False |" in out
