"""Augmentations for H&E images, and the train/pretrain/eval pipelines built from them.

Small single-purpose transforms (torchvision ``v2.Transform`` s, so they work on PIL images and image tensors):

* :class:`MultiScaleCrop`: a square crop at a random *zoom* rescaled to the output size, against magnification
  shift. **Zoom** is output pixels per native pixel: a crop at zoom ``z`` covers ``size / z`` native pixels per
  side. ``z = 1`` keeps native resolution (a ``size`` x ``size`` crop), ``z = 0.25`` shows a 4x larger field at
  a quarter of the resolution (like scanning at 10x instead of 40x), ``z > 1`` magnifies. The crop never leaves
  the image: on an image whose short side ``L`` is smaller than ``size / z_min`` the lowest zoom reachable is
  ``size / L`` (the whole short side), and zooms are drawn log-uniformly from what is reachable.
* :class:`CentreMagnification`: a deterministic zoom about the image centre that keeps the image size, to test a
  model at another magnification than it was trained at (``factor`` 2 = twice the magnification: the central half
  of the field, enlarged; 0.5 = half: twice the field, shrunk, the added border mirrored from the image).
* :class:`RandomRot90`: rotation by 0/90/180/270 degrees (tissue has no up).
* :class:`RandomHEDJitter`: stain augmentation in HED space (Ruifrok & Johnston colour deconvolution with
  skimage's stain matrix): each stain concentration ``s`` (natural-log optical density) becomes ``s * a + b`` with
  ``a ~ U(1 - sigma, 1 + sigma)`` and ``b ~ U(-bias, bias)``, as in Tellez et al. 2018 ("HED-light":
  sigma = bias = 0.05, "HED-strong": 0.2; the builders default to sigma = 0.1 and a milder bias = 0.02, since the
  shift tints white glass).

Builders return an :class:`AugmentationPipeline` (a ``v2.Compose`` ending in a normalised float tensor) whose
``config`` (an :class:`AugmentationConfig`) goes into the run config and whose ``describe()`` goes into the log.
Randomness comes from torch's generator, so DataLoader workers get distinct, seedable streams.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from skimage.color import hed_from_rgb, rgb_from_hed
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Ruifrok & Johnston stain vectors (rows: H, E, DAB) as published by skimage; optical density = stains @ RGB_FROM_HED.
RGB_FROM_HED = np.asarray(rgb_from_hed, dtype=np.float64)
HED_FROM_RGB = np.asarray(hed_from_rgb, dtype=np.float64)
# Optical density -ln(I / 255) of every 8-bit intensity; 0 is taken as 1 (log of 0 is -inf), so black stays finite.
_OPTICAL_DENSITY = -np.log(np.maximum(np.arange(256), 1) / 255.0).astype(np.float32)


def _uniform(low: float, high: float, size: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(size)


def mirror_to(image: Image.Image, height: int, width: int) -> Image.Image:
    """``image`` centred in a ``height`` x ``width`` field (at least its own size), the border mirrored outward
    (``numpy.pad(mode="symmetric")``, so any size works)."""
    pixels = np.asarray(image.convert("RGB"))
    grow_h, grow_w = max(0, height - pixels.shape[0]), max(0, width - pixels.shape[1])
    if not grow_h and not grow_w:
        return image
    pad = ((grow_h // 2, grow_h - grow_h // 2), (grow_w // 2, grow_w - grow_w // 2), (0, 0))
    return Image.fromarray(np.pad(pixels, pad, mode="symmetric"))


class MultiScaleCrop(v2.Transform):
    """Random square crop at a zoom drawn log-uniformly from ``zoom_range``, resized to ``size`` x ``size``.

    See the module docstring for what zoom means and how small images are handled. With ``pad_out=True`` (PIL
    images) zooms below the whole short side are kept: the image is first mirrored outward (:func:`mirror_to`) to
    the crop's side, so the zooms drawn are exactly those of ``zoom_range``, e.g. symmetric about the zoom of an
    evaluation view.
    """

    def __init__(self, size: int, zoom_range: tuple[float, float] = (0.25, 1.0),
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR, pad_out: bool = False):
        super().__init__()
        low, high = zoom_range
        if size < 1 or not 0 < low <= high:
            raise ValueError(f"need size >= 1 and 0 < zoom_min <= zoom_max; got size={size}, zoom_range={zoom_range}")
        self.size = size
        self.zoom_range = (float(low), float(high))
        self.interpolation = interpolation
        self.pad_out = pad_out

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        short_side = min(height, width)
        low, high = self.zoom_range
        reachable_low = low if self.pad_out else max(low, self.size / short_side)
        if reachable_low >= high:
            zoom = reachable_low  # the image is too small for every zoom asked: take all of its short side
        else:
            zoom = math.exp(_uniform(math.log(reachable_low), math.log(high)).item())
        side = max(1, round(self.size / zoom))
        if not self.pad_out:
            side = min(short_side, side)
        top = int(torch.randint(0, max(height, side) - side + 1, (1,)))
        left = int(torch.randint(0, max(width, side) - side + 1, (1,)))
        return {"top": top, "left": left, "side": side}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        side = params["side"]
        if self.pad_out and isinstance(inpt, Image.Image):
            inpt = mirror_to(inpt, side, side)
        return F.resized_crop(inpt, params["top"], params["left"], side, side,
                              [self.size, self.size], interpolation=self.interpolation, antialias=True)

    def extra_repr(self) -> str:
        return f"size={self.size}, zoom_range={self.zoom_range}, pad_out={self.pad_out}"


class CentreMagnification(v2.Transform):
    """Show a PIL image at ``factor`` times its magnification, keeping its size and centre.

    The field of view becomes ``(H / factor, W / factor)`` native pixels about the centre: for ``factor > 1`` the
    central crop of that size, for ``factor < 1`` the image mirrored outward (``numpy.pad(mode="symmetric")``, so
    any factor works) to that size. The field is then resampled to ``(H, W)`` with antialiased bilinear
    interpolation. ``factor = 1`` returns the image unchanged. Every later step of an eval pipeline then sees an
    image of the usual size at another scale: how a scanner or objective at another magnification would show the
    same tissue.
    """

    _transformed_types = (Image.Image,)

    def __init__(self, factor: float):
        super().__init__()
        if not factor > 0:
            raise ValueError(f"magnification factor must be > 0, got {factor}")
        self.factor = float(factor)

    def transform(self, inpt: Image.Image, params: dict[str, Any]) -> Image.Image:
        if self.factor == 1.0:
            return inpt
        width, height = inpt.size
        field_h, field_w = max(1, round(height / self.factor)), max(1, round(width / self.factor))
        field = F.center_crop(inpt, [field_h, field_w]) if self.factor > 1 else mirror_to(inpt, field_h, field_w)
        return F.resize(field, [height, width], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class RandomRot90(v2.Transform):
    """Rotate by k * 90 degrees, k uniform in {0, 1, 2, 3}; exact (no interpolation)."""

    _transformed_types = (Image.Image, tv_tensors.Image, torch.Tensor)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"quarter_turns": int(torch.randint(0, 4, (1,)))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        turns = params["quarter_turns"]
        if turns == 0:
            return inpt
        if isinstance(inpt, Image.Image):
            return inpt.transpose((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                   Image.Transpose.ROTATE_270)[turns - 1])
        rotated = torch.rot90(inpt, turns, dims=(-2, -1))  # counter-clockwise, as PIL's ROTATE_90
        return tv_tensors.wrap(rotated, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else rotated


class RandomHEDJitter(v2.Transform):
    """Perturb haematoxylin, eosin and DAB concentrations: ``s -> s * U(1-sigma, 1+sigma) + U(-bias, bias)``.

    Accepts a PIL RGB image or a (3, H, W) uint8/float tensor; returns the same type. Applied with probability
    ``p``.
    """

    _transformed_types = (Image.Image, tv_tensors.Image, torch.Tensor)

    def __init__(self, sigma: float = 0.05, bias: float = 0.05, p: float = 1.0):
        super().__init__()
        if sigma < 0 or bias < 0 or not 0 <= p <= 1:
            raise ValueError(f"need sigma >= 0, bias >= 0, 0 <= p <= 1; got {sigma}, {bias}, {p}")
        self.sigma, self.bias, self.p = sigma, bias, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = torch.rand(1).item() < self.p
        return {"apply": apply, "scale": _uniform(1 - self.sigma, 1 + self.sigma, 3).numpy(),
                "shift": _uniform(-self.bias, self.bias, 3).numpy()}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"]:
            return inpt
        if isinstance(inpt, Image.Image):
            return Image.fromarray(self._jitter(np.asarray(inpt.convert("RGB")), params))
        uint8 = inpt.dtype == torch.uint8
        rgb = inpt.detach().cpu().permute(1, 2, 0)
        rgb = rgb.numpy() if uint8 else (rgb.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        out = torch.from_numpy(self._jitter(rgb, params)).permute(2, 0, 1)
        out = out if uint8 else out.to(inpt.dtype) / 255.0
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    @staticmethod
    def _jitter(rgb: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB with perturbed stains.

        Beer-Lambert by hand rather than skimage's rgb2hed/hed2rgb pair, which clips negative concentrations and
        so changes an image even when the perturbation is the identity. Deconvolution, perturbation and
        reconvolution are linear in optical density, so they fold into one 3x3 matrix and an offset:
        ``od' = od @ (HED_FROM_RGB diag(scale) RGB_FROM_HED) + shift @ RGB_FROM_HED``.
        """
        optical_density = _OPTICAL_DENSITY[rgb]                              # (H, W, 3) float32, via lookup
        mixing = (HED_FROM_RGB * params["scale"]) @ RGB_FROM_HED
        offset = params["shift"] @ RGB_FROM_HED
        rgb_out = np.exp(-(optical_density @ mixing.astype(np.float32) + offset.astype(np.float32)))
        return (np.clip(rgb_out, 0, 1) * 255 + 0.5).astype(np.uint8)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, bias={self.bias}, p={self.p}"


