"""Export a task's network for deployment: ONNX and/or torch.export files, with the preprocessing
beside them (`preprocessing.json`) and inside the ONNX file (`metadata_props`).

    from vision_lightning import export_task
    export_task("checkpoints/last.ckpt", "exported")             # model.onnx, model.pt2, preprocessing.json

    python -m vision_lightning export --ckpt_path checkpoints/last.ckpt --output exported

What a task exports (duck-typed, as the callbacks are: BaseTask declares the defaults):
- `export_network()`: a plain module (no task around it) taking one float batch (N, C, H, W)
  prepared as the task's `preprocessing` says, returning a tensor, a tuple or a dict of tensors;
- `export_outputs`: the output names, in order (a dict output is read by these names);
- `export_fixed_size` (optional): why the network takes its `image_size` only, where torch.export
  cannot see it; `export_normalized_inputs` (optional, default True): False for [0, 1] pixels;
- `export_batch_size` (optional): a network that takes one batch size only (1 for a detector
  that returns a variable number of boxes per image);
- `export_info` (optional): more JSON-ready facts about the outputs for preprocessing.json.

The network is traced once by torch.export with the batch size and, where the network allows, the
height and width left dynamic (`tracing.py`); the ONNX file is translated from that program. Each
written file is run on another batch and image size and compared with PyTorch within atol 1e-4 +
rtol 1e-3 (float32) before it is moved into place (`checks.py`).
"""

from vision_lightning.export.api import export_task
from vision_lightning.export.files import FORMATS
from vision_lightning.export.onnx_file import read_metadata
from vision_lightning.export.preprocessing import ATOL, RTOL

__all__ = ["ATOL", "FORMATS", "RTOL", "export_task", "read_metadata"]
