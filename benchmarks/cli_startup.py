"""Benchmark: how fast the command line answers when no model is needed.

help   = ``convscope --help`` (and ``convscope cam --help``), as a new process each time
usage  = a usage error: ``convscope predict`` with no image (exit 2, one line)
check  = a bad value whose check needs no model: ``convscope cam --alpha 7 x.jpg`` (exit 2, one line,
         answered before torch is imported, see ``convscope.cli.checks``)
torch  = ``python -c "import torch"``: what each of them would cost if the parser imported torch
Each the median of ``--repeats`` runs (default 5). Target: help, usage and check < 0.5 s.

Run: .venv/bin/python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def seconds(command: list[str], repeats: int, code: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != code:
            raise SystemExit(f"{' '.join(command)}: exit {done.returncode}, expected {code}: {done.stderr.strip()}")
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    script = shutil.which("convscope", path=str(Path(sys.executable).parent)) or "convscope"
    figures = {
        "convscope --help": seconds([script, "--help"], args.repeats, 0),
        "convscope cam --help": seconds([script, "cam", "--help"], args.repeats, 0),
        "convscope predict (usage error)": seconds([script, "predict"], args.repeats, 2),
        "convscope cam --alpha 7 x.jpg": seconds([script, "cam", "--alpha", "7", "x.jpg"], args.repeats, 2),
        "python -c 'import torch'": seconds([sys.executable, "-c", "import torch"], args.repeats, 0),
    }
    for what, value in figures.items():
        print(f"{what:<34} {value:6.3f} s (median of {args.repeats})")
    ok = all(value < 0.5 for what, value in figures.items() if what.startswith("convscope"))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
