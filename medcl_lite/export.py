"""Encoders in and out of medcl_lite: one file that a plain smp model loads.

``medcl export RUN_DIR --out encoder.pt`` (or :func:`export_encoder`) writes a pretraining run's
encoder as one ``torch.save`` dict of tensors and plain values (``torch.load(weights_only=True)``)::

    {"format": "medcl_lite.encoder", "format_version": 1,
     "encoder": model.encoder.state_dict(),
     "meta": {"encoder_name": "resnet18", "in_channels": 1, "depth": 5, "arch": "unet",
              "method": "moco/temporal", "medcl_lite_version": ..., "smp_version": ...,
              "pretrain_config": "<the run's PretrainConfig as JSON>"}}

Any smp segmenter with that encoder takes it, no medcl_lite needed::

    import segmentation_models_pytorch as smp, torch
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=4)
    state = torch.load("encoder.pt", weights_only=True)
    model.encoder.load_state_dict(state["encoder"], strict=True)

``smp.DeepLabV3`` / ``smp.DeepLabV3Plus`` too: their dilation changes strides, not weights.
Only the encoder leaves: a decoder trained by region or supervised pretraining stays in the run's
own ``encoder.pt``. The other way, an encoder of your own into medcl_lite fine-tuning: write it
with ``export_encoder(my_smp_model, "mine.pt")`` (or ``torch.save(my_model.encoder.state_dict(),
"mine.pt")``) and pass ``FinetuneConfig(init="pretrained", pretrained="mine.pt")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

from medcl_lite import __version__
from medcl_lite.checkpoint import atomic_write
from medcl_lite.config import to_dict
from medcl_lite.models import ARCHITECTURES, build_segmenter

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "check_encoder",
    "export_encoder",
    "load_encoder_into",
    "load_exported",
    "recorded_encoder",
]

FORMAT = "medcl_lite.encoder"
FORMAT_VERSION = 1

#: The files of a pretraining run folder that hold its encoder, in the order they are tried:
#: ``encoder.pt`` (written at the end) and ``checkpoint.pt`` (every epoch: a stopped run has it).
RUN_FILES = ("encoder.pt", "checkpoint.pt")

#: ``PretrainConfig`` fields left out of the recorded config: paths of the machine that ran it.
_LOCAL_FIELDS = ("out_dir", "superpixel_cache")


def export_encoder(source: Any, out: str | Path, encoder_name: str | None = None) -> Path:
    """Write ``source``'s encoder to ``out`` (atomically) as an exported encoder; returns ``out``.

    Args:
        source: a pretraining run folder, its ``encoder.pt`` or ``checkpoint.pt``, an exported
            file, a :class:`~medcl_lite.train.PretrainResult`, or a model: an smp segmenter,
            a pretraining network (``.encoder``) or a bare smp encoder.
        out: the file to write (not the file read).
        encoder_name: the smp encoder name, for a model that does not tell it (smp segmenters
            do: ``model.name`` is ``"u-resnet18"``); checked against a file's record.
    """
    if isinstance(source, (str, Path)):
        path = _run_file(Path(source))
        if Path(out).resolve() == path.resolve():
            raise ValueError(
                f"export: the output {out} is the file exported from; choose another name"
            )
        encoder, meta = _from_file(path)
    else:
        encoder, meta = _from_object(source, encoder_name)
    where = f"export source {_describe(source)}"
    check_encoder(meta, encoder_name, None, where, against="the encoder_name argument")
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": _plain_state(encoder),
        "meta": meta,
    }
    return atomic_write(out, lambda f: torch.save(record, f))


def load_exported(path: str | Path) -> dict:
    """An exported encoder: ``{"format", "format_version", "encoder": state_dict, "meta": {...}}``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming ``path`` when it is missing, corrupt or
    not an exported encoder.
    """
    path = Path(path)
    return _check_exported(_read(path), path)


def load_encoder_into(model: nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Load an exported encoder into ``model.encoder`` (or into ``model``, a bare encoder).

    The encoder name (when the model tells it, as smp segmenters do) and ``in_channels`` are
    checked first, whatever ``strict``; ``strict`` is ``load_state_dict``'s (every key present).
    Returns the file's metadata.
    """
    saved = load_exported(path)
    encoder = getattr(model, "encoder", model)
    check_encoder(saved["meta"], _smp_encoder_name(model), _in_channels(encoder), where=str(path))
    try:
        encoder.load_state_dict(saved["encoder"], strict=strict)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: its weights do not fit the {type(model).__name__}'s encoder: {str(err)[:400]}"
        ) from None
    return saved["meta"]


