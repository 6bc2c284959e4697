"""The ``pim`` command-line tool.

``pim gemv`` runs ``Y = X @ W.T (+ bias)`` (see :mod:`pim_macro.sw.compiler.gemv`) on the golden
model, the exact cycle model or the RTL, of the PIM macro or the Von Neumann baseline::

    pim gemv --weights W.npy --input X.npy [--bias B.npy]
             [--multiplier M0|M0.npy --shift S|S.npy [--zero-point Z] [--act-min LO]
              [--act-max HI] [--double-rounding]]
             [--sim golden|model|icarus|verilator|board [--port /dev/ttyUSB0]]
             [--arch pim|baseline] [--preloaded]
             [--out Y.npy] [--json] [--energy-table 45nm|7nm|T.toml]
             [--lanes 8] [--rows-per-cycle 1] [--bus-bits 32] ...

``pim infer --model M.npz --input X.npy [--labels L.npy]`` runs a quantized network (the same
run options), ``pim quantize`` makes one from a float model. ``pim infer --model M.tflite``
runs an int8 TFLite model (:mod:`pim_macro.sw.compiler.graph_compiler`): X int8 ``(B, *the
model's input shape without its batch)``, Y the model's outputs, batch first.

With ``--json`` both commands report the energy of the run's counters (the RTL's, the cycle
model's or the golden model's: those the JSON's ``counters`` hold), priced by
:func:`pim_macro.sw.models.energy.energy` with the table of ``--energy-table`` (a name in
:data:`~pim_macro.sw.models.energy.TABLES` or a TOML file; default ``45nm``; read before anything
runs): ``energy`` per inference (the run's divided over the batch: pJ by kind, bytes by level,
see :meth:`~pim_macro.sw.models.energy.Energy.as_dict`) and ``energy_run`` for the whole run
when it differs. For a ``.tflite`` model they are the macro's part only (``energy_note`` says so
when the graph has host ops): ``energy`` the inferences' segments, ``energy_setup`` the one-time
set-up (the resident weights), ``energy_run`` both; its text form gains an ``energy:`` line.

``pim run`` plays a command stream written by hand (or by any tool) and decodes the answers::

    pim run --program P.txt [--sim golden|model|icarus|verilator|board [--port DEV]]
            [--arch pim|baseline] [--board NAME[:CONFIG] | --lanes 8 ...] [--json]

``P.txt`` holds one 32-bit word per line in hex (``0x`` optional), ``#`` comments and blank
lines (:func:`pim_macro.sw.runtime.asm.read_program`). It prints the output words, then one
line per command: its number, the line of its header, its opcode name, its error name and its
data words (as int32 for ``EMIT_RAW``, int8 for ``EMIT_INT8``, named for ``READ_COUNTERS`` and
``STATUS``). ``--json`` prints one object: ``sim``, ``arch``, ``config``, ``words_in``,
``words_out``, ``responses`` (``command``, ``line``, ``word``, ``opcode``, ``name``, ``error``,
``data`` and the decoded values), ``cycles`` (the RTL's testbench cycles from the first word to
the last answer; ``null`` for the models and a board) and ``truncated``. A program that ends
inside a command plays the complete commands before it, prints their answers, then reports the
cut (file, line, command, what is missing) as an error.

Every error is reported as one line ``pim: error: <message>`` on stderr with exit code 2 (bad
usage or input, missing simulator, a build folder, ``PIM_BUILD``, that cannot be made) or 1 (the
simulation itself failed, or the board misbehaved: see :mod:`pim_macro.sw.runtime.board_link`;
or stdout could not be written, a full disk). A closed stdout (``pim run ... | head -1``) ends
the tool quietly with exit code 141, what the shell reports for a process SIGPIPE ends.
``--board`` takes the place of the configuration options: giving both is an error.

Every file the tool reads is checked: a missing, unreadable, empty, cut, pickled or otherwise
malformed file, a directory, an array of the wrong type or shape, or an array given for a model,
is such a one-line error, never a traceback.
``--out`` writes exactly the path given (``np.save`` would append ``.npy``); a regular file
through a temporary file in the same folder renamed over it (a write that fails, a full disk,
leaves the old file as it was; a hard link keeps the old file), anything else (``/dev/stdout``,
a pipe, a device) in place, appended to; it refuses a directory (or a name ending in ``/``), a
folder it cannot create files in, or a name the file system refuses before anything runs, and
``--json`` with ``--out`` naming stdout. Ctrl-C is the line ``pim: interrupted``, exit 130.
A program file (``pim run``) is read up to :data:`pim_macro.sw.runtime.asm.PROGRAM_BYTES_MAX`
bytes (64 MiB) and no further than its first NUL byte; its words plus the words of their answers
may be at most :data:`pim_macro.sw.runtime.asm.PROGRAM_WORDS_MAX` (4 Mi: about 0.7 GB and a
minute on the golden model). With ``--json`` the only thing on stdout
is one JSON object.
"""

import argparse
import contextlib
import dataclasses
import errno
import io
import json
import logging
import os
import re
import stat
import sys
import tempfile

import numpy as np

from pim_macro.hw.board import BOARDS
from pim_macro.hw.isa import (ARCHES, REQUANT_MULT_BITS, REQUANT_SHIFT_MAX, REQUANT_SHIFT_MIN,
                              Header, MacroConfig, Opcode, unpack)
from pim_macro.sw.compiler.compiler import run_network
from pim_macro.sw.compiler.gemv import SIMS, run_gemv
from pim_macro.sw.compiler.network import load_network, save_network
from pim_macro.sw.files import FileError, open_input, read_array, shown
from pim_macro.sw.models.energy import (DEFAULT_TABLE, TABLES, EnergyTableError, energy,
                                        largest_kinds, load_table)
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.board_link import BoardMissing
from pim_macro.sw.runtime.driver import StreamRun, run_stream
from pim_macro.sw.runtime.rtl import SimulatorMissing


__all__ = ["main", "build_parser"]


