"""SuperResScores: PSNR and SSIM the way super-resolution papers report them (BasicSR's conventions).

- per image, then averaged over images (not over pixels of the whole set);
- the prediction clamped to [0, 1] and rounded to 8-bit levels, as the saved PNG would be;
- a border of `scale` pixels cropped on every side (the edges lack context for any method);
- on RGB (all channels together) and on the luma Y of ITU-R BT.601 (MATLAB `rgb2ycbcr`,
  Y in [16, 235] / 255), which is what the literature's tables use;
- SSIM with an 11x11 Gaussian window, sigma 1.5 (Wang et al. 2004).

The names carry the convention: `psnr_y_crop4` is PSNR on Y with a 4-pixel border cropped. When
bicubic upscales of the same images are given, `bicubic_*` scores and the gain over bicubic (`*_over_bicubic`) are
reported too, so every run shows its margin over the baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

from vision_lightning.utils.precision import in_float32

SCORES = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")


def rgb_to_y(images: Tensor) -> Tensor:
    """Luma (N, 1, H, W) of RGB images (N, 3, H, W) in [0, 1], BT.601 studio range as MATLAB computes it."""
    weights = images.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (16.0 + (images * weights).sum(dim=1, keepdim=True)) / 255.0


def quantize(images: Tensor) -> Tensor:
    return (images.float().clamp(0.0, 1.0) * 255.0).round() / 255.0


def shave(images: Tensor, border: int) -> Tensor:
    return images[..., border:-border, border:-border] if border > 0 else images


def psnr(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB for images in [0, 1] (data range 1)."""
    mse = (prediction - target).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM (mean over channels) for images in [0, 1]."""
    return structural_similarity_index_measure(
        prediction, target, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, reduction="none"
    )


def image_scores(prediction: Tensor, target: Tensor, border: int) -> dict[str, Tensor]:
    """Per-image scores (each of shape (N,)) after 8-bit rounding and cropping `border` pixels."""
    prediction, target = shave(quantize(prediction), border), shave(quantize(target), border)
    y_prediction, y_target = rgb_to_y(prediction), rgb_to_y(target)
    return {
        "psnr_rgb": psnr(prediction, target),
        "ssim_rgb": ssim(prediction, target),
        "psnr_y": psnr(y_prediction, y_target),
        "ssim_y": ssim(y_prediction, y_target),
    }


class SuperResScores(Metric):
    """Mean per-image PSNR / SSIM on RGB and Y with a border crop of `scale` (see the module docstring)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, scale: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = scale
        for kind in ("", "bicubic_"):
            for name in SCORES:
                self.add_state(
                    f"{kind}{name}", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
                )
        self.add_state("images", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("bicubic_images", default=torch.tensor(0), dist_reduce_fx="sum")

    def _name(self, score: str) -> str:
        return f"{score}_crop{self.scale}"

    @in_float32
    def update(self, prediction: Tensor, target: Tensor, bicubic: Tensor | None = None) -> None:
        for name, values in image_scores(prediction, target, self.scale).items():
            setattr(self, name, getattr(self, name) + values.double().sum())
        self.images += len(prediction)
        if bicubic is not None:
            for name, values in image_scores(bicubic, target, self.scale).items():
                key = f"bicubic_{name}"
                setattr(self, key, getattr(self, key) + values.double().sum())
            self.bicubic_images += len(bicubic)

    def compute(self) -> dict[str, Tensor]:
        count = self.images.clamp_min(1)
        result = {self._name(name): (getattr(self, name) / count).float() for name in SCORES}
        if self.bicubic_images > 0:
            bicubic_count = self.bicubic_images.clamp_min(1)
            for name in SCORES:
                baseline = (getattr(self, f"bicubic_{name}") / bicubic_count).float()
                result[f"bicubic_{self._name(name)}"] = baseline
                if name.startswith("psnr"):
                    result[f"{self._name(name)}_over_bicubic"] = result[self._name(name)] - baseline
        return result
