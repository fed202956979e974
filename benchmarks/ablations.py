"""Ablations of the SSMamba backbone on a real task: each switch is one config value, trained the same way.

Every variant is fine-tuned from random init with the same epochs, seed and data, then evaluated on the test
split; the table gives test metrics, parameters and training CPU-minutes. Small data sets make single-seed
differences noisy: read the confidence intervals. Needs ``../shared/data``.

    python benchmarks/ablations.py                      # pcam1000, every switch
    python benchmarks/ablations.py --only full no_lpr   # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VARIANTS = {
    "full": {},
    "single_direction": {"directions": ("row",)},
    "single_scale": {"scales": (1,), "conv_kernels": (3,)},
    "no_lpr": {"lpr": False},
    "with_attention": {"attn_blocks": 1},
    "diagonals": {"directions": ("row", "row_reverse", "column", "column_reverse", "diagonal", "diagonal_reverse")},
}


def train_and_test(name: str, switches: dict, args) -> dict:
    import torch

    import ssmamba.train.finetune as ft
    from ssmamba import create_model
    from ssmamba.data import load_dataset
    from ssmamba.data.transforms import eval_transform
    from ssmamba.eval.inference import predict_proba
    from ssmamba.eval.metrics import compute_metrics

    cfg = ft.FinetuneConfig(data=str(args.data), out=str(args.out / name), model=args.model, img_size=args.img_size,
                            model_args=switches, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                            patience=0, zoom_min=0.8, zoom_max=1.25)
    start = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    best = ft.finetune(cfg, progress=False)
    end = resource.getrusage(resource.RUSAGE_SELF)
    model = create_model(checkpoint=best).eval()
    pcfg = model.pretrained_cfg
    test = load_dataset(args.data, "test", eval_transform(args.img_size, pcfg["mean"], pcfg["std"]),
                        classes=pcfg["class_names"])
    probs, labels = predict_proba(model, torch.utils.data.DataLoader(test, batch_size=128), progress=False)
    metrics = compute_metrics(labels, probs, pcfg["class_names"], n_bootstrap=1000, seed=args.seed)
    return {"variant": name, "switches": {k: list(v) if isinstance(v, tuple) else v for k, v in switches.items()},
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "cpu_min": ((end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)) / 60,
            "wall_min": (time.perf_counter() - wall) / 60,
            **{k: metrics[k] for k in ("accuracy", "balanced_accuracy", "auroc", "weighted_f1")},
            "ci95": metrics["ci95"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "pcam1000" / "labels.csv")
    parser.add_argument("--model", default="ssmamba_tiny")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablations")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} not found: this benchmark needs ../shared/data beside the checkout")
    rows = []
    for name in args.only or VARIANTS:
        rows.append(train_and_test(name, VARIANTS[name], args))
        row = rows[-1]
        print(f"{name:>18}: balanced acc {row['balanced_accuracy']:.3f}, AUROC {row['auroc']:.3f}, "
              f"{row['cpu_min']:.1f} CPU-min", flush=True)
    lines = ["# Backbone ablations", "",
             f"{date.today()}, `python benchmarks/ablations.py {' '.join(sys.argv[1:])}`: {args.model} from random "
             f"init on `{args.data.relative_to(ROOT.parent) if args.data.is_relative_to(ROOT.parent) else args.data}`,"
             f" {args.img_size} px, {args.epochs} epochs, seed {args.seed}; test split, 95% bootstrap CIs.", "",
             "| variant | switches | params (M) | balanced accuracy | AUROC | CPU-min |", "|---|---|---|---|---|---|"]
    for r in rows:
        ci_b, ci_a = r["ci95"].get("balanced_accuracy"), r["ci95"].get("auroc")
        switches = ", ".join(f"{k}={v}" for k, v in r["switches"].items()) or "(default)"
        lines.append(f"| {r['variant']} | {switches} | {r['params_m']:.2f} | {r['balanced_accuracy']:.3f} "
                     f"({ci_b[0]:.3f}-{ci_b[1]:.3f}) | {r['auroc']:.3f} ({ci_a[0]:.3f}-{ci_a[1]:.3f}) | "
                     f"{r['cpu_min']:.1f} |")
    results = ROOT / "benchmarks" / "results"
    (results / "ablations.md").write_text("\n".join(lines) + "\n")
    (results / "ablations.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