PROG = "pim"
#: Exit codes; EXIT_PIPE: stdout was closed (128 + SIGPIPE, as a shell reports a process that
#: SIGPIPE ended: Python ignores the signal and gets EPIPE instead).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PIPE = 0, 1, 2, 141
#: Ctrl-C: 128 + SIGINT, as a shell reports a process the signal ended.
EXIT_INTERRUPTED = 130
#: The longest error message (characters): a backstop behind the messages' own caps on what
#: they echo of the user's input (:func:`pim_macro.sw.files.shown`).
_MESSAGE_MAX = 1000
#: Bytes per write to stdout.
_CHUNK = 1 << 16
#: Loggers of the cocotb runner (named after the simulator classes) and of cocotb itself.
_QUIET_LOGGERS = ("cocotb", "cocotb_tools", "Icarus", "Verilator")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line ``pim: error: ... (see `PROG
    --help`)`` and exit code 2, like every other ``pim`` error (the project's other command
    lines use it too)."""

    def error(self, message):
        # argparse quotes the offending argument whole: a 5000-digit number is no message.
        message = re.sub(r"\S{41,}", lambda m: shown(m.group()), message)
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


_Parser = OneLineParser


class _Error(Exception):
    """An error to report as one line, with an exit code."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


_CONFIG_HELP = {
    "lanes": "MAC lanes, outputs computed in parallel",
    "rows_per_cycle": "sub-arrays read per cycle (R)",
    "depth": "weight rows",
    "act_depth": "activation buffer bytes",
    "bias_depth": "channel memory entries (a bias, a multiplier and a shift each)",
    "bus_bits": "baseline only: width of the bus between weight SRAM and ALU",
    "requantizers": "int8 lanes the output engine requantizes per cycle (1, 2 or 4)",
}


def _option(name):
    return "--" + name.replace("_", "-")


