"""Benchmark: runs that share a CPU. One short pretrain + fine-tune alone, against two at once.

Every run is a child process (``bench_concurrency.py --child``) doing the same work: SimCLR
pretraining of a U-Net ResNet-18 encoder on the chest X-ray phantom (``--pretrain-steps`` steps of
``--batch`` images, both views), then fine-tuning a U-Net from that encoder (``--finetune-steps``
steps of 4 labelled images, one validation at the end). A child reports ``work_s``: the seconds of
that work alone, from its own clock (imports and the phantom excluded), its torch threads and its
OpenMP wait policy. Scenarios (``--scenarios``), each run once, children started at the same time:

- ``alone``: one run with the project's defaults: ``import medcl_lite`` first (as the notebooks and
  ``medcl`` do), which sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads OpenMP, and
  ``medcl_lite.set_threads()`` (one thread per core; nothing in the environment);
- ``pair``: two such runs at once (two notebooks, or a notebook beside the test suite);
- ``pair_split``: two at once, each told its share, ``MEDCL_THREADS = cores // 2`` (what
  ``medcl reproduce --grid --jobs 2`` gives its workers);
- ``alone_torch``, ``pair_torch``: torch's own defaults, as code that imports torch before
  medcl_lite runs (OpenMP threads spin while they wait; one thread per core). A child that has not
  finished after ``--timeout`` seconds is stopped and counts as that many.

Scenarios run interleaved, ``--rounds`` times; a scenario's ``work_s`` is the median over rounds of
its slower child's. ``slowdown`` of a pair = its ``work_s`` / the ``alone`` ``work_s``. Target
(issue 16): ``pair`` <= 2.2 (two runs on two cores cannot be faster than 2 when one run already uses
both; about 1 + the second thread's share). Writes ``results/concurrency_cpu_<cores>cores.json``.

    python benchmarks/bench_concurrency.py                                  # 2 rounds: about 12 minutes on 2 cores
    python benchmarks/bench_concurrency.py --scenarios alone pair pair_split
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCENARIOS = ("alone", "pair", "pair_split", "alone_torch", "pair_torch")
#: Thread settings a child must not inherit from whoever started the benchmark.
CLEARED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MEDCL_THREADS")
TARGET = 2.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="pretraining images per step")
    parser.add_argument("--pretrain-steps", type=int, default=12)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2, help="times each scenario runs (interleaved)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a child is stopped")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch-first", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("size", "batch", "pretrain_steps", "finetune_steps", "rounds"):
        minimum = 32 if name == "size" else 1
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(args, name)}")
    return args


# ---------------------------------------------------------------------------------------------
# one run (the child)
# ---------------------------------------------------------------------------------------------
def child(args: argparse.Namespace) -> dict:
    """The timed work of one run; prints and returns its record (one JSON line)."""
    if args.torch_first:
        import torch  # noqa: F401  (before medcl_lite: OpenMP starts with torch's own defaults)
    import medcl_lite
    from medcl_lite.data.phantoms import make_chest_xrays
    from medcl_lite.threads import omp_wait_policy
    from medcl_lite.train import FinetuneConfig, PretrainConfig, finetune, pretrain

    threads = medcl_lite.set_threads()  # what every entry point does: $MEDCL_THREADS, else per core
    data = make_chest_xrays(n_patients=max(4, args.batch), n_times=2, sites=("A",), size=args.size, seed=0)
    epochs = -(-args.pretrain_steps * args.batch // len(data))
    start = time.perf_counter()
    pre = PretrainConfig(max_epochs=epochs, batch_size=args.batch, warmup_epochs=0, device="cpu",
                         progress=False)  # fmt: skip
    result = pretrain(pre, data, index=range(min(len(data), args.pretrain_steps * args.batch)))
    pretrain_s = time.perf_counter() - start
    fine = FinetuneConfig(init="pretrained", max_steps=args.finetune_steps, batch_size=4,
                          eval_every=args.finetune_steps, device="cpu", progress=False)  # fmt: skip
    finetune(fine, data, train_index=range(4), val_index=range(4, 8), encoder_state=result.encoder_state)
    record = {
        "work_s": round(time.perf_counter() - start, 2),
        "pretrain_s": round(pretrain_s, 2),
        "pretrain_steps": len(result.history),
        "torch_threads": threads,
        "omp_wait_policy": omp_wait_policy(),
        "pid": os.getpid(),
    }
    print(json.dumps(record), flush=True)
    return record


# ---------------------------------------------------------------------------------------------
# scenarios (the parent)
# ---------------------------------------------------------------------------------------------
def child_command(args: argparse.Namespace, torch_first: bool) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--size", str(args.size),
               "--batch", str(args.batch), "--pretrain-steps", str(args.pretrain_steps),
               "--finetune-steps", str(args.finetune_steps)]  # fmt: skip
    return command + (["--torch-first"] if torch_first else [])


def scenario_env(scenario: str, cores: int) -> dict[str, str]:
    """A child's environment: the caller's, without its thread settings; ``pair_split`` adds each
    run's share of the cores."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    if scenario == "pair_split":
        env["MEDCL_THREADS"] = str(max(1, cores // 2))
    return env


def run_scenario(scenario: str, args: argparse.Namespace, cores: int) -> dict:
    """Start the scenario's children together and wait for them (a late one is stopped)."""
    count = 1 if scenario.startswith("alone") else 2
    command = child_command(args, torch_first=scenario.endswith("_torch"))
    env = scenario_env(scenario, cores)
    start = time.perf_counter()
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(count)]  # fmt: skip
    runs = []
    for proc in procs:
        remaining = max(1.0, args.timeout - (time.perf_counter() - start))
        try:
            out, err = proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            runs.append({"work_s": args.timeout, "stopped_after_s": args.timeout})
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"{scenario}: a child failed (exit {proc.returncode}):\n{err[-3000:]}")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {"runs": runs, "wall_s": round(time.perf_counter() - start, 2),
            "work_s": max(r["work_s"] for r in runs)}  # fmt: skip


