"""Run fuzz targets with atheris (coverage-guided, libFuzzer inside).

    python -m tests.fuzz.run --list
    python -m tests.fuzz.run --target rtp --runs 1000000
    python -m tests.fuzz.run --all --runs 5000          # every target, one after another

Each target runs in its own child process (atheris fuzzes once per process and exits when done);
the parent reads libFuzzer's "Done N runs" line and prints one summary line per target:
`fuzz target=rtp runs=1000000 crashes=0 seconds=41.2`. A crash leaves its input in
`--artifacts` (default `.fuzz-artifacts/<target>/`) and libFuzzer's report on stderr; the exit
status is then non-zero. Ctrl-C stops the child and the parent cleanly.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DONE_RE = re.compile(r"Done (\d+) runs in (\d+) second")
ARTIFACT_RE = re.compile(r"Test unit written to (\S+)")
EXECUTED_RE = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
REPO = Path(__file__).resolve().parents[2]


def _child(name: str, runs: int, seed: int, artifacts: Path, max_len: int | None) -> int:
    """Runs inside the child process: instrument the code under test, then fuzz forever/`runs`."""
    import atheris

    from tests.fuzz import registry

    # instrument the product's own Python code for coverage as the targets import it
    with atheris.instrument_imports(include=list(registry.INSTRUMENT)):
        registry.load_all()
    spec = registry.TARGETS[name]
    check = spec.setup()
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for index, seed_input in enumerate(spec.seeds()):
        (corpus / f"seed-{index}").write_bytes(seed_input)
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], f"-runs={runs}", f"-seed={seed}", f"-artifact_prefix={artifacts}/",
            f"-max_len={max_len or spec.max_len}", "-print_final_stats=1", str(corpus)]
    atheris.Setup(args, check)
    atheris.Fuzz()
    return 0  # not reached: atheris exits


def run_target(name: str, runs: int, seed: int = 1, artifacts: Path | None = None,
               max_len: int | None = None, quiet: bool = True) -> dict:
    """Fuzz one target in a child process; returns {target, runs, crashes, seconds, returncode}."""
    artifacts = artifacts or REPO / ".fuzz-artifacts" / name
    command = [sys.executable, "-m", "tests.fuzz.run", "--child", name, "--runs", str(runs),
               "--seed", str(seed), "--artifacts", str(artifacts)]
    if max_len:
        command += ["--max-len", str(max_len)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    began = time.monotonic()
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace")
    lines: list[str] = []
    try:
        for line in child.stdout:
            lines.append(line)
            if not quiet:
                sys.stderr.write(line)
        child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        child.wait()
        raise
    seconds = time.monotonic() - began
    output = "".join(lines)
    done = DONE_RE.search(output)
    if done:
        tried = int(done.group(1))
    else:  # crashed: libFuzzer's final stats say how far it got
        executed = EXECUTED_RE.search(output)
        tried = int(executed.group(1)) if executed else 0
    crashes = ARTIFACT_RE.findall(output)
    interrupted = "run interrupted" in output
    failed = bool(crashes) or (child.returncode != 0 and not interrupted)
    return {"target": name, "runs": tried, "crashes": len(crashes) or int(failed), "seconds": round(seconds, 1),
            "interrupted": interrupted, "artifacts": crashes, "returncode": child.returncode,
            "output": output if failed else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", help="target name (repeatable)")
    parser.add_argument("--all", action="store_true", help="every registered target, one at a time")
    parser.add_argument("--list", action="store_true", help="list targets and what each checks")
    parser.add_argument("--runs", type=int, default=100_000, help="inputs per target (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-len", type=int, help="longest input (default: per target)")
    parser.add_argument("--artifacts", type=Path, help="where crashing inputs are written")
    parser.add_argument("--verbose", action="store_true", help="show libFuzzer's own output")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        return _child(args.child, args.runs, args.seed, args.artifacts, args.max_len)

    from tests.fuzz import registry

    targets = registry.load_all()
    if args.list:
        for spec in targets.values():
            print(f"{spec.name:16} {spec.summary}")
        return 0
    names = list(targets) if args.all else (args.target or [])
    unknown = [n for n in names if n not in targets]
    if unknown or not names:
        parser.error(f"unknown target(s) {unknown}; choose from {sorted(targets)}" if unknown
                     else "give --target NAME or --all")
    if shutil.which(sys.executable) is None:
        parser.error("no python to run the child with")
    failed = 0
    print(f"fuzz: start {len(names)} target(s), {args.runs} runs each", flush=True)
    for name in names:
        try:
            result = run_target(name, args.runs, args.seed, args.artifacts, args.max_len, quiet=not args.verbose)
        except KeyboardInterrupt:
            print(f"fuzz: stopped during {name}", flush=True)
            return 130
        print(f"fuzz target={result['target']} runs={result['runs']} crashes={result['crashes']} "
              f"seconds={result['seconds']}" + (" (interrupted)" if result["interrupted"] else ""), flush=True)
        if result["crashes"]:
            failed += 1
            sys.stderr.write(result["output"][-6000:])
    print(f"fuzz: stop, {failed} target(s) crashed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