@dataclass(frozen=True)
class AugmentationConfig:
    """Everything that defines a pipeline; logged with the run and enough to rebuild it (``build()``).

    Attributes:
        size: output side in pixels.
        zoom_range: (min, max) zoom of :class:`MultiScaleCrop`; ``None`` = no random crop: resize the short side
            to ``size`` and centre-crop (evaluation).
        zoom_pad: :class:`MultiScaleCrop`'s ``pad_out``: zooms below the whole image mirror its border outward.
        hed_sigma, hed_bias: :class:`RandomHEDJitter` strength; both 0 disables it.
        brightness, contrast, saturation, hue: mild ``ColorJitter`` on top of the stain jitter; 0 disables.
        flips, rot90: random horizontal/vertical flips; random quarter turns.
        mean, std: per-channel normalisation of the final [0, 1] tensor.
        magnification: zoom about the centre applied first (:class:`CentreMagnification`); 1 = none.
    """

    size: int
    zoom_range: tuple[float, float] | None = None
    zoom_pad: bool = False
    hed_sigma: float = 0.0
    hed_bias: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    flips: bool = False
    rot90: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    magnification: float = 1.0  # :class:`CentreMagnification` before everything else (evaluation under shift)
    name: str = field(default="custom", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"{self.name}: {self.size}px"]
        if self.magnification != 1.0:
            parts.append(f"{self.magnification:g}x magnification about the centre")
        parts.append(f"zoom {self.zoom_range[0]:.3g}-{self.zoom_range[1]:.3g}x"
                     + (" (mirrored border when zoomed out)" if self.zoom_pad else "") if self.zoom_range
                     else "resize short side + centre crop")
        if self.rot90:
            parts.append("rot90")
        if self.flips:
            parts.append("h/v flips")
        if self.hed_sigma or self.hed_bias:
            parts.append(f"HED jitter (sigma {self.hed_sigma:g}, bias {self.hed_bias:g})")
        jitter = [f"{k} {v:g}" for k, v in (("brightness", self.brightness), ("contrast", self.contrast),
                                             ("saturation", self.saturation), ("hue", self.hue)) if v]
        if jitter:
            parts.append("colour jitter (" + ", ".join(jitter) + ")")
        mean, std = tuple(round(m, 3) for m in self.mean), tuple(round(s, 3) for s in self.std)
        parts.append(f"normalise mean {mean} std {std}")
        return ", ".join(parts)

    def build(self) -> AugmentationPipeline:
        steps: list[v2.Transform] = [CentreMagnification(self.magnification)] if self.magnification != 1.0 else []
        if self.zoom_range is not None:
            steps.append(MultiScaleCrop(self.size, self.zoom_range, pad_out=self.zoom_pad))
        else:
            steps += [v2.Resize(self.size, antialias=True), v2.CenterCrop(self.size)]
        if self.rot90:
            steps.append(RandomRot90())
        if self.flips:
            steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
        if self.hed_sigma or self.hed_bias:
            steps.append(RandomHEDJitter(self.hed_sigma, self.hed_bias))
        if self.brightness or self.contrast or self.saturation or self.hue:
            steps.append(v2.ColorJitter(self.brightness, self.contrast, self.saturation, self.hue))
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))]
        return AugmentationPipeline(steps, self)


