"""CPU threads: the count a run is told, the split between runs, the environment of children, and
OpenMP's wait policy as OpenMP itself reports it (OMP_DISPLAY_ENV) in a fresh process."""

import os
import subprocess
import sys

import pytest
import torch

import medcl_lite
from medcl_lite import threads

THREAD_VARS = ("MEDCL_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@pytest.fixture
def clean_env(monkeypatch):
    """No thread settings in the environment; torch's thread count restored afterwards."""
    for name in (*THREAD_VARS, "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


def test_requested_threads_argument_then_medcl_then_omp(clean_env):
    assert threads.requested_threads() is None
    assert threads.requested_threads(0) is None  # 0 = nothing asked (the CLI's default)
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert threads.requested_threads() == 3
    clean_env.setenv("MEDCL_THREADS", " 2 ")
    assert threads.requested_threads() == 2
    assert threads.requested_threads(5) == 5


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_thread_settings_name_the_variable(clean_env, value):
    clean_env.setenv("MEDCL_THREADS", value)
    with pytest.raises(ValueError, match=r"\$MEDCL_THREADS must be a positive integer.*" + repr(value)):
        threads.requested_threads()
    with pytest.raises(ValueError, match=r"threads must be a positive integer \(CPU threads\), got -2"):
        threads.requested_threads(-2)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        threads.child_env(True)


def test_set_threads_sets_torch(clean_env):
    assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
    clean_env.setenv("MEDCL_THREADS", "2")
    assert threads.set_threads() == 2 and torch.get_num_threads() == 2
    clean_env.delenv("MEDCL_THREADS")
    assert medcl_lite.set_threads() == threads.available_cores() == torch.get_num_threads()


def test_share_splits_the_cores():
    assert threads.share(2, cores=2) == 1
    assert threads.share(3, cores=16) == 5
    assert threads.share(4, cores=2) == 1  # never 0: oversubscribed, each waits passively
    assert threads.share(1, cores=8) == 8
    assert threads.share(2) == max(1, threads.available_cores() // 2)
    for jobs in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="jobs must be a positive integer"):
            threads.share(jobs)


def test_child_env(clean_env):
    assert threads.child_env() == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = threads.child_env(3)
    assert env["MEDCL_THREADS"] == env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    clean_env.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice is kept
    assert threads.child_env()["OMP_WAIT_POLICY"] == "ACTIVE"


def test_updated_environ_restores_exactly(clean_env):
    clean_env.setenv("MEDCL_THREADS", "4")
    with threads.updated_environ({"MEDCL_THREADS": "1", "OMP_NUM_THREADS": "1"}):
        assert os.environ["MEDCL_THREADS"] == os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["MEDCL_THREADS"] == "4" and "OMP_NUM_THREADS" not in os.environ
    with pytest.raises(RuntimeError), threads.updated_environ({"OMP_NUM_THREADS": "1"}):
        raise RuntimeError
    assert "OMP_NUM_THREADS" not in os.environ


def _fresh_process(code: str, **env) -> subprocess.CompletedProcess:
    """``python -c code`` with no thread settings but ``env``, OpenMP printing its settings."""
    base = {k: v for k, v in os.environ.items() if k not in (*THREAD_VARS, "OMP_WAIT_POLICY")}
    run = subprocess.run([sys.executable, "-c", code], env={**base, "OMP_DISPLAY_ENV": "VERBOSE", **env},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return run


@pytest.mark.parametrize(
    ("code", "env", "reported", "spin"),
    [
        ("import medcl_lite", {}, "PASSIVE", "0"),  # medcl_lite first: OpenMP never spins
        ("import torch; import medcl_lite", {}, "DEFAULT", "300000"),  # too late: torch's default
        ("import medcl_lite", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE", "30000000000"),  # opt-out
    ],
    ids=["medcl_lite_first", "torch_first", "user_active"],
)
def test_wait_policy_as_openmp_reads_it(code, env, reported, spin):
    """libgomp prints its spin count at start (OMP_DISPLAY_ENV=VERBOSE): 0 means passive."""
    script = f"{code}; from medcl_lite.threads import omp_wait_policy; print(omp_wait_policy())"
    run = _fresh_process(script, **env)
    assert run.stdout.split()[-1] == reported
    assert f"GOMP_SPINCOUNT = '{spin}'" in run.stderr


def test_print_env_reports_threads_and_wait_policy(capsys):
    info = medcl_lite.print_env()
    assert info["cpu_threads"] == str(torch.get_num_threads())
    assert info["omp_wait_policy"] == threads.omp_wait_policy()
    assert "omp_wait_policy" in capsys.readouterr().out
