"""``ssmamba wsi``: tile slides, embed their tiles, draw attention heatmaps.

    ssmamba wsi tile SLIDES... --out OUT --mpp 0.5 --patch-size 224
    ssmamba wsi extract OUT --encoder ssmamba_tiny --checkpoint runs/pretrain/checkpoint
    ssmamba wsi heatmap SLIDE --features OUT/features_.../<encoder>/<slide>.h5 --model runs/mil/fold_0 --out map.png
"""

from __future__ import annotations

from pathlib import Path

import click

from ssmamba.cli.options import device_option, progress_option, threads_option


def _target_mpp(mpp: float | None, magnification: float | None) -> float:
    from ssmamba.wsi.tiling import magnification_to_mpp

    if mpp is not None and magnification is not None:
        raise click.UsageError("give --mpp or --magnification, not both")
    if magnification is not None:
        return magnification_to_mpp(magnification)
    return 0.5 if mpp is None else mpp


def _report_failures(outcome, error_log: Path) -> None:
    if outcome.failed:
        click.echo(f"{len(outcome.failed)} slide(s) failed and were skipped; see {error_log}", err=True)
        for path, message in outcome.failed:
            click.echo(f"  {path}: {message}", err=True)


def _input_size_rule(encoder) -> str:
    """How the tile side the encoder sees is chosen, for the log."""
    if encoder.requested_input_size is not None:
        return f"tiles resized to {encoder.requested_input_size} px (--input-size)"
    if encoder.fixed_input_size and encoder.input_size is not None:
        return f"tiles resized to {encoder.input_size} px (the model's fixed input size)"
    return "tiles embedded at their own size (the model takes any size)"


@click.group()
def wsi() -> None:
    """Whole-slide images: tiling, tile embedding, heatmaps."""


@wsi.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--patch-size", default=224, show_default=True, help="Tile side in pixels at the target resolution.")
@click.option("--mpp", type=float, help="Target µm per pixel of the tiles [default: 0.5].")
@click.option("--magnification", type=float, help="Alias of --mpp: 20 means 0.5 µm/px, 40 means 0.25 µm/px.")
@click.option("--stride", type=int, help="Step between tiles in target pixels [default: patch size, no overlap].")
@click.option("--slide-mpp", type=float, help="µm/px of level 0, overriding the slide metadata (needed when absent).")
@click.option("--min-tissue", default=0.25, show_default=True, help="Keep tiles with at least this tissue fraction.")
@click.option("--tissue-mask/--no-tissue-mask", default=True, show_default=True,
              help="--no-tissue-mask keeps every tile (images that are all tissue).")
@click.option("--saturation-threshold", type=float, help="Fixed tissue threshold on HSV saturation [default: Otsu].")
@click.option("--min-saturation", default=0.05, show_default=True, help="Lower bound of the Otsu threshold.")
@click.option("--thumbnail-size", default=2048, show_default=True, help="Longest side of the mask/thumbnail.")
@click.option("--skip-errors", is_flag=True, help="Log failing slides to errors.log and go on.")
@click.option("--overwrite", is_flag=True, help="Re-tile slides that already have a patches file.")
def tile(inputs, out_dir, patch_size, mpp, magnification, stride, slide_mpp, min_tissue, tissue_mask,
         saturation_threshold, min_saturation, thumbnail_size, skip_errors, overwrite) -> None:
    """Tile slides (files or folders) at a target resolution and keep tiles over tissue.

    Writes OUT/patches_<mpp>mpp_<size>px/<slide>.h5 (level-0 coords + geometry) and <slide>.png (tiles drawn).
    """
    from ssmamba.wsi.batch import SLIDE_FAILURES, find_slides, run_over_slides
    from ssmamba.wsi.pipeline import patches_folder, tile_slide
    from ssmamba.wsi.tiling import TilingConfig
    from ssmamba.wsi.tissue import TissueMaskConfig

    try:
        config = TilingConfig(patch_size=patch_size, target_mpp=_target_mpp(mpp, magnification), stride=stride,
                              min_tissue_fraction=min_tissue, use_tissue_mask=tissue_mask,
                              thumbnail_max_side=thumbnail_size,
                              tissue=TissueMaskConfig(saturation_threshold=saturation_threshold,
                                                      min_saturation=min_saturation))
        slides = find_slides(inputs)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    folder = patches_folder(out_dir, config)
    error_log = folder / "errors.log"
    click.echo(f"tiling {len(slides)} slide(s) at {config.target_mpp:g} µm/px, {patch_size} px -> {folder}")

    def step(path: Path):
        result = tile_slide(path, config, out_dir, slide_mpp=slide_mpp, overwrite=overwrite)
        click.echo(f"  {result.slide_name}: {result.num_tiles} tiles{' (already done)' if result.skipped else ''}")
        if result.num_tiles == 0:
            click.echo(f"  warning: no tile of {path} passed the tissue mask; see {result.thumbnail_path} and "
                       f"lower --min-tissue / --min-saturation, or use --no-tissue-mask", err=True)
        return result

    try:
        outcome = run_over_slides(slides, step, skip_errors=skip_errors, error_log=error_log)
    except SLIDE_FAILURES as error:  # already logged with its traceback; say so without a Python trace
        raise click.ClickException(f"{error} (traceback in {error_log}; --skip-errors goes on past bad slides)")
    _report_failures(outcome, error_log)