def build_parser():
    parser = _Parser(prog=PROG, description="Host tools of the PIM accelerator macro.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = commands.choices        # name -> its parser (for its usage errors)

    gemv = commands.add_parser(
        "gemv", help="matrix-vector product Y = X @ W.T (+ bias) on the macro",
        description="Compute Y = X @ W.T (+ bias) on the golden model or the RTL. W is int8 "
                    "(N, K), X int8 (K,) or (B, K), the bias int32 (N,). Without --multiplier/"
                    "--shift Y is raw int32; with them it is requantized to int8 by TFLite's "
                    "rule: y = MultiplyByQuantizedMultiplier(acc, M0, S) + Z, clamped to [LO, "
                    "HI] (per tensor, or per output channel from .npy files; see "
                    "sw/models/requant.py).")
    gemv.add_argument("--weights", required=True, metavar="W.npy", help="int8 weights (N, K)")
    gemv.add_argument("--input", required=True, metavar="X.npy",
                      help="int8 inputs (K,) or (B, K)")
    gemv.add_argument("--bias", metavar="B.npy", help="int32 bias (N,)")
    gemv.add_argument("--multiplier", metavar="M0|M0.npy",
                      help=f"Q31 requantization multiplier 0..{(1 << REQUANT_MULT_BITS) - 1} "
                           "(TFLite's QuantizeMultiplier: scale = M0 * 2**(S - 31)), or an "
                           ".npy of N integers, one per output channel")
    gemv.add_argument("--shift", metavar="S|S.npy",
                      help=f"requantization shift {REQUANT_SHIFT_MIN}..{REQUANT_SHIFT_MAX} "
                           "(positive: left), or an .npy of N integers")
    gemv.add_argument("--zero-point", type=int, metavar="Z", default=0,
                      help="output zero point, -128..127 (default: 0)")
    gemv.add_argument("--act-min", type=int, metavar="LO", default=-128,
                      help="clamp's low end, -128..127 (default: -128; a fused ReLU is Z)")
    gemv.add_argument("--act-max", type=int, metavar="HI", default=127,
                      help="clamp's high end, -128..127 (default: 127)")
    gemv.add_argument("--double-rounding", action="store_true",
                      help="gemmlowp's double rounding (LiteRT's per-channel CONV_2D) instead "
                           "of TFLite's single rounding")
    # The flags of ISA version 3 (a prefix of --multiplier would otherwise take --mult).
    gemv.add_argument("--mult", dest="old_mult", help=argparse.SUPPRESS)
    gemv.add_argument("--relu", dest="old_relu", action="store_true", help=argparse.SUPPRESS)
    _run_options(gemv)
    gemv.set_defaults(handler=_gemv)

    infer = commands.add_parser(
        "infer",
        help="run a quantized network (pim_macro.sw.compiler.network container) on the macro",
        description="Run every sample of X through a quantized network: all layers in one "
                    "command stream, chained on chip. Y holds the int8 outputs of the last "
                    "layer, (B, outputs).")
    infer.add_argument("--model", required=True, metavar="M.npz|M.tflite",
                       help="quantized network: the container of sw/network.py, or an int8 "
                            "TFLite model (macro ops on the macro, the others on the host)")
    infer.add_argument("--input", required=True, metavar="X.npy",
                       help="int8 samples (B, features), or images (B, C, H, W); for a .tflite "
                            "model its own input shape after the batch, (B, H, W, C)")
    infer.add_argument("--labels", metavar="L.npy",
                       help="labels (B,), integers or strings, in the model's classes if it "
                            "has them (else class indices 0..n-1): report the accuracy of the "
                            "predictions (argmax; a single output: its sign)")
    infer.add_argument("--predictions", metavar="P.npy",
                       help="save the predictions (B,) to exactly this path: the model's "
                            "class labels (int64 or strings) if it has them, else class "
                            "indices (int64)")
    infer.add_argument("--im2col", action="store_true",
                       help=".tflite only: cut CONV_2D patches on chip where the input rows fit "
                            "the activation buffer (fewer activation words)")
    _run_options(infer)
    stalls = infer.add_argument_group("stalls (the RTL simulators; the models ignore them)")
    stalls.add_argument("--idle", type=float, default=0.0, metavar="P",
                        help="probability, in [0, 1), that the source idles a cycle instead "
                             "of offering a word (default: 0)")
    stalls.add_argument("--backpressure", type=float, default=0.0, metavar="P",
                        help="probability, in [0, 1), that the sink refuses a word in a cycle "
                             "(default: 0)")
    stalls.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the stall patterns (default: 0)")
    infer.set_defaults(handler=_infer)

    quantize = commands.add_parser(
        "quantize", help="quantize a float model (ONNX, or a pickled sklearn MLP) to int8",
        description="Turn a float model into an int8 TFLite model (--out M.tflite) or the "
                    "int8 container of sw/compiler/network.py, as TFLite's converter does: "
                    "per-channel symmetric int8 weights, asymmetric "
                    "int8 activations (scale and zero point from the calibration range), "
                    "int32 biases, a Q31 multiplier and shift per output channel (see "
                    "sw/compiler/quantize.py). Reports the int8-vs-float error on --test "
                    "(default: the calibration data), and warns (on stderr, and in the "
                    "JSON's \"warnings\") when the int8 outputs are off by more than 0.1 of "
                    "the float outputs' range.")
    quantize.add_argument("--model", required=True, metavar="F.onnx|F.pkl",
                          help="float model: ONNX as exporters write it (PyTorch, tf2onnx: see "
                               "sw/compiler/onnx_import.py for the ops) or a pickled sklearn "
                               "MLPClassifier/MLPRegressor, or a Pipeline of a StandardScaler "
                               "and one (pickles run code: trusted files only)")
    quantize.add_argument("--calib", required=True, metavar="X.npy",
                          help="float calibration inputs (N, features) or (N, C, H, W)")
    quantize.add_argument("--out", required=True, metavar="M.tflite|M.npz",
                          help="write the int8 model to exactly this path, no suffix added "
                               "(not a directory): a .tflite name writes a TFLite model (any "
                               "model: pooling, residual adds, depthwise, softmax; run it with "
                               "pim infer or LiteRT), another name the .npz chain container "
                               "(Gemm, Conv and Relu layers)")
    quantize.add_argument("--test", metavar="X.npy", help="float inputs for the error report")
    quantize.add_argument("--labels", metavar="L.npy",
                          help="labels of --test (integers or strings; a classifier's "
                               "classes_, else class indices): float and int8 accuracies")
    quantize.add_argument("--json", action="store_true", help="print the report as JSON")
    quantize.set_defaults(handler=_quantize)

    run = commands.add_parser(
        "run", help="play a command stream (a hex file of 32-bit words) on the macro",
        description="Play the command stream in P.txt on a back end and print the output words "
                    "and each command's decoded response (opcode, error, data words). P.txt "
                    "holds one 32-bit word per line in hex (0x optional), # comments and blank "
                    "lines. A program that ends inside a command is an error (exit 2) after "
                    "the complete commands before it have played and printed. A program file "
                    f"may be {asm.PROGRAM_BYTES_MAX >> 20} MiB; its words plus those of their "
                    f"answers at most {asm.PROGRAM_WORDS_MAX >> 20} Mi words.")
    run.add_argument("--program", required=True, metavar="P.txt",
                     help="the command stream: one hex word per line (see hw/isa.py)")
    _run_options(run, results=False)
    run.set_defaults(handler=_run)
    return parser


def _run_options(command, *, results=True):
    """The options every run takes: back end, architecture, configuration, output (``--out``
    and ``--preloaded`` only for commands whose ``results`` are an array Y)."""
    command.add_argument("--sim", choices=SIMS, default="golden",
                         help="golden: untimed reference; model: exact cycle prediction without "
                              "RTL; icarus, verilator: the RTL; board: an FPGA running the board "
                              "top (make synth), over --port (default: golden)")
    command.add_argument("--port", metavar="DEV",
                         help="serial port of the board for --sim board, e.g. /dev/ttyUSB0 "
                              "(a pyserial URL also works)")
    command.add_argument("--board", metavar="NAME[:CONFIG]",
                         help="take the macro configuration of a board build (hw/board.py: "
                              f"{', '.join(BOARDS)}; CONFIG defaults to the board's default), "
                              "instead of the configuration options. The configuration only: "
                              "the model and the simulators time the portable fabric (one "
                              "requantizer pass; the iCE40's two issue requantized lanes every "
                              "other cycle: README 'FPGA builds')")
    command.add_argument("--arch", choices=ARCHES, default="pim",
                         help="pim: MACs fused into the SRAM; baseline: SRAM and ALU joined by a "
                              "--bus-bits bus (default: pim)")
    if results:
        command.add_argument("--preloaded", action="store_true",
                             help="count cycles from when the weights are in the macro (they "
                                  "must fit)")
        command.add_argument("--out", metavar="Y.npy",
                             help="save Y (numpy .npy) to exactly this path, no suffix added; "
                                  "not a directory (checked before the run); the JSON then "
                                  "names it. A file is replaced whole (a hard link to it keeps "
                                  "the old one); a device or pipe (/dev/stdout) is written in "
                                  "place")
        command.add_argument("--json", action="store_true",
                             help="print one JSON object (config, shape, counters, energy, and "
                                  "Y unless --out)")
        command.add_argument("--energy-table", default=DEFAULT_TABLE, metavar="NAME|PATH",
                             help="per-event energy table that prices the run's counters in "
                                  f"the JSON's energy: {', '.join(TABLES)}, or the path of a "
                                  "TOML file in their format (sw/models/energy_tables/; checked "
                                  f"before the run; default: {DEFAULT_TABLE})")
    else:
        command.add_argument("--json", action="store_true",
                             help="print one JSON object (config, words in and out, responses, "
                                  "cycles)")
    config = command.add_argument_group("macro configuration (see pim_macro.hw.isa.MacroConfig)")
    defaults = MacroConfig()
    for f in dataclasses.fields(MacroConfig):
        default = getattr(defaults, f.name)
        # None: not given (--board refuses the options; MacroConfig's default otherwise).
        config.add_argument(_option(f.name), type=int, default=None, dest=f.name,
                            metavar="N", help=f"{_CONFIG_HELP.get(f.name, f.name)} "
                                                f"(default: {default})")


def _config(args):
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(MacroConfig)
             if getattr(args, f.name) is not None}
    if getattr(args, "board", None) == "":
        raise _Error(f"--board is empty; give a board name: {', '.join(BOARDS)}")
    if getattr(args, "board", None):
        if given:
            raise _Error(f"--board {shown(args.board)} sets the macro configuration; drop "
                         f"{' '.join(map(_option, given))} (see `{PROG} {args.command} "
                         f"--help`)")
        name, _, config_name = args.board.partition(":")
        if name not in BOARDS:
            raise _Error(f"unknown board {shown(name)!r}; the boards are {', '.join(BOARDS)}")
        try:
            return BOARDS[name].config(config_name or None)
        except ValueError as exc:
            raise _Error(str(exc)) from None
    try:
        return MacroConfig(**given)
    except ValueError as exc:
        raise _Error(f"bad macro configuration: {exc}") from None


# -- the user's files ------------------------------------------------------------------------

def _load(path, what):
    """The array in the ``.npy`` file ``path`` (an :class:`_Error` for anything else)."""
    try:
        return read_array(path, what)
    except FileError as exc:
        raise _Error(str(exc)) from None


def _load_network(path):
    """The network in the container ``path`` (:mod:`pim_macro.sw.compiler.network`)."""
    try:
        return load_network(path)
    except ValueError as exc:
        raise _Error(str(exc)) from None


