"""``ssmamba wsi``: tile slides, embed their tiles, draw attention heatmaps.

    ssmamba wsi tile SLIDES... --out OUT --mpp 0.5 --patch-size 224
    ssmamba wsi extract OUT --encoder ssmamba_tiny --weights runs/pretrain/checkpoint
    ssmamba wsi heatmap SLIDE --features OUT/features_.../<encoder>/<slide>.h5 --heads runs/mil/fold_0 --out map.png
"""

from __future__ import annotations

from pathlib import Path

import click

from ssmamba.cli.options import ConfigCommand, device, progress_option, save_config
from ssmamba.wsi.config import ExtractRunConfig, HeatmapRunConfig, TileRunConfig


def _report_failures(outcome, error_log: Path) -> None:
    if outcome.failed:
        click.echo(f"{len(outcome.failed)} slide(s) failed and were skipped; see {error_log}", err=True)
        for path, message in outcome.failed:
            click.echo(f"  {path}: {message}", err=True)


def _input_size_rule(encoder) -> str:
    """How the tile side the encoder sees is chosen, for the log."""
    if encoder.requested_input_size is not None:
        return f"tiles resized to {encoder.requested_input_size} px (--img-size)"
    if encoder.fixed_input_size and encoder.input_size is not None:
        return f"tiles resized to {encoder.input_size} px (the model's fixed input size)"
    return "tiles embedded at their own size (the model takes any size)"


@click.group()
def wsi() -> None:
    """Whole-slide images: tiling, tile embedding, heatmaps."""


@wsi.command(cls=ConfigCommand, config=TileRunConfig)
@click.option("--overwrite", is_flag=True, help="Re-tile slides that already have a patches file.")
def tile(cfg: TileRunConfig, overwrite: bool) -> None:
    """Tile slides (files or folders) at a target resolution and keep tiles over tissue.

    Writes OUT/patches_<mpp>mpp_<size>px/<slide>.h5 (level-0 coords + geometry) and <slide>.png (tiles drawn).
    """
    from ssmamba.wsi.batch import SLIDE_FAILURES, find_slides, run_over_slides
    from ssmamba.wsi.pipeline import patches_folder, tile_slide

    out_dir = Path(cfg.out)
    try:
        config = cfg.tiling()
        slides = find_slides([Path(p) for p in cfg.inputs])
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    folder = patches_folder(out_dir, config)
    error_log = folder / "errors.log"
    save_config(cfg, out_dir / "wsi-tile.yaml")
    click.echo(f"tiling {len(slides)} slide(s) at {config.target_mpp:g} µm/px, {cfg.patch_size} px -> {folder}")

    def step(path: Path):
        result = tile_slide(path, config, out_dir, slide_mpp=cfg.slide_mpp, overwrite=overwrite)
        click.echo(f"  {result.slide_name}: {result.num_tiles} tiles{' (already done)' if result.skipped else ''}")
        if result.num_tiles == 0:
            click.echo(f"  warning: no tile of {path} passed the tissue mask; see {result.thumbnail_path} and "
                       f"lower --min-tissue / --min-saturation, or use --no-tissue-mask", err=True)
        return result

    try:
        outcome = run_over_slides(slides, step, skip_errors=cfg.skip_errors, error_log=error_log)
    except SLIDE_FAILURES as error:  # already logged with its traceback; say so without a Python trace
        raise click.ClickException(f"{error} (traceback in {error_log}; --skip-errors goes on past bad slides)")
    _report_failures(outcome, error_log)


@wsi.command(cls=ConfigCommand, config=ExtractRunConfig,
             renamed={"--checkpoint": "--weights", "--input-size": "--img-size"})
@click.option("--overwrite", is_flag=True,
              help="Re-extract slides that already have a features file, also when made with other settings.")
