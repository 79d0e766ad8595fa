"""medcl_lite: contrastive self-supervised learning for medical image segmentation, taught in notebooks.

Every method here answers one question, *which pairs are positive?* (``medcl_lite.pairing``), and
shares one masked InfoNCE loss (``medcl_lite.losses``). Start with ``notebooks/00_quickstart``.
"""

from medcl_lite.threads import prefer_passive_wait

prefer_passive_wait()  # before torch loads OpenMP: runs sharing a CPU then wait politely (threads.py)

from medcl_lite.threads import set_threads  # noqa: E402
from medcl_lite.utils import get_device, print_env, run_folder, run_size, seed_everything  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "get_device",
    "print_env",
    "run_folder",
    "run_size",
    "seed_everything",
    "set_threads",
]