def _check_out(path, *, json_output=False, inputs=None, option_name="--out"):
    """Refuse, before running anything, an ``--out`` that cannot be written: a directory (also
    a name ending in a slash), a path in a folder that does not exist or where no file can be
    created (tried: permissions and read-only or special file systems alike), a file that is
    not writable, a name the file system refuses (a symbolic link loop, a name too long), with
    ``json_output`` the stdout the JSON goes to (one JSON object is all stdout holds), and a
    regular file that is one of the command's ``inputs`` (``args``: its options ``--model``,
    ``--input``... are read from it; writing would silently replace an input).
    ``option_name``: the option the messages name (``--out``, ``--predictions``)."""
    if path is None:
        return
    if path == "":
        raise _Error(f"{option_name} is empty; give a file name, e.g. Y.npy")
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        what = "is" if os.path.isdir(path) else "names (a trailing /)"
        raise _Error(f"{option_name} {shown(path, 200)} {what} a directory; give a file name, e.g. "
                     f"{shown(os.path.join(path, 'Y.npy'), 200)}")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:          # a symbolic link loop, a name too long, a folder denied
        raise _Error(f"cannot write {path}: {exc.strerror or exc}") from None
    if json_output and st is not None and _is_stdout(st):
        raise _Error(f"--json prints its JSON object on stdout, and {option_name} {path} is "
                     f"stdout too: give {option_name} a file, or drop --json")
    if _in_place(path):
        return
    for option in _INPUT_OPTIONS:
        source = getattr(inputs, option.lstrip("-").replace("-", "_"), None)
        if source is None or st is None:
            continue
        try:
            same = os.path.samefile(path, source)
        except (OSError, ValueError):      # a missing input (or not a name): not the same file
            same = False
        if same:
            raise _Error(f"{option_name} {shown(path, 200)} is the same file as {option} "
                         f"{shown(str(source), 200)}: give {option_name} another file")
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        given = os.path.dirname(path) or "."
        missing = given if not os.path.isdir(given) else folder    # via a symbolic link
        raise _Error(f"cannot write {path}: folder {missing} does not exist")
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise _Error(f"cannot write {path}: permission denied")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".pim-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _Error(f"cannot write {path}: {exc.strerror or exc} (in folder {folder})") \
            from None


#: The options that name a file a command reads (those a command lacks are skipped).
_INPUT_OPTIONS = ("--model", "--input", "--weights", "--bias", "--multiplier", "--shift",
                  "--labels", "--calib", "--test")


def _is_stdout(st):
    """Whether the file of ``os.stat`` result ``st`` is this process's stdout (but the null
    device, where two writers lose nothing that was wanted)."""
    try:        # file descriptor 1: sys.stdout is the command's buffer while it runs
        if not os.path.samestat(st, os.fstat(1)):
            return False
    except OSError:
        return False
    return not os.path.samestat(st, os.stat(os.devnull))


#: Paths that name an open file descriptor of the process (``/dev/stdout``, ``/dev/fd/1``,
#: ``/proc/self/fd/1``, what ``>(cmd)`` gives): written in place, whatever they lead to.
_FD_PATH = re.compile(r"/dev/(stdout|stderr|fd/[0-9]+)|/proc/[^/]+/fd/[0-9]+")


def _in_place(path):
    """Whether ``path`` is written in place, never replaced: anything but a regular file (a
    device, a pipe) and any path through an open file descriptor (``/dev/stdout`` of a shell's
    ``>> app.log`` is a regular file, but replacing it would lose the log; its ``O_APPEND`` is
    kept by opening it for appending). A regular file (or a new one) is replaced."""
    seen = 0
    current = os.path.abspath(path)
    while True:
        if _FD_PATH.fullmatch(current):
            return True
        if not os.path.islink(current) or seen > 40:
            break
        link = os.readlink(current)
        current = os.path.normpath(os.path.join(os.path.dirname(current), link))
        seen += 1
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _save(path, write):
    """Write ``path`` exactly as named (``np.save`` and ``np.savez`` given a name would append
    ``.npy`` or ``.npz`` to one without): ``write`` gets the open file. A regular file is
    written as a temporary file in its folder, then renamed over the old one (that of a
    symbolic link's target), so a write that fails (a full disk, the file size limit) leaves
    the old file whole and no temporary behind (a hard link to the old file keeps the old
    content). Anything else (a device, a pipe, ``/dev/stdout``) is written in place, opened
    for appending (a pipe ignores it; a shell's ``>> log`` keeps its content)."""
    try:
        if _in_place(path):
            # Written whole from memory: numpy writes an array's data through the file
            # descriptor at the position it asks for, which a pipe has not.
            data = io.BytesIO()
            write(data)
            with open(path, "ab") as f:
                f.write(data.getvalue())
            return
        target = os.path.realpath(path)
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        # A short name: ``.{name}.XXXX.tmp`` of a 250-character name exceeds 255.
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".pim-",
                                         suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise _Error(f"cannot write {path}: {exc.strerror or exc}") from None


def _save_array(path, y):
    _save(path, lambda f: np.save(f, y, allow_pickle=False))


def _quiet_simulator_logs():
    """Keep the cocotb runner's log messages off stdout and stderr (the simulators' own output
    goes to log files in the build directory)."""
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


@contextlib.contextmanager
def _back_end():
    """Run a program on a back end (every command's one way): the simulators' logs kept quiet,
    a bad request or a missing simulator or board an error of the user (exit 2), a run that
    fails (a hang, a simulator crash, a board that misbehaves) exit 1."""
    _quiet_simulator_logs()
    try:
        yield
    except (ValueError, SimulatorMissing, BoardMissing) as exc:
        raise _Error(str(exc)) from None
    except RuntimeError as exc:
        raise _Error(str(exc), EXIT_FAILED) from None


def _print_json(report, args, y):
    """Print ``report``: with Y unless it went to ``--out``, and then the file it went to."""
    if args.out is None:
        report["output"] = y.tolist()
    else:
        report["out"] = args.out
    print(_json(report))


def _json(report):
    """``report`` as JSON text: strict JSON, never a bare ``NaN`` or ``Infinity`` (which JSON
    does not have; a reader such as ``jq`` refuses them): a non-finite number is an error."""
    try:
        return json.dumps(report, allow_nan=False)
    except ValueError:
        bad = sorted(k for k, v in report.items()
                     if isinstance(v, float) and not np.isfinite(v))
        raise _Error(f"the report holds a non-finite number ({', '.join(bad) or 'nested'}); "
                     f"it cannot be JSON", EXIT_FAILED) from None


