"""Export a task's network for deployment: ONNX and/or torch.export files, with the preprocessing
beside them (`preprocessing.json`) and inside the ONNX file (`metadata_props`).

    from vision_lightning import export_task
    export_task("checkpoints/last.ckpt", "exported")             # model.onnx, model.pt2, preprocessing.json

    python -m vision_lightning export --ckpt_path checkpoints/last.ckpt --output exported

What a task exports is its `export_network()` (a plain module: one float batch (N, C, H, W) in,
tensors named `export_outputs` out), traced once by torch.export with the batch size and, where the
network allows, the height and width left dynamic (`tracing.py`); the ONNX file is translated from
that program. Each written file is run on another batch and image size and compared with PyTorch
within atol 1e-4 + rtol 1e-3 (float32) before it is moved into place (`checks.py`).
"""

from vision_lightning.export.api import export_task
from vision_lightning.export.files import FORMATS
from vision_lightning.export.onnx_file import read_metadata
from vision_lightning.export.preprocessing import ATOL, RTOL

__all__ = ["ATOL", "FORMATS", "RTOL", "export_task", "read_metadata"]
