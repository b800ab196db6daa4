"""Coverage-guided fuzzing of every reader of untrusted bytes (atheris / libFuzzer).

Runs each target of tests/fuzz/targets.py for N inputs in its own process,
starting from the seed corpus in tests/fuzz/corpus/<target>/ (copied to a
work folder, so the repository's corpus stays small), and prints inputs/s,
crashes, hangs (an input over --timeout seconds), out-of-memory stops (over
--rss-limit-mb) and the process's peak RSS.  After a crash the target is
restarted for the inputs left, up to --max-findings times; what libFuzzer
wrote (crash-*, timeout-*, oom-*) stays in the work folder, printed.

    python bench/fuzz.py 1000000                 # every target, 1,000,000 inputs each
    python bench/fuzz.py 20000 --only hl7 --only mllp
    python bench/fuzz.py 5000 --keep             # keep the work folder
    python bench/fuzz.py 1000000 --max-seconds 600   # at most 10 minutes per target; prints how many ran

It asserts nothing.  Needs ``pip install atheris`` (Python 3.11 wheels).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.stdout.reconfigure(line_buffering=True)

from tests.fuzz.targets import TARGETS  # noqa: E402

CORPUS = REPO / "tests" / "fuzz" / "corpus"
_RUNS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def run_target(name: str, n: int, work: Path, args) -> dict:
    corpus = work / name / "corpus"
    artifacts = work / name / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    seeds = sorted((CORPUS / name).glob("*"))
    for seed in seeds:
        shutil.copy(seed, corpus / seed.name)
    max_len = max([args.max_len] + [2 * s.stat().st_size for s in seeds])
    done = 0
    findings: list[str] = []
    peak_kb = 0
    started = time.perf_counter()
    log_path = work / name / "fuzz.log"
    with open(log_path, "ab") as log:
        while done < n and len(findings) <= args.max_findings:
            cmd = [
                sys.executable, "-m", "tests.fuzz.run", name,
                f"-runs={n - done}", f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}",
                f"-max_len={max_len}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
                *([f"-max_total_time={max(1, int(args.max_seconds - (time.perf_counter() - started)))}"] if args.max_seconds else []),
                str(corpus),
            ]
            before = set(artifacts.iterdir())
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out, _ = proc.communicate()
            log.write(out)
            text = out.decode(errors="replace")
            m = _DONE.search(text)
            ran = int(m.group(1)) if m else max([int(x) for x in _RUNS.findall(text)] or [0])
            peak = re.findall(r"rss: (\d+)Mb", text) + re.findall(r"stat::peak_rss_mb:\s+(\d+)", text)
            if peak:
                peak_kb = max(peak_kb, 1024 * max(int(p) for p in peak))
            done += max(ran, 1)
            new = sorted(set(artifacts.iterdir()) - before)
            if proc.returncode == 0 and not new:
                break
            if args.max_seconds and time.perf_counter() - started >= args.max_seconds:
                findings += [p.name for p in new]
                break
            findings += [p.name for p in new] or [f"exit {proc.returncode}"]
    seconds = time.perf_counter() - started
    return {
        "target": name,
        "inputs": done,
        "seconds": seconds,
        "rate": done / seconds if seconds else 0.0,
        "crashes": sum(1 for f in findings if not f.startswith(("timeout-", "oom-"))),
        "hangs": sum(1 for f in findings if f.startswith("timeout-")),
        "ooms": sum(1 for f in findings if f.startswith("oom-")),
        "peak_rss_mb": peak_kb / 1024,
        "findings": findings,
        "log": str(log_path),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", type=int, help="inputs per target")
    ap.add_argument("--only", action="append", choices=sorted(TARGETS), help="a target (repeatable); default all")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it counts as a hang")
    ap.add_argument("--rss-limit-mb", type=int, default=1024)
    ap.add_argument("--max-len", type=int, default=65536, help="largest input libFuzzer makes (bytes)")
    ap.add_argument("--max-findings", type=int, default=5, help="restarts after findings, per target")
    ap.add_argument("--max-seconds", type=float, default=0, help="stop a target after this long (0: run all N inputs)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        sys.exit("bench/fuzz.py needs atheris: pip install atheris")
    import platform

    print(f"# {platform.node()} {os.cpu_count()} cpus, Python {platform.python_version()}, {args.inputs} inputs per target")
    work = Path(tempfile.mkdtemp(prefix="dxagw-fuzz-"))
    print(f"{'target':14} {'inputs':>9} {'inputs/s':>9} {'crashes':>7} {'hangs':>5} {'ooms':>4} {'peak RSS MB':>11}")
    found = False
    try:
        for name in args.only or list(TARGETS):
            r = run_target(name, args.inputs, work, args)
            found = found or bool(r["findings"])
            print(f"{r['target']:14} {r['inputs']:>9} {r['rate']:>9.0f} {r['crashes']:>7} {r['hangs']:>5} {r['ooms']:>4} {r['peak_rss_mb']:>11.0f}")
            for f in r["findings"]:
                print(f"  finding: {work / name / 'artifacts' / f}" if not f.startswith("exit") else f"  finding: {f}, see {r['log']}")
    finally:
        if args.keep or found:
            print(f"# work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