def _integer_or_array(value, option):
    """An option that is an integer literal or the name of an ``.npy`` file of integers."""
    if re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        return int(value)
    array = _load(value, f"{option} values")
    if array.dtype.kind not in "iu":
        raise _Error(f"{option} {shown(value, 200)}: an integer or an .npy of integers, not "
                     f"{array.dtype}")
    return array


def _energy_table(args):
    """The :class:`~pim_macro.sw.models.energy.EnergyTable` of ``--energy-table``, read before
    anything runs: a missing or malformed table (no such file, not a regular file, bad TOML, an
    entry missing or not a positive number; :func:`~pim_macro.sw.models.energy.load_table`'s
    checks) is a one-line error, exit 2."""
    try:
        return load_table(args.energy_table)
    except EnergyTableError as exc:
        raise _Error(str(exc)) from None


def _energy_json(counters, config, arch, table, inferences, setup=None):
    """The JSON's energy entries of a run whose counters are ``counters`` (for ``inferences``
    inferences) and, for a .tflite model, ``setup`` (the one-time set-up segment's counters):
    ``energy``, :meth:`~pim_macro.sw.models.energy.Energy.as_dict` of the inferences' energy
    divided over ``inferences`` (pJ and bytes per inference); ``energy_setup`` (with ``setup``),
    the set-up's, once; ``energy_run``, the whole run's (set-up included), only when it differs
    from ``energy`` (more than one inference, or a set-up). All through
    :func:`~pim_macro.sw.models.energy.energy`, the one place energy is computed."""
    run = energy(counters, config, arch, table)
    report = {"energy": run.per(inferences).as_dict()}
    if setup is not None:
        report["energy_setup"] = energy(setup, config, arch, table).as_dict()
        whole = {name: counters.get(name, 0) + setup.get(name, 0)
                 for name in set(counters) | set(setup)}
        report["energy_run"] = energy(whole, config, arch, table).as_dict()
    elif inferences > 1:
        report["energy_run"] = run.as_dict()
    return report


def _joules(pj):
    """``pj`` picojoules as a short text in the unit that suits it (pJ, nJ, uJ, mJ, J)."""
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if pj >= scale * 0.9995:            # 999.7 pJ is "1 nJ", not "1e+03 pJ"
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def _energy_line(per_inference, setup=None):
    """The text form's energy line: the energy per inference, its three largest kinds with
    their shares, the table, and the one-time set-up's energy (``setup``) when there is one."""
    shares = largest_kinds(per_inference.pj, 3)
    line = f"energy: {_joules(per_inference.total_pj)} per inference"
    if shares != "-":
        line += f" ({shares})"
    line += f", {per_inference.table} table"
    if setup is not None and setup.total_pj > 0:
        line += f"; set-up {_joules(setup.total_pj)} once"
    return line


def _gemv(args):
    if args.old_mult is not None:
        raise _Error("--mult is gone (ISA version 4): give --multiplier M0 --shift S, TFLite's "
                     "Q31 multiplier (scale = M0 * 2**(S - 31))")
    if args.old_relu:
        raise _Error("--relu is gone (ISA version 4): a fused ReLU is --act-min equal to "
                     "--zero-point")
    if (args.multiplier is None) != (args.shift is None):
        raise _Error("--multiplier and --shift must be given together")
    requantized = args.multiplier is not None
    if not requantized and (args.zero_point, args.act_min, args.act_max,
                            args.double_rounding) != (0, -128, 127, False):
        raise _Error("--zero-point, --act-min, --act-max and --double-rounding need "
                     "--multiplier and --shift")
    config = _config(args)
    _check_out(args.out, json_output=args.json, inputs=args)
    table = _energy_table(args)
    weights = _load(args.weights, "weights")
    inputs = _load(args.input, "input")
    bias = None if args.bias is None else _load(args.bias, "bias")
    quant = {}
    if requantized:
        quant = dict(multiplier=_integer_or_array(args.multiplier, "--multiplier"),
                     shift=_integer_or_array(args.shift, "--shift"),
                     zero_point=args.zero_point, act_min=args.act_min, act_max=args.act_max,
                     double_rounding=args.double_rounding)

    with _back_end():
        result = run_gemv(weights, inputs, config, bias=bias, sim=args.sim, arch=args.arch,
                          preloaded=args.preloaded, port=args.port, **quant)

    y = result.y
    if args.out is not None:
        _save_array(args.out, y)
    if args.json:
        batch, k = (1, inputs.shape[0]) if inputs.ndim == 1 else inputs.shape
        _print_json({
            "sim": result.sim,
            "arch": result.arch,
            "config": config.as_dict(),
            "shape": {"batch": int(batch), "n": int(weights.shape[0]), "k": int(k)},
            "mode": "int8" if requantized else "raw",
            "preloaded": args.preloaded,
            "cycles": result.counters["cycles"],
            "macs": result.macs,
            "utilization": result.utilization,
            "counters": result.counters,
            **_energy_json(result.counters, config, result.arch, table, int(batch)),
        }, args, y)
    elif args.out is None:
        print(y)
    return EXIT_OK


def _stalls(args):
    """``idle``, ``backpressure`` and ``seed`` of ``pim infer`` (the run functions check the
    probabilities: a ``ValueError``, one line, before anything runs)."""
    return dict(idle=args.idle, backpressure=args.backpressure, seed=args.seed)


def _infer(args):
    if _is_tflite(args.model):
        return _infer_tflite(args)
    if args.im2col:
        raise _Error("--im2col is for .tflite models")
    config = _config(args)
    _check_outs(args)
    table = _energy_table(args)
    network = _load_network(args.model)
    inputs = _load(args.input, "input")
    labels = None
    if args.labels is not None:
        labels = _check_labels(_load(args.labels, "labels"), network.classes,
                               network.layers[-1].outputs)
    try:
        batch = network.input_array(inputs).shape[0]
    except ValueError as exc:
        raise _Error(str(exc)) from None
    if labels is not None and labels.shape[0] != batch:
        raise _Error(f"--labels: {labels.shape[0]} labels for {batch} samples")

    with _back_end():
        result = run_network(network, inputs, config, sim=args.sim, arch=args.arch,
                             preloaded=args.preloaded, port=args.port, **_stalls(args))

    if args.out is not None:
        _save_array(args.out, result.y)
    accuracy = _predictions(args, result.y, network.classes,
                            network.layers[-1].output_zero_point, labels)
    if args.json:
        program = result.program
        _print_json({
            "sim": result.sim, "arch": result.arch, "config": config.as_dict(),
            "samples": int(batch), "layers": len(network.layers),
            "weight_bytes": network.weight_bytes, "passes": program.passes,
            "weight_loads": program.weight_loads, "preloaded": args.preloaded,
            "cycles": result.counters["cycles"], "macs": program.macs,
            "utilization": result.utilization, "counters": result.counters,
            **_energy_json(result.counters, config, result.arch, table, int(batch)),
            "accuracy": accuracy, **_predictions_json(args, network.classes),
        }, args, result.y)
    else:
        if args.out is None:
            print(result.y)
        if accuracy is not None:
            _print_accuracy(accuracy, batch)
    return EXIT_OK


