"""The ``pim`` command-line tool.

``pim gemv`` runs ``Y = X @ W.T (+ bias)`` (see :mod:`pim_macro.sw.compiler.gemv`) on the golden
model, the exact cycle model or the RTL, of the PIM macro or the Von Neumann baseline::

    pim gemv --weights W.npy --input X.npy [--bias B.npy] [--mult M --shift S [--relu]]
             [--sim golden|model|icarus|verilator|board [--port /dev/ttyUSB0]]
             [--arch pim|baseline] [--preloaded]
             [--out Y.npy] [--json] [--lanes 8] [--rows-per-cycle 1] [--bus-bits 32] ...

Every error is reported as one line ``pim: error: <message>`` on stderr with exit code 2 (bad
usage or input, missing simulator) or 1 (the simulation itself failed). With ``--json`` the only
thing on stdout is one JSON object.
"""

import argparse
import dataclasses
import json
import logging
import sys

import numpy as np

from pim_macro.hw.board import BOARDS
from pim_macro.hw.isa import ARCHES, REQUANT_MULT_BITS, REQUANT_SHIFT_MAX, MacroConfig
from pim_macro.sw.compiler.compiler import run_network
from pim_macro.sw.compiler.gemv import SIMS, run_gemv
from pim_macro.sw.compiler.network import load_network, save_network
from pim_macro.sw.runtime.board_link import BoardMissing
from pim_macro.sw.runtime.rtl import SimulatorMissing


__all__ = ["main", "build_parser"]


PROG = "pim"
#: Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Loggers of the cocotb runner (named after the simulator classes) and of cocotb itself.
_QUIET_LOGGERS = ("cocotb", "cocotb_tools", "Icarus", "Verilator")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other ``pim`` error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


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
    "bias_depth": "bias words",
    "bus_bits": "baseline only: width of the bus between weight SRAM and ALU",
    "requantizers": "int8 lanes the output engine requantizes per cycle (1, 2 or 4)",
}


def _option(name):
    return "--" + name.replace("_", "-")


def build_parser():
    parser = _Parser(prog=PROG, description="Host tools of the PIM accelerator macro.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gemv = commands.add_parser(
        "gemv", help="matrix-vector product Y = X @ W.T (+ bias) on the macro",
        description="Compute Y = X @ W.T (+ bias) on the golden model or the RTL. W is int8 "
                    "(N, K), X int8 (K,) or (B, K), the bias int32 (N,). Without --mult/--shift "
                    "Y is raw int32; with them it is requantized to int8.")
    gemv.add_argument("--weights", required=True, metavar="W.npy", help="int8 weights (N, K)")
    gemv.add_argument("--input", required=True, metavar="X.npy",
                      help="int8 inputs (K,) or (B, K)")
    gemv.add_argument("--bias", metavar="B.npy", help="int32 bias (N,)")
    gemv.add_argument("--mult", type=int, metavar="M",
                      help=f"requantization multiplier 0..{(1 << REQUANT_MULT_BITS) - 1}")
    gemv.add_argument("--shift", type=int, metavar="S",
                      help=f"requantization shift 0..{REQUANT_SHIFT_MAX}")
    gemv.add_argument("--relu", action="store_true", help="clamp requantized outputs at zero")
    _run_options(gemv)
    gemv.set_defaults(handler=_gemv)

    infer = commands.add_parser(
        "infer",
        help="run a quantized network (pim_macro.sw.compiler.network container) on the macro",
        description="Run every sample of X through a quantized network: all layers in one "
                    "command stream, chained on chip. Y holds the int8 outputs of the last "
                    "layer, (B, outputs).")
    infer.add_argument("--model", required=True, metavar="M.npz",
                       help="quantized network (the container of sw/network.py)")
    infer.add_argument("--input", required=True, metavar="X.npy",
                       help="int8 samples (B, features), or images (B, C, H, W)")
    infer.add_argument("--labels", metavar="L.npy", help="integer labels (B,): report accuracy")
    _run_options(infer)
    infer.set_defaults(handler=_infer)

    quantize = commands.add_parser(
        "quantize", help="quantize a float model (ONNX, or a pickled sklearn MLP) to int8",
        description="Turn a float model into the int8 container of sw/network.py: symmetric "
                    "per-tensor scales from the calibration data, requantization as one "
                    "multiplier and shift per layer (see sw/quantize.py). Reports the "
                    "int8-vs-float error on --test (default: the calibration data).")
    quantize.add_argument("--model", required=True, metavar="F.onnx|F.pkl",
                          help="float model: ONNX (Gemm/MatMul+Add, Conv, Relu, Flatten) or a "
                               "pickled sklearn MLPClassifier (pickles run code: trusted files "
                               "only)")
    quantize.add_argument("--calib", required=True, metavar="X.npy",
                          help="float calibration inputs (N, features) or (N, C, H, W)")
    quantize.add_argument("--out", required=True, metavar="M.npz", help="the int8 container")
    quantize.add_argument("--test", metavar="X.npy", help="float inputs for the error report")
    quantize.add_argument("--labels", metavar="L.npy", help="labels of --test: accuracies")
    quantize.add_argument("--json", action="store_true", help="print the report as JSON")
    quantize.set_defaults(handler=_quantize)
    return parser