def check_encoder(
    meta: dict,
    encoder_name: str | None,
    in_channels: int | None,
    where: str,
    against: str = "the model",
) -> None:
    """Refuse, saying what differs, an encoder recorded in ``meta`` (``encoder_name``,
    ``in_channels``) for ``against`` with others; ``None`` = unknown there, not checked."""
    differs = []
    if encoder_name is not None and meta["encoder_name"] != encoder_name:
        differs.append(f"encoder name {encoder_name!r}")
    if in_channels is not None and int(meta["in_channels"]) != int(in_channels):
        differs.append(f"in_channels {in_channels}")
    if differs:
        raise ValueError(
            f"{where} holds a {meta['encoder_name']!r} encoder with in_channels="
            f"{meta['in_channels']}, but {against} has {' and '.join(differs)}"
        )


def recorded_encoder(saved: dict) -> dict | None:
    """``{"encoder_name", "in_channels"}`` as a loaded file records them: an exported encoder's
    ``meta``, a pretraining run file's ``config`` (a dict or JSON); ``None`` when it does not."""
    if saved.get("format") == FORMAT and isinstance(saved.get("meta"), dict):
        return saved["meta"]
    config = saved.get("config")
    config = json.loads(config) if isinstance(config, str) else config
    if isinstance(config, dict) and {"encoder", "in_channels"} <= set(config):
        return {"encoder_name": config["encoder"], "in_channels": config["in_channels"]}
    return None


# --------------------------------------------------------------------------------------------
# Sources: run folders and their files, results, models
# --------------------------------------------------------------------------------------------
def _run_file(path: Path) -> Path:
    """``path`` itself, or the run folder's ``encoder.pt`` (``checkpoint.pt`` for a stopped run)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give a pretraining run folder or a file in it")
    if not path.is_dir():
        return path
    for name in RUN_FILES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(
        f"{path} holds no {' or '.join(RUN_FILES)}: not a pretraining run folder"
    )


def _from_file(path: Path) -> tuple[nn.Module, dict]:
    """Encoder and metadata of a run's ``encoder.pt`` / ``checkpoint.pt`` or an exported file;
    the weights are loaded (strictly) into a fresh smp encoder of the recorded kind."""
    saved = _read(path)
    if saved.get("format") == FORMAT:
        meta = _check_exported(saved, path)["meta"]
        encoder = _fresh_encoder(
            path, saved["encoder"], meta["encoder_name"], meta["in_channels"], meta.get("arch", "")
        )
        return encoder, meta
    if not (isinstance(saved.get("encoder"), dict) or isinstance(saved.get("net"), dict)):
        raise ValueError(
            f"{path} is neither a pretraining run's {' / '.join(RUN_FILES)} nor an exported "
            f"encoder (keys {sorted(map(str, saved))[:6]})"
        )
    state = saved["encoder"] if "encoder" in saved else _strip(saved["net"], "encoder.")
    config = _run_config(saved, path)
    name, arch = config["encoder"], config.get("arch", "")
    encoder = _fresh_encoder(path, state, name, config["in_channels"], arch)
    return encoder, _meta(encoder, name, config=config)


def _fresh_encoder(path: Path, state: dict, name: str, in_channels: int, arch: str) -> nn.Module:
    """A new smp encoder ``name`` (of ``arch``'s segmenter) holding ``state``, loaded strictly."""
    encoder = build_segmenter(arch or "unet", name, in_channels).encoder
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: its encoder weights do not fit a {name} encoder with "
            f"in_channels={in_channels}: {str(err)[:400]}"
        ) from None
    return encoder


def _from_object(source: Any, encoder_name: str | None) -> tuple[nn.Module, dict]:
    """Encoder and metadata of a ``PretrainResult`` or a model."""
    if hasattr(source, "net") and hasattr(source, "config"):  # a PretrainResult
        config = to_dict(source.config)
        return source.net.encoder, _meta(source.net.encoder, config["encoder"], config=config)
    if not isinstance(source, nn.Module):
        raise TypeError(
            f"export: cannot export a {type(source).__name__}; pass a run folder, a file or a model"
        )
    name = _smp_encoder_name(source) or encoder_name
    if not name:
        raise ValueError(
            f"export: a {type(source).__name__} does not tell its smp encoder name; "
            "pass encoder_name=... (e.g. 'resnet18')"
        )
    arch = {cls: key for key, cls in ARCHITECTURES.items()}.get(type(source), "")
    encoder = getattr(source, "encoder", source)
    return encoder, _meta(encoder, name, arch=arch)


