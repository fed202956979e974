"""SYNTHETIC H&E-like tissue patches for demos and tests. Not real pathology: never report results on them as such.

Images are painted as stain concentration maps (haematoxylin H: nuclei; eosin E: cytoplasm, collagen fibres) and
turned into RGB with the Beer-Lambert law, ``rgb = 255 * exp(-(H * h_vector + E * e_vector))``, so colour behaves
like a real stain. Scale is roughly 1 micrometre per pixel (a lymphocyte nucleus is ~6 px across).

Five classes, from easy to tell apart to differing only in fine detail:

* ``stroma``: wavy collagen fibres, sparse spindle nuclei aligned with them, a few lymphocytes;
* ``lymphocytes``: dense small round very dark nuclei, little cytoplasm;
* ``normal_epithelium``: glands (pale lumen, ring of cytoplasm, one basal layer of regular elongated nuclei
  oriented radially) in stroma;
* ``tumour_low_grade``: the same glands, but nuclei larger, more variable, stratified and crowded, some with
  nucleoli, debris in lumens: differs from normal epithelium only at nuclear scale;
* ``tumour_high_grade``: sheets of large pleomorphic hyperchromatic crowded nuclei with nucleoli, no glands.

Every image belongs to a synthetic "patient" with its own stain vectors and intensities (so colour is no
shortcut), and images vary in magnification (+-15 %), blur and noise; some hold a piece of a neighbouring tissue.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

CLASSES = ("stroma", "lymphocytes", "normal_epithelium", "tumour_low_grade", "tumour_high_grade")

# Reference optical-density stain vectors (Macenko et al. 2009), rows: haematoxylin, eosin.
_H_VECTOR = np.array([0.5626, 0.7201, 0.4062])
_E_VECTOR = np.array([0.2159, 0.8012, 0.5581])


@dataclass(frozen=True)
class StainStyle:
    """One patient's (lab's) staining: stain vectors, their strength, and background optical density."""

    h_vector: np.ndarray
    e_vector: np.ndarray
    h_strength: float
    e_strength: float
    background: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> StainStyle:
        def tilt(vector):
            v = np.abs(vector + rng.normal(0, 0.06, 3))
            return v / np.linalg.norm(v)

        return cls(tilt(_H_VECTOR), tilt(_E_VECTOR), rng.uniform(0.75, 1.25), rng.uniform(0.7, 1.3),
                   rng.uniform(0.02, 0.07))


class _Canvas:
    """H and E concentration maps of one patch, with the painting primitives."""

    def __init__(self, size: int, rng: np.random.Generator, scale: float):
        self.size, self.rng, self.scale = size, rng, scale
        self.h = np.zeros((size, size))
        self.e = np.zeros((size, size))
        self.grain = rng.uniform(0.75, 1.25, (size, size))  # cytoplasm texture
        self._queue: list[np.ndarray] = []  # (N, 8) blocks: cx, cy, a, b, angle, darkness, irregularity, vesicular
        self.ys, self.xs = np.mgrid[0:size, 0:size].astype(np.float64)

    def smooth_noise(self, cell: float) -> np.ndarray:
        """(size, size) noise in about [-1, 1], varying over ``cell`` pixels (bicubic upsampling)."""
        n = max(2, int(math.ceil(self.size / cell)) + 1)
        coarse = Image.fromarray(self.rng.standard_normal((n, n)).astype(np.float32), mode="F")
        return np.asarray(coarse.resize((self.size, self.size), Image.BICUBIC), dtype=np.float64) / 1.5

    def fibres(self, base: float, amplitude: float, angle: float, wavelength: float) -> None:
        """Eosin background of wavy collagen fibres running along ``angle`` (radians)."""
        across = -self.xs * math.sin(angle) + self.ys * math.cos(angle)
        phase = 2 * math.pi * across / (wavelength * self.scale) + 3.0 * self.smooth_noise(20 * self.scale)
        stripes = 0.5 + 0.5 * np.sin(phase)
        density = base * (1 + 0.25 * self.smooth_noise(12 * self.scale))
        self.e[:] = np.clip(density * (1 - amplitude + amplitude * stripes), 0, None)

    def nucleus(self, cx: float, cy: float, a: float, b: float, angle: float, darkness: float,
                irregularity: float = 0.0, vesicular: float = 0.0, nucleolus: bool = False) -> None:
        """Queue one elliptic nucleus (semi-axes a along ``angle``, b across, in unscaled px); see ``nuclei``."""
        self.nuclei(*(np.atleast_1d(np.asarray(v, dtype=np.float64))
                      for v in (cx, cy, a, b, angle, darkness, irregularity, vesicular, nucleolus)))

    def nuclei(self, cx, cy, a, b, angle, darkness, irregularity=0.0, vesicular=0.0, nucleolus=False) -> None:
        """Queue N nuclei (arrays, broadcast) for ``draw_nuclei``; those wholly off the patch are dropped."""
        cx, cy, a, b, angle, darkness, irregularity, vesicular, nucleolus = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (cx, cy, a, b, angle, darkness, irregularity, vesicular,
                                                         nucleolus)))
        a, b = a * self.scale, b * self.scale
        reach = np.maximum(a, b) * (1 + irregularity) + 2
        visible = (cx > -reach) & (cx < self.size + reach) & (cy > -reach) & (cy < self.size + reach)
        params = np.stack([cx, cy, a, b, angle, darkness, irregularity, vesicular], 1)[visible]
        self._queue.append(params)
        with_nucleolus = params[nucleolus[visible] > 0]
        if len(with_nucleolus):
            offsets = self.rng.uniform(-0.3, 0.3, (len(with_nucleolus), 2)) * with_nucleolus[:, 2:4]
            dot = np.zeros_like(with_nucleolus)
            dot[:, :2] = with_nucleolus[:, :2] + offsets
            dot[:, 2:4] = 0.9 * self.scale
            dot[:, 5] = with_nucleolus[:, 5] * 1.3
            self._queue.append(dot)

    def draw_nuclei(self) -> None:
        """Rasterise all queued nuclei at once (soft 1-px edge, grainy chromatin); later ones over earlier ones.

        Batched because a patch holds up to a few hundred nuclei and per-nucleus numpy calls dominated the time.
        """
        queue = np.concatenate(self._queue) if self._queue else np.zeros((0, 8))  # (N, 8)
        self._queue.clear()
        if not len(queue):
            return
        # Nuclei rendered in batches of similar extent (rounded up to 4 px), so a few large nuclei do not inflate
        # the window of every small one; order within the patch barely matters as overlaps take the maximum.
        reach = np.ceil(np.maximum(queue[:, 2], queue[:, 3]) * (1 + queue[:, 6]) / 4).astype(int) * 4 + 2
        for batch_reach in np.unique(reach):
            self._draw_batch(queue[reach == batch_reach], int(batch_reach))

    def _draw_batch(self, queue: np.ndarray, reach: int) -> None:
        """Rasterise (N, 8) nuclei parameters within (2 * reach + 1)^2 windows."""
        cx, cy, a, b, angle, darkness, irregularity, vesicular = (c[:, None, None] for c in queue.T)
        offsets = np.arange(-reach, reach + 1, dtype=np.float64)
        anchor_x, anchor_y = np.floor(cx).astype(int), np.floor(cy).astype(int)
        dx, dy = anchor_x + offsets[None, None, :] - cx, anchor_y + offsets[None, :, None] - cy  # (N, 1, S), (N, S, 1)
        cos, sin = np.cos(angle), np.sin(angle)
        u, v = (dx * cos + dy * sin) / a, (-dx * sin + dy * cos) / b                          # (N, S, S)
        dist = np.sqrt(u * u + v * v)
        if irregularity.any():
            # Radius modulated by 0.6 cos(2 theta + p) + 0.4 cos(3 theta + q), with the harmonics of theta written
            # in u, v (cos 2t = (u^2 - v^2) / r^2, ...) rather than through arctan2 and cos: same shape, 5x faster.
            p, q = self.rng.uniform(0, 2 * math.pi, (2, len(cx), 1, 1))
            u, v = u / np.maximum(dist, 1e-6), v / np.maximum(dist, 1e-6)   # (cos t, sin t)
            uu, vv = u * u, v * v
            cos2, sin2 = uu - vv, 2 * u * v
            cos3, sin3 = u * (uu - 3 * vv), v * (3 * uu - vv)
            wobble = 0.6 * (cos2 * np.cos(p) - sin2 * np.sin(p)) + 0.4 * (cos3 * np.cos(q) - sin3 * np.sin(q))
            dist = dist / (1 + irregularity * wobble)
        cover = np.minimum(np.maximum((1 - dist) * np.minimum(a, b) + 0.5, 0), 1)
        grain = self.rng.uniform(0.75, 1.25, cover.shape)
        stain = darkness * cover * grain * (1 - vesicular + vesicular * np.minimum(dist, 1))
        # Scatter every window into the patch at once; max and product do not depend on the order of nuclei.
        rows = anchor_y + offsets.astype(int)[None, :, None] + np.zeros_like(stain, dtype=int)   # (N, S, S)
        cols = anchor_x + offsets.astype(int)[None, None, :] + np.zeros_like(stain, dtype=int)
        inside = (rows >= 0) & (rows < self.size) & (cols >= 0) & (cols < self.size)
        flat = (rows * self.size + cols)[inside]
        np.maximum.at(self.h.reshape(-1), flat, stain[inside])
        np.multiply.at(self.e.reshape(-1), flat, (1 - 0.6 * cover)[inside])

    def window(self, cx: float, cy: float, radius_x: float, radius_y: float) -> tuple[slice, slice]:
        """Rows and columns of the patch within the bounding box of an ellipse."""
        return (slice(max(int(cy - radius_y), 0), max(min(int(cy + radius_y) + 2, self.size), 0)),
                slice(max(int(cx - radius_x), 0), max(min(int(cx + radius_x) + 2, self.size), 0)))

    def disc(self, cx: float, cy: float, radius_x: float, radius_y: float) -> np.ndarray:
        """(size, size) bool: pixels inside the ellipse around (cx, cy)."""
        return ((self.xs - cx) / radius_x) ** 2 + ((self.ys - cy) / radius_y) ** 2 < 1

    def jittered_grid(self, spacing: float, jitter: float, margin: float = 0.0) -> np.ndarray:
        """(N, 2) points on a square grid of ``spacing`` px, each moved by up to ``jitter * spacing``."""
        spacing *= self.scale
        ticks = np.arange(-margin, self.size + margin, spacing) + self.rng.uniform(0, spacing)
        gx, gy = np.meshgrid(ticks, ticks)
        points = np.stack([gx.ravel(), gy.ravel()], 1)
        return points + self.rng.uniform(-jitter, jitter, points.shape) * spacing

    def to_rgb(self, stain: StainStyle) -> np.ndarray:
        """(size, size, 3) uint8 via Beer-Lambert."""
        density = (self.h[..., None] * stain.h_vector * stain.h_strength
                   + self.e[..., None] * stain.e_vector * stain.e_strength + stain.background)
        return (255 * np.exp(-density)).clip(0, 255).astype(np.uint8)


def _lymphocytes(canvas: _Canvas, points: np.ndarray) -> None:
    """Small round very dark nuclei at (N, 2) points."""
    rng, n = canvas.rng, len(points)
    radius = rng.uniform(2.4, 3.2, n)
    canvas.nuclei(points[:, 0], points[:, 1], radius, radius / rng.uniform(1.0, 1.15, n), rng.uniform(0, math.pi, n),
                  rng.uniform(1.5, 1.9, n))


def _stroma(canvas: _Canvas, nuclei_per_kpx: float = 2.5, lymphocytes_per_kpx: float = 0.6) -> float:
    """Fibres with aligned spindle nuclei; returns the fibre angle."""
    rng = canvas.rng
    angle = rng.uniform(0, math.pi)
    canvas.fibres(rng.uniform(0.45, 0.65), rng.uniform(0.35, 0.6), angle, rng.uniform(4, 6))
    area = canvas.size ** 2 / 1000 / canvas.scale ** 2
    n = rng.poisson(nuclei_per_kpx * area)
    points = rng.uniform(0, canvas.size, (n, 2))
    canvas.nuclei(points[:, 0], points[:, 1], rng.uniform(5, 8, n), rng.uniform(1.1, 1.8, n),
                  angle + rng.normal(0, 0.2, n), rng.uniform(0.9, 1.2, n))
    _lymphocytes(canvas, rng.uniform(0, canvas.size, (rng.poisson(lymphocytes_per_kpx * area), 2)))
    return angle


def _glands(canvas: _Canvas, tumour: bool, max_glands: int | None = None) -> None:
    """Glands on a jittered grid: lumen, cytoplasm ring, nuclei (normal: one basal layer; tumour: stratified)."""
    rng = canvas.rng
    outer = rng.uniform(15, 21)
    gap = rng.uniform(4, 10)
    centres = canvas.jittered_grid(2 * outer + gap, 0.15, margin=outer)
    rng.shuffle(centres)
    lumen_fraction = rng.uniform(0.35, 0.55)
    canvas.draw_nuclei()  # stroma nuclei painted so far lie under the glands
    glands = []
    for cx, cy in centres:
        rx, ry = outer * canvas.scale * rng.uniform(0.85, 1.15, 2)
        if not (-rx < cx < canvas.size + rx and -ry < cy < canvas.size + ry):
            continue  # wholly outside the patch
        glands.append((cx, cy, rx, ry))
        window = canvas.window(cx, cy, rx, ry)
        rho = np.sqrt(((canvas.xs[window] - cx) / rx) ** 2 + ((canvas.ys[window] - cy) / ry) ** 2)
        e, h, grain = canvas.e[window], canvas.h[window], canvas.grain[window]
        ring = rho < 1
        e[ring] = rng.uniform(0.3, 0.42) * (0.85 + 0.15 * grain[ring])
        h[ring] = np.maximum(h[ring], 0.08)
        lumen = rho < lumen_fraction
        e[lumen], h[lumen] = 0.02, 0.0
        if max_glands is not None and len(glands) == max_glands:
            break
    spacing = (4.6 if tumour else 5.0) * canvas.scale
    for cx, cy, rx, ry in glands:  # nuclei after every ring, so no ring paints over a neighbour's nuclei
        count = max(6, int(math.pi * (rx + ry) / spacing))
        t = np.arange(count) * (2 * math.pi / count) + rng.uniform(0, 1)
        depth = 0.82 + rng.normal(0, 0.08 if tumour else 0.025, count)  # stratified vs one basal layer
        x, y = cx + depth * rx * np.cos(t), cy + depth * ry * np.sin(t)
        radial = np.arctan2(np.sin(t) * rx, np.cos(t) * ry)
        if tumour:
            size = rng.lognormal(math.log(4.8), 0.2, count)
            canvas.nuclei(x, y, size, size * rng.uniform(0.45, 0.7, count), radial + rng.normal(0, 0.4, count),
                          rng.uniform(0.95, 1.3, count), irregularity=0.12, vesicular=0.3,
                          nucleolus=rng.random(count) < 0.3)
            if rng.random() < 0.4:  # debris in the lumen
                n = rng.integers(1, 4)
                r, angle = rng.uniform(0, lumen_fraction * 0.8, n), rng.uniform(0, 2 * math.pi, n)
                canvas.nuclei(cx + r * rx * np.cos(angle), cy + r * ry * np.sin(angle), 1.5, 1.2, 0.0, 0.5)
        else:
            size = rng.lognormal(math.log(4.2), 0.08, count)
            canvas.nuclei(x, y, size, size * rng.uniform(0.45, 0.55, count), radial + rng.normal(0, 0.12, count),
                          rng.uniform(0.9, 1.2, count))


def _paint_stroma(canvas: _Canvas) -> None:
    _stroma(canvas)
    if canvas.rng.random() < 0.15:  # a gland cut at the edge of the patch
        _glands(canvas, tumour=False, max_glands=1)


def _paint_lymphocytes(canvas: _Canvas) -> None:
    rng = canvas.rng
    canvas.fibres(rng.uniform(0.25, 0.4), 0.2, rng.uniform(0, math.pi), 5)
    keep_out = None
    if rng.random() < 0.3:  # a band of stroma across part of the patch
        angle, offset = rng.uniform(0, 2 * math.pi), rng.uniform(0.55, 0.8) * canvas.size
        keep_out = (canvas.xs - canvas.size / 2) * math.cos(angle) + (canvas.ys - canvas.size / 2) * math.sin(angle)
        keep_out = keep_out > offset - canvas.size / 2
    points = canvas.jittered_grid(rng.uniform(6.0, 7.0), 0.3, margin=3)
    points = points[rng.random(len(points)) < 0.85]
    if keep_out is not None:
        pixel = np.clip(points.astype(int), 0, canvas.size - 1)
        points = points[~keep_out[pixel[:, 1], pixel[:, 0]]]
    _lymphocytes(canvas, points)


def _paint_normal_epithelium(canvas: _Canvas) -> None:
    _stroma(canvas, nuclei_per_kpx=1.0, lymphocytes_per_kpx=1.0)
    _glands(canvas, tumour=False)


def _paint_tumour_low_grade(canvas: _Canvas) -> None:
    _stroma(canvas, nuclei_per_kpx=1.0, lymphocytes_per_kpx=0.8)
    _glands(canvas, tumour=True)


def _paint_tumour_high_grade(canvas: _Canvas) -> None:
    rng = canvas.rng
    canvas.fibres(rng.uniform(0.3, 0.4), 0.15, rng.uniform(0, math.pi), 5)
    canvas.h += 0.12
    points = canvas.jittered_grid(rng.uniform(10.5, 13), 0.4, margin=6)
    n = len(points)
    size = rng.lognormal(math.log(6.0), 0.25, n)
    canvas.nuclei(points[:, 0], points[:, 1], size, size * rng.uniform(0.6, 1.0, n), rng.uniform(0, math.pi, n),
                  rng.uniform(1.3, 1.8, n), irregularity=0.2, vesicular=0.25, nucleolus=rng.random(n) < 0.5)
    canvas.draw_nuclei()
    if rng.random() < 0.3:  # a remnant lumen
        cx, cy = rng.uniform(0, canvas.size, 2)
        lumen = canvas.disc(cx, cy, *(rng.uniform(3, 6, 2) * canvas.scale))
        canvas.e[lumen], canvas.h[lumen] = 0.02, 0.0


_PAINTERS = {
    "stroma": _paint_stroma,
    "lymphocytes": _paint_lymphocytes,
    "normal_epithelium": _paint_normal_epithelium,
    "tumour_low_grade": _paint_tumour_low_grade,
    "tumour_high_grade": _paint_tumour_high_grade,
}


def render_patch(class_name: str, size: int = 64, rng: np.random.Generator | None = None,
                 stain: StainStyle | None = None) -> np.ndarray:
    """One (size, size, 3) uint8 synthetic patch of ``class_name`` (one of :data:`CLASSES`)."""
    if class_name not in _PAINTERS:
        raise ValueError(f"unknown synthetic class {class_name!r}; choose from {CLASSES}")
    rng = rng if rng is not None else np.random.default_rng()
    stain = stain if stain is not None else StainStyle.sample(rng)
    canvas = _Canvas(size, rng, scale=rng.uniform(0.85, 1.15))
    _PAINTERS[class_name](canvas)
    canvas.draw_nuclei()
    canvas.h *= rng.uniform(0.92, 1.08)
    canvas.e *= rng.uniform(0.92, 1.08)
    image = Image.fromarray(canvas.to_rgb(stain))
    blur = rng.uniform(0.0, 0.8)
    if blur > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, rng.uniform(1.0, 4.0), (size, size, 3))
    return noisy.clip(0, 255).round().astype(np.uint8)


def _patients_per_split(n_patients: int, fractions: tuple[float, float, float]) -> list[int]:
    """Patients in (train, val, test): largest remainder, at least one for every non-zero fraction."""
    wanted = [f * n_patients for f in fractions]
    counts = [int(w) for w in wanted]
    for index in sorted(range(3), key=lambda i: wanted[i] - counts[i], reverse=True)[:n_patients - sum(counts)]:
        counts[index] += 1
    for index in range(3):
        if fractions[index] > 0 and counts[index] == 0:
            donor = max(range(3), key=lambda i: counts[i])
            counts[donor] -= 1
            counts[index] += 1
    return counts


def make_synthetic_dataset(root: str | Path, n_per_class: int, size: int = 64, seed: int = 0,
                           splits: tuple[float, float, float] = (0.6, 0.2, 0.2),
                           n_patients: int | None = None) -> Path:
    """Write ``n_per_class`` SYNTHETIC patches per class as ``root/<class>/<class>_<i>.png`` plus ``manifest.csv``.

    The manifest (``path,label,split,group``) splits by synthetic patient (``group``), so one patient's stain
    never appears on both sides. Deterministic for a seed. Returns the manifest's path, which
    ``load_dataset`` reads; ``root`` alone also loads, as an image folder without splits.
    """
    if n_per_class < 1 or size < 16:
        raise ValueError(f"need n_per_class >= 1 and size >= 16, got {n_per_class}, {size}")
    n_splits = sum(f > 0 for f in splits)
    n_patients = n_patients or max(n_splits, min(n_per_class, max(5, n_per_class // 4)))
    if n_patients < n_splits or n_patients > n_per_class:
        raise ValueError(f"need between {n_splits} (one per split) and {n_per_class} (n_per_class) patients, "
                         f"got {n_patients}; raise n_per_class")
    root = Path(root)
    patients = np.random.default_rng([seed, 1]).permutation(n_patients)
    counts = _patients_per_split(n_patients, tuple(splits))
    split_of_patient = {}
    for name, start, count in zip(("train", "val", "test"), np.cumsum([0] + counts[:2]), counts):
        split_of_patient.update({int(p): name for p in patients[start:start + count]})
    stains = [StainStyle.sample(np.random.default_rng([seed, 2, p])) for p in range(n_patients)]
    rows = []
    for class_index, class_name in enumerate(CLASSES):
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            patient = i % n_patients
            rng = np.random.default_rng([seed, 3, class_index, i])
            relative = f"{class_name}/{class_name}_{i:05d}.png"
            Image.fromarray(render_patch(class_name, size, rng, stains[patient])).save(root / relative)
            rows.append((relative, class_name, split_of_patient[patient], f"patient{patient:03d}"))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "group"])
        writer.writerows(rows)
    return manifest


def save_class_grid(path: str | Path, n_per_class: int = 8, size: int = 64, seed: int = 0) -> Path:
    """A PNG with one row of SYNTHETIC samples per class, labelled, each from a different patient stain."""
    from matplotlib.figure import Figure  # drawn off-screen (Agg) without touching pyplot's global state

    figure = Figure(figsize=(n_per_class * 0.9 + 1.6, len(CLASSES) * 0.95))
    axes = figure.subplots(len(CLASSES), n_per_class)
    for row, class_name in enumerate(CLASSES):
        for column in range(n_per_class):
            rng = np.random.default_rng([seed, 4, row, column])
            axes[row, column].imshow(render_patch(class_name, size, rng, StainStyle.sample(rng)))
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
        axes[row, 0].set_ylabel(class_name.replace("_", "\n"), rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle("ssmamba synthetic H&E-like classes (synthetic data, not real tissue)", fontsize=9)
    figure.subplots_adjust(left=0.16, right=0.99, top=0.92, bottom=0.01, wspace=0.05, hspace=0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=90, format="png")
    # A 256-colour palette keeps the noisy textures recognisable at a third of the file size.
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)
    return path
