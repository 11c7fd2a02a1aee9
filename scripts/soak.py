"""Run the reliability suite as a longer soak and print what it exercised.

The suite in ``tests/reliability`` is sized for CI (about a minute on two cores). This
script runs it again and again, each round with a fresh seed and every count multiplied
by ``--scale`` (the two storms can also be sized directly with ``--spawns`` and
``--calls``), until ``--minutes`` have passed (or for ``--rounds`` rounds), then prints
the summed counts: spawns, calls, cancellations, faults survived, inputs fuzzed. It
stops at the first failing round and prints the seed that replays it.

    hatch run hatch-test.py3.11:python scripts/soak.py --minutes 30 --scale 5
    hatch run hatch-test.py3.11:python scripts/soak.py --spawns 20000 --calls 100000
    hatch run hatch-test.py3.11:python scripts/soak.py --rounds 1          # the CI figures
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "tests/reliability"
_OUTCOME = re.compile(r"(\d+) (passed|failed|xfailed|xpassed|errors?|skipped)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="keep starting rounds for this long")
    budget.add_argument("--rounds", type=int, help="run this many rounds (default: 1)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every count by this (default: 1)"
    )
    parser.add_argument(
        "--spawns", type=int, help="spawns per round in the spawn storm (default: scaled)"
    )
    parser.add_argument(
        "--calls", type=int, help="calls per round in the worker-call storm (default: scaled)"
    )
    parser.add_argument("--seed", type=int, help="the first round's seed (default: random)")
    parser.add_argument("-k", dest="keyword", help="only the tests matching this expression")
    return parser.parse_args(argv)


def run_round(args: argparse.Namespace, seed: int) -> tuple[int, Counter[str], Counter[str]]:
    """Run the suite once; return pytest's exit status, its outcomes and the tally."""
    with tempfile.TemporaryDirectory(prefix="procio-soak-") as scratch:
        report = Path(scratch, "tally.json")
        scale = args.scale
        env = dict(
            os.environ,
            PROCIO_RELIABILITY_SEED=str(seed),
            PROCIO_RELIABILITY_SCALE=str(scale),
            PROCIO_RELIABILITY_REPORT=str(report),
        )
        # The CI totals of the two storms, to size the per-test time limit.
        for figure, ci_total in (("spawns", 2000), ("calls", 10000)):
            wanted = getattr(args, figure)
            if wanted is not None:
                env[f"PROCIO_RELIABILITY_{figure.upper()}"] = str(wanted)
                scale = max(scale, wanted / ci_total)
        command = [
            sys.executable,
            "-m",
            "pytest",
            SUITE,
            "-q",
            "-p",
            "no:cacheprovider",
            # The per-test limit of pytest.ini is sized for CI counts.
            f"--timeout={int(120 * max(1.0, scale))}",
        ]
        if args.keyword:
            command += ["-k", args.keyword]
        completed = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        outcomes: Counter[str] = Counter()
        lines = completed.stdout.strip().splitlines()
        for count, outcome in _OUTCOME.findall(lines[-1] if lines else ""):
            outcomes[outcome.rstrip("s") if outcome.startswith("error") else outcome] += int(count)
        tally: Counter[str] = Counter()
        if report.exists():
            tally.update(json.loads(report.read_text(encoding="utf-8"))["counts"])
        if completed.returncode != 0:
            print(completed.stdout[-6000:], file=sys.stderr)
            print(completed.stderr[-2000:], file=sys.stderr)
        return completed.returncode, outcomes, tally


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    rng = random.Random()
    seed = args.seed if args.seed is not None else rng.randrange(2**32)
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    rounds = args.rounds if args.rounds is not None else (None if deadline else 1)
    totals: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    done = 0
    status = 0
    while True:
        round_started = time.monotonic()
        status, round_outcomes, tally = run_round(args, seed)
        done += 1
        totals.update(tally)
        outcomes.update(round_outcomes)
        summary = ", ".join(f"{n} {what}" for what, n in sorted(round_outcomes.items()))
        print(
            f"round {done}: seed {seed}, scale {args.scale:g}: {summary} "
            f"in {time.monotonic() - round_started:.0f} s",
            flush=True,
        )
        if status != 0:
            print(
                f"\nround {done} FAILED; replay it with:\n"
                f"  PROCIO_RELIABILITY_SEED={seed} PROCIO_RELIABILITY_SCALE={args.scale:g} "
                f"pytest {SUITE}",
                file=sys.stderr,
            )
            break
        if rounds is not None and done >= rounds:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        seed = rng.randrange(2**32)

    width = max((len(name) for name in totals), default=10)
    print(f"\n{done} round(s) in {(time.monotonic() - started) / 60:.1f} min; exercised:")
    for name, count in sorted(totals.items()):
        print(f"  {name:<{width}}  {count:>10,}")
    tests = ", ".join(f"{n:,} {what}" for what, n in sorted(outcomes.items()))
    print(f"test outcomes: {tests}")
    print("result: " + ("nothing lost, nothing leaked" if status == 0 else "FAILED"))
    return 0 if status == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