def run_rounds(args: argparse.Namespace, cores: int) -> list[dict]:
    """Every scenario ``--rounds`` times, interleaved (slow drifts of the machine hit all alike);
    per scenario its rounds and the median of their ``work_s``."""
    rounds = {s: [] for s in args.scenarios}
    for _ in range(args.rounds):
        for scenario in args.scenarios:
            rounds[scenario].append(run_scenario(scenario, args, cores))
    return [{"scenario": s, "work_s": round(statistics.median(r["work_s"] for r in rs), 2), "rounds": rs}
            for s, rs in rounds.items()]  # fmt: skip


def add_slowdowns(results: list[dict]) -> None:
    """``slowdown`` of each scenario: its slowest run over the alone run with the same settings
    (``alone`` for the project's defaults and ``pair_split``, ``alone_torch`` for ``pair_torch``)."""
    work = {r["scenario"]: r["work_s"] for r in results}
    for result in results:
        base = "alone_torch" if result["scenario"].endswith("_torch") else "alone"
        if base in work:
            result["slowdown"] = round(result["work_s"] / work[base], 2)


def table(results: list[dict]) -> str:
    lines = ["| scenario | runs at once | threads each | wait policy | work s (each run; rounds) | slowdown |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        first = r["rounds"][0]["runs"][0]
        each = "; ".join(", ".join(f"{run['work_s']:.1f}" + (" (stopped)" if "stopped_after_s" in run else "")
                                   for run in one["runs"]) for one in r["rounds"])  # fmt: skip
        lines.append(f"| {r['scenario']} | {len(r['rounds'][0]['runs'])} | {first.get('torch_threads', '?')} | "
                     f"{first.get('omp_wait_policy', '?')} | {each} | {r.get('slowdown', '–')} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child:
        return child(args)
    from _common import RESULTS, cpu_model, header, write_result

    from medcl_lite.threads import available_cores

    cores = available_cores()
    started = {"load_average_at_start": list(os.getloadavg()), "cpu": cpu_model(), "cores": cores}
    results = run_rounds(args, cores)
    add_slowdowns(results)
    pair = next((r for r in results if r["scenario"] == "pair"), None)
    record = {
        **header("concurrency", argv),
        "machine": {**started, "platform": sys.platform, "python": sys.version.split()[0]},
        "rounds": args.rounds,
        "work": {"size": args.size, "batch": args.batch, "pretrain_steps": args.pretrain_steps,
                 "finetune_steps": args.finetune_steps},  # fmt: skip
        "target_pair_slowdown": TARGET,
        "meets_target": None if pair is None or "slowdown" not in pair else pair["slowdown"] <= TARGET,
        "results": results,
    }
    write_result(record, args.out or RESULTS, f"concurrency_cpu_{cores}cores.json")
    print(table(results))
    return record


if __name__ == "__main__":
    main()
