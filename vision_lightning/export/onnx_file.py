"""ONNX: the torch.export program translated by torch.onnx's exporter (the dynamo-based one, torch's
default since 2.9; the TorchScript-based one is deprecated), its sizes named `batch`, `height` and
`width`, the preprocessing in its `metadata_props`, and ONNX Runtime to run it."""

from __future__ import annotations

import importlib.util
import json
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.export import ExportedProgram

from vision_lightning.export.tracing import first_line
from vision_lightning.utils.errors import InputError

#: the opset written (ONNX Runtime 1.18 and later run it)
OPSET = 18
METADATA_KEY = "vision_lightning.preprocessing"
INSTALL = 'pip install "vision_lightning[export]"'


def check_onnx_installed() -> None:
    """One sentence when the onnx, onnxscript or onnxruntime package is missing."""
    missing = [
        name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise InputError(
            f"ONNX export needs the {', '.join(missing)} package(s), which are not installed: {INSTALL}"
        )


def onnx_model(
    program: ExportedProgram,
    example: Tensor,
    input_name: str,
    output_names: Sequence[str],
    size_names: dict[str, str],
    output_shapes: Sequence[Sequence[int | str]],
    metadata: dict[str, Any],
):
    """The ONNX ModelProto of `program`: input `input_name`, outputs `output_names` of
    `output_shapes`, symbolic sizes renamed by `size_names` (torch's `s12` -> `batch`), `metadata` as
    JSON under `METADATA_KEY`."""
    import onnx
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on decompositions
        try:
            exported = torch.onnx.export(
                program,
                (example,),
                dynamo=True,
                input_names=[input_name],
                output_names=list(output_names),
                opset_version=OPSET,
                verbose=False,
                optimize=True,
            )
        except Exception as error:  # noqa: BLE001 - the exporter raises many types
            raise InputError(f"ONNX export failed: {first_line(error)}") from None
    model = exported.model_proto
    _rename_sizes(model, size_names)
    for output, shape in zip(model.graph.output, output_shapes):
        for dim, size in zip(output.type.tensor_type.shape.dim, shape):
            if isinstance(size, str):
                dim.dim_param = size
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    model.producer_name = "vision_lightning"
    onnx.checker.check_model(model)
    return model


def _rename_sizes(model, size_names: dict[str, str]) -> None:
    """torch's size symbols (`s12`, also inside expressions such as `2*s12`) renamed."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, size_names)) + r")\b") if size_names else None
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if pattern is not None and dim.dim_param:
                dim.dim_param = pattern.sub(lambda match: size_names[match[1]], dim.dim_param)


def save_onnx(model, path: Path) -> None:
    import onnx

    if model.ByteSize() >= 2**31:
        raise InputError(
            f"the network's ONNX file would pass ONNX's 2 GB limit for one file ({model.ByteSize() / 2**30:.1f} GB)"
        )
    onnx.save_model(model, str(path))


def onnx_runner(path: Path) -> Callable[[Tensor], list[np.ndarray]]:
    """A function giving the outputs of the ONNX file at `path` for an image batch, from one ONNX
    Runtime session on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image.detach().cpu().numpy()})


def read_metadata(path: Path) -> dict[str, Any]:
    """The preprocessing stored in an ONNX file's `metadata_props` by `onnx_model`."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise InputError(f"{path} holds no {METADATA_KEY} metadata: it was not written by vision_lightning")
