"""Long fuzz runs with atheris (libFuzzer) over the targets in fuzz/targets.py.

    make fuzz SECONDS=600                  # every target, SECONDS each
    .venv/bin/python fuzz/run.py job_request --seconds 60

Each target runs in its own process, starting from a corpus in fuzz/corpus/<target>/
(seeded with the wire vectors and the target's own seeds; what libFuzzer finds that
covers new code is added there). A crash, an exception other than the target's typed
error, or a timeout stops the run with the input saved as crash-*/timeout-* in
fuzz/artifacts/. The last line is JSON: {"bench": "fuzz", "targets": {name: {"execs": n,
"seconds": s, "ok": bool}}}. Needs the fuzz extra: pip install 'aitbc-p2p[fuzz]'.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "wire.json"


def _corpus(name: str) -> Path:
    from targets import TARGETS, load_vectors, seeds_for

    corpus = ROOT / "fuzz" / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds_for(TARGETS[name], load_vectors(VECTORS))):
        (corpus / f"seed-{i}").write_bytes(data)
    return corpus


def fuzz_one(name: str) -> None:
    """In the child process: hand the target to libFuzzer (never returns)."""
    import atheris

    with atheris.instrument_imports(include=["aitbc_p2p", "targets"]):
        import targets as fuzz

    target = fuzz.TARGETS[name]

    def one_input(data: bytes) -> None:
        try:
            target.run(data[: fuzz.MAX_INPUT])
        except target.allowed:
            pass

    atheris.Setup(sys.argv[:1] + sys.argv[3:], one_input)
    atheris.Fuzz()


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        fuzz_one(sys.argv[2])
        return 0
    from targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"default: all of {sorted(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=60, help="per target")
    args = parser.parse_args()
    names = args.targets or sorted(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    artifacts = ROOT / "fuzz" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict[str, object]] = {}
    for name in names:
        corpus = _corpus(name)
        started = time.monotonic()
        cmd = [
            sys.executable, __file__, "--child", name, str(corpus),
            f"-max_total_time={args.seconds}", "-timeout=10", "-rss_limit_mb=2048", "-max_len=65536",
            f"-artifact_prefix={artifacts}/{name}-", "-print_final_stats=1",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
        ok = proc.returncode == 0
        report[name] = {"execs": int(execs[-1]) if execs else 0, "seconds": round(time.monotonic() - started), "ok": ok}
        execs_n, secs = report[name]["execs"], report[name]["seconds"]
        print(f"{name:20} {execs_n:>10} execs  {secs:>5} s  {'ok' if ok else 'FAILED'}")
        if not ok:
            print(proc.stderr[-3000:], file=sys.stderr)
    print(json.dumps({"bench": "fuzz", "targets": report}))
    return 0 if all(r["ok"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
