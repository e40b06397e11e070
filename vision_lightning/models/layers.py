"""Named layers of a network: find them by their `named_modules()` name and read their outputs.

Feature extraction and feature-map pictures both name layers as PyTorch does (`layer3`,
`features.22`, `encoder.layer4.1.conv2`) and capture what those layers return with forward hooks.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from vision_lightning.utils.errors import InputError


def layer_names_hint(module: nn.Module, limit: int = 24) -> str:
    """The module's top-level children (a ResNet has 10, a Swin has thousands of nested modules:
    the top level is what a reader can use), and how to name nested ones."""
    names = [name for name, _ in module.named_children()]
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"top-level layers: {shown or '(none)'}; name nested ones with dots (e.g. 'layer4.1')"


def find_layer(module: nn.Module, name: str, owner: str = "the backbone") -> nn.Module:
    """`module.get_submodule(name)`, or an `InputError` naming the closest names and the top level."""
    try:
        return module.get_submodule(name) if name else module
    except AttributeError:
        pass
    close = difflib.get_close_matches(name, [n for n, _ in module.named_modules() if n], n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise InputError(f"layer {name!r} is not in {owner}: {hint}{layer_names_hint(module)}")


def as_tensor_output(output: object) -> Tensor | None:
    """The tensor a layer returned: itself, the last of a list/tuple of maps (smp and the U-Net
    encoders return every stage, the deepest last), or None for anything else."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (list, tuple)) and output and isinstance(output[-1], Tensor):
        return output[-1]
    return None


@contextmanager
def capture_outputs(
    layers: Sequence[tuple[str, nn.Module]], transform: Callable[[Tensor], Tensor] | None = None
) -> Iterator[dict[str, Tensor]]:
    """Within the block, each named module's output (through `transform`) lands in the yielded
    dict on every forward; the hooks are removed on exit. Outputs are copied when `transform`
    returns a view of them: a later in-place op (VGG's `ReLU(inplace=True)` after a conv or a
    Linear) would otherwise change what was captured."""
    captured: dict[str, Tensor] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            tensor = as_tensor_output(output)
            if tensor is None:
                raise InputError(f"layer {name!r} returns {type(output).__name__}, not a tensor to capture")
            result = transform(tensor) if transform is not None else tensor
            if torch.compiler.is_compiling() or (  # traced tensors have no storage to compare
                result.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
            ):
                result = result.clone()
            captured[name] = result

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
