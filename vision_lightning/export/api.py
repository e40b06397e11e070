"""`export_task`: a task (or a checkpoint) -> deployable files, checked against PyTorch."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vision_lightning.export.checks import check_input, compare, random_images
from vision_lightning.export.files import FORMATS, Existing, ExportFiles, check_formats
from vision_lightning.export.network import DeployedNetwork, as_output_tuple
from vision_lightning.export.onnx_file import OPSET, check_onnx_installed, onnx_model, onnx_runner, save_onnx
from vision_lightning.export.preprocessing import InputSpec, document, input_spec
from vision_lightning.export.tracing import Traced, first_line, trace
from vision_lightning.tasks.loading import load_task
from vision_lightning.utils.errors import InputError

INPUT_NAME = "image"
EXAMPLE_BATCH = 2  # not 0 or 1, which torch.export would fix


def export_task(
    task: Any,
    output_dir: str | Path,
    formats: Sequence[str] = ("onnx", "torch_export"),
    image_size: int | Sequence[int] | None = None,
    bake_normalization: bool = False,
    existing: Existing = "error",
    check: bool = True,
) -> dict[str, Path]:
    """Write `task`'s deployed network (`export_network`) into `output_dir`.

    Args:
        task: a task (any object with `export_network` and `export_outputs`: every task here,
            FeatureExtractModule too) or the path of a checkpoint written by `fit`.
        formats: `onnx` (`model.onnx`, opset 18, with the preprocessing in its metadata) and/or
            `torch_export` (`model.pt2`, `torch.export.load(path).module()` runs it).
        image_size: the example size the network is traced at (int or (height, width)); by default
            the checkpoint's. Batch size, and height and width where the network allows, stay dynamic.
        bake_normalization: put `(x - mean) / std` inside the network, which then takes pixels in [0, 1].
        existing: `error` refuses to replace a file already in `output_dir`; `overwrite` replaces it.
        check: run each file on another batch (and image) size and compare with PyTorch (see
            `vision_lightning.export.checks`); a file that does not match is not written.

    Returns:
        `{format: path, "preprocessing": path of preprocessing.json}`.
    """
    chosen = check_formats(formats)
    if "onnx" in chosen:
        check_onnx_installed()
    files = ExportFiles(output_dir, chosen, existing)
    if isinstance(task, str | Path):
        task = load_task(task)
    what = type(task).__name__
    if not callable(getattr(task, "export_network", None)):
        raise InputError(f"{what} cannot be exported: it defines no export_network")
    spec = input_spec(task, image_size)
    names = tuple(getattr(task, "export_outputs", ()) or ())
    if not names:
        raise InputError(f"{what} cannot be exported: it names no outputs (export_outputs)")
    baked = bake_normalization and spec.mean is not None
    network = DeployedNetwork(
        _cpu_float32(task.export_network()), names, spec.mean if baked else None, spec.std if baked else None
    )
    unit_range = spec.mean is None or baked
    with _eval_mode(network):
        batch = getattr(task, "export_batch_size", None)  # a network that takes one batch size only
        example = random_images(
            (batch or EXAMPLE_BATCH, spec.channels, spec.height, spec.width), unit_range, seed=1
        )
        try:  # the network runs at this size, and names each output
            with torch.no_grad():
                as_output_tuple(network(example), names)
        except InputError:
            raise
        except Exception as error:  # noqa: BLE001 - a network raises many types
            raise InputError(
                f"{what}'s network cannot run a batch of {list(example.shape)}: {first_line(error)}"
            ) from None
        reason = getattr(task, "export_fixed_size", None)
        traced, reason, probes = _trace(network, example, spec, unit_range, reason, batch is not None, what)
        with torch.no_grad():
            expected = [network(images) for images in probes]
        metadata = document(
            task, spec, baked, INPUT_NAME, traced.fixed, traced.minimum, reason, names, traced.output_shapes,
            {name: FORMATS[name] for name in chosen}, OPSET if "onnx" in chosen else None,
        )  # fmt: skip
        checks: dict[str, Any] = {}
        try:
            if "torch_export" in chosen:
                path = files.partial("torch_export")
                torch.export.save(traced.program, path)
                if check:
                    program = torch.export.load(path).module()
                    with torch.no_grad():
                        checks["torch_export"] = _check("torch.export", program, names, probes, expected)
            if "onnx" in chosen:
                model = onnx_model(
                    traced.program,
                    example,
                    INPUT_NAME,
                    names,
                    traced.size_names,
                    traced.output_shapes,
                    metadata,
                )
                path = files.partial("onnx")
                save_onnx(model, path)
                if check:
                    checks["onnx"] = _check("ONNX", onnx_runner(path), names, probes, expected)
            text = json.dumps({**metadata, "checks": checks}, indent=2)
            files.partial("preprocessing").write_text(text + "\n")
            return files.commit()
        except BaseException:
            files.discard()
            raise


def _trace(
    network: nn.Module,
    example: Tensor,
    spec: InputSpec,
    unit_range: bool,
    reason: str | None,
    fixed_batch: bool,
    what: str,
) -> tuple[Traced, str | None, list[Tensor]]:
    """(torch.export program, why its size is fixed or None, the batches to check it on).

    Height and width stay dynamic unless the task says why not (`reason`), or the program traced
    with them dynamic cannot run another size (its guards say the code needs the example's)."""
    traced = trace(network, example, reason is not None, what, fixed_batch)
    probe = check_input(spec.channels, (spec.height, spec.width), traced.fixed, unit_range)
    if reason is None and None in traced.fixed[2:]:
        try:
            with torch.no_grad():
                traced.program.module()(probe)
        except Exception as error:  # noqa: BLE001 - the program's guards raise many types
            reason = f"the network's code depends on the exact input size (torch.export: {first_line(error)})"
            traced = trace(network, example, True, what, fixed_batch)
            probe = check_input(spec.channels, (spec.height, spec.width), traced.fixed, unit_range)
    probes = [probe]
    if traced.fixed[0] is None:  # and a single image, the commonest batch of all
        probes.append(random_images((1, *example.shape[1:]), unit_range, seed=2))
    return traced, reason, probes


def _check(
    what: str,
    run: Callable[[Tensor], Sequence[Any]],
    names: Sequence[str],
    probes: list[Tensor],
    expected: list,
) -> list[dict[str, Any]]:
    """`compare` of the outputs of `run` on each probe batch with PyTorch's (`expected`)."""
    checks = []
    for images, outputs in zip(probes, expected):
        try:
            got = run(images)
        except Exception as error:  # noqa: BLE001 - a program's guards and ONNX Runtime raise many types
            raise InputError(
                f"the {what} export cannot run a batch of {list(images.shape)} ({first_line(error)}): "
                "it was not written"
            ) from None
        checks.append(compare(what, names, got, outputs, images))
    return checks


def _cpu_float32(network: nn.Module) -> nn.Module:
    """`network`, or a float32, CPU, contiguous copy of it when it is elsewhere, in another type or
    in channels-last order (which ties torch.export to batches of 2 or more); the task keeps its own."""
    tensors = [*network.parameters(), *network.buffers()]
    if all(
        t.device.type == "cpu"
        and (t.dtype == torch.float32 or not t.is_floating_point())
        and t.is_contiguous()
        for t in tensors
    ):
        return network
    return copy.deepcopy(network).to("cpu", torch.float32, memory_format=torch.contiguous_format)


@contextmanager
def _eval_mode(network: nn.Module) -> Iterator[None]:
    """`network` in eval mode (dropout off, BatchNorm statistics fixed), each module's mode restored after."""
    modes = [(module, module.training) for module in network.modules()]
    network.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