def _run_options(command):
    """The options every run takes: back end, architecture, configuration, output."""
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
                              "instead of the configuration options")
    command.add_argument("--arch", choices=ARCHES, default="pim",
                         help="pim: MACs fused into the SRAM; baseline: SRAM and ALU joined by a "
                              "--bus-bits bus (default: pim)")
    command.add_argument("--preloaded", action="store_true",
                         help="count cycles from when the weights are in the macro (they must "
                              "fit)")
    command.add_argument("--out", metavar="Y.npy", help="save Y here (numpy .npy)")
    command.add_argument("--json", action="store_true",
                         help="print one JSON object (config, shape, counters, and Y unless "
                              "--out)")
    config = command.add_argument_group("macro configuration (see pim_macro.hw.isa.MacroConfig)")
    defaults = MacroConfig()
    for f in dataclasses.fields(MacroConfig):
        default = getattr(defaults, f.name)
        config.add_argument(_option(f.name), type=int, default=default, dest=f.name,
                            metavar="N", help=f"{_CONFIG_HELP.get(f.name, f.name)} "
                                                f"(default: {default})")


def _config(args):
    if getattr(args, "board", None):
        name, _, config_name = args.board.partition(":")
        if name not in BOARDS:
            raise _Error(f"unknown board {name!r}; the boards are {', '.join(BOARDS)}")
        try:
            return BOARDS[name].config(config_name or None)
        except ValueError as exc:
            raise _Error(str(exc)) from None
    try:
        return MacroConfig(**{f.name: getattr(args, f.name)
                              for f in dataclasses.fields(MacroConfig)})
    except ValueError as exc:
        raise _Error(f"bad macro configuration: {exc}") from None


def _save(path, y):
    try:
        np.save(path, y, allow_pickle=False)
    except OSError as exc:
        raise _Error(f"cannot write {path}: {exc}") from None