class AugmentationPipeline(v2.Compose):
    """A ``v2.Compose`` that knows its :class:`AugmentationConfig`: ``pipeline.config``, ``pipeline.describe()``."""

    def __init__(self, transforms: list[v2.Transform], config: AugmentationConfig):
        super().__init__(transforms)
        self.config = config

    def describe(self) -> str:
        return self.config.describe()


def pretrain_transform(size: int, zoom_range: tuple[float, float] = (0.25, 1.0), hed: bool = True,
                       flips: bool = True, rot90: bool = True, hed_sigma: float = 0.1, hed_bias: float = 0.02,
                       colour_jitter: float = 0.1, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> AugmentationPipeline:
    """Views for masked-image-model pretraining: wide zoom range (magnification shift), stain and colour jitter."""
    return _augmented("pretrain", size, zoom_range, hed, flips, rot90, hed_sigma, hed_bias, colour_jitter, mean, std)


def train_transform(size: int, zoom_range: tuple[float, float] = (0.5, 1.0), hed: bool = True,
                    flips: bool = True, rot90: bool = True, hed_sigma: float = 0.1, hed_bias: float = 0.02,
                    colour_jitter: float = 0.1, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    zoom_pad: bool = False) -> AugmentationPipeline:
    """Supervised fine-tuning: a narrower zoom range than pretraining, same geometric and stain augmentation.
    ``zoom_pad``: zooms below the whole image are kept, its border mirrored (see :class:`MultiScaleCrop`)."""
    return _augmented("train", size, zoom_range, hed, flips, rot90, hed_sigma, hed_bias, colour_jitter, mean, std,
                      zoom_pad)


@dataclass(frozen=True)
class FieldOfView:
    """How a model sees its images, shared by training and evaluation and saved with the checkpoint.

    Evaluation shows each image whole, its short side resized to ``size``: zoom ``eval_zoom = size /
    native_side``, with ``native_side`` the training images' median short side. Training views are drawn at
    ``train_zoom``, the relative range ``relative`` times ``eval_zoom`` (log-uniform: with a range symmetric about 1
    in log scale, such as 0.8-1.25, the mean scale of training views is the evaluation scale).
    """

    size: int
    native_side: int
    relative: tuple[float, float]

    @property
    def eval_zoom(self) -> float:
        return self.size / self.native_side

    @property
    def train_zoom(self) -> tuple[float, float]:
        return (self.eval_zoom * self.relative[0], self.eval_zoom * self.relative[1])

    def describe(self) -> str:
        return (f"field of view: each image whole (median short side {self.native_side} px) at {self.size} px, zoom "
                f"{self.eval_zoom:.3g}; training views at zoom {self.train_zoom[0]:.3g}-{self.train_zoom[1]:.3g} "
                f"({self.relative[0]:g}-{self.relative[1]:g}x that)")

    @classmethod
    def of(cls, dataset, size: int, relative: tuple[float, float]) -> FieldOfView:
        """The field of view of ``dataset`` (anything with ``median_short_side()``, e.g. an ImageDataset)."""
        return cls(int(size), int(dataset.median_short_side()), (float(relative[0]), float(relative[1])))


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, magnification: float = 1.0) -> AugmentationPipeline:
    """Deterministic: resize the short side to ``size``, centre-crop, normalise; with ``magnification != 1`` the
    image is first shown at that magnification (:class:`CentreMagnification`)."""
    return AugmentationConfig(size=size, mean=tuple(mean), std=tuple(std), magnification=float(magnification),
                              name="eval").build()


