"""The one weight loader: local state dicts and Lightning checkpoints into any `nn.Module`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vision_lightning.utils.errors import InputError

log = logging.getLogger(__name__)

# DataParallel/DDP add `module.` in front; torch.compile adds `_orig_mod.` wherever a compiled module
# sits (`backbone._orig_mod.0.weight`, Lightning #17415).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
COMPILED = "_orig_mod."


def plain_key(key: str, prefixes=WRAPPER_PREFIXES) -> str:
    """A state-dict key without wrapper prefixes in front and without `_orig_mod.` anywhere."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key.replace("." + COMPILED, ".") if COMPILED in key else key


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes=WRAPPER_PREFIXES) -> dict:
    """`state_dict` with plain keys (see `plain_key`): the eager model's names."""
    return {plain_key(key, prefixes): value for key, value in state_dict.items()}


def match_keys(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict:
    """`state_dict` under `model`'s own key names, whichever side was compiled or wrapped: an eager
    checkpoint loads into a model holding `torch.compile`d children and the other way round."""
    own = {plain_key(key): key for key in model.state_dict()}
    return {own.get(key, key): value for key, value in strip_prefixes(state_dict).items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth`/`.pt`/`.ckpt` file, without wrapper prefixes, loaded with weights_only."""
    from vision_lightning.utils.checkpoints import read_checkpoint

    data = read_checkpoint(path, what="weights file")
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]  # a Lightning checkpoint
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(f"weights file {path} does not hold a state dict (a mapping of names to tensors)")
    return strip_prefixes(data)


def pretrained_torchvision(name: str) -> nn.Module:
    """torchvision's model `name` with its DEFAULT ImageNet weights. torchvision reads its download
    with `weights_only=False`; the file (downloaded or in torch's cache) is first read here with
    `weights_only=True`, so a file that is more than weights never reaches the unsafe read."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    return torchvision.models.get_model(name, weights=weights)


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list, list, list]:
    """(missing keys, unexpected keys, shape mismatches as 'key: file [..] vs model [..]')."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: file {list(state_dict[k].shape)} vs model {list(v.shape)}"
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    return missing, unexpected, shapes


def _sample(keys: list, n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_compatible(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, strict: bool = True
) -> None:
    """Raise one clear `InputError` when `state_dict` cannot be loaded into `model`."""
    missing, unexpected, shapes = describe_mismatch(model, state_dict)
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) ({_sample(shapes, 2)})")
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s) ({_sample(missing)})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) ({_sample(unexpected)})")
    if not strict and len(missing) == len(model.state_dict()):
        problems.append("no key matches this model")
    if problems:
        raise InputError(
            f"{source} does not fit this model (was it trained with another architecture?): "
            + "; ".join(problems)
        )


def load_weights(
    model: nn.Module,
    path: str | Path,
    strict: bool = True,
    prefix: str | None = None,
    ignore: tuple[str, ...] = (),
) -> nn.Module:
    """Load the state dict at `path` into `model` and report what was loaded.

    `prefix` selects a sub-module of the file (`"backbone."` takes a task checkpoint's backbone);
    keys starting with anything in `ignore` that the model lacks (the final layer of an original
    classifier, say) are dropped with a note; those the model has are loaded as usual.
    """
    state_dict = read_state_dict(path)
    if prefix and any(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    state_dict = match_keys(model, state_dict)
    own = model.state_dict()
    dropped = {k for k in state_dict if k.startswith(ignore) and k not in own} if ignore else set()
    state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    check_compatible(model, state_dict, f"weights file {path}", strict=strict)
    # nn.Module's own load_state_dict: some modules override it (smp's encoders drop classifier keys
    # and return None instead of the missing / unexpected keys reported below).
    result = nn.Module.load_state_dict(model, state_dict, strict=strict)
    log.info(
        "Loaded %d tensors from %s%s%s%s",
        len(state_dict) - len(result.unexpected_keys),
        path,
        f"; ignored {_sample(sorted(dropped))}" if dropped else "",
        f"; missing {_sample(result.missing_keys)}" if result.missing_keys else "",
        f"; unexpected {_sample(result.unexpected_keys)}" if result.unexpected_keys else "",
    )
    return model
