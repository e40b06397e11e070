"""CLI start-up stays light: the heavy libraries are imported where they are first used, not when
`python -m vision_lightning --help` builds its parser (issue 12: start-up within 1.3x of
`import lightning.pytorch`; benchmarks/startup.py measures it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: imported on first use (models, losses and pipelines), each slow to import
LAZY = ("timm", "segmentation_models_pytorch", "albumentations", "cv2", "huggingface_hub")

PROBE = f"""
import contextlib, io, json, sys
import vision_lightning
after_import = sorted(m for m in {LAZY!r} if m in sys.modules)
from vision_lightning.cli import main
with contextlib.redirect_stdout(io.StringIO()) as help_text:
    try:
        main(["--help"])
    except SystemExit:
        pass
after_help = sorted(m for m in {LAZY!r} if m in sys.modules)
from vision_lightning.models import create_backbone
from vision_lightning.utils.transforms import build_transform
create_backbone("timm:resnet10t")
build_transform(32)
print(json.dumps({{"after_import": after_import, "after_help": after_help, "help": help_text.getvalue(),
                  "after_use": sorted(m for m in {LAZY!r} if m in sys.modules)}}))
"""


def test_import_and_help_leave_heavy_libraries_unimported():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state["after_import"] == []
    assert state["after_help"] == []
    assert "fit" in state["help"] and "lr_find" in state["help"]
    # ... and a model or a pipeline still gets them when it needs them
    assert {"timm", "albumentations"} <= set(state["after_use"])
