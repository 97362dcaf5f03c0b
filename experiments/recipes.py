"""Compare training recipes at reduced cost and print a Markdown table (for docs/training.md).

Each recipe of ``experiments/recipes.yaml`` trains with ``pneumo train`` in its own run directory
(``runs/recipes/<name>``), so a stopped comparison resumes where it stopped: finished recipes are
read back, an interrupted one resumes from its checkpoint.

    python experiments/recipes.py [--recipes experiments/recipes.yaml] [--only ema,strong]

Columns: ROC AUC on the random (``val``) and ``temporal`` validation splits, specificity and
sensitivity on each at the threshold chosen on the temporal split, and wall-clock minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_recipe(base: dict, recipe: dict, runs: Path) -> Path:
    """Train one recipe (resuming if stopped); return its run directory."""
    run_dir = runs / recipe["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "artifact" / "model.json").exists():
        return run_dir
    cmd = [sys.executable, "-m", "pneumo_core.cli.main", "train", str(REPO / base["config"]), "--run-dir", str(run_dir),
           "--no-progress"]
    for item in [*base.get("set", []), *recipe.get("set", [])]:
        cmd += ["--set", item]
    start = time.perf_counter()
    with (run_dir / "train.log").open("a") as log:
        code = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = run_dir / "wall_seconds"
    wall.write_text(str(float(wall.read_text() if wall.exists() else 0) + time.perf_counter() - start))
    if code != 0:
        raise SystemExit(f"recipe {recipe['name']} failed (exit {code}); see {run_dir / 'train.log'}")
    return run_dir


def row(recipe: dict, run_dir: Path) -> str:
    meta = json.loads((run_dir / "artifact" / "model.json").read_text())
    m = meta["metrics"]
    minutes = float((run_dir / "wall_seconds").read_text()) / 60
    cells = [recipe["name"], recipe["what"], f"{m['val']['auc']:.3f}", f"{m['temporal']['auc']:.3f}",
             f"{m['val']['specificity']:.1%}", f"{m['temporal']['specificity']:.1%}",
             f"{m['val']['sensitivity']:.1%}", f"{m['temporal']['sensitivity']:.1%}",
             f"{meta['threshold']:.3f}", str(meta["training"]["best_epoch"]), f"{minutes:.1f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default=str(REPO / "experiments" / "recipes.yaml"))
    ap.add_argument("--runs", default=str(REPO / "runs" / "recipes"))
    ap.add_argument("--only", help="comma-separated recipe names")
    args = ap.parse_args(argv)
    spec = yaml.safe_load(Path(args.recipes).read_text())
    recipes = spec["recipes"]
    if args.only:
        wanted = set(args.only.split(","))
        recipes = [r for r in recipes if r["name"] in wanted]
    runs = Path(args.runs)
    lines = [f"Recipes at reduced cost ({' '.join(spec['base'].get('set', []))}); {cpu_name()}, "
             f"{len(os.sched_getaffinity(0))} cores.", "",
             "| recipe | what | val AUC | temporal AUC | val spec. | temporal spec. | val sens. | temporal sens. "
             "| threshold | best epoch | minutes |", "|---" * 11 + "|"]
    for recipe in recipes:
        print(f"[recipes] {recipe['name']}: {recipe['what']}", file=sys.stderr, flush=True)
        lines.append(row(recipe, run_recipe(spec["base"], recipe, runs)))
        (runs / "table.md").write_text("\n".join(lines) + "\n")
        print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
