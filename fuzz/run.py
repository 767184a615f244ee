"""Run one fuzz target under atheris (libFuzzer, coverage-guided) for a time budget.

    python fuzz/run.py TARGET [--seconds N] [--corpus-out DIR] [-LIBFUZZER_FLAG=VALUE...]
    python fuzz/run.py --list
    python fuzz/run.py TARGET --repro FILE        (one input, a plain traceback)

The committed corpus (fuzz/corpus/TARGET/) seeds every run and is never written: new inputs go
to --corpus-out (a temporary directory unless given). A crash leaves its input at
`crash-<sha1>` in --artifacts (default: the current directory) and exits non-zero. A crash
that is fixed goes into fuzz/corpus/TARGET/ as a regression case.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent

# The harness is instrumented too: its checks compare against values (the planted bugs'
# among them) that libFuzzer can then aim for. So are the modules a target imports only when
# it runs (an edge module with heavy imports): imported here, inside the instrumentation, or
# their code would be fuzzed blind (and imported on the clock of the first input).
sys.path.insert(0, str(HERE))
_chosen = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
with atheris.instrument_imports(include=["oneroot", "targets"]):
    import targets

    for _module in targets.LAZY_IMPORTS.get(_chosen, ()):
        importlib.import_module(_module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("target", nargs="?", choices=sorted(targets.TARGETS))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--corpus-out", type=Path)
    parser.add_argument("--artifacts", type=Path, default=Path.cwd())
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--repro", type=Path, help="run the target once on this input, no fuzzing")
    args, extra = parser.parse_known_args()
    if args.list or args.target is None:
        print("\n".join(sorted(targets.TARGETS)))
        return
    if args.repro is not None:
        targets.TARGETS[args.target](args.repro.read_bytes())
        print(f"{args.target}: {args.repro} passes")
        return
    seeds = HERE / "corpus" / args.target
    out = args.corpus_out or Path(tempfile.mkdtemp(prefix=f"oneroot-fuzz-{args.target}-"))
    out.mkdir(parents=True, exist_ok=True)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], f"-max_total_time={args.seconds}", "-timeout=10",
            "-rss_limit_mb=2048", "-max_len=2048", "-print_final_stats=1",
            f"-artifact_prefix={args.artifacts}/", *extra, str(out), str(seeds)]
    atheris.Setup(argv, targets.TARGETS[args.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