def _is_tflite(path):
    """Whether ``path`` names a TFLite model: a ``.tflite`` name, or the flatbuffer identifier
    in a regular file of another name (anything else is left to the ``.npz`` reader's
    checks and errors)."""
    if str(path).lower().endswith(".tflite"):
        return True
    from pim_macro.sw.compiler.tflite_import import FILE_IDENTIFIER
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):     # a pipe would block: only files
            return False
        with open(path, "rb") as f:
            return f.read(8)[4:8] == FILE_IDENTIFIER
    except (OSError, ValueError):
        return False


def _infer_tflite(args):
    """``pim infer --model M.tflite``: the graph compiler
    (:mod:`pim_macro.sw.compiler.graph_compiler`) on the model the importer reads."""
    from pim_macro.sw.compiler.graph_compiler import run_graph
    config = _config(args)
    _check_outs(args)
    table = _energy_table(args)
    if args.preloaded:
        raise _Error("--preloaded is for .npz networks; a .tflite model's resident weights are "
                     "always written once before the first inference (setup_cycles)")
    try:
        from pim_macro.sw.compiler.tflite_import import load_tflite
    except ImportError:
        raise _Error("reading .tflite models needs pim_macro.sw.compiler.tflite_import, "
                     "which this installation lacks") from None
    try:
        with open_input(args.model, "model"):
            pass
        graph = load_tflite(args.model)
    except (ValueError, OSError) as exc:
        raise _Error(str(exc).splitlines()[0] if str(exc) else
                     f"cannot read model {args.model}") from None
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise _Error(f"{shown(str(args.model))}: pim infer runs models of one input and one "
                     f"output, not {len(graph.inputs)} and {len(graph.outputs)}")
    # A model made from an ONNX model by pim quantize takes (and gives) ONNX's NCHW images.
    from pim_macro.sw.compiler.graph_quantizer import to_model_layout, to_user_layout
    given = _load(args.input, "input")
    inputs = to_model_layout(graph, given)
    tensor = graph.tensors[graph.inputs[0]]
    if graph.metadata.get("input_layout") == "NCHW" and inputs.shape[1:] != tensor.shape[1:]:
        _, h, w, c = tensor.shape           # say it in the layout the user's model has
        raise _Error(f"input {tensor.name!r} must have shape (B, {c}, {h}, {w}) (the ONNX "
                     f"model's NCHW), not {given.shape}")
    classes = graph.metadata.get("classes")
    output = graph.tensors[graph.outputs[0]]
    outputs = int(np.prod(output.shape[1:])) if len(output.shape) > 1 else 1
    if classes is not None:
        try:
            from pim_macro.sw.compiler.classes import as_classes
            classes = as_classes(classes, f"the classes in {shown(str(args.model))}")
        except ValueError as exc:
            raise _Error(str(exc)) from None
    labels = None
    if args.labels is not None:
        labels = _check_labels(_load(args.labels, "labels"), classes, outputs)
        if inputs.ndim and labels.shape[0] != inputs.shape[0]:
            raise _Error(f"--labels: {labels.shape[0]} labels for {inputs.shape[0]} samples")
    with _back_end():
        result = run_graph(graph, inputs, config, sim=args.sim, arch=args.arch,
                           port=args.port, im2col=args.im2col, **_stalls(args))
    y = to_user_layout(graph, result.outputs[0])
    energy_report = _energy_json(result.counters, config, result.arch, table, result.batch,
                                 setup=result.setup_counters or None)
    host_ops = sum(s.kind == "host" for s in result.ops)
    if host_ops:
        energy_report["energy_note"] = (
            f"the macro's events only: the {_count(host_ops, 'host op')} (run in numpy on the "
            f"host) and the host's memory traffic are not counted")
    if args.out is not None:
        _save_array(args.out, y)
    # A float output (a DEQUANTIZE at the end) has zero point 0: its sign is the logit's.
    zero_point = output.zero_point if np.issubdtype(output.dtype, np.integer) else 0
    accuracy = _predictions(args, y, classes, zero_point, labels)
    if args.json:
        report = result.report()
        report.update(energy_report)
        report["model"] = str(args.model)
        report["accuracy"] = accuracy
        report.update(_predictions_json(args, classes))
        _print_json(report, args, y)
    else:
        if args.out is None:
            print(y)
        fit = ("the weights fit the SRAM" if result.weights_resident else
               f"the weights do not fit the SRAM: {result.passes} passes per inference")
        cycles = (f"{int(np.mean(result.cycles))} cycles per inference ({args.arch})"
                  if args.sim != "golden" else "no cycles on golden")
        print(f"{_count(result.batch, 'sample')}, {result.macs} MACs per inference, {cycles}; "
              f"{fit}")
        per_inference = energy(result.counters, config, result.arch, table).per(result.batch)
        setup = energy(result.setup_counters, config, result.arch, table)
        print(_energy_line(per_inference, setup) +
              (f"; macro ops only, {_count(host_ops, 'host op')} not counted" if host_ops
               else ""))
        if accuracy is not None:
            _print_accuracy(accuracy, result.batch)
    return EXIT_OK


def _check_outs(args):
    """``--out`` and ``--predictions`` of ``pim infer``, checked before anything runs (and not
    the same file)."""
    _check_out(args.out, json_output=args.json, inputs=args)
    _check_out(args.predictions, json_output=args.json, inputs=args,
               option_name="--predictions")
    if args.out is not None and args.predictions is not None:
        same = args.out == args.predictions
        with contextlib.suppress(OSError, ValueError):
            same = same or os.path.samefile(args.out, args.predictions)
        if same and not _in_place(args.out):
            raise _Error(f"--out and --predictions name the same file "
                         f"{shown(args.out, 200)}: give them two")


def _check_labels(labels, classes=None, outputs=None):
    """The user's ``labels`` checked against the model's ``classes`` (or its number of
    ``outputs``): :func:`pim_macro.sw.compiler.classes.check_labels`, as an :class:`_Error`."""
    from pim_macro.sw.compiler.classes import check_labels
    try:
        return check_labels(labels, classes, outputs)
    except ValueError as exc:
        raise _Error(f"--labels: {exc}") from None


