#!/usr/bin/env python3
"""Crash harness: kill `rmtrain train` with SIGKILL at random points, resume after each kill, and
check that the final weights equal an uninterrupted run's bitwise and that nothing half-written
is left in the run folder.

    scripts/crash-check.py [--kills 20] [--seed 0] [--rmtrain BIN] [--out DIR] -- TRAIN_ARGS...

TRAIN_ARGS are `rmtrain train`'s (without --out and --resume); use --set save_every=1 so that
checkpoints are written often. Example, on the tiny fixture model:

    scripts/crash-check.py -- --model tests/fixtures/hf/tiny-bert-rm \\
        --train tests/data/tiny_pairs.jsonl --set epochs=3 --set batch_size=4 --set save_every=1

The kill times are uniform over the reference run's wall time, drawn from --seed. After each
kill the run is restarted with --resume when a checkpoint exists (fresh otherwise). When a chain
of resumes completes before the kills are used up, its weights are checked and a new chain starts
from scratch. Prints one JSON line; exits 1 when any check fails.
"""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

TEMPORARY = re.compile(r"^\..+\.(tmp|partial|old)\.\d+\.\d+$")


def leftovers(run):
    """Temporary siblings (rmtrain_core::fs naming) anywhere under `run`."""
    found = []
    for root, dirs, files in os.walk(run):
        found += [os.path.join(root, n) for n in dirs + files if TEMPORARY.match(n)]
    return sorted(found)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rmtrain", default=os.environ.get("RMTRAIN", "target/release/rmtrain"))
    p.add_argument("--out", help="work folder (default: a temporary one, removed at the end)")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    train_args = a.train_args[1:] if a.train_args[:1] == ["--"] else a.train_args
    if not train_args:
        p.error("give rmtrain train's arguments after --")
    work = a.out or tempfile.mkdtemp(prefix="rmtrain-crash.")
    os.makedirs(work, exist_ok=True)
    reference, crash = os.path.join(work, "reference"), os.path.join(work, "crash")
    log = open(os.path.join(work, "runs.log"), "w")

    def train(out, resume):
        cmd = [a.rmtrain, "train", *train_args, "--out", out, "--no-progress"] + (["--resume"] if resume else [])
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)

    shutil.rmtree(reference, ignore_errors=True)
    shutil.rmtree(crash, ignore_errors=True)
    started = time.monotonic()
    if train(reference, False).wait() != 0:
        sys.exit(f"crash-check: the reference run failed; see {work}/runs.log")
    wall = time.monotonic() - started
    want = open(os.path.join(reference, "model", "model.safetensors"), "rb").read()

    rng = random.Random(a.seed)
    failures, kill_times, completed, restarts, resumes = [], [], 0, 0, 0

    def check_completed():
        got = open(os.path.join(crash, "model", "model.safetensors"), "rb").read()
        if got != want:
            failures.append(f"chain {completed}: final weights differ from the reference run's")
        left = leftovers(crash)
        if left:
            failures.append(f"chain {completed}: left behind {left}")

    while len(kill_times) < a.kills:
        has_checkpoint = any(n.startswith("step-") for n in os.listdir(os.path.join(crash, "checkpoints"))) if os.path.isdir(os.path.join(crash, "checkpoints")) else False
        proc = train(crash, has_checkpoint)
        restarts += 1
        resumes += has_checkpoint
        delay = rng.uniform(0, wall)
        try:
            code = proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL
            proc.wait()
            kill_times.append(round(delay, 3))
            continue
        if code != 0:
            failures.append(f"a resumed run failed (exit {code}) after {len(kill_times)} kills; see {work}/runs.log")
            break
        check_completed()
        completed += 1
        shutil.rmtree(crash)
    if not failures:
        has_checkpoint = os.path.isdir(os.path.join(crash, "checkpoints")) and any(n.startswith("step-") for n in os.listdir(os.path.join(crash, "checkpoints")))
        if train(crash, has_checkpoint).wait() != 0:
            failures.append(f"the last resume failed; see {work}/runs.log")
        else:
            check_completed()
            completed += 1
    log.flush()
    swept = sum(line.startswith("rmtrain: cleaned up") for line in open(os.path.join(work, "runs.log")))
    result = {
        "kills": len(kill_times),
        "kill_times_s": kill_times,
        "reference_wall_s": round(wall, 3),
        "processes": restarts + 1,
        "resumed_processes": resumes,
        "completed_chains": completed,
        "resumes_that_cleaned_up": swept,
        "bitwise_equal": not any("differ" in f for f in failures),
        "failures": failures,
        "seed": a.seed,
    }
    print(json.dumps(result))
    log.close()
    if not failures and not a.out:
        shutil.rmtree(work)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
