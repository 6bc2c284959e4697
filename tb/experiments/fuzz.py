"""The long fuzz run (``make fuzz N=...``): seeded random command streams on the RTL.

``--streams`` cases of :func:`pim_macro.tb.harness.fuzz.fuzz_case` (seeds ``--seed`` ..) are
dealt round-robin to every (configuration, simulator, architecture) asked for (``--every``: each
stream to all of them), played in batches, one simulator run per batch, and each is checked
against the golden model word for word, against the cycle model's stream, and (where nothing
stalls and the stream is whole) against the cycle model's counters. The figures are printed per
simulator, architecture and configuration: streams, commands, words in and out, invalid and cut
streams, resets (and how many of them had the output blocked), mismatches, run time.

On a mismatch the run goes on to the end, then prints the first failure: the seed, what failed,
and a minimal reproducer (the stream's words, after removing every command it can while the
failure stays, re-checked on the same simulator), and exits with status 1.

Run: ``python -m pim_macro.tb.experiments.fuzz --streams N --seed S [--configs max,l8r2]
[--sims icarus,verilator] [--archs pim,baseline] [--every] [--batch 100] [--commands 24]``.
Argument errors are one line ``pim: error: ...`` and exit status 2, as in the ``pim`` tool.
"""

import sys
import time
from dataclasses import dataclass, field

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.cli import OneLineParser
from pim_macro.sw.runtime.rtl import SIMULATORS, SimulatorMissing, run_rtl
from pim_macro.tb.harness.fuzz import FUZZ_CONFIGS, check, fuzz_case, minimise, model_check


@dataclass
class Tally:
    streams: int = 0
    commands: int = 0
    words_in: int = 0
    words_out: int = 0
    invalid: int = 0
    cut: int = 0
    resets: int = 0
    blocked: int = 0
    timed: int = 0
    mismatches: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)


def _run(cases, config, sim, arch, tally):
    """Play ``cases`` in one simulator run, check each; returns a list of verdicts (error
    message or None)."""
    results = run_rtl([case.job() for case in cases], config, sim=sim, arch=arch)
    verdicts = []
    for case, result in zip(cases, results):
        try:
            model_check(case, config, arch)
            timed = check(case, result, config, arch)
            verdicts.append(None)
        except (AssertionError, ValueError) as exc:
            verdicts.append(str(exc).splitlines()[0])
            timed = 0
        if tally is not None:
            tally.streams += 1
            tally.commands += case.answers
            tally.words_in += len(case.words)
            tally.words_out += len(result.out)
            tally.invalid += sum(case.kinds.values())
            tally.cut += case.cut
            tally.resets += case.prefix is not None
            tally.blocked += bool(result.reset and result.reset["out_blocked"])
            tally.timed += timed
    return verdicts


def _shown(token):
    """``token`` of the user's for a message: at most 40 characters."""
    return token if len(token) <= 40 else token[:37] + "..."