@wsi.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--encoder", "-e", required=True, help="ssmamba name, timm name, or checkpoint folder.")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path),
              help="Weights for a named encoder (ssmamba checkpoint folder or timm weights file).")
@click.option("--pretrained", is_flag=True, help="Let timm download the named model's weights (needs network).")
@click.option("--input-size", type=int,
              help="Resize tiles to this side before embedding [default: the tile size for encoders that take any "
                   "size (ssmamba, CNNs); the model's size for fixed-size ones (ViTs)].")
@click.option("--out", "-o", "out_dir", type=click.Path(path_type=Path),
              help="Output folder [default: the folder holding patches_*/].")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--num-workers", default=0, show_default=True, help="Tile-reading worker processes.")
@device_option()
@click.option("--slide-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Where the slides are now, if they moved since tiling.")
@click.option("--skip-errors", is_flag=True, help="Log failing slides to errors.log and go on.")
@click.option("--overwrite", is_flag=True,
              help="Re-extract slides that already have a features file, also when made with other settings.")
@threads_option()
@progress_option()
def extract(inputs, encoder, checkpoint, pretrained, input_size, out_dir, batch_size, num_workers, device, slide_dir,
            skip_errors, overwrite, threads, progress) -> None:
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
        patch_files = find_patch_files(list(inputs))
        model = load_encoder(encoder, checkpoint=checkpoint, pretrained=pretrained, input_size=input_size)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error
    error_log = (out_dir or patch_files[0].parent.parent) / "extract_errors.log"
    mine, device = launched_share(patch_files), str(local_device(device))
    if launch_rank() == 0:
        share = f", {len(mine)} in this process" if len(mine) < len(patch_files) else ""
        click.echo(f"encoder {model.name} ({model.weights} weights, {model.num_features} features, "
                   f"{_input_size_rule(model)}) on {device}; {len(patch_files)} slide(s){share}")

    def step(patches_path: Path):
        result = extract_from_patches(patches_path, model, out_dir or patches_path.parent.parent, slide_dir=slide_dir,
                                      batch_size=batch_size, num_workers=num_workers, device=device,
                                      overwrite=overwrite, progress=progress)
        click.echo(f"  {result.path}: {result.num_tiles} tiles of {result.key.patch_size} px embedded at "
                   f"{result.key.input_size} px{' (already done)' if result.skipped else ''}")
        return result

    try:
        outcome = run_over_slides(mine, step, skip_errors=skip_errors, error_log=error_log)
    except FeatureKeyMismatch as error:
        raise click.ClickException(str(error)) from error
    except SLIDE_FAILURES as error:  # already logged with its traceback; say so without a Python trace
        raise click.ClickException(f"{error} (traceback in {error_log}; --skip-errors goes on past bad slides)")
    _report_failures(outcome, error_log)


def _head_scores(model_dir: Path, bag, features_path: Path, device: str):
    """Per-tile attention of a trained MIL head, after echoing its prediction for the slide."""
    import torch

    from ssmamba.mil import load_mil_model

    head, config = load_mil_model(model_dir, device=device)
    if head.in_dim != bag.features.shape[1]:
        raise click.UsageError(f"{model_dir} expects {head.in_dim}-d features but {features_path} has "
                               f"{bag.features.shape[1]}-d: use the encoder the head was trained on")
    out = head.predict_bag(torch.from_numpy(bag.features), torch.from_numpy(bag.coords))
    probs = torch.softmax(out.logits.float(), dim=-1)[0].cpu().tolist()
    click.echo("prediction: " + ", ".join(f"{name} {p:.3f}" for name, p in zip(config["class_names"], probs)))
    return out.attention[0].cpu().numpy(), f"attention of the {config['head']} head"