def _augmented(name, size, zoom_range, hed, flips, rot90, hed_sigma, hed_bias, colour_jitter, mean,
               std, zoom_pad: bool = False) -> AugmentationPipeline:
    return AugmentationConfig(
        size=size, zoom_range=tuple(zoom_range), zoom_pad=zoom_pad, hed_sigma=hed_sigma if hed else 0.0, hed_bias=hed_bias if hed else 0.0,
        # no hue jitter: stain jitter already moves hue the way staining does, and PIL's hue shift costs 2 ms
        brightness=colour_jitter, contrast=colour_jitter, saturation=colour_jitter,
        flips=flips, rot90=rot90, mean=tuple(mean), std=tuple(std), name=name).build()


def channel_stats(dataset, max_samples: int = 2000, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) in [0, 1] of up to ``max_samples`` random images of a dataset of PIL images.

    For ``mean``/``std`` of the builders when ImageNet statistics are a poor fit; run it on the training split
    with ``transform=None``.
    """
    order = np.random.default_rng(seed).permutation(len(dataset))[:max_samples]
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for index in order:
        image, _ = dataset[int(index)]
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
        total += pixels.sum(0)
        total_sq += (pixels ** 2).sum(0)
        count += len(pixels)
    if count == 0:
        raise ValueError("channel_stats: the dataset is empty")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