def _predictions(args, y, classes, zero_point, labels):
    """Decode the outputs ``y`` into predictions (:func:`pim_macro.sw.compiler.classes.
    predict`), save them to ``--predictions`` and return the accuracy against ``labels``
    (``None`` without labels)."""
    if args.predictions is None and labels is None:
        return None
    from pim_macro.sw.compiler.classes import accuracy, predict
    try:
        predictions = predict(y, classes, zero_point=zero_point)
    except ValueError as exc:
        raise _Error(f"cannot decode the outputs into predictions: {exc}") from None
    if args.predictions is not None:
        _save_array(args.predictions, predictions)
    return None if labels is None else accuracy(predictions, labels)


def _predictions_json(args, classes):
    """The JSON's ``predictions`` (the file) and ``classes`` entries."""
    report = {}
    if args.predictions is not None:
        report["predictions"] = args.predictions
    if classes is not None:
        report["classes"] = np.asarray(classes).tolist()
    return report


def _print_accuracy(accuracy, batch):
    print(f"accuracy: {accuracy:.4f} ({int(round(accuracy * batch))}/{batch})")


def _quantize(args):
    from pim_macro.sw.compiler.quantize import (float_forward, load_float_model,
                                                quantization_warnings, quantize_model, report)
    _check_out(args.out, json_output=args.json, inputs=args)
    calib = _load(args.calib, "calibration data")
    test = calib if args.test is None else _load(args.test, "test data")
    labels = None if args.labels is None else _load(args.labels, "labels")
    if calib.dtype.kind != "f" or test.dtype.kind != "f":
        raise _Error("calibration and test data must be float arrays")
    for name, data in (("calibration data", calib), ("test data", test)):
        if not np.all(np.isfinite(data)):
            raise _Error(f"{name} holds values that are not finite (inf or NaN)")
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iuU"):
        _check_labels(labels)       # its kind and shape (the error); the classes: below
    if str(args.out).lower().endswith(".tflite"):
        return _quantize_tflite(args, calib, test, labels)
    try:
        # Values so large that the float model overflows are data no int8 scale can serve.
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            model = load_float_model(args.model)        # once: a pickle runs code
            network = quantize_model(model, calib)
            if labels is not None:
                _check_labels(labels, network.classes, network.layers[-1].outputs)
            summary = report(network, float_forward(model), test, labels)
    except FloatingPointError as exc:
        raise _Error(f"cannot quantize {args.model}: the float model {exc} on the calibration "
                     f"or test data (values too large?)") from None
    except ValueError as exc:
        message = str(exc)
        raise _Error(message if str(args.model) in message
                     else f"cannot quantize {args.model}: {message}") from None
    warnings = quantization_warnings(summary, calib)
    summary.update({"out": args.out, "layers": len(network.layers),
                    "weight_bytes": network.weight_bytes,
                    "input_scale": network.input_scale, "output_scale": network.output_scale,
                    "warnings": warnings})
    classes = None if network.classes is None else network.classes.tolist()
    return _finish_quantize(args, summary, classes, lambda f: save_network(f, network),
                            f"{len(network.layers)} layers, {network.weight_bytes} int8 weights")


def _finish_quantize(args, summary, classes, write, headline):
    """The end of ``pim quantize``: ``summary`` checked as JSON before anything is written,
    the model written by ``write`` (given the open file), the warnings on stderr, then the
    report (JSON, or ``headline`` and the figures)."""
    if classes is not None:
        summary["classes"] = classes
    text = _json(summary)           # before writing anything: a report JSON cannot hold fails
    _save(args.out, write)
    for warning in summary["warnings"]:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if sys.stderr is not None:
                sys.stderr.write(f"{PROG}: warning: {warning}\n")
                sys.stderr.flush()
    if args.json:
        print(text)
    else:
        print(f"{args.out}: {headline}")
        for key in ("float_accuracy", "int8_accuracy", "agreement", "relative_error"):
            if key in summary:
                print(f"  {key.replace('_', ' ')}: {summary[key]:.4f}")
        if classes is not None:
            print(f"  classes: {shown(' '.join(map(str, classes)), 200)}")
    return EXIT_OK


def _quantize_tflite(args, calib, test, labels):
    """``pim quantize --out M.tflite``: the graph quantizer
    (:mod:`pim_macro.sw.compiler.graph_quantizer`) writes the int8 TFLite model of any
    canonical float model (pooling, residual adds, depthwise convolutions, softmax)."""
    from pim_macro.sw.compiler.graph_quantizer import canonical_model, quantize_graph, \
        report_graph
    from pim_macro.sw.compiler.quantize import load_float_model, quantization_warnings
    from pim_macro.sw.compiler.tflite_import import load_tflite
    try:
        with np.errstate(over="ignore", invalid="ignore"):     # onnxruntime's float: checked
            model = canonical_model(load_float_model(args.model))   # once: a pickle runs code
            data = quantize_graph(model, calib)
            graph = load_tflite(data)
            classes = graph.metadata.get("classes")
            if labels is not None:
                output = graph.tensors[graph.outputs[0]]
                _check_labels(labels, classes, int(np.prod(output.shape[1:])))
            summary = report_graph(graph, model, test, labels)
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Error(message if str(args.model) in message
                     else f"cannot quantize {args.model}: {message}") from None
    warnings = quantization_warnings(summary, calib)
    summary.update({"out": args.out, "ops": len(graph.ops), "macro_ops": len(graph.macro_ops),
                    "weight_bytes": graph.weight_bytes, "macs": graph.macs,
                    "warnings": warnings})
    return _finish_quantize(args, summary, classes, lambda f: f.write(data),
                            f"{len(graph.ops)} ops ({len(graph.macro_ops)} on the macro), "
                            f"{graph.weight_bytes} int8 weights, {graph.macs} MACs per "
                            f"inference")


def _decoded(response, header):
    """What the data of ``response`` (to the command with header word ``header``) mean, beyond
    the words themselves, as a dict for the JSON (empty when they mean nothing more)."""
    if not response.ok:
        return {}
    try:
        return _decode(response, header)
    except ValueError as exc:       # a back end's answer of the wrong size, a board's noise
        raise _Error(f"the answer to {Opcode(response.opcode).name} does not decode: {exc}",
                     EXIT_FAILED) from None


