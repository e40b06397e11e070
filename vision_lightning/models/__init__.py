from vision_lightning.models.factory import available_backbones, create_backbone
from vision_lightning.models.heads import build_head

__all__ = ["available_backbones", "build_head", "create_backbone"]