def main(argv=None):
    """Run the fuzz campaign; returns the exit status (0, 1 on a mismatch, 2 for bad
    arguments, each a one-line error)."""
    parser = OneLineParser(
        prog="python -m pim_macro.tb.experiments.fuzz",
        description="Fuzz the macro's RTL with seeded command streams.")
    parser.add_argument("--streams", type=int, default=200,
                        help="streams, dealt round-robin to the configurations x simulators x "
                             "architectures")
    parser.add_argument("--every", action="store_true",
                        help="play every stream on every configuration, simulator and "
                             "architecture")
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--configs", default="odd,l8r2,l12r1q2",
                        help=f"comma-separated, each one of {', '.join(FUZZ_CONFIGS)} or a "
                             f"configuration tag such as l12r4d300a512b64q2w16 (lanes, R, "
                             f"depth, act_depth, bias_depth, optional requantizers and bus "
                             f"bits; the form of build folder names)")
    parser.add_argument("--sims", default=",".join(SIMULATORS))
    parser.add_argument("--archs", default=",".join(ARCHES))
    parser.add_argument("--batch", type=int, default=100, help="streams per simulator run")
    parser.add_argument("--commands", type=int, default=24, help="commands per stream")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:           # --help (0), or the parser's one-line error (2)
        return exc.code
    names = args.configs.split(",")
    sims, archs = args.sims.split(","), args.archs.split(",")
    configs = {}
    for name in names:
        if name in configs:
            # Results are tallied by name: a second copy would be counted into the first.
            print(f"pim: error: --configs names {_shown(name)} twice", file=sys.stderr)
            return 2
        try:
            configs[name] = (FUZZ_CONFIGS[name] if name in FUZZ_CONFIGS
                             else MacroConfig.from_tag(name))
        except ValueError as exc:
            print(f"pim: error: --configs: {exc}; or one of {', '.join(FUZZ_CONFIGS)}",
                  file=sys.stderr)
            return 2
    for what, values, allowed in (("simulator", sims, SIMULATORS), ("architecture", archs, ARCHES)):
        bad = [v for v in values if v not in allowed]
        if bad:
            print(f"pim: error: unknown {what} {_shown(bad[0])!r}; one of {', '.join(allowed)}",
                  file=sys.stderr)
            return 2
    if args.streams < 1 or args.batch < 1 or args.commands < 1:
        print("pim: error: --streams, --batch and --commands must be positive", file=sys.stderr)
        return 2
    if args.seed < 0:                   # numpy's generators take no negative seed
        print(f"pim: error: --seed must be 0 or more, not {args.seed}", file=sys.stderr)
        return 2

    start = time.time()
    tallies, first = {}, None
    combos = [(name, sim, arch) for name in names for sim in sims for arch in archs]
    seeds = range(args.seed, args.seed + args.streams)
    for k, (name, sim, arch) in enumerate(combos):
        config = configs[name]
        mine = [s for i, s in enumerate(seeds) if args.every or i % len(combos) == k]
        cases = [fuzz_case(config, seed, commands=args.commands) for seed in mine]
        tally = tallies[sim, arch, name] = Tally()
        t0 = time.time()
        for i in range(0, len(cases), args.batch):
            batch = cases[i:i + args.batch]
            try:
                verdicts = _run(batch, config, sim, arch, tally)
            except SimulatorMissing as exc:
                print(f"pim: error: {exc}", file=sys.stderr)
                return 2
            for case, verdict in zip(batch, verdicts):
                if verdict is not None:
                    tally.mismatches += 1
                    tally.failures.append((case, verdict))
                    if first is None:
                        first = (sim, arch, name, case, verdict)
        tally.seconds = time.time() - t0
        print(_line(sim, arch, name, tally), flush=True)

    total = Tally()
    for tally in tallies.values():
        for key in ("streams", "commands", "words_in", "words_out", "invalid", "cut", "resets",
                    "blocked", "timed", "mismatches"):
            setattr(total, key, getattr(total, key) + getattr(tally, key))
    total.seconds = time.time() - start
    print(_line("all", "", "", total))
    if first is None:
        print(f"no mismatch (seeds {args.seed} .. {args.seed + args.streams - 1})")
        return 0
    sim, arch, name, case, verdict = first
    config = configs[name]
    print(f"FIRST MISMATCH: {sim} {arch} {name} ({config.tag(arch)}), {case.describe()}")
    print(f"  {verdict}")

    def fails(candidates):
        return [v is not None for v in _run(candidates, config, sim, arch, None)]
    small = minimise(case, config, fails)
    print(f"minimal reproducer ({len(small.words)} words; seed {small.seed}; "
          f"{small.describe()}):")
    print("  words = [" + ", ".join(f"{w:#010x}" for w in small.words) + "]")
    if small.prefix is not None:
        print("  prefix = [" + ", ".join(f"{w:#010x}" for w in small.prefix) + "]")
    print(f"  expected (golden): {[f'{w:#010x}' for w in _golden(small, config, arch)]}")
    return 1


def _golden(case, config, arch):
    from pim_macro.sw.models.golden import GoldenMacro
    return GoldenMacro(config, arch=arch).run(case.reference)


def _line(sim, arch, name, t):
    return (f"{sim:9} {arch:8} {name:8} streams {t.streams:5}  commands {t.commands:6}  "
            f"words in {t.words_in:7} out {t.words_out:7}  invalid {t.invalid:5}  cut {t.cut:4}  "
            f"resets {t.resets:4} (blocked {t.blocked:4})  timed {t.timed:4}  "
            f"mismatches {t.mismatches:3}  {t.seconds:7.1f} s")


if __name__ == "__main__":
    sys.exit(main())