def _tile_scores(bag, features_path: Path, model_dir: Path | None, scores_path: Path | None, pca: bool,
                 device: str):
    """(scores (N,), what they are) from exactly one of a trained head, a .npy file, or the features' PC1."""
    import numpy as np

    from ssmamba.wsi.heatmap import first_principal_component

    if sum((model_dir is not None, scores_path is not None, pca)) != 1:
        raise click.UsageError("give exactly one of --model (a trained MIL head), --scores (a .npy) or --pca "
                               "(label-free: first principal component of the features)")
    if scores_path is not None:
        return np.load(scores_path).reshape(-1), f"score from {scores_path.name}"
    if pca:
        scores, share = first_principal_component(bag.features)
        return scores, f"feature PC1 ({100 * share:.0f}% of variance, sign arbitrary)"
    return _head_scores(model_dir, bag, features_path, device)


@wsi.command()
@click.argument("slide", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--features", "features_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="The slide's features .h5 (from `wsi extract`).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A trained MIL head folder (e.g. runs/mil/fold_0) whose attention is drawn.")
@click.option("--scores", "scores_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Instead of --model: a .npy of one score per tile, in the features file's order.")
@click.option("--pca", is_flag=True,
              help="Instead of --model: colour tiles by the first principal component of their features, a "
                   "label-free view for slides without a trained head.")
@click.option("--out", "-o", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output PNG (a CSV of x,y,score is written next to it).")
@click.option("--slide-mpp", type=float, help="µm/px of level 0, if the slide has none in its metadata.")
@click.option("--thumbnail-size", default=2048, show_default=True)
@click.option("--alpha", default=0.5, show_default=True, help="Opacity of the colours over tissue.")
@click.option("--colormap", default="jet", show_default=True, help="A matplotlib colormap name.")
@click.option("--scaling", type=click.Choice(["percentile", "raw"]), default="percentile",
              show_default=True, help="percentile: colour by rank among the slide's tiles (CLAM's default); "
                                      "raw: linear in the score, colour bar in its units.")
@click.option("--smooth", default=0.5, show_default=True,
              help="Gaussian smoothing of the score map, sigma in tiles (0: sharp tiles). Tiles cut with "
                   "overlap (`wsi tile --stride`) are averaged as well.")
@click.option("--colour-bar/--no-colour-bar", default=True, show_default=True,
              help="Add a colour bar that says what the colours mean.")
@device_option()
def heatmap(slide, features_path, model_dir, scores_path, pca, out_path, slide_mpp, thumbnail_size, alpha, colormap,
            scaling, smooth, colour_bar, device) -> None:
    """Draw per-tile attention (of a trained MIL head), given scores, or a label-free feature view (--pca) over
    the slide thumbnail, with a colour bar."""
    from ssmamba.io.features import load_features
    from ssmamba.wsi.heatmap import ColourBar, ScoreScaling, add_colour_bar, render_heatmap
    from ssmamba.wsi.slide import SlideError, open_slide

    bag = load_features(features_path)
    scores, score_name = _tile_scores(bag, features_path, model_dir, scores_path, pca, device)
    if len(scores) != len(bag.coords):
        raise click.UsageError(f"{len(scores)} scores for {len(bag.coords)} tiles in {features_path}")
    try:
        with open_slide(slide, mpp=slide_mpp or float(bag.attrs.get("level0_mpp", 0)) or None) as opened:
            thumbnail = opened.thumbnail(thumbnail_size)
            dimensions = opened.dimensions
    except SlideError as error:
        raise click.ClickException(str(error)) from error
    scaling = ScoreScaling(scaling)
    try:
        image = render_heatmap(thumbnail, bag.coords, scores, int(bag.attrs["patch_size_level0"]), dimensions,
                               scaling=scaling, colormap=colormap, alpha=alpha, smooth=smooth)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    if colour_bar:
        image = add_colour_bar(image, ColourBar.for_scores(scores, scaling, score_name, colormap))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)
    table = out_path.with_suffix(".csv")
    table.write_text("x,y,score\n" + "".join(f"{x},{y},{s:.6g}\n" for (x, y), s in zip(bag.coords, scores)))
    click.echo(f"{score_name}, {scaling.value} colours; wrote {out_path} and {table}")