@progress_option()
def extract(cfg: ExtractRunConfig, overwrite: bool, progress: bool) -> None:
    """Embed the tiles of tiled slides (patches .h5 files, or the folder given to `wsi tile --out`).

    Writes OUT/features_<mpp>mpp_<size>px/<encoder>-<hash8>_in<input size>/<slide>.h5 with features [N, D] and
    coords [N, 2], and feature_key.json (encoder, weights hash, input size, mpp, patch size, normalisation).
    Slides whose features file exists with the same key are skipped; another key is an error (--overwrite).
    Under `torchrun --nproc-per-node N -m ssmamba wsi extract ...` each process embeds every N-th slide (on its
    own GPU); each file is written whole or not at all, so jobs and nodes can share a cohort and reruns go on.
    """
    from ssmamba.io.distributed import launch_rank, launched_share, local_device
    from ssmamba.wsi.batch import SLIDE_FAILURES, run_over_slides
    from ssmamba.io.features import FeatureKeyMismatch
    from ssmamba.models.encoders import load_encoder
    from ssmamba.wsi.pipeline import extract_from_patches, find_patch_files

    try:
        patch_files = find_patch_files([Path(p) for p in cfg.inputs])
        model = load_encoder(cfg.encoder, checkpoint=cfg.weights, pretrained=cfg.pretrained, input_size=cfg.img_size)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    out_dir = Path(cfg.out) if cfg.out else None
    slide_dir = Path(cfg.slide_dir) if cfg.slide_dir else None
    error_log = (out_dir or patch_files[0].parent.parent) / "extract_errors.log"
    mine, on = launched_share(patch_files), str(local_device(device(cfg.device)))
    if launch_rank() == 0:
        save_config(cfg, error_log.parent / "wsi-extract.yaml")
        share = f", {len(mine)} in this process" if len(mine) < len(patch_files) else ""
        click.echo(f"encoder {model.name} ({model.weights} weights, {model.num_features} features, "
                   f"{_input_size_rule(model)}) on {on}; {len(patch_files)} slide(s){share}")

    def step(patches_path: Path):
        result = extract_from_patches(patches_path, model, out_dir or patches_path.parent.parent, slide_dir=slide_dir,
                                      batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=on,
                                      overwrite=overwrite, progress=progress)
        click.echo(f"  {result.path}: {result.num_tiles} tiles of {result.key.patch_size} px embedded at "
                   f"{result.key.input_size} px{' (already done)' if result.skipped else ''}")
        return result

    try:
        outcome = run_over_slides(mine, step, skip_errors=cfg.skip_errors, error_log=error_log)
    except FeatureKeyMismatch as error:
        raise click.ClickException(str(error)) from error
    except SLIDE_FAILURES as error:  # already logged with its traceback; say so without a Python trace
        raise click.ClickException(f"{error} (traceback in {error_log}; --skip-errors goes on past bad slides)")
    _report_failures(outcome, error_log)


def _head_scores(model_dir: Path, bag, features_path: Path, on: str):
    """Per-tile attention of a trained MIL head, after echoing its prediction for the slide."""
    import torch

    from ssmamba.mil import load_mil_model

    head, config = load_mil_model(model_dir, device=on)
    if head.in_dim != bag.features.shape[1]:
        raise click.UsageError(f"{model_dir} expects {head.in_dim}-d features but {features_path} has "
                               f"{bag.features.shape[1]}-d: use the encoder the head was trained on")
    out = head.predict_bag(torch.from_numpy(bag.features), torch.from_numpy(bag.coords))
    probs = torch.softmax(out.logits.float(), dim=-1)[0].cpu().tolist()
    click.echo("prediction: " + ", ".join(f"{name} {p:.3f}" for name, p in zip(config["class_names"], probs)))
    return out.attention[0].cpu().numpy(), f"attention of the {config['head']} head"


def _tile_scores(bag, cfg: HeatmapRunConfig):
    """(scores (N,), what they are) from exactly one of a trained head, a .npy file, or the features' PC1."""
    import numpy as np

    from ssmamba.wsi.heatmap import first_principal_component

    if cfg.scores is not None:
        return np.load(cfg.scores).reshape(-1), f"score from {Path(cfg.scores).name}"
    if cfg.pca:
        scores, share = first_principal_component(bag.features)
        return scores, f"feature PC1 ({100 * share:.0f}% of variance, sign arbitrary)"
    return _head_scores(Path(cfg.heads), bag, Path(cfg.features), device(cfg.device))


@wsi.command(cls=ConfigCommand, config=HeatmapRunConfig, renamed={"--model": "--heads"})
def heatmap(cfg: HeatmapRunConfig) -> None:
    """Draw per-tile attention (of a trained MIL head), given scores, or a label-free feature view (--pca) over
    the slide thumbnail, with a colour bar."""
    from ssmamba.io.features import load_features
    from ssmamba.wsi.heatmap import ColourBar, add_colour_bar, render_heatmap
    from ssmamba.wsi.slide import SlideError, open_slide

    features_path, out_path, scaling = Path(cfg.features), Path(cfg.out), cfg.scaling
    bag = load_features(features_path)
    scores, score_name = _tile_scores(bag, cfg)
    if len(scores) != len(bag.coords):
        raise click.UsageError(f"{len(scores)} scores for {len(bag.coords)} tiles in {features_path}")
    try:
        with open_slide(Path(cfg.slide), mpp=cfg.slide_mpp or float(bag.attrs.get("level0_mpp", 0)) or None) as opened:
            thumbnail = opened.thumbnail(cfg.thumbnail_size)
            dimensions = opened.dimensions
    except SlideError as error:
        raise click.ClickException(str(error)) from error
    try:
        image = render_heatmap(thumbnail, bag.coords, scores, int(bag.attrs["patch_size_level0"]), dimensions,
                               scaling=scaling, colormap=cfg.colormap, alpha=cfg.alpha, smooth=cfg.smooth)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    if cfg.colour_bar:
        image = add_colour_bar(image, ColourBar.for_scores(scores, scaling, score_name, cfg.colormap))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)
    table = out_path.with_suffix(".csv")
    table.write_text("x,y,score\n" + "".join(f"{x},{y},{s:.6g}\n" for (x, y), s in zip(bag.coords, scores)))
    save_config(cfg, out_path.with_suffix(".yaml"))
    click.echo(f"{score_name}, {scaling.value} colours; wrote {out_path} and {table}")