def _load(path, what):
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _Error(f"cannot read {what} {path}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise _Error(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise _Error(f"{what} {path} is an .npz archive, not a .npy file")
    return array


def _quiet_simulator_logs():
    """Keep the cocotb runner's log messages off stdout and stderr (the simulators' own output
    goes to log files in the build directory)."""
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


def _gemv(args):
    if (args.mult is None) != (args.shift is None):
        raise _Error("--mult and --shift must be given together")
    if args.relu and args.mult is None:
        raise _Error("--relu needs --mult and --shift")
    config = _config(args)
    weights = _load(args.weights, "weights")
    inputs = _load(args.input, "input")
    bias = None if args.bias is None else _load(args.bias, "bias")

    _quiet_simulator_logs()
    try:
        result = run_gemv(weights, inputs, config, bias=bias, mult=args.mult, shift=args.shift,
                          relu=args.relu, sim=args.sim, arch=args.arch,
                          preloaded=args.preloaded, port=args.port)
    except (ValueError, SimulatorMissing, BoardMissing) as exc:
        raise _Error(str(exc)) from None
    except RuntimeError as exc:
        raise _Error(str(exc), EXIT_FAILED) from None

    y = result.y
    if args.out is not None:
        _save(args.out, y)
    if args.json:
        batch, k = (1, inputs.shape[0]) if inputs.ndim == 1 else inputs.shape
        report = {
            "sim": result.sim,
            "arch": result.arch,
            "config": config.as_dict(),
            "shape": {"batch": int(batch), "n": int(weights.shape[0]), "k": int(k)},
            "mode": "raw" if args.mult is None else "int8",
            "preloaded": args.preloaded,
            "cycles": result.counters["cycles"],
            "macs": result.macs,
            "utilization": result.utilization,
            "counters": result.counters,
        }
        if args.out is None:
            report["output"] = y.tolist()
        print(json.dumps(report))
    elif args.out is None:
        print(y)
    return EXIT_OK


def _infer(args):
    config = _config(args)
    try:
        network = load_network(args.model)
    except ValueError as exc:
        raise _Error(str(exc)) from None
    inputs = _load(args.input, "input")
    labels = None
    if args.labels is not None:
        labels = _load(args.labels, "labels")
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise _Error(f"labels must be a 1-D integer array, not {labels.dtype} of shape "
                         f"{labels.shape}")
    try:
        batch = network.input_array(inputs).shape[0]
    except ValueError as exc:
        raise _Error(str(exc)) from None
    if labels is not None and labels.shape[0] != batch:
        raise _Error(f"{labels.shape[0]} labels for {batch} samples")

    _quiet_simulator_logs()
    try:
        result = run_network(network, inputs, config, sim=args.sim, arch=args.arch,
                             preloaded=args.preloaded, port=args.port)
    except (ValueError, SimulatorMissing, BoardMissing) as exc:
        raise _Error(str(exc)) from None
    except RuntimeError as exc:
        raise _Error(str(exc), EXIT_FAILED) from None

    if args.out is not None:
        _save(args.out, result.y)
    accuracy = (None if labels is None
                else float(np.mean(result.predictions == labels)))
    if args.json:
        program = result.program
        report = {
            "sim": result.sim, "arch": result.arch, "config": config.as_dict(),
            "samples": int(batch), "layers": len(network.layers),
            "weight_bytes": network.weight_bytes, "passes": program.passes,
            "weight_loads": program.weight_loads, "preloaded": args.preloaded,
            "cycles": result.counters["cycles"], "macs": program.macs,
            "utilization": result.utilization, "counters": result.counters,
            "accuracy": accuracy,
        }
        if args.out is None:
            report["output"] = result.y.tolist()
        print(json.dumps(report))
    else:
        if args.out is None:
            print(result.y)
        if accuracy is not None:
            print(f"accuracy: {accuracy:.4f} ({int(round(accuracy * batch))}/{batch})")
    return EXIT_OK


def _quantize(args):
    from pim_macro.sw.compiler.quantize import (float_forward, load_float_model, quantize_file,
                                                report)
    calib = _load(args.calib, "calibration data")
    test = calib if args.test is None else _load(args.test, "test data")
    labels = None if args.labels is None else _load(args.labels, "labels")
    if calib.dtype.kind != "f" or test.dtype.kind != "f":
        raise _Error("calibration and test data must be float arrays")
    try:
        network = quantize_file(args.model, calib)
        summary = report(network, float_forward(load_float_model(args.model)), test, labels)
    except ValueError as exc:
        raise _Error(str(exc)) from None
    try:
        save_network(args.out, network)
    except OSError as exc:
        raise _Error(f"cannot write {args.out}: {exc}") from None
    summary.update({"out": args.out, "layers": len(network.layers),
                    "weight_bytes": network.weight_bytes,
                    "input_scale": network.input_scale, "output_scale": network.output_scale})
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.out}: {len(network.layers)} layers, {network.weight_bytes} int8 weights")
        for key in ("float_accuracy", "int8_accuracy", "agreement", "relative_error"):
            if key in summary:
                print(f"  {key.replace('_', ' ')}: {summary[key]:.4f}")
    return EXIT_OK


def main(argv=None):
    """Entry point of the ``pim`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except _Error as exc:
        message = " ".join(str(exc).split())     # always one line
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
