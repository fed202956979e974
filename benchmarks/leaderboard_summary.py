"""One summary of the committed leaderboards (benchmarks/results/leaderboard_<dataset>.json): where each entry
ranks per data set, and what each SSMamba part buys (paired with the full method). Prints the tables and writes
``benchmarks/results/leaderboards.md``; the README's table is copied from it.

    python benchmarks/leaderboard_summary.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {"balanced_accuracy": "balanced acc.", "weighted_f1": "weighted F1"}


def _cell(summary: dict) -> str:
    return "n/a" if summary.get("mean") is None else f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def summarise(boards: dict[str, dict]) -> str:
    entries = []
    for board in boards.values():
        entries += [r["name"] for r in board["rows"] if r["name"] not in entries]
    lines = ["# Leaderboard summary", "",
             "Test metric of each data set's leaderboard (mean ± std over seeds; rank in brackets), and accuracy "
             "at 0.5x / 2x magnification. Budgets and recipes: each `leaderboard_<dataset>.md`.", "",
             "| entry | " + " | ".join(f"{name} ({LABELS.get(b['metric'], b['metric'])}; acc. 0.5x / 2x)"
                                    for name, b in boards.items()) + " |",
             "|---|" + "---|" * len(boards)]
    for entry in entries:
        cells = []
        for board in boards.values():
            rows = {r["name"]: (rank, r) for rank, r in enumerate(board["rows"], 1)}
            if entry not in rows:
                cells.append("-")
                continue
            rank, row = rows[entry]
            shift = " / ".join(_cell(row["magnification"][k]["accuracy"]).split(" ±")[0]
                               for k in ("x0.5", "x2") if k in row["magnification"])
            cells.append(f"{_cell(row['metrics'][board['metric']])} ({rank}); {shift} "
                         f"[{len(row['seeds'])} seeds]")
        lines.append(f"| {entry} | " + " | ".join(cells) + " |")
    lines += ["", "## What each SSMamba part buys", "",
              "`ssmamba` (MAMIM + fine-tune, all parts) minus the entry without the part, paired over seeds: mean "
              "difference of the data set's metric [95% paired bootstrap CI over test images]; then the accuracy "
              "difference at 0.5x / 2x magnification. Positive = the part helps.", "",
              "| part removed | " + " | ".join(boards) + " |", "|---|" + "---|" * len(boards)]
    parts = []
    for board in boards.values():
        parts += [p["part"] for p in board.get("parts", []) if p["part"] not in parts]
    for part in parts:
        cells = []
        for board in boards.values():
            found = next((p for p in board.get("parts", []) if p["part"] == part), None)
            if found is None or found["mean_diff"] is None:
                cells.append("-")
                continue
            ci = f" [{found['ci95'][0]:+.3f}, {found['ci95'][1]:+.3f}]" if found["ci95"] else ""
            shift = " / ".join("n/a" if found["accuracy_diff"].get(k) is None else f"{found['accuracy_diff'][k]:+.3f}"
                               for k in ("x0.5", "x2"))
            cells.append(f"{found['mean_diff']:+.3f}{ci}; {shift} ({len(found['seeds'])} seeds)")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines += ["", "## What each leaderboard ran", ""]
    for name, board in boards.items():
        blocks = sorted({r.get("architecture", {}).get("conv_block", "inverted") for r in board["rows"]
                         if r["family"] == "ssmamba"})
        own = board.get("entry_lr") or {}
        rates = (f"lr {board['recipe']['lr']:g}, except " + ", ".join(f"{k} {v:g}" for k, v in own.items())
                 if own else f"lr {board['recipe']['lr']:g} for every entry")
        lines.append(f"- {name}: ssmamba conv blocks {', '.join(blocks)}; {rates}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    boards = {path.stem.removeprefix("leaderboard_"): json.loads(path.read_text())
              for path in sorted(args.results.glob("leaderboard_*.json")) if not path.stem.endswith("_gpu")}
    if not boards:
        raise SystemExit(f"no leaderboard_*.json in {args.results}; run benchmarks/leaderboards.py first")
    text = summarise(boards)
    (args.results / "leaderboards.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