def _decode(response, header):
    if response.opcode == Opcode.EMIT_RAW.value:
        return {"int32": response.int32().tolist()}
    if response.opcode == Opcode.EMIT_INT8.value:
        count = unpack(Header, header).count
        return {"int8": asm.unpack_bytes(response.data, count).tolist()}
    if response.opcode == Opcode.READ_COUNTERS.value:
        return {"counters": response.counters()}
    if response.opcode == Opcode.STATUS.value:
        status = {k: getattr(v, "name", v)
                  for k, v in asm.decode_status_words(response.data).items()}
        status["arch"] = ARCHES[status["arch"]]      # decode_status_words checked it
        return {"status": status}
    return {}


def _run(args):
    config = _config(args)
    try:
        words, lines = asm.read_program(args.program)
    except ValueError as exc:
        raise _Error(str(exc)) from None
    if not words:
        raise _Error(f"program {args.program} holds no words (only comments and blank lines)")
    commands, truncation = asm.frame_complete(words, config)
    try:
        asm.check_program_size(words, config, source=f"program {args.program}",
                                commands=commands)
    except ValueError as exc:
        raise _Error(str(exc)) from None
    played = words[:commands[-1][1] + commands[-1][2]] if commands else []
    # The weight rows the program reads size the RTL's cycle budget.
    work = sum(unpack(Header, words[first]).count for opcode, first, _ in commands
               if opcode == Opcode.MATVEC.value)

    run = StreamRun([])
    if played:
        with _back_end():
            run = run_stream(played, config, sim=args.sim, arch=args.arch, work=work,
                             port=args.port)
    try:
        responses = asm.parse_responses(run.out)
    except ValueError as exc:
        raise _Error(f"the {args.sim} run's output does not parse: {exc}", EXIT_FAILED) \
            from None
    if len(responses) != len(commands):
        raise _Error(f"the {args.sim} run answered {len(responses)} of the {len(commands)} "
                     f"commands", EXIT_FAILED)

    report = []
    for i, (response, (opcode, first, _)) in enumerate(zip(responses, commands)):
        name = Opcode(opcode).name if opcode in {op.value for op in Opcode} else None
        report.append({"command": i, "line": lines[first], "word": first, "opcode": opcode,
                       "name": name, "error": response.error.name, "data": response.data,
                       **_decoded(response, words[first])})
    problem = None
    if truncation is not None:
        t = truncation
        problem = (f"{args.program} line {lines[t.first]}: the program ends inside command "
                   f"{t.command} ({t.opcode.name} at word {t.first}): {t.present} of "
                   f"{t.needed} {t.part} words; the {_count(t.command, 'complete command')} "
                   f"before it {'was' if t.command == 1 else 'were'} played")
    if args.json:
        print(json.dumps({"sim": args.sim, "arch": args.arch, "config": config.as_dict(),
                          "words_in": words, "words_out": run.out, "responses": report,
                          "cycles": run.cycles, "truncated": problem}))
    else:
        _print_run(words, run, report)
    if problem is not None:
        raise _Error(problem)
    return EXIT_OK


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _print_run(words, run, report):
    """The human form of ``pim run``: the output words, then one line per command."""
    cycles = "" if run.cycles is None else f" in {run.cycles} cycles"
    print(f"{_count(len(words), 'word')} in, {_count(len(run.out), 'word')} out{cycles}:")
    for i in range(0, len(run.out), 8):
        print("  " + " ".join(f"{w:#010x}" for w in run.out[i:i + 8]))
    for r in report:
        name = r["name"] or f"opcode {r['opcode']:#04x}"
        line = f"command {r['command']} (line {r['line']}) {name}: {r['error']}"
        if r["data"]:
            line += f", {_count(len(r['data']), 'data word')}"
        for key in ("int32", "int8"):
            if key in r:
                line += f": {key} {' '.join(map(str, r[key]))}"
        if "counters" in r:
            line += ": " + ", ".join(f"{k} {v}" for k, v in r["counters"].items())
        if "status" in r:
            line += ": " + ", ".join(f"{k} {v}" for k, v in r["status"].items())
        print(line)


def main(argv=None):
    """Entry point of the ``pim`` console script; returns the exit code. What a command prints
    is written to stdout when it ends (before its error line, if any): a stdout that fails or
    is closed is one error line (exit 1), or, a closed pipe (into ``head``), a quiet exit 141.
    Ctrl-C is the line ``pim: interrupted``, exit 130. A closed stderr loses the error line,
    never the exit code."""
    output = io.StringIO()
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:                   # the command's own usage line, not the top one
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
        try:
            with contextlib.redirect_stdout(output):
                code = args.handler(args)
            error = None
        except _Error as exc:
            code, error = exc.code, exc
        try:
            _write_stdout(output.getvalue())
        except BrokenPipeError:
            _drop_stdout()
            return EXIT_PIPE
        except OSError as exc:
            _drop_stdout()
            error = _Error(f"cannot write the output: {exc.strerror or exc}", EXIT_FAILED)
            code = error.code
    except KeyboardInterrupt:       # not an error of the user's or the run's: its own line
        code, error = EXIT_INTERRUPTED, None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if sys.stderr is not None:
                sys.stderr.write(f"{PROG}: interrupted\n")
                sys.stderr.flush()
    if error is not None:
        message = " ".join(str(error).split())     # always one line,
        # and nothing a terminal would obey (file names and file contents end up in messages)
        message = "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                          for c in message)
        if len(message) > _MESSAGE_MAX:             # whatever echoes too much of the input
            message = message[:_MESSAGE_MAX - 3] + "..."
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if sys.stderr is not None:              # closed (2>&-): nowhere to say it
                sys.stderr.write(f"{PROG}: error: {message}\n")
                sys.stderr.flush()
    return code


def _write_stdout(text):
    """Write ``text`` to stdout, all of it: a write the OS takes part of is continued; a closed
    pipe is ``BrokenPipeError``, a closed stdout (``1>&-``) ``OSError``."""
    if sys.stdout is None:
        raise OSError(errno.EBADF, "stdout is closed")
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        fd = None                   # not a file (a test's capture): its own write
    if fd is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    sys.stdout.flush()
    data = memoryview(text.encode(sys.stdout.encoding or "utf-8",
                                  sys.stdout.errors or "strict"))
    while data:
        written = os.write(fd, data[:_CHUNK])
        if written <= 0:
            raise BrokenPipeError(errno.EPIPE, "the reader is gone")
        data = data[written:]


def _drop_stdout():
    """Point stdout at /dev/null, so that the interpreter's last flush of what could not be
    written fails no more (the Python documentation's recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass                    # closed (None), or not a file descriptor (a test's
        # capture): nothing to flush


if __name__ == "__main__":
    sys.exit(main())
