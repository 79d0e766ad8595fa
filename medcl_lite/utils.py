"""Run-time helpers every notebook uses first: seeding, device choice, size preset and run folder,
an environment print."""

from __future__ import annotations

import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch

from medcl_lite.threads import omp_wait_policy


def as_numpy(x, name: str) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor (any device) or a nested list.

    Raises ValueError naming ``name`` when ``x`` cannot be read as an array.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} cannot be read as an array: {error}") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run repeats exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def get_device(prefer: str = "auto") -> torch.device:
    """Pick the device at run time: CUDA, then Apple MPS, then CPU (``prefer`` forces one)."""
    if prefer != "auto":
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def run_size(smoke: bool | None, preset: str, device: torch.device) -> str:
    """A notebook's size preset: ``"smoke"`` when ``smoke`` is true (``None``: smoke on a CPU,
    the full size on an accelerator), else ``preset``, where ``"auto"`` means ``"gpu"`` on CUDA
    and ``"cpu"`` elsewhere (Apple MPS included)."""
    if smoke is None:
        smoke = device.type == "cpu"
    if smoke:
        return "smoke"
    if preset != "auto":
        return preset
    return "gpu" if device.type == "cuda" else "cpu"


def course_dir() -> Path:
    """Where the chapters, their parameter files and reference runs are: the repository's
    ``notebooks/`` (a clone or an editable install), else the copy a wheel ships
    (``medcl_lite/course/``, see setup.py)."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "notebooks"
    return checkout if checkout.is_dir() else package / "course"


RUNS_ENV_VAR = "MEDCL_RUNS"


def run_folder(out_dir: str | os.PathLike, name: str) -> Path:
    """Where a notebook run writes: ``out_dir`` if given, else ``$MEDCL_RUNS/<name>`` (default
    ``~/.cache/medcl_lite/runs/<name>``). Created, with its ``figures/`` subfolder."""
    if out_dir:
        folder = Path(out_dir)
    else:
        root = os.environ.get(RUNS_ENV_VAR) or Path.home() / ".cache" / "medcl_lite" / "runs"
        folder = Path(root) / name
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    return folder


def environment() -> dict[str, str]:
    """The versions and hardware a result was measured with (stored with every run's config)."""
    import segmentation_models_pytorch as smp
    import torchvision

    from medcl_lite import __version__

    device = get_device()
    info = {
        "medcl_lite": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "smp": smp.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "cpu_threads": str(torch.get_num_threads()),
        "omp_wait_policy": omp_wait_policy(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_env() -> dict[str, str]:
    """Print (and return) :func:`environment`, the second cell of every notebook."""
    info = environment()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return info


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``: what
    benchmark records and reference runs (:mod:`medcl_lite.reference`) name the machine by."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
