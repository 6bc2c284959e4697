"""``make waves TEST=<name> [SIM=icarus|verilator] [ARCH=pim|baseline]``: waveforms of one
scenario, ready to open.

Writes ``build/waves/<name>-<sim>/<name>.fst`` (``<name>-baseline-<sim>`` for the baseline) and
``<name>.gtkw``, a GTKWave save file with the
signals grouped: controller, input stream, output stream, MAC engine queue, weight store (the
SRAM port, and the bus for the baseline), MAC lanes, output engine, requantizer. Open it with
``gtkwave build/waves/<name>-<sim>/<name>.gtkw``.
"""

import argparse
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.runtime import asm
from pim_macro.sw.paths import BUILD_ROOT
from pim_macro.sw.runtime.rtl import SIMULATORS, HDL_TOPLEVEL, Job, run_rtl
from pim_macro.tb.harness.programs import random_program, error_programs, compare


CONFIG = MacroConfig(lanes=8, rows_per_cycle=2, depth=64, act_depth=256, bias_depth=32)


def _hand():
    from pim_macro.tb.harness.programs import hand_program
    return [Job(hand_program(CONFIG), idle=0.3, backpressure=0.5, seed=1)]


def _errors():
    words = [w for program, _, _ in error_programs(CONFIG).values() for w in program]
    return [Job(words)]


def _random():
    return [Job(random_program(CONFIG, 0, commands=15), idle=0.3, backpressure=0.5, seed=0)]


def _reset():
    words = random_program(CONFIG, 1, commands=10)
    return [Job(words, prefix=words, reset_after=len(words) // 2, seed=2)]


def _gemv():
    from pim_macro.sw.compiler.gemv import compile_gemv
    rng = np.random.default_rng(3)
    program = compile_gemv(rng.integers(-128, 128, (12, 40), dtype=np.int8),
                           rng.integers(-128, 128, 40, dtype=np.int8), CONFIG,
                           multiplier=1 << 30, shift=-12, act_min=0)
    return [Job(program.words)]


SCENARIOS = {
    "hand": (_hand, "hand-computed program: identity and -128 weights, bias, int8"),
    "errors": (_errors, "one command per error code, each followed by working commands"),
    "random": (_random, "seeded random program with source idles and sink backpressure"),
    "reset": (_reset, "reset in the middle of a command, then a fresh program"),
    "gemv": (_gemv, "a 12x40 GEMV tiled over two output tiles, requantized with ReLU"),
}

# (group, module path under the top, name patterns, GTKWave display flags)
GROUPS = [
    ("Controller", "", [r"ctrl_state", r"can_go", r"index", r"remaining"], "22"),
    ("Decoder", "decoder", [r"header", r"arg0", r"arg1", r"error", r"status", r"payload",
                            r"data_words"], "22"),
    ("Write-backs", "writebacks", [r"count", r"span", r"conflict"], "22"),
    ("Status", "status", [r"last_error", r"error_count"], "22"),
    ("Input stream", "", [r"i_stream__\w+"], "22"),
    ("Output stream", "", [r"o_stream__\w+"], "22"),
    ("MAC engine queue", "mac_engine", [r"live", r"pending", r"wp", r"ip", r"index",
                                        r"capture_in_flight", r"inject", r"captured__full"], "22"),
    ("Weight store", "mac_engine.weight_store", [r"rd_en", r"rd_row", r"rd_ready", r"rd_valid",
                                                 r"busy", r"beat", r"write__en", r"write__row",
                                                 r"write__word", r"write__data"], "22"),
    ("MAC lanes", "mac_engine.macs", [r"valid", r"first", r"capture", r"acts", r"sum_l\d+",
                                      r"acc_l\d+", r"out_l\d+"], "424"),
    ("Output engine", "output_engine", [r"out_state", r"index", r"issue", r"out_lane",
                                        r"stage_valid", r"value\d*"], "22"),
    ("Requantizer", "output_engine.requant", [r"value", r"multiplier", r"shift", r"double",
                                              r"zero_point", r"act_min", r"act_max", r"result",
                                              r"o_valid"], "424"),
]


def _declarations(verilog, module):
    """``{name: "[msb:lsb]" or ""}`` of the plain-named signals declared in ``module``."""
    if module:
        # Submodules are named after their instance path (Yosys may add a `$N` suffix).
        header = re.search(rf"module \\{HDL_TOPLEVEL}\.{re.escape(module)}(\$\d+)? \(",
                           verilog).group(0)
    else:
        header = f"module {HDL_TOPLEVEL}("
    start = verilog.index(header)
    body = verilog[start:verilog.index("endmodule", start)]
    found = {}
    for match in re.finditer(r"^\s*(?:input|output|wire|reg)\s+(?:signed\s+)?(\[\d+:\d+\])?\s*"
                             r"([A-Za-z_][A-Za-z0-9_]*)\s*[;=]", body, re.M):
        found.setdefault(match.group(2), match.group(1) or "")
    return found


def gtkw(verilog, fst):
    """The GTKWave save file text for ``fst`` (both simulators dump the top as ``pim_macro``)."""
    root = HDL_TOPLEVEL
    lines = [f'[dumpfile] "{fst.name}"', "[timestart] 0", "[sst_width] 260",
             "[signals_width] 240"]
    for title, module, patterns, flags in GROUPS:
        declared = _declarations(verilog, module)
        names = [n for p in patterns for n in sorted(declared, key=_natural)
                 if re.fullmatch(p, n)]
        if not names:
            continue
        lines += ["@800200", f"-{title}"]
        prefix = f"{root}.{module}." if module else f"{root}."
        for name in dict.fromkeys(names):
            lines += [f"@{flags if declared[name] else '28'}", f"{prefix}{name}{declared[name]}"]
        lines += ["@1000200", f"-{title}"]
    return "\n".join(lines) + "\n"


def _natural(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="make waves TEST=<name>", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test", nargs="?", help="scenario name (see --list)")
    parser.add_argument("--sim", choices=SIMULATORS, default="icarus")
    parser.add_argument("--arch", choices=ARCHES, default="pim")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    args = parser.parse_args(argv)
    if args.list or not args.test:
        for name, (_, what) in SCENARIOS.items():
            print(f"  {name:8} {what}")
        return 0 if args.list else 2
    if args.test not in SCENARIOS:
        print(f"waves: error: unknown scenario {args.test!r}; choose from "
              f"{', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    arch = "" if args.arch == "pim" else f"{args.arch}-"
    out_dir = BUILD_ROOT / "waves" / f"{args.test}-{arch}{args.sim}"
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = SCENARIOS[args.test][0]()
    test_dir = out_dir / "run"
    results = run_rtl(jobs, CONFIG, sim=args.sim, arch=args.arch, waves=True, test_dir=test_dir)
    for job, result in zip(jobs, results):
        if not result.finished:
            print("waves: the macro did not finish (the waves show where it stopped)")
        else:
            compare(job.words, result.out, CONFIG, arch=args.arch, where=args.test)
    build_dir = BUILD_ROOT / "rtl" / args.sim / f"{args.arch}-{CONFIG.tag(args.arch)}-waves"
    dumped = (build_dir / f"{HDL_TOPLEVEL}.fst" if args.sim == "icarus"
              else test_dir / "dump.fst")
    fst = out_dir / f"{args.test}.fst"
    shutil.copyfile(dumped, fst)
    verilog = (build_dir / f"{HDL_TOPLEVEL}.v").read_text()
    save = out_dir / f"{args.test}.gtkw"
    save.write_text(gtkw(verilog, fst))
    print(f"waves: {fst}\nsave file: {save}\nopen with: gtkwave {save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
