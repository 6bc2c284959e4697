"""``make formal``: ``python -m pim_macro.tb.formal [names...] [--list]``.

Runs every proof (or those named, or whose name starts with a given prefix: ``decoder`` runs the
six decoder proofs), one after another, and prints a table: proof, configuration, mode, result,
seconds. Each proof's files are in ``build/formal/<name>/`` (``top.il``, ``<name>.sby``,
``sby.log``, SymbiYosys's ``work/``). Exits 1 when a proof fails, naming its counterexample trace.
"""

import argparse
import re
import sys
import time

from .engine import FormalToolError, run
from . import all_proofs


def _select(proofs, names):
    if not names:
        return proofs
    chosen = []
    for name in names:
        matches = [p for p in proofs if p.name == name] or \
                  [p for p in proofs if p.name.startswith(name)]
        if not matches:
            raise ValueError(f"no proof named {name!r}; `--list` lists them")
        chosen += [p for p in matches if p not in chosen]
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pim_macro.tb.formal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="proofs to run (a name or its prefix); all "
                        "by default")
    parser.add_argument("--list", action="store_true", help="list the proofs and exit")
    args = parser.parse_args(argv)
    proofs = all_proofs()
    if args.list:
        for proof in proofs:
            print(f"  {proof.name:22} {proof.config:24} {proof.mode_label:18} {proof.what}")
        return 0
    try:
        chosen = _select(proofs, args.names)
    except ValueError as error:
        print(f"pim: error: {error}", file=sys.stderr)
        return 2
    header = f"{'proof':22} {'configuration':24} {'mode':18} {'result':8} {'seconds':>8}"
    print(header, flush=True)
    print("-" * len(header))
    start = time.monotonic()
    failed = []
    for proof in chosen:
        try:
            result = run(proof)
        except FormalToolError as error:
            print(f"pim: error: {error}", file=sys.stderr)
            return 2
        print(f"{proof.name:22} {proof.config:24} {proof.mode_label:18} {result.status:8} "
              f"{result.seconds:8.1f}", flush=True)
        if result.covers:
            steps = [int(m) for m in re.findall(r"step (\d+)", " ".join(result.covers))]
            print(f"  {len(result.covers)} covers reached, the last at cycle "
                  f"{max(steps, default=0)}", flush=True)
        if not result.passed:
            failed.append(result)
    print(f"{len(chosen)} proofs, {len(chosen) - len(failed)} passed, "
          f"{time.monotonic() - start:.0f} s")
    for result in failed:
        print(f"FAILED {result.proof.name}: " + "; ".join(result.detail or [result.status]))
        if result.trace:
            print(f"  trace: {result.trace}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
