"""Bayesian LoRA on the text task: SA-BMA on LoRA adapters against SGD on the same adapters and
against SA-BMA on norm+head (the default subset), 3 seeds, each run's learning rate chosen on its
validation split (``optim.lr_grid``; a best value on the grid's edge is reported as such).

The task is ``sabma demo --task text``'s: 32-shot fresh-vs-rotten Rotten Tomatoes snippets from
all-MiniLM-L6-v2 (offline), a disjoint 32-shot validation split, 400 test snippets, S = 8.
LoRA: rank 8, alpha 16 on every attention ``query`` and ``value`` (d = 74,498 with the head;
norm+head: d = 10,754). Runs go to ``OUT/<config>-seed<k>`` and are reused when finished; the
summary (mean ± std and per-seed paired differences, raw and temperature-scaled) is printed and
written to ``OUT/lora.md``.

    python -m benchmarks.lora_text runs/lora
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from sabma.experiments.demo import TASKS

TEXT = TASKS["text"]  # the text demo's task (its lr is replaced by each grid)
#: (label, settings)
CONFIGS = {
    "sabma-lora": ["method.name=sabma", "model.subset=lora", "optim.lr_grid=[0.003,0.01,0.03,0.1]"],
    "sgd-lora": ["method.name=sgd", "model.subset=lora", "optim.lr_grid=[0.003,0.01,0.03,0.1]"],
    "sabma-norm+head": ["method.name=sabma", "optim.lr_grid=[0.003,0.01,0.03]"],
}
METRICS = ("acc", "nll", "ece")


def run(out: Path, label: str, seed: int) -> dict:
    folder = out / f"{label}-seed{seed}"
    if not (folder / "metrics.json").is_file():
        settings = [*TEXT, *CONFIGS[label], f"seed={seed}"]
        args = [a for s in settings for a in ("--set", s)]
        command = [sys.executable, "-m", "sabma", "train", "--no-progress", "--out", str(folder)]
        if (folder / "config.yaml").is_file():  # interrupted: continue it
            command.append("--resume")
        done = subprocess.run([*command, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{folder}: {done.stderr.strip()[-2000:]}")
    return json.loads((folder / "metrics.json").read_text())


def chosen_lr(metrics: dict) -> str:
    search = metrics.get("lr_search") or {}
    return str(search.get("chosen", metrics.get("lr", "?")))


def summary(results: dict[str, list[dict]]) -> str:
    lines = [
        "| configuration | ACC | NLL | ECE | NLL (TS) | ECE (TS) | train s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in results.items():
        cells = []
        for split, metric in [("bma", m) for m in METRICS] + [("bma_ts", "nll"), ("bma_ts", "ece")]:
            values = [r["test"][split][metric] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        seconds = statistics.median(r["timing"]["train_s"] for r in runs)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    lines += ["", "Per seed, SA-BMA-LoRA − the other (NLL raw / TS):", ""]
    base = results["sabma-lora"]
    for label in ("sgd-lora", "sabma-norm+head"):
        diffs = [
            f"{a['test']['bma']['nll'] - b['test']['bma']['nll']:+.3f} / "
            f"{a['test']['bma_ts']['nll'] - b['test']['bma_ts']['nll']:+.3f}"
            for a, b in zip(base, results[label], strict=True)
        ]
        lines.append(f"- against {label}: " + ", ".join(diffs))
    lines += ["", "Mean test NLL of SA-BMA's posterior mean vs its BMA, per seed:", ""]
    for label in ("sabma-lora", "sabma-norm+head"):
        pairs = [
            f"{r['test']['mean']['nll']:.3f} vs {r['test']['bma']['nll']:.3f}"
            for r in results[label]
        ]
        lines.append(f"- {label}: " + ", ".join(pairs))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {label: [run(args.out, label, s) for s in seeds] for label in CONFIGS}
    text = summary(results)
    (args.out / "lora.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
