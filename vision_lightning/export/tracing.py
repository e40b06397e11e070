"""torch.export of the deployed network, with the batch, height and width left dynamic where the
network allows, and what torch.export found: which sizes stayed dynamic, and the outputs' shapes.

Sizes are marked `Dim.AUTO`: torch.export keeps a size symbolic, narrows its range where the code
requires it (`min(side) >= 16`), and fixes it to the example's where the Python code depends on
the exact value (a flattened map before a Linear layer, a size check): that is how a network that
takes one image size only is detected. Sizes are reasoned about "size-obliviously"
(`backed_size_oblivious`), so an example whose last feature map is 1x1 (a 32-pixel image in a
ResNet) does not tie the export to sizes that give 1x1 maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx.experimental._config as fx_config
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from vision_lightning.utils.errors import InputError

SIZE_NAMES = ("batch", "channels", "height", "width")


@dataclass(frozen=True)
class Traced:
    program: ExportedProgram
    #: per input dimension (batch, channels, height, width): None where dynamic, else the fixed size
    fixed: tuple[int | None, ...]
    #: per dynamic input dimension, the smallest size the network takes (where more than 1)
    minimum: dict[str, int]
    #: each output's shape: sizes, or expressions of `batch`, `height`, `width` ("4*height")
    output_shapes: tuple[tuple[int | str, ...], ...]
    #: torch's symbol of each dynamic input size (`s12`) -> its name (`batch`, `height`, `width`)
    size_names: dict[str, str]


def trace(
    network: nn.Module, example: Tensor, fixed_size: bool, what: str, fixed_batch: bool = False
) -> Traced:
    """`torch.export.export(network, (example,))` with dynamic sizes (see the module docstring);
    `fixed_size` keeps height and width at the example's, `fixed_batch` the batch size. Failures
    are one sentence naming `what`."""
    size = Dim.STATIC if fixed_size else Dim.AUTO
    shapes = ({0: Dim.STATIC if fixed_batch else Dim.AUTO, 2: size, 3: size},)
    try:
        with fx_config.patch(backed_size_oblivious=True):
            program = torch.export.export(network, (example,), dynamic_shapes=shapes, strict=False)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - torch.export raises many types
        raise InputError(f"{what} cannot be exported by torch.export: {first_line(error)}") from None
    placeholder = _input_placeholder(program)
    shape = placeholder.meta["val"].shape
    names = {}
    fixed: list[int | None] = []
    minimum: dict[str, int] = {}
    for name, dim in zip(SIZE_NAMES, shape):
        if isinstance(dim, torch.SymInt):
            fixed.append(None)
            names[dim.node.expr] = name
            lower = program.range_constraints.get(dim.node.expr)
            if lower is not None and int(lower.lower) > 1:
                minimum[name] = int(lower.lower)
        else:
            fixed.append(int(dim))
    outputs = tuple(
        tuple(_named(d, names) for d in node.meta["val"].shape) for node in _output_values(program)
    )
    return Traced(program, tuple(fixed), minimum, outputs, {str(k): v for k, v in names.items()})


def first_line(error: BaseException, limit: int = 300) -> str:
    """An error's first line (its message's gist, without torch's pages of advice)."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def _input_placeholder(program: ExportedProgram):
    user_inputs = set(program.graph_signature.user_inputs)
    return next(node for node in program.graph.nodes if node.op == "placeholder" and node.name in user_inputs)


def _output_values(program: ExportedProgram) -> list:
    output = next(node for node in program.graph.nodes if node.op == "output")
    return [value for value in output.args[0] if hasattr(value, "meta")]


def _named(dim: int | torch.SymInt, names: dict) -> int | str:
    """An output size as a size or `name` / `k*name` of one input size: found by evaluating its
    expression at a few sizes, since the size-oblivious expressions of a crop back to the input's
    size (`Min(height, 4*((height + ...)//4))`) are `height` for every size they allow."""
    if not isinstance(dim, torch.SymInt):
        return int(dim)
    import sympy

    expr = dim.node.expr
    symbols = list(names)
    samples = [{s: sympy.Integer(base + 7 * i) for i, s in enumerate(symbols)} for base in (37, 64, 129)]
    try:
        values = [int(expr.xreplace(sample)) for sample in samples]
    except (TypeError, ValueError):
        return str(expr)
    for symbol in expr.free_symbols & set(symbols):
        sizes = [int(sample[symbol]) for sample in samples]
        if all(value % size == 0 for value, size in zip(values, sizes)):
            factors = {value // size for value, size in zip(values, sizes)}
            if len(factors) == 1:
                factor = factors.pop()
                return names[symbol] if factor == 1 else f"{factor}*{names[symbol]}"
    return str(expr.xreplace({symbol: sympy.Symbol(name) for symbol, name in names.items()}))
