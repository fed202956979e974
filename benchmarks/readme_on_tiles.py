"""Summarise a run of benchmarks/readme_on_tiles.sh (the README's "Using it on your data" commands on real 224-px
tiles) as benchmarks/results/readme_tiles224.md: the field of view each stage used, as the runs logged it, and the
test metrics with their 95% bootstrap CIs.

    bash benchmarks/readme_on_tiles.sh && python benchmarks/readme_on_tiles.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


def _log_lines(log: Path, needle: str) -> list[str]:
    return [line.split(" INFO ", 1)[-1].split(": ", 1)[-1] for line in log.read_text().splitlines() if needle in line]


def _cpu_min(run: Path) -> float:
    return json.loads((run / "run_state.json").read_text())["cpu_seconds"] / 60


def _metric_cells(metrics: dict) -> list[str]:
    cells = []
    for name in METRICS:
        low, high = metrics["ci95"].get(name, (float("nan"), float("nan")))
        cells.append(f"{metrics[name]:.3f} ({low:.3f}-{high:.3f})")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "readme_tiles224")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "readme_tiles224.md")
    args = parser.parse_args()
    run = args.run
    if not (run / "DONE").is_file():
        raise SystemExit(f"Error: {run} holds no finished run of benchmarks/readme_on_tiles.sh")
    lines = ["# The README's commands on a folder of 224-px tiles", "",
             "`bash benchmarks/readme_on_tiles.sh && python benchmarks/readme_on_tiles.py`: the commands of the "
             "README's \"Using it on your data\", as written (defaults; no zoom flags), on real 224-px H&E tiles cut "
             "from crchp by `benchmarks/tiles224.py` (epithelial- vs stroma-dominated tiles, split by image). "
             "Only `--no-progress` and `--overwrite` were added.", "",
             "Tiles (split, class, count):", "", "```", (run / "tiles.txt").read_text().rstrip(), "```", "",
             "Commands:", "", "```", (run / "commands.txt").read_text().rstrip(), "```", "",
             "## Field of view, as the runs logged it", ""]
    for stage in ("pre", "ft", "convnext"):
        logged = _log_lines(run / "runs" / stage / "log.txt", "field of view")
        if not logged:  # MAMIM logs no field of view: its views are set by zoom_min/zoom_max of native resolution
            config = (run / "runs" / stage / "config.yaml").read_text().splitlines()
            zoom = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in config)
                    if k.strip() in ("zoom_min", "zoom_max", "img_size")}
            logged = [f"MAMIM views of {zoom.get('img_size')} px at zoom {zoom.get('zoom_min')}-{zoom.get('zoom_max')} "
                      "of native resolution (config.yaml; the run log does not state it)"]
        lines += [f"- `{stage}`: {text}" for text in logged]
    lines += ["", "## Test split (once), 95% bootstrap CIs", "",
              "| model | training CPU-min | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    model = next(line.split(":", 1)[1].strip() for line in (run / "runs" / "pre" / "config.yaml").read_text()
                 .splitlines() if line.strip().startswith("model:"))  # the default model of the code that ran
    rows = [(f"{model}, MAMIM 30 epochs + fine-tune", _cpu_min(run / "runs" / "pre") + _cpu_min(run / "runs" / "ft"),
             "eval"),
            ("convnext_atto, random init", _cpu_min(run / "runs" / "convnext"), "eval_convnext")]
    for name, cpu, folder in rows:
        metrics = json.loads((run / "runs" / folder / "metrics.json").read_text())
        lines.append(f"| {name} | {cpu:.1f} | " + " | ".join(_metric_cells(metrics)) + " |")
    probe = json.loads((run / "runs" / "probe" / "probe.json").read_text())
    lines += ["", f"Frozen-feature probe of the MAMIM encoder (`ssmamba probe`, test split): "
              + "; ".join(f"{name} balanced accuracy {probe[name]['balanced_accuracy']:.3f}"
                          for name in probe if isinstance(probe[name], dict) and "balanced_accuracy" in probe[name]),
              ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