def _check_exported(saved: dict, path: Path) -> dict:
    """``saved`` (read from ``path``) if it is a whole exported encoder; else a ``ValueError``."""
    if saved.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not an encoder exported by medcl_lite (no format {FORMAT!r}; keys "
            f"{sorted(map(str, saved))[:6]}); export a pretraining run with "
            "`medcl export RUN_DIR --out FILE`"
        )
    if saved.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: exported encoder format_version {saved.get('format_version')!r}, "
            f"this medcl_lite reads {FORMAT_VERSION}"
        )
    meta = saved.get("meta")
    if (
        not _is_state(saved.get("encoder"))
        or not isinstance(meta, dict)
        or not {"encoder_name", "in_channels"} <= set(meta)
    ):
        raise ValueError(
            f"{path} is a damaged exported encoder: it needs an 'encoder' state_dict of "
            "tensors and 'meta' with encoder_name and in_channels"
        )
    return saved


def _run_config(saved: dict, path: Path) -> dict:
    """The ``PretrainConfig`` dict a run file records, else its folder's ``config.json``."""
    config = saved.get("config")
    if config is None and (path.parent / "config.json").is_file():
        config = (path.parent / "config.json").read_text()
    if isinstance(config, str):
        config = json.loads(config)
    if not isinstance(config, dict) or not {"encoder", "in_channels"} <= set(config):
        raise ValueError(
            f"{path} records no pretraining config (encoder, in_channels): cannot tell its encoder"
        )
    return config


def _meta(encoder: nn.Module, name: str, arch: str = "", config: dict | None = None) -> dict:
    """The metadata written beside the weights (str and int only); ``config``: the pretraining
    run's ``PretrainConfig`` as a dict, when known."""
    config = config or {}
    public = {k: v for k, v in config.items() if k not in _LOCAL_FIELDS}
    return {
        "encoder_name": str(name),
        "in_channels": _in_channels(encoder),
        "depth": int(getattr(encoder, "_depth", 0)),  # 0: not an smp encoder, unknown
        "arch": str(config.get("arch", arch)),
        "method": _method(config),
        "medcl_lite_version": __version__,
        "smp_version": str(smp.__version__),
        "pretrain_config": json.dumps(public, sort_keys=True) if public else "",
    }


def _method(config: dict) -> str:
    """``"moco/temporal"``, ``"simclr/instance+region"``, ``"supervised"``; "" when unknown."""
    framework = config.get("framework", "")
    if not framework:
        return ""
    method = (
        framework
        if framework == "supervised"
        else f"{framework}/{config.get('pairing', 'instance')}"
    )
    extras = [name for name in ("region", "dense") if config.get(f"{name}_weight", 0) > 0]
    return "+".join([method, *extras])


# --------------------------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------------------------
def _read(path: Path) -> dict:
    """``torch.load(path, weights_only=True)``, a dict; errors name the file and the problem."""
    if not path.is_file():
        raise FileNotFoundError(f"encoder file not found: {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickled code, not a torch file ...
        raise ValueError(f"{path} is unreadable or corrupt: {_load_error(err)}") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a {type(saved).__name__}, not a dict of weights")
    return saved


def _load_error(err: Exception) -> str:
    """What ``torch.load(weights_only=True)`` failed on, in one line."""
    if "Weights only load failed" in str(err):
        return "it holds pickled Python objects, not only tensors and plain values"
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return f"not a torch.save file of weights ({type(err).__name__}: {first})"


def _describe(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"(a {type(source).__name__})"


def _is_state(state: Any) -> bool:
    return (
        isinstance(state, dict)
        and bool(state)
        and all(isinstance(v, Tensor) for v in state.values())
    )


def _strip(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _plain_state(module: nn.Module) -> dict[str, Tensor]:
    """``module.state_dict()`` as a plain dict of contiguous CPU copies."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _smp_encoder_name(model: nn.Module) -> str | None:
    """``"resnet18"`` of an smp segmenter (``model.name == "u-resnet18"``), else ``None``."""
    name = getattr(model, "name", None)
    return name.split("-", 1)[1] if isinstance(name, str) and "-" in name else None


def _in_channels(encoder: nn.Module) -> int:
    """An smp encoder's ``_in_channels``, else the input channels of its first convolution."""
    value = getattr(encoder, "_in_channels", None)
    if value is None:
        value = next((p.shape[1] for p in encoder.parameters() if p.ndim == 4), None)
    if value is None:
        raise ValueError(
            f"export: cannot tell the in_channels of a {type(encoder).__name__} (no convolution)"
        )
    return int(value)
