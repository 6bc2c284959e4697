"""Tests of the ``pim`` command-line tool (pim_macro.sw.cli), run as a subprocess on temporary .npy
files: correct results, the --json and --out contracts, one-line errors, and RTL runs."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pim_macro.hw.isa import ISA_VERSION, Counter, MacroConfig
from pim_macro.sw import cli
from pim_macro.sw.models.requant import requantize
from pim_macro.sw.paths import MODELS_DIR


def _pim_command():
    script = Path(sys.executable).parent / "pim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pim_macro.sw.cli"]


PIM = _pim_command()


def reference(w, x, bias=None, multiplier=None, shift=None, zero_point=0, act_min=-128,
              act_max=127, double_rounding=False):
    """Y = X @ W.T (+ bias) wrapped to int32, then the one requantization rule
    (sw/models/requant.py, checked by hand in test_golden)."""
    v = x.astype(np.int64) @ w.astype(np.int64).T
    if bias is not None:
        v = v + bias.astype(np.int64)
    v = (v + 2**31) % 2**32 - 2**31
    if multiplier is None:
        return v.astype(np.int32)
    return requantize(v, multiplier, shift, zero_point, act_min, act_max,
                      double_rounding=double_rounding)


#: A requantization that brings this file's accumulators (about 10**5) into int8: about 2**-10.
M0, SHIFT = 1518500250, -9


@pytest.fixture
def files(tmp_path):
    """W (13, 21), X (3, 21), x (21,), bias (13,), and some bad files, in tmp_path."""
    rng = np.random.default_rng(42)
    arrays = {
        "W": rng.integers(-128, 128, (13, 21)).astype(np.int8),
        "X": rng.integers(-128, 128, (3, 21)).astype(np.int8),
        "x": rng.integers(-128, 128, 21).astype(np.int8),
        "B": rng.integers(-50000, 50000, 13).astype(np.int32),
        "Wfloat": rng.normal(size=(13, 21)),
        "X20": rng.integers(-128, 128, (3, 20)).astype(np.int8),
        "B12": np.zeros(12, np.int32),
        # per-channel requantization of the 13 outputs
        "M": rng.integers(1 << 30, 1 << 31, 13),
        "S": rng.integers(-11, -8, 13),
        "M12": np.full(12, 1 << 30),
        "Sfloat": np.full(13, -11.0),
    }
    paths = {}
    for name, array in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    (tmp_path / "text.npy").write_text("not a numpy file\n")
    paths["text"] = tmp_path / "text.npy"
    paths["missing"] = tmp_path / "missing.npy"
    return arrays, {k: str(v) for k, v in paths.items()}, tmp_path


def pim(*args, cwd=None):
    return subprocess.run([*PIM, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def ok(result):
    assert result.returncode == 0, \
        f"pim should succeed, exited {result.returncode}; stderr: {result.stderr}"
    return result


def test_golden_raw_prints_y(files):
    a, p, _ = files
    result = ok(pim("gemv", "--weights", p["W"], "--input", p["X"], "--bias", p["B"]))
    expected = reference(a["W"], a["X"], a["B"])
    assert result.stdout == f"{expected}\n", \
        f"stdout should be Y as numpy prints it:\n{expected}\ngot:\n{result.stdout}"
    assert result.stderr == "", f"nothing should be on stderr: {result.stderr!r}"


@pytest.mark.parametrize("relu", [False, True])
def test_golden_int8_out_file(files, relu):
    """Per tensor: --zero-point, --act-min (a fused ReLU), --double-rounding."""
    a, p, tmp = files
    out = tmp / "Y.npy"
    quant = dict(multiplier=M0, shift=SHIFT, zero_point=-7, act_min=-7 if relu else -128,
                 double_rounding=relu)
    args = ["gemv", "--weights", p["W"], "--input", p["X"], "--bias", p["B"], "--multiplier", M0,
            "--shift", SHIFT, "--zero-point", -7, "--out", out]
    args += ["--act-min", -7, "--double-rounding"] if relu else []
    result = ok(pim(*args))
    assert result.stdout == "", f"with --out and no --json stdout should be empty: {result.stdout}"
    y = np.load(out)
    expected = reference(a["W"], a["X"], a["B"], **quant)
    assert y.dtype == np.int8 and y.shape == (3, 13), \
        f"Y.npy should be int8 (3, 13): {y.dtype} {y.shape}"
    assert np.array_equal(y, expected), "Y.npy should match the numpy reference"
    assert len(set(y.ravel().tolist())) > 20, "test premise: outputs spread over the int8 range"


def test_golden_per_channel_from_npy(files):
    """--multiplier and --shift from .npy files: one pair per output channel; --act-max."""
    a, p, tmp = files
    result = ok(pim("gemv", "--weights", p["W"], "--input", p["X"], "--multiplier", p["M"],
                    "--shift", p["S"], "--act-max", 20, "--json"))
    expected = reference(a["W"], a["X"], None, a["M"], a["S"], act_max=20)
    assert json.loads(result.stdout)["output"] == expected.tolist()
    assert expected.max() == 20, "test premise: the clamp bites"


def test_json_contract(files):
    a, p, _ = files
    result = ok(pim("gemv", "--weights", p["W"], "--input", p["x"], "--json", "--lanes", 4,
                    "--rows-per-cycle", 2, "--depth", 8, "--act-depth", 8, "--bias-depth", 5))
    report = json.loads(result.stdout)    # the whole of stdout is one JSON object
    config = MacroConfig(lanes=4, rows_per_cycle=2, depth=8, act_depth=8, bias_depth=5)
    assert report["sim"] == "golden" and report["arch"] == "pim" and report["mode"] == "raw", \
        f"sim/arch/mode wrong: {report}"
    assert report["config"] == config.as_dict(), "config should echo the configuration options"
    assert report["shape"] == {"batch": 1, "n": 13, "k": 21}, f"shape wrong: {report['shape']}"
    assert report["cycles"] == report["counters"]["cycles"] == 0, "golden is untimed: 0 cycles"
    assert set(report["counters"]) == {c.name.lower() for c in Counter}, \
        f"counters should hold every pim_macro.hw.isa Counter: {report['counters']}"
    assert report["counters"]["row_reads"] == 4 * 11, "4 tiles of 11 rows, read once each"
    assert report["output"] == reference(a["W"], a["x"]).tolist(), \
        "output should be the 1-D Y as a list"


def test_json_with_out_omits_output(files):
    a, p, tmp = files
    out = tmp / "y.npy"
    result = ok(pim("gemv", "--weights", p["W"], "--input", p["X"], "--multiplier", M0,
                    "--shift", SHIFT, "--json", "--out", out))
    report = json.loads(result.stdout)
    assert "output" not in report, "with --out the JSON should not repeat Y"
    assert report["mode"] == "int8" and report["shape"]["batch"] == 3, f"wrong report: {report}"
    assert np.array_equal(np.load(out), reference(a["W"], a["X"], None, M0, SHIFT)), \
        "--out should hold the requantized Y"


def test_defaults_come_from_macro_config():
    """The options left out take MacroConfig's defaults (the parser keeps them None, so that
    --board can tell the options given), and the help states them."""
    parser = cli.build_parser()
    args = parser.parse_args(["gemv", "--weights", "w", "--input", "x"])
    assert cli._config(args) == MacroConfig(), \
        "configuration options should default to MacroConfig's defaults"
    help_text = " ".join(parser.commands["gemv"].format_help().split())
    for name, value in MacroConfig().as_dict().items():
        assert re.search(rf"--{name.replace('_', '-')} N .*?\(default: {value}\)", help_text), \
            name


def test_main_returns_exit_code(files, capsys):
    _, p, _ = files
    assert cli.main(["gemv", "--weights", p["W"], "--input", p["x"], "--json"]) == 0, \
        "main() should return 0 on success"
    json.loads(capsys.readouterr().out)
    assert cli.main(["gemv", "--weights", p["missing"], "--input", p["x"]]) == 2, \
        "main() should return 2 for a missing file"


ERRORS = {
    "wrong dtype": (["--weights", "Wfloat", "--input", "X"], "weights must be int8, not float64"),
    "mismatched shapes": (["--weights", "W", "--input", "X20"],
                          "inputs have 20 features but weights expect 21"),
    "bias shape": (["--weights", "W", "--input", "X", "--bias", "B12"],
                   r"bias must have shape \(13,\), not \(12,\)"),
    "missing file": (["--weights", "missing", "--input", "X"], r"missing\.npy: no such file"),
    "not npy": (["--weights", "text", "--input", "X"], r"cannot read weights .*text\.npy"),
    "unknown simulator": (["--weights", "W", "--input", "X", "--sim", "modelsim"],
                          "invalid choice: 'modelsim'"),
    "multiplier without shift": (["--weights", "W", "--input", "X", "--multiplier", "3"],
                                 "--multiplier and --shift must be given together"),
    "shift without multiplier": (["--weights", "W", "--input", "X", "--shift", "3"],
                                 "--multiplier and --shift must be given together"),
    "zero point alone": (["--weights", "W", "--input", "X", "--zero-point", "3"],
                         "--zero-point, --act-min, --act-max and --double-rounding need"),
    "double rounding alone": (["--weights", "W", "--input", "X", "--double-rounding"],
                              "need --multiplier and --shift"),
    "old --mult": (["--weights", "W", "--input", "X", "--mult", "3", "--shift", "4"],
                   r"--mult is gone \(ISA version 4\): give --multiplier M0 --shift S"),
    "old --relu": (["--weights", "W", "--input", "X", "--multiplier", "3", "--shift", "4",
                    "--relu"], "--relu is gone .*--act-min equal to --zero-point"),
    "shift range": (["--weights", "W", "--input", "X", "--multiplier", "3", "--shift", "32"],
                    "shift must be -32..31, not 32"),
    "multiplier range": (["--weights", "W", "--input", "X", "--multiplier", "-1", "--shift",
                          "0"], "multiplier must be 0..2147483647, not -1"),
    "multiplier per channel shape": (["--weights", "W", "--input", "X", "--multiplier", "M12",
                                      "--shift", "0"],
                                     r"multiplier must be an integer or have shape \(13,\)"),
    "shift file of floats": (["--weights", "W", "--input", "X", "--multiplier", "3", "--shift",
                              "Sfloat"], "--shift .*Sfloat.npy: an integer or an .npy of "
                                         "integers, not float64"),
    "multiplier file missing": (["--weights", "W", "--input", "X", "--multiplier", "missing",
                                 "--shift", "0"], r"missing\.npy: no such file"),
    "zero point range": (["--weights", "W", "--input", "X", "--multiplier", "3", "--shift", "0",
                          "--zero-point", "128"], "zero_point must be -128..127, not 128"),
    "zero point not a number": (["--weights", "W", "--input", "X", "--zero-point", "z"],
                                "argument --zero-point: invalid int value: 'z'"),
    "bad config": (["--weights", "W", "--input", "X", "--lanes", "6"],
                   "lanes must be a multiple of 4"),
    "no weights": (["--input", "X"], "required: --weights"),
    "bad bus": (["--weights", "W", "--input", "X", "--bus-bits", "12"],
                "bus_bits must be 8, 16, 32 or 64"),
    "bus not dividing the row": (["--weights", "W", "--input", "X", "--lanes", "4",
                                  "--bus-bits", "64"], "bus_bits must divide the row width"),
    "unknown arch": (["--weights", "W", "--input", "X", "--arch", "gpu"],
                     "invalid choice: 'gpu'"),
    "preloaded weights too big": (["--weights", "W", "--input", "X", "--depth", "8",
                                   "--preloaded"], "preloaded needs a tile's 21 weight rows"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_error_is_one_line(files, name):
    _, p, _ = files
    args, message = ERRORS[name]
    args = [p.get(a, a) for a in args]
    result = pim("gemv", *args)
    assert result.returncode == 2, f"{name}: pim should exit 2, exited {result.returncode}"
    assert result.stdout == "", f"{name}: nothing should be printed on stdout: {result.stdout!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pim: error: "), \
        f"{name}: stderr should be one 'pim: error: ...' line, got {result.stderr!r}"
    assert re.search(message, lines[0]), \
        f"{name}: the error should say {message!r}, got {lines[0]!r}"


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_rtl_via_cli(files, sim):
    """An RTL run through the CLI: stdout is exactly one JSON object (nothing from cocotb or the
    simulator), stderr is empty, Y is exact and the cycles are real."""
    a, p, _ = files
    result = ok(pim("gemv", "--weights", p["W"], "--input", p["X"], "--bias", p["B"],
                    "--multiplier", M0, "--shift", SHIFT, "--sim", sim, "--json"))
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{sim}: stdout should be exactly one JSON object, got:\n{result.stdout}")
    assert result.stderr == "", f"{sim}: nothing should reach stderr: {result.stderr!r}"
    assert report["sim"] == sim and report["cycles"] > 0, f"{sim}: expected real cycles: {report}"
    assert report["output"] == reference(a["W"], a["X"], a["B"], M0, SHIFT).tolist(), \
        f"{sim}: Y should match the numpy reference"


@pytest.mark.parametrize("arch", ["pim", "baseline"])
def test_model_predicts_the_rtl_via_cli(files, arch):
    """--sim model prints the JSON the RTL run prints (but for "sim"), configuration echoed."""
    a, p, _ = files
    config = ["--lanes", 4, "--rows-per-cycle", 2, "--depth", 64, "--bus-bits", 16]
    reports = {}
    for sim in ("model", "verilator"):
        result = ok(pim("gemv", "--weights", p["W"], "--input", p["X"], "--bias", p["B"],
                        "--sim", sim, "--arch", arch, "--json", *config))
        reports[sim] = json.loads(result.stdout)
    model, rtl = reports["model"], reports["verilator"]
    assert model.pop("sim") == "model" and rtl.pop("sim") == "verilator"
    # the energy (issue 15) of the RTL's counters is the cycle model's, per inference and run
    assert rtl["energy"]["total_pj"] > 0 and rtl["energy_run"]["total_pj"] > 0
    assert (model["energy"], model["energy_run"]) == (rtl["energy"], rtl["energy_run"]), \
        f"{arch}: the energy of the RTL's counters should be the cycle model's"
    assert model == rtl, f"{arch}: the cycle model should predict the RTL exactly"
    assert rtl["arch"] == arch and rtl["cycles"] > 0
    assert rtl["config"] == {"lanes": 4, "rows_per_cycle": 2, "depth": 64, "act_depth": 1024,
                             "bias_depth": 256, "bus_bits": 16, "requantizers": 4}
    assert (rtl["counters"]["bus_beats"] > 0) == (arch == "baseline")
    assert rtl["output"] == reference(a["W"], a["X"], a["B"]).tolist()


def test_simulation_failure_exits_1(files, capsys, monkeypatch):
    """A run that fails (here: a hung macro) is one error line and exit code 1."""
    _, p, _ = files

    def hung(*args, **kwargs):
        raise RuntimeError("the macro did not finish the GEMV program on icarus\n(hung?)")
    monkeypatch.setattr(cli, "run_gemv", hung)
    code = cli.main(["gemv", "--weights", p["W"], "--input", p["x"], "--sim", "icarus", "--json"])
    captured = capsys.readouterr()
    assert code == 1, f"a failed simulation should exit 1, got {code}"
    assert captured.out == "", f"nothing should reach stdout: {captured.out!r}"
    assert captured.err == "pim: error: the macro did not finish the GEMV program on icarus " \
                           "(hung?)\n", f"expected one error line, got {captured.err!r}"


# -- pim infer / pim quantize ----------------------------------------------------------------

@pytest.fixture
def network_files(tmp_path):
    """A small CNN container, int8 images, their reference outputs and labels."""
    from pim_macro.sw.compiler.network import Conv, Dense, Network, forward, save_network
    rng = np.random.default_rng(5)
    net = Network((
        Conv(rng.integers(-128, 128, (4, 1, 3, 3), dtype=np.int8),
             rng.integers(-2000, 2000, 4, dtype=np.int32), rng.integers(1 << 30, 1 << 31, 4),
             -7, input_zero_point=3, output_zero_point=-100, act_min=-100,
             double_rounding=True, in_shape=(1, 6, 6), pad=(1, 1)),
        Dense(rng.integers(-128, 128, (10, 144), dtype=np.int8),
              rng.integers(-2000, 2000, 10, dtype=np.int32), 1 << 30, -7,
              input_zero_point=-100, output_zero_point=5)))
    x = rng.integers(-128, 128, (5, 1, 6, 6), dtype=np.int8)
    y, _ = forward(net, x)
    labels = y.argmax(axis=1)
    labels[0] = (labels[0] + 1) % 10                       # one wrong label: accuracy 0.8
    paths = {name: tmp_path / f"{name}.npy" for name in ("x", "labels")}
    np.save(paths["x"], x)
    np.save(paths["labels"], labels)
    save_network(tmp_path / "net.npz", net)
    return {"model": tmp_path / "net.npz", **paths}, y


@pytest.mark.parametrize("sim", ["golden", "model"])
def test_infer(network_files, sim):
    p, y = network_files
    report = json.loads(ok(pim("infer", "--model", p["model"], "--input", p["x"], "--labels",
                               p["labels"], "--sim", sim, "--json", "--lanes", 4, "--depth",
                               512)).stdout)
    assert report["output"] == y.tolist()
    assert report["accuracy"] == pytest.approx(0.8)
    assert report["samples"] == 5 and report["layers"] == 2 and report["passes"] == 1
    assert (report["cycles"] > 0) == (sim == "model")


def test_infer_on_verilator_matches_model(network_files):
    p, y = network_files
    reports = [json.loads(ok(pim("infer", "--model", p["model"], "--input", p["x"], "--sim", sim,
                                 "--arch", "baseline", "--json")).stdout)
               for sim in ("model", "verilator")]
    assert reports[1]["output"] == y.tolist()
    assert reports[0]["cycles"] == reports[1]["cycles"] > 0
    assert reports[0]["counters"] == reports[1]["counters"]


INFER_ERRORS = {
    "missing model": (["--model", "nowhere.npz"], "nowhere.npz: no such file"),
    "images of the wrong size": (["--input", "bad_x"], r"images of shape \(B, 1, 6, 6\)"),
    "labels count": (["--labels", "bad_labels"], "3 labels for 5 samples"),
    "model missing a key": (["--model", "broken"], "key shift1 is missing"),
    "an ISA version 3 model": (["--model", "old"], "keys m0, relu0, s0 are the container of ISA "
                                                   "version 3"),
}


@pytest.mark.parametrize("case", INFER_ERRORS)
def test_infer_errors(network_files, tmp_path, case):
    p, _ = network_files
    np.save(tmp_path / "bad_x.npy", np.zeros((2, 1, 5, 5), np.int8))
    np.save(tmp_path / "bad_labels.npy", np.zeros(3, np.int64))
    with np.load(p["model"]) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(tmp_path / "old.npz", **arrays, m0=np.int64(300), s0=np.int64(16), relu0=np.int64(1))
    del arrays["shift1"]
    np.savez(tmp_path / "broken.npz", **arrays)
    args = {"--model": str(p["model"]), "--input": str(p["x"]), "--labels": str(p["labels"])}
    extra, message = INFER_ERRORS[case]
    named = {"bad_x": tmp_path / "bad_x.npy", "bad_labels": tmp_path / "bad_labels.npy",
             "broken": tmp_path / "broken.npz", "old": tmp_path / "old.npz"}
    args[extra[0]] = str(named.get(extra[1], extra[1]))
    result = pim("infer", *[v for kv in args.items() for v in kv])
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines


def test_quantize_then_infer(tmp_path):
    """The committed digits MLP: quantize with the training split, then infer the test split:
    the int8 accuracy the quantizer reports is what `pim infer` measures."""
    from pim_macro.sw.models.digits import split
    x_train, x_test, _, y_test = split()
    np.save(tmp_path / "calib.npy", x_train.reshape(len(x_train), -1))
    np.save(tmp_path / "test.npy", x_test.reshape(len(x_test), -1))
    np.save(tmp_path / "labels.npy", y_test)
    model = MODELS_DIR / "digits_mlp.onnx"
    summary = json.loads(ok(pim("quantize", "--model", model, "--calib", tmp_path / "calib.npy",
                                "--test", tmp_path / "test.npy", "--labels",
                                tmp_path / "labels.npy", "--out", tmp_path / "mlp.npz",
                                "--json")).stdout)
    assert summary["int8_accuracy"] > 0.93
    assert abs(summary["int8_accuracy"] - summary["float_accuracy"]) < 0.03
    from pim_macro.sw.compiler.network import load_network
    from pim_macro.sw.compiler.quantize import quantize_input
    net = load_network(tmp_path / "mlp.npz")
    np.save(tmp_path / "xq.npy", quantize_input(net, x_test.reshape(len(x_test), -1)))
    report = json.loads(ok(pim("infer", "--model", tmp_path / "mlp.npz", "--input",
                               tmp_path / "xq.npy", "--labels", tmp_path / "labels.npy",
                               "--json", "--out", tmp_path / "y.npy")).stdout)
    assert report["accuracy"] == pytest.approx(summary["int8_accuracy"])


def test_quantize_rejects_unknown_format(tmp_path):
    (tmp_path / "model.txt").write_text("no")
    np.save(tmp_path / "calib.npy", np.zeros((2, 4), np.float32))
    result = pim("quantize", "--model", tmp_path / "model.txt", "--calib", tmp_path / "calib.npy",
                 "--out", tmp_path / "m.npz")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "m.npz").exists(), "nothing should be written on an error"


# -- malformed files: every file option, one line and exit 2 ----------------------------------

def _npy_header(descr, shape):
    """The bytes of a version 1.0 .npy header for ``descr`` and ``shape`` (and no data)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def _broken_files(tmp):
    """Files that hold no readable array or archive at all, whatever the option: name -> path."""
    import pickle
    d = tmp / "broken"
    d.mkdir()
    good = np.arange(24, dtype=np.int8).reshape(3, 8)
    np.save(d / "good.npy", good)
    whole = (d / "good.npy").read_bytes()
    files = {
        "empty": b"",
        "text": b"not a numpy file\n",
        "zip magic then garbage": b"PK\x03\x04garbage",
        "npy magic only": b"\x93NUMPY",
        "npy header cut": whole[:20],
        "npy data cut": whole[:-5],
        "npy header garbage": b"\x93NUMPY\x01\x00\x10\x00{'descr': ???}  \n",
        "npy header announcing 80 TB": _npy_header("<i8", (10**13,)) + bytes(16),
        "pickle": pickle.dumps({"w0": [1, 2, 3]}),
        "binary noise": bytes(range(256)) * 4,
    }
    paths = {}
    for name, content in files.items():
        paths[name] = d / (name.replace(" ", "_") + ".bin")
        paths[name].write_bytes(content)
    np.save(d / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    paths["object array (pickled)"] = d / "objects.npy"
    (d / "adir").mkdir()
    paths["a directory"] = d / "adir"
    paths["missing"] = d / "missing.npy"
    (d / "dangling").symlink_to(d / "nowhere")
    paths["dangling symlink"] = d / "dangling"
    paths["under a file"] = d / "good.npy" / "x.npy"
    # Unreadable even to root (the tests may run as root, for whom chmod 000 changes nothing):
    # the kernel refuses to read a process's memory at address 0.
    paths["unreadable"] = Path("/proc/self/mem")
    return paths


def _arrays(tmp, arrays):
    d = tmp / "arrays"
    d.mkdir(exist_ok=True)
    paths = {}
    for name, array in arrays.items():
        paths[name] = d / (re.sub(r"\W+", "_", name) + ".npy")
        np.save(paths[name], array)
    return paths


#: Arrays no option that wants an int8 or integer array takes.
NOT_INT8 = {
    "float64": np.zeros((4, 8)),
    "complex": np.zeros((4, 8), np.complex64),
    "bool": np.zeros((4, 8), bool),
    "unicode": np.array([["a"] * 8] * 4),
    "bytes": np.array([[b"a"] * 8] * 4),
    "structured": np.zeros(4, dtype=[("a", np.int8), ("b", np.int8)]),
    "datetime": np.zeros((4, 8), "datetime64[s]"),
    "int8 scalar": np.int8(3),
    "int8 empty": np.zeros(0, np.int8),
    "int8 (4, 0)": np.zeros((4, 0), np.int8),
    "int8 5-D": np.zeros((1, 1, 1, 4, 8), np.int8),
}


@pytest.fixture
def runs(tmp_path):
    """Valid files for every command, so that one option at a time can be made malformed."""
    from pim_macro.sw.compiler.network import Dense, Network, save_network
    rng = np.random.default_rng(9)
    valid = _arrays(tmp_path, {
        "W": rng.integers(-128, 128, (4, 8), dtype=np.int8),
        "x": rng.integers(-128, 128, 8, dtype=np.int8),
        "B": rng.integers(-99, 99, 4, dtype=np.int32),
        "X6": rng.integers(-128, 128, (2, 6), dtype=np.int8),
        "labels": np.array([1, 0]),
        "calib": rng.normal(size=(20, 64)),
        "test labels": rng.integers(0, 10, 20),
    })
    save_network(tmp_path / "net.npz", Network((
        Dense(rng.integers(-128, 128, (3, 6), dtype=np.int8), np.zeros(3, np.int32),
              300, 10, False),)))
    (tmp_path / "prog.txt").write_text("0x00000009\n")
    commands = {
        "gemv": {"--weights": valid["W"], "--input": valid["x"], "--bias": valid["B"]},
        "infer": {"--model": tmp_path / "net.npz", "--input": valid["X6"],
                  "--labels": valid["labels"]},
        "quantize": {"--model": MODELS_DIR / "digits_mlp.onnx", "--calib": valid["calib"],
                     "--test": valid["calib"], "--labels": valid["test labels"],
                     "--out": tmp_path / "q.npz"},
        "run": {"--program": tmp_path / "prog.txt"},
    }
    return commands, tmp_path


def _run_cli(capsys, command, options):
    """``pim command`` in this process with ``options`` (option -> value, None for a flag);
    returns the exit code, stdout and stderr."""
    args = [command]
    for option, value in options.items():
        args += [option] if value is None else [option, str(value)]
    code = cli.main(args)       # an exception escaping main() is the traceback a user would see
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _wrong_arrays(command, option, tmp):
    """Arrays of the wrong type or shape for ``option``."""
    if (command, option) == ("quantize", "--calib") or (command, option) == ("quantize", "--test"):
        return {"int8": np.zeros((4, 64), np.int8), "float scalar": np.float64(1.0),
                "float empty": np.zeros((0, 64)), "float (4, 0)": np.zeros((4, 0)),
                "complex": np.zeros((4, 64), np.complex128),
                "NaN": np.full((4, 64), np.nan), "wrong features": np.zeros((20, 63)),
                "structured": np.zeros(4, dtype=[("a", float)])}
    if option == "--labels":
        # (Booleans and floats of integral value are labels: converted as classes are.)
        return {"fractional float": np.full(2, 0.5), "2-D": np.zeros((2, 1), np.int64),
                "scalar": np.int64(1), "empty": np.zeros(0, np.int64),
                "unicode": np.array(["a", "b"]), "structured": np.zeros(2, [("a", int)])}
    arrays = dict(NOT_INT8)
    if option == "--bias":
        arrays.update({"int8 bias": np.zeros(4, np.int8), "int64 bias": np.zeros(4, np.int64),
                       "bias (4, 1)": np.zeros((4, 1), np.int32)})
    return arrays


FILE_OPTIONS = [("gemv", "--weights"), ("gemv", "--input"), ("gemv", "--bias"),
                ("infer", "--model"), ("infer", "--input"), ("infer", "--labels"),
                ("quantize", "--model"), ("quantize", "--calib"), ("quantize", "--test"),
                ("quantize", "--labels"), ("run", "--program")]


@pytest.mark.parametrize("command, option", FILE_OPTIONS)
def test_malformed_files_are_one_line_errors(runs, capsys, command, option):
    """Every file option, given a file that is broken, of the wrong kind, of the wrong type or
    shape, empty, a directory or unreadable: one `pim: error:` line naming the problem, exit 2,
    nothing on stdout, nothing written. (The valid files alone run: checked first.)"""
    commands, tmp = runs
    options = dict(commands[command])
    code, out, err = _run_cli(capsys, command, options)
    assert code == 0, f"{command} with valid files should succeed: {err}"
    (tmp / "q.npz").unlink(missing_ok=True)
    cases = {name: (path, True) for name, path in _broken_files(tmp).items()}
    if option == "--model" and command == "infer":
        arrays = _arrays(tmp, {"an array": np.zeros((4, 8), np.int8)})
        cases["an array, not a model"] = (arrays["an array"], False)
        np.savez(tmp / "floats.npz", w0=np.zeros((3, 6)), b0=np.zeros(3, np.int32),
                 multiplier0=np.int64(1), shift0=np.int64(1))
        cases["float weights"] = (tmp / "floats.npz", False)
        np.savez(tmp / "texts.npz", w0=np.array(["a"]), b0=np.array(["b"]),
                 multiplier0=np.array("c"), shift0=np.array("d"), act_min0=np.array("e"))
        cases["text arrays"] = (tmp / "texts.npz", False)
        np.savez(tmp / "pickled.npz", w0=np.array([None], dtype=object))
        cases["pickled member"] = (tmp / "pickled.npz", True)
        whole = (tmp / "net.npz").read_bytes()
        (tmp / "cut.npz").write_bytes(whole[:len(whole) // 2])
        cases["truncated archive"] = (tmp / "cut.npz", True)
        np.savez(tmp / "empty.npz")
        cases["empty archive"] = (tmp / "empty.npz", False)
    elif command == "quantize" and option == "--model":
        import pickle
        onnx_cases = {"empty.onnx": b"", "garbage.onnx": b"\x08\x07garbage" * 10,
                      "text.onnx": b"not a model", "dict.pkl": pickle.dumps({"a": 1}),
                      "list.pkl": pickle.dumps([1, 2]), "garbage.pkl": b"garbage",
                      "empty.pkl": b"", "model.txt": b"a text file"}
        for name, content in onnx_cases.items():
            (tmp / name).write_bytes(content)
            cases[name] = (tmp / name, name.endswith("pkl") or name.endswith("txt"))
        (tmp / "dir.onnx").mkdir()
        cases["dir.onnx"] = (tmp / "dir.onnx", True)
    elif command == "run":
        pass                # the program reader's own cases: test_run_rejects_bad_programs
    else:
        for name, path in _arrays(tmp, _wrong_arrays(command, option, tmp)).items():
            cases[name] = (path, False)
        archive = tmp / "archive.npz"
        np.savez(archive, a=np.zeros(3, np.int8))
        cases["an .npz archive"] = (archive, True)
    for name, (path, names_file) in cases.items():
        options[option] = path
        code, out, err = _run_cli(capsys, command, options)
        lines = err.splitlines()
        assert code == 2, f"{option} {name}: pim should exit 2, exited {code}; stderr {err!r}"
        assert out == "", f"{option} {name}: nothing should reach stdout: {out!r}"
        assert len(lines) == 1 and lines[0].startswith("pim: error: "), \
            f"{option} {name}: stderr should be one `pim: error:` line, got {err!r}"
        if names_file:
            assert Path(path).name in lines[0], \
                f"{option} {name}: the error should name the file: {lines[0]!r}"
        assert not (tmp / "q.npz").exists(), f"{option} {name}: nothing should be written"


# -- --out: exactly the file named, never a directory -------------------------------------------

@pytest.mark.parametrize("command", ["gemv", "infer", "quantize"])
def test_out_refuses_a_directory(runs, capsys, command):
    """`--out adir` where adir is a directory is an error before anything runs (numpy would
    write `adir.npy` beside it), and nothing is written."""
    commands, tmp = runs
    (tmp / "adir").mkdir()
    code, out, err = _run_cli(capsys, command, {**commands[command], "--out": tmp / "adir"})
    assert code == 2 and out == "", f"{command}: expected exit 2, got {code}: {err!r}"
    assert err == f"pim: error: --out {tmp / 'adir'} is a directory; give a file name, e.g. " \
                  f"{tmp / 'adir' / 'Y.npy'}\n", f"{command}: wrong error line {err!r}"
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("adir")) == ["adir"], \
        f"{command}: nothing should be written beside the directory"
    assert not any((tmp / "adir").iterdir()), f"{command}: nor inside it"


@pytest.mark.parametrize("command", ["gemv", "infer", "quantize"])
def test_out_writes_exactly_the_path_given(runs, capsys, command):
    """`--out result` (no suffix) writes `result`, not `result.npy` (or `.npz`), and the JSON
    says where Y went."""
    commands, tmp = runs
    target = tmp / "result"
    code, out, err = _run_cli(capsys, command, {**commands[command], "--out": target})
    assert code == 0, f"{command}: should succeed: {err}"
    assert target.is_file(), f"{command}: {target} should be written"
    assert not (tmp / "result.npy").exists() and not (tmp / "result.npz").exists(), \
        f"{command}: no suffix should be added"
    if command == "gemv":
        assert np.array_equal(np.load(target), reference(np.load(commands["gemv"]["--weights"]),
                                                         np.load(commands["gemv"]["--input"]),
                                                         np.load(commands["gemv"]["--bias"])))
    code, out, err = _run_cli(capsys, command, {**commands[command], "--out": target,
                                                "--json": None})
    report = json.loads(out)
    assert report["out"] == str(target), f"{command}: the JSON should name the file written"
    assert "output" not in report, f"{command}: with --out the JSON should not repeat Y"


# -- pim run: a hex command stream on any back end --------------------------------------------

#: A program written by hand for the default configuration (8 lanes, R = 1), with the output
#: worked out by hand from hw/isa.py's word layouts. W is 8 lanes x K = 2, columns
#: [1, 3, -1, 5, 2, 0, -4, 7] and [2, 4, 0, -6, 1, 1, 3, -1]; x = [3, -2]; so
#: y = 3 W[:, 0] - 2 W[:, 1] = [-1, 1, -3, 27, 4, -2, -18, 23].
HAND_PROGRAM = """\
# header: [7:0] opcode, [15:8] flags, [31:16] count
0x00020001   # WRITE_WEIGHTS, 2 rows
0x00000000   #   at row 0
0x05ff0301   #   row 0, lanes 0-3: 1 3 -1 5 (int8, least significant byte first)
0x07fc0002   #   row 0, lanes 4-7: 2 0 -4 7
0xfa000402   #   row 1, lanes 0-3: 2 4 0 -6
FF030101     #   row 1, lanes 4-7: 1 1 3 -1 (no 0x, upper case)

0x00020002   # LOAD_ACT, 2 bytes
0            #   at byte 0
0x0000fe03   #   x = [3, -2]
0x00020004   # MATVEC, 2 rows
0x00000000   #   from row 0, activations from byte 0
0x00080005   # EMIT_RAW, 8 lanes
0x00000000   #   no bias
0x0008000a   # LOAD_QUANT, 8 channels
0x00000000   #   from channel 0
0x40000000   #   channel 0: M0 = 2**30
0x00000001   #     shift 1: scale 2**30 * 2**(1 - 31) = 1
0x40000000   #   channel 1: M0 = 2**30
0x00000001   #     shift 1: scale 2**30 * 2**(1 - 31) = 1
0x40000000   #   channel 2: M0 = 2**30
0x00000001   #     shift 1: scale 2**30 * 2**(1 - 31) = 1
0x40000000   #   channel 3: M0 = 2**30
0x00000001   #     shift 1: scale 2**30 * 2**(1 - 31) = 1
0x40000000   #   channel 4: M0 = 2**30
0x00000001   #     shift 1: scale 2**30 * 2**(1 - 31) = 1
0x40000000   #   channel 5: M0 = 2**30
0x00000001   #     shift 1: scale 2**30 * 2**(1 - 31) = 1
0x40000000   #   channel 6: M0 = 2**30
0x00000001   #     shift 1: scale 2**30 * 2**(1 - 31) = 1
0x40000000   #   channel 7: M0 = 2**30
0x00000001   #     shift 1: scale 2**30 * 2**(1 - 31) = 1
0x00080006   # EMIT_INT8, 8 lanes
0x00000000   #   channels 0.., no bias
0x007f8000   #   zero point 0, act_min -128, act_max 127: y clamped to int8, here y itself
0x000000ee   # an unknown opcode
"""
#: Status words: [7:0] opcode echoed, [15:8] error, [31:16] data words that follow.
HAND_OUTPUT = [0x00000001, 0x00000002, 0x00000004,
               0x00080005, 0xffffffff, 0x00000001, 0xfffffffd, 0x0000001b,    # -1 1 -3 27
               0x00000004, 0xfffffffe, 0xffffffee, 0x00000017,                # 4 -2 -18 23
               0x0000000a,                                                    # LOAD_QUANT
               0x00020006, 0x1bfd01ff, 0x17eefe04,                            # the same, int8
               0x000001ee]                                                    # BAD_OPCODE
HAND_Y = [-1, 1, -3, 27, 4, -2, -18, 23]


@pytest.fixture
def hand_program(tmp_path):
    path = tmp_path / "hand.txt"
    path.write_text(HAND_PROGRAM)
    return path


def test_run_prints_words_and_responses(hand_program):
    result = ok(pim("run", "--program", hand_program))
    assert result.stdout.splitlines() == [
        "35 words in, 17 words out:",
        "  0x00000001 0x00000002 0x00000004 0x00080005 0xffffffff 0x00000001 0xfffffffd "
        "0x0000001b",
        "  0x00000004 0xfffffffe 0xffffffee 0x00000017 0x0000000a 0x00020006 0x1bfd01ff "
        "0x17eefe04",
        "  0x000001ee",
        "command 0 (line 2) WRITE_WEIGHTS: OK",
        "command 1 (line 9) LOAD_ACT: OK",
        "command 2 (line 12) MATVEC: OK",
        "command 3 (line 14) EMIT_RAW: OK, 8 data words: int32 -1 1 -3 27 4 -2 -18 23",
        "command 4 (line 16) LOAD_QUANT: OK",
        "command 5 (line 34) EMIT_INT8: OK, 2 data words: int8 -1 1 -3 27 4 -2 -18 23",
        "command 6 (line 37) opcode 0xee: BAD_OPCODE",
    ], f"unexpected output:\n{result.stdout}"
    assert result.stderr == ""


@pytest.mark.parametrize("sim, arch", [("golden", "pim"), ("model", "baseline"),
                                       ("icarus", "pim"), ("icarus", "baseline"),
                                       ("verilator", "pim"), ("verilator", "baseline")])
def test_run_every_back_end_gives_the_hand_computed_words(hand_program, sim, arch):
    """The same words from the golden model, the cycle model and the RTL of both machines
    (default configuration: the builds other CLI tests use), as computed by hand."""
    if sim == "icarus" and not shutil.which("iverilog"):
        pytest.fail("Icarus Verilog is not installed (`make deps`)")
    result = ok(pim("run", "--program", hand_program, "--sim", sim, "--arch", arch, "--json"))
    report = json.loads(result.stdout)
    assert result.stderr == "", f"{sim}: nothing should reach stderr: {result.stderr!r}"
    assert report["words_out"] == HAND_OUTPUT, f"{sim} {arch}: output words differ"
    assert report["words_in"][:3] == [0x00020001, 0, 0x05ff0301] and len(report["words_in"]) == 35
    assert [r["error"] for r in report["responses"]] == ["OK"] * 6 + ["BAD_OPCODE"]
    assert [r["name"] for r in report["responses"]] == [
        "WRITE_WEIGHTS", "LOAD_ACT", "MATVEC", "EMIT_RAW", "LOAD_QUANT", "EMIT_INT8", None]
    assert [r["line"] for r in report["responses"]] == [2, 9, 12, 14, 16, 34, 37]
    assert report["responses"][3]["int32"] == HAND_Y and report["responses"][5]["int8"] == HAND_Y
    assert report["sim"] == sim and report["arch"] == arch and report["truncated"] is None
    if sim in ("icarus", "verilator"):
        assert report["cycles"] > len(report["words_in"]), f"{sim}: real cycles expected"
    else:
        assert report["cycles"] is None, f"{sim} gives no cycle count of its own"


TRUNCATED = {
    "argument missing": ("0x00020004\n", 35,
                         r"line 38: the program ends inside command 7 \(MATVEC at word 35\): "
                         r"0 of 1 argument words; the 7 complete commands before it were played"),
    "payload cut": ("0x00020001\n0\n0x05ff0301\n", 35,
                    r"line 38: the program ends inside command 7 \(WRITE_WEIGHTS at word 35\): "
                    r"1 of 4 payload words"),
}


@pytest.mark.parametrize("case", TRUNCATED)
def test_run_truncated_program_plays_the_complete_commands(hand_program, case):
    tail, first, message = TRUNCATED[case]
    hand_program.write_text(HAND_PROGRAM + tail)
    result = pim("run", "--program", hand_program, "--json")
    assert result.returncode == 2, f"a truncated program is an error: {result.returncode}"
    report = json.loads(result.stdout)
    assert report["words_out"] == HAND_OUTPUT, "the complete commands should still play"
    assert len(report["words_in"]) == first + len(tail.split())
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pim: error: {hand_program} line"), lines
    assert re.search(message, lines[0]) and re.search(message, report["truncated"]), lines[0]


def test_run_program_cut_in_its_first_command(tmp_path):
    (tmp_path / "p.txt").write_text("0x00010003  # LOAD_BIAS, 1 word\n0\n")
    result = pim("run", "--program", tmp_path / "p.txt")
    assert result.returncode == 2 and result.stdout.splitlines()[0] == "2 words in, 0 words out:"
    assert result.stderr == (f"pim: error: {tmp_path / 'p.txt'} line 1: the program ends inside "
                             f"command 0 (LOAD_BIAS at word 0): 0 of 1 payload words; the 0 "
                             f"complete commands before it were played\n")


BAD_PROGRAMS = {
    "not hex": ("0x1\n0xZZ\n", r"line 2: '0xZZ' is not a hex word \(one 32-bit word per line"),
    "two words on a line": ("0x1 0x2\n", r"line 1: '0x1 0x2' is not a hex word"),
    "too wide": ("# c\n\n0x100000000\n", r"line 3: 0x100000000 does not fit in 32 bits"),
    "negative": ("-1\n", r"line 1: '-1' is not a hex word"),
    "prefix alone": ("0x\n", r"line 1: '0x' is not a hex word"),
    "decimal with a sign": ("+12\n", r"line 1: '\+12' is not a hex word"),
    "only comments": ("# nothing\n\n   \n", r"holds no words \(only comments and blank lines\)"),
    "binary": (b"0x1\n\x00\xff\xfe\n", r"line 2: byte 0x00 is not text \(UTF-8\)"),
    "not UTF-8": (b"0x1\n\xff\xfe\n", r"line 2: byte 0xff is not text \(UTF-8\)"),
}


@pytest.mark.parametrize("case", BAD_PROGRAMS)
def test_run_rejects_bad_programs(tmp_path, case):
    content, message = BAD_PROGRAMS[case]
    path = tmp_path / "bad.txt"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    result = pim("run", "--program", path)
    assert result.returncode == 2 and result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pim: error: ") and str(path) in lines[0], \
        f"{case}: one line naming the file expected, got {result.stderr!r}"
    assert re.search(message, lines[0]), f"{case}: expected {message!r} in {lines[0]!r}"


def test_run_decodes_counters_and_status(tmp_path, capsys):
    """READ_COUNTERS data by counter name, STATUS data by field (the architecture by name), a
    failed command's error by name; the configuration options reach the back end."""
    (tmp_path / "p.txt").write_text("0x00000808  # READ_COUNTERS, CLEAR\n"
                                    "0x00000109  # STATUS with a flag it does not take\n"
                                    "0x00000009  # STATUS\n")
    code, out, err = _run_cli(capsys, "run", {"--program": tmp_path / "p.txt", "--json": None,
                                              "--arch": "baseline", "--lanes": 12,
                                              "--bus-bits": 16, "--depth": 40})
    assert code == 0, err
    counters, failed, status = json.loads(out)["responses"]
    assert set(counters["counters"]) == {c.name.lower() for c in Counter}
    assert counters["counters"]["beats_in"] == 1, "one word taken when the snapshot is made"
    assert failed["error"] == "BAD_FIELD" and failed["data"] == [] and "status" not in failed
    assert status["status"] == {
        "last_error": "BAD_FIELD", "isa_version": ISA_VERSION, "error_count": 1, "lanes": 12,
        "rows_per_cycle": 1, "arch": "baseline", "depth": 40, "act_depth": 1024,
        "bias_depth": 256, "bus_bits": 16, "requantizers": 4}, status


def _mutations(content, rng, count):
    """``count`` seeded random corruptions of the bytes ``content``: cut at a random length,
    1 to 3 bytes overwritten, bytes inserted."""
    for i in range(count):
        data = bytearray(content)
        kind = i % 3
        if kind == 0:
            del data[int(rng.integers(0, len(data))):]
        elif kind == 1:
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        else:
            at = int(rng.integers(0, len(data) + 1))
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        yield kind, bytes(data)


@pytest.mark.parametrize("command, option", FILE_OPTIONS)
def test_mutated_files_never_end_in_a_traceback(runs, capsys, command, option):
    """Seeded random corruptions of each valid file: the run succeeds (a corruption can leave a
    valid file) or fails with one `pim: error:` line and exit 2; never a traceback."""
    commands, tmp = runs
    options = dict(commands[command])
    original = Path(options[option]).read_bytes()
    rng = np.random.default_rng(sum(map(ord, command + option)))
    for i, (kind, data) in enumerate(_mutations(original, rng, 30)):
        path = tmp / f"mutated{i}{Path(options[option]).suffix}"
        path.write_bytes(data)
        code, out, err = _run_cli(capsys, command, {**options, option: path})
        what = f"{option} mutation {i} (kind {kind})"
        if code == 0:       # nothing on stderr but pim quantize's warnings (issue 13)
            assert all(line.startswith("pim: warning: ") for line in err.splitlines()), \
                f"{what}: a success should print nothing but warnings on stderr: {err!r}"
            continue
        lines = err.splitlines()
        assert code == 2 and out == "", f"{what}: exit {code}, stdout {out!r}, stderr {err!r}"
        assert len(lines) == 1 and lines[0].startswith("pim: error: "), f"{what}: {err!r}"


def test_error_lines_carry_no_control_characters(tmp_path, capsys):
    """A file name is part of the error line: its control characters (a terminal escape, a
    carriage return) are shown escaped, not sent to the terminal."""
    name = tmp_path / "w\x1b[2J\rx.npy"
    code, out, err = _run_cli(capsys, "gemv", {"--weights": name, "--input": name})
    assert code == 2 and err.count("\n") == 1, err
    assert "\x1b" not in err and "\r" not in err, f"control characters reached stderr: {err!r}"
    assert "w\\x1b[2J" in err, f"the name should be shown escaped: {err!r}"


# -- faults found by the tester (each a kind of input, kept as a test) ---------------------------

def _answers_that_do_not_decode():
    from pim_macro.hw.isa import Opcode, StatusWord, status_words
    from pim_macro.sw.runtime import asm
    data = status_words(MacroConfig(), "pim")
    data[StatusWord.ERRORS.value] |= 0x77
    return {
        "STATUS, ERRORS word with no ISA error code": (
            Opcode.STATUS, data, asm.encode_status()[0],
            r"ERRORS data word 0x[0-9a-f]{8} holds error code 119"),
        "STATUS, too short": (Opcode.STATUS, data[:3], asm.encode_status()[0],
                              r"STATUS data is 3 words, not the 7"),
        "READ_COUNTERS, too short": (Opcode.READ_COUNTERS, [1, 2], asm.encode_read_counters()[0],
                                     r"READ_COUNTERS data is 2 words"),
        "EMIT_INT8, too short": (Opcode.EMIT_INT8, [1], asm.encode_emit_int8(8,
                                                                              channel=0)[0],
                                 r"1 words hold fewer than 8 bytes"),
    }


@pytest.mark.parametrize("case", list(_answers_that_do_not_decode()))
def test_run_answers_that_do_not_decode_are_one_line(case):
    """Data words that cannot mean what the command's response means (a board's line noise, a
    back end's answer of the wrong size): a one-line error of the run (exit 1), not an enum's
    ValueError or an IndexError."""
    from pim_macro.hw.isa import Error
    from pim_macro.sw.runtime.asm import Response
    opcode, data, header, message = _answers_that_do_not_decode()[case]
    with pytest.raises(cli._Error, match=message) as info:
        cli._decoded(Response(opcode.value, Error.OK, data), header)
    assert info.value.code == 1


def _precious(tmp_path):
    path = tmp_path / "Y.npy"
    path.write_bytes(b"precious")
    return path


def test_out_keeps_the_old_file_when_the_write_fails(tmp_path, capsys):
    """A write that fails half way (here the file size limit; a full disk alike) leaves the
    old --out file as it was and no temporary behind."""
    import resource
    np.save(tmp_path / "w.npy", np.ones((3000, 4), dtype=np.int8))
    np.save(tmp_path / "x.npy", np.ones(4, dtype=np.int8))
    out = _precious(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        code = cli.main(["gemv", "--weights", str(tmp_path / "w.npy"), "--input",
                         str(tmp_path / "x.npy"), "--out", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"pim: error: cannot write {out}") and \
        err.count("\n") == 1, err
    assert out.read_bytes() == b"precious", "the old file must survive a failed write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Y.npy", "w.npy", "x.npy"]


def test_out_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "run_gemv", lambda *a, **k: pytest.fail("the run should not start"))
    np.save(tmp_path / "w.npy", np.ones((3, 4), dtype=np.int8))
    np.save(tmp_path / "x.npy", np.ones(4, dtype=np.int8))
    code = cli.main(["gemv", "--weights", str(tmp_path / "w.npy"), "--input",
                     str(tmp_path / "x.npy"), "--out", "/proc/version", "--sim", "icarus"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured
    assert re.fullmatch(r"pim: error: cannot write /proc/version: .*\n", captured.err), captured


def test_out_replaces_a_symlinks_target_not_the_link(tmp_path, capsys):
    np.save(tmp_path / "w.npy", np.ones((3, 4), dtype=np.int8))
    np.save(tmp_path / "x.npy", np.ones(4, dtype=np.int8))
    target = _precious(tmp_path)
    (tmp_path / "link.npy").symlink_to(target)
    assert cli.main(["gemv", "--weights", str(tmp_path / "w.npy"), "--input",
                     str(tmp_path / "x.npy"), "--out", str(tmp_path / "link.npy")]) == 0
    assert (tmp_path / "link.npy").is_symlink()
    assert np.load(target).tolist() == [4, 4, 3 * 0 + 4]


@pytest.mark.parametrize("content", ["/dev/zero", b"0x9\n" * 40, b"0x9\n\x00" + b"0" * 10])
def test_run_reads_programs_with_a_limit(tmp_path, capsys, monkeypatch, content):
    """An endless file (/dev/zero), one past the size limit (here made 100 bytes), a NUL:
    one line, read no further."""
    from pim_macro.sw.runtime import asm
    monkeypatch.setattr(asm, "PROGRAM_BYTES_MAX", 100)
    path = content if isinstance(content, str) else tmp_path / "p.txt"
    if not isinstance(content, str):
        path.write_bytes(content)
    code, out, err = _run_cli(capsys, "run", {"--program": path})
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert re.search(r"larger than 100 bytes|byte 0x00 is not text", err), err


def _fails_writing(*args, stdout):
    return subprocess.run([*PIM, *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                          text=True)


@pytest.mark.parametrize("json_option", [[], ["--json"]])
def test_stdout_that_fails(hand_program, json_option):
    """A closed pipe (`| head -1`) ends the run quietly with 141 (a process killed by SIGPIPE,
    as the shell reports it); a full disk is one line, exit 1. Never a traceback."""
    import os
    read, write = os.pipe()
    os.close(read)
    try:
        result = _fails_writing("run", "--program", hand_program, *json_option, stdout=write)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, ""), result
    with open("/dev/full", "w") as full:
        result = _fails_writing("run", "--program", hand_program, *json_option, stdout=full)
    assert result.returncode == 1 and result.stderr == \
        "pim: error: cannot write the output: No space left on device\n", result


def test_a_build_folder_that_cannot_be_made_is_one_line(tmp_path, capsys, monkeypatch):
    from pim_macro.sw.runtime import rtl
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(rtl, "BUILD_ROOT", tmp_path / "file" / "build")
    (tmp_path / "p.txt").write_text("0x00000009\n")
    code, out, err = _run_cli(capsys, "run", {"--program": tmp_path / "p.txt",
                                              "--sim": "icarus"})
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"pim: error: cannot make the build folder {tmp_path / 'file'}"), err


def test_board_refuses_configuration_options(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("0x00000009\n")
    code, out, err = _run_cli(capsys, "run", {"--program": tmp_path / "p.txt",
                                              "--board": "icebreaker", "--lanes": 16})
    assert code == 2 and err == ("pim: error: --board icebreaker sets the macro configuration; "
                                 "drop --lanes (see `pim run --help`)\n"), err


def test_unrecognized_arguments_point_to_the_commands_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--program", "p.txt", "stray"])
    assert info.value.code == 2
    assert capsys.readouterr().err == ("pim: error: unrecognized arguments: stray (see "
                                       "`pim run --help`)\n")


PROGRAM_TEXTS = {
    "form feed": (b"0x9\x0c\n0x9\nzz\n", r"line 1: character U\+000C \(a control character\)"),
    "vertical tab": (b"0x00000009\x0b0x00000009\n", r"line 1: character U\+000B"),
    "line separator": ("0x9\u20280x9\n".encode(),
                       r"line 1: character U\+2028 \(a Unicode line separator\)"),
    "next line": ("# \x85\n".encode(), r"line 1: character U\+0085"),
    "a lone carriage return": (b"0x9\r0x9\n", r"line 1: character U\+000D"),
    "a huge token": (b"# c\n0x" + b"f" * 100000 + b"\n",
                     r"^pim: error: \S+ line 2: 0xfffffffffffffffffffffffffffffffffff\.\.\. "
                     r"does not fit in 32 bits$"),
}


@pytest.mark.parametrize("case", PROGRAM_TEXTS)
def test_program_text_control_characters(tmp_path, capsys, case):
    """Lines are split at \\n only (\\r\\n tolerated): other control and separator characters
    are invalid, reported at the line grep -n gives; tokens in messages are cut to 40 chars."""
    content, message = PROGRAM_TEXTS[case]
    (tmp_path / "p.txt").write_bytes(content)
    code, out, err = _run_cli(capsys, "run", {"--program": tmp_path / "p.txt"})
    assert code == 2 and err.count("\n") == 1 and len(err) < 300, err
    assert re.search(message, err.strip()), err


@pytest.mark.parametrize("content", [b"\xef\xbb\xbf0x00000009\n", b"0x00000009\r\n# x\r\n"])
def test_program_text_bom_and_crlf(tmp_path, capsys, content):
    (tmp_path / "p.txt").write_bytes(content)
    code, out, err = _run_cli(capsys, "run", {"--program": tmp_path / "p.txt", "--json": None})
    assert code == 0, err
    assert json.loads(out)["words_in"] == [9]


def test_quantize_model_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "d.onnx").mkdir()
    np.save(tmp_path / "c.npy", np.ones((4, 64)))
    code, out, err = _run_cli(capsys, "quantize", {"--model": tmp_path / "d.onnx",
                                                   "--calib": tmp_path / "c.npy",
                                                   "--out": tmp_path / "q.npz"})
    assert code == 2 and err.endswith(f"{tmp_path / 'd.onnx'}: it is a directory\n"), err


@pytest.mark.parametrize("scale", [np.inf, np.nan, 0.0, -1.0])
def test_model_scales_must_be_finite_and_positive(tmp_path, capsys, scale):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "m.npz", w0=rng.integers(-128, 128, (5, 10), dtype=np.int8),
             b0=np.zeros(5, np.int32), multiplier0=np.int64(1), shift0=np.int64(0),
             input_scale=np.float64(scale))
    np.save(tmp_path / "x.npy", np.ones((1, 10), np.int8))
    code, out, err = _run_cli(capsys, "infer", {"--model": tmp_path / "m.npz",
                                                "--input": tmp_path / "x.npy"})
    assert code == 2 and "input_scale must be a positive, finite float scalar" in err, err


# -- the tester's second round: output targets, caps, limits --------------------------------

def _gemv_args(p, *extra):
    return ["gemv", "--weights", p["W"], "--input", p["X"], *extra]


def _sh(command, **kwargs):
    return subprocess.run(["bash", "-c", command], capture_output=True, **kwargs)


def test_out_to_a_pipe_or_an_appended_stdout_is_written_in_place(files, tmp_path):
    """--out /dev/stdout into a pipe failed ("No such file or directory"), and into `>> log`
    replaced the log: what is not a regular file is written in place, never replaced."""
    a, p, _ = files
    cmd = " ".join(map(str, [*PIM, *_gemv_args(p, "--out", "/dev/stdout")]))
    result = _sh(f"{cmd} | cat")
    assert result.returncode == 0, result.stderr
    y = np.load(__import__("io").BytesIO(result.stdout))
    assert np.array_equal(y, reference(a["W"], a["X"]))
    log = tmp_path / "app.log"
    log.write_bytes(b"previous\n")
    result = _sh(f"{cmd} >> {log}")
    assert result.returncode == 0, result.stderr
    data = log.read_bytes()
    assert data.startswith(b"previous\n") and data[9:15] == b"\x93NUMPY", data[:20]


@pytest.mark.parametrize("target", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_json_with_out_on_stdout_is_refused(files, target):
    a, p, _ = files
    result = subprocess.run([*PIM, *_gemv_args(p, "--json", "--out", target)],
                            capture_output=True)
    result.stdout, result.stderr = result.stdout.decode("latin-1"), result.stderr.decode()
    assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "--json" in result.stderr and "stdout" in result.stderr, result.stderr


def test_a_closed_stdout_or_stderr_is_one_line(files, tmp_path):
    a, p, _ = files
    cmd = " ".join(map(str, [*PIM, *_gemv_args(p, "--out", tmp_path / "y.npy")]))
    result = _sh(f"{cmd} 1>&-", text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("pim: error: ") and "Traceback" not in result.stderr
    cmd = " ".join(map(str, [*PIM, *_gemv_args(p)]))
    result = _sh(f"{cmd} 1>&- 2>&-", text=True)
    assert result.returncode == 1 and result.stderr == ""
    result = _sh(f"{cmd} --weights {p['missing']} 2>&-", text=True)
    assert result.returncode == 2 and result.stdout == ""


def test_a_large_output_into_head_exits_141(tmp_path):
    """2.9 MB of output into `| head -1` exited 0 (tester, round 2)."""
    program = tmp_path / "st.txt"
    program.write_text("9\n" * 10000)
    cmd = " ".join(map(str, [*PIM, "run", "--program", program]))
    result = _sh(f"{cmd} | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}", text=True)
    assert result.stdout.strip() == "141", result


def test_out_names_that_fail_are_one_line(files, tmp_path):
    a, p, _ = files
    (tmp_path / "l1").symlink_to("l2")
    (tmp_path / "l2").symlink_to("l1")
    (tmp_path / "dl").symlink_to("nodir/f.npy")
    for out, message in (("l1", "l1"), ("new.npy/", "directory"), ("dl", "nodir"),
                         ("", "--out is empty")):
        result = pim(*_gemv_args(p, "--out", out), cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (out, result.stderr)
        assert result.stderr.startswith("pim: error: ") and message in result.stderr, \
            result.stderr
    assert not (tmp_path / "new.npy").exists()
    long = "a" * 251 + ".npy"           # 255 characters: the longest name a folder holds
    ok(pim(*_gemv_args(p, "--out", long), cwd=tmp_path))
    assert np.array_equal(np.load(tmp_path / long), reference(a["W"], a["X"]))
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def test_an_empty_board_name_is_refused(files, capsys):
    a, p, _ = files
    code, out, err = _run_cli(capsys, "gemv", {"--weights": p["W"], "--input": p["X"],
                                               "--board": ""})
    assert code == 2 and err.count("\n") == 1 and "board" in err, err


def test_ctrl_c_is_one_line(files, capsys, monkeypatch):
    a, p, _ = files

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "run_gemv", interrupted)
    code, out, err = _run_cli(capsys, "gemv", {"--weights": p["W"], "--input": p["X"]})
    assert (code, out, err) == (130, "", "pim: interrupted\n")


def test_a_program_of_too_many_words_is_refused(tmp_path, capsys, monkeypatch):
    """The byte limit did not limit the work: 1 MiB of `9` lines took 78 s and 895 MB."""
    from pim_macro.hw import isa
    from pim_macro.sw.runtime import asm
    monkeypatch.setattr(asm, "PROGRAM_WORDS_MAX", 100)
    path = tmp_path / "p.txt"
    path.write_text("9\n" * 101)
    code, out, err = _run_cli(capsys, "run", {"--program": path})
    assert code == 2 and out == "" and err.count("\n") == 1 and "100 words" in err, err
    # Each STATUS moves its word and its answer: 1 + the status words.
    moved = 2 + len(isa.status_words(MacroConfig(), "pim"))
    for count, code_wanted in ((100 // moved, 0), (100 // moved + 1, 2)):
        path.write_text("9\n" * count)
        code, out, err = _run_cli(capsys, "run", {"--program": path})
        assert code == code_wanted, err
    assert "100 words" in err, err


def test_a_model_with_many_unknown_keys_is_a_short_line(tmp_path, capsys):
    path = tmp_path / "m.npz"
    layer = {"w0": np.ones((4, 4), np.int8), "b0": np.zeros(4, np.int32),
             "multiplier0": np.int64(1), "shift0": np.int64(0)}
    np.savez(path, **layer, **{f"x{i}": np.zeros(1, np.int8) for i in range(200)})
    code, out, err = _run_cli(capsys, "infer", {"--model": path, "--input": path})
    assert code == 2 and err.count("\n") == 1 and len(err) < 300, err
    assert "195 more" in err, err


def test_usage_errors_echo_a_long_argument_cut(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["gemv", "--weights", "w", "--input", "x", "--lanes", "9" * 5000])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and len(err) < 300, err[:300]


@pytest.mark.parametrize("command, option", [
    ("gemv", "--weights"), ("gemv", "--input"), ("gemv", "--bias"), ("infer", "--model"),
    ("infer", "--input"), ("infer", "--labels"), ("quantize", "--model"),
    ("quantize", "--calib"), ("quantize", "--test"), ("quantize", "--labels")])
@pytest.mark.parametrize("how", ["same name", "hard link"])
def test_out_refuses_an_input_file(runs, capsys, command, option, how):
    """`--out` naming a file the command reads (by its name or a hard link to it) is refused
    before the run: it silently replaced the model or the input. The file is left whole."""
    commands, tmp = runs
    options = dict(commands[command])
    if command == "quantize":       # a copy: never the repository's model
        shutil.copy(options["--model"], tmp / "model.onnx")
        options["--model"] = tmp / "model.onnx"
        shutil.copy(options["--test"], tmp / "test.npy")    # not --calib's file
        options["--test"] = tmp / "test.npy"
    source = Path(options[option])
    before = source.read_bytes()
    out = source
    if how == "hard link":
        out = tmp / "link"
        os.link(source, out)
    code, stdout, err = _run_cli(capsys, command, {**options, "--out": out})
    assert code == 2 and stdout == "", err
    assert err == f"pim: error: --out {out} is the same file as {option} {source}: give --out " \
                  f"another file\n"
    assert source.read_bytes() == before


# -- issue 13: labels, classes, predictions, warnings ------------------------------------------

def _pim_here(*args):
    """``pim *args`` in this process (a subprocess costs 0.7 s of imports), as a
    ``CompletedProcess``."""
    import io
    from contextlib import redirect_stderr, redirect_stdout
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _sklearn_files(tmp_path, labels, seed=0, n=300):
    """A pickled MLPClassifier on 5 features and labels of the given kind ("binary": 0/1,
    "359": 3/5/9, "str": strings), its float data and int8 inputs; returns the paths and
    the classifier."""
    import warnings
    import joblib
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    score = x[:, 0] + 0.8 * x[:, 1] - 0.3
    if labels == "binary":
        # about a third positive: a decoder that always says 0 scores 0.6-0.7, not 0.97
        y = (score > 0.3).astype(np.int64)
    else:
        names = np.array([3, 5, 9]) if labels == "359" else np.array(["ant", "bee", "cow"])
        y = names[np.digitize(score, [-0.6, 0.6])]
    clf = MLPClassifier((16,), max_iter=600, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    paths = {k: tmp_path / f"{k}.npy" for k in ("x", "labels")}
    np.save(paths["x"], x)
    np.save(paths["labels"], y)
    joblib.dump(clf, tmp_path / "clf.pkl")
    paths["pkl"] = tmp_path / "clf.pkl"
    return paths, clf


def _quantize_and_infer(tmp_path, p, *extra):
    summary = json.loads(ok(_pim_here(
        "quantize", "--model", p["pkl"], "--calib", p["x"], "--labels", p["labels"], "--out",
        tmp_path / "m.npz", "--json")).stdout)
    from pim_macro.sw.compiler.network import load_network
    from pim_macro.sw.compiler.quantize import quantize_input
    net = load_network(tmp_path / "m.npz")
    np.save(tmp_path / "xq.npy", quantize_input(net, np.load(p["x"])))
    report = json.loads(ok(_pim_here(
        "infer", "--model", tmp_path / "m.npz", "--input", tmp_path / "xq.npy", "--labels",
        p["labels"], "--json", "--out", tmp_path / "y.npy", *extra)).stdout)
    return summary, report, net


@pytest.mark.parametrize("labels", ["binary", "359", "str"])
def test_quantize_and_infer_report_accuracy_in_the_users_labels(tmp_path, labels):
    """Wrong results 1 and 2 of issue 13. A binary classifier's single logit is decoded by its
    sign by both commands (main: `pim infer` took the argmax of one column, always class 0);
    labels 3/5/9 or strings are the classifier's classes_, kept in the container (main: 0.000,
    or strings refused). scikit-learn's own predictions are the reference."""
    p, clf = _sklearn_files(tmp_path, labels)
    summary, report, net = _quantize_and_infer(tmp_path, p)
    y_true = np.load(p["labels"])
    sk = clf.score(np.load(p["x"]), y_true)
    assert sk > 0.93
    assert summary["float_accuracy"] == pytest.approx(sk)
    assert summary["int8_accuracy"] >= sk - 0.03
    assert report["accuracy"] == pytest.approx(summary["int8_accuracy"]), \
        "both commands decode the same way"
    assert summary["classes"] == clf.classes_.tolist()
    assert report["classes"] == clf.classes_.tolist()
    # the text form says the same, and --predictions holds them in the user's labels
    text = ok(_pim_here("infer", "--model", tmp_path / "m.npz", "--input", tmp_path / "xq.npy",
                        "--labels", p["labels"], "--out", tmp_path / "y2.npy", "--predictions",
                        tmp_path / "pred.npy")).stdout
    n = len(y_true)
    assert text == f"accuracy: {report['accuracy']:.4f} " \
                   f"({int(round(report['accuracy'] * n))}/{n})\n"
    predictions = np.load(tmp_path / "pred.npy")
    assert predictions.dtype.kind == ("U" if labels == "str" else "i")
    assert np.mean(predictions == clf.predict(np.load(p["x"]))) > 0.95
    assert np.mean(predictions == y_true) == pytest.approx(report["accuracy"])
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int8 and y.shape == (len(y_true), 1 if labels == "binary" else 3), \
        "--out keeps the raw int8 outputs"


def test_labels_in_another_encoding_are_refused(tmp_path):
    """Labels that cannot be the model's (indices for classes 3/5/9, strings for integer
    classes, 3/5/9 for a model without classes): one line, before anything runs."""
    p, clf = _sklearn_files(tmp_path, "359", n=120)
    ok(_pim_here("quantize", "--model", p["pkl"], "--calib", p["x"], "--out", tmp_path / "m.npz"))
    from pim_macro.sw.compiler.network import load_network, save_network, Network
    from pim_macro.sw.compiler.quantize import quantize_input
    net = load_network(tmp_path / "m.npz")
    np.save(tmp_path / "xq.npy", quantize_input(net, np.load(p["x"])))
    save_network(tmp_path / "plain.npz", Network(net.layers, net.input_scale,
                                                 net.output_scale))
    y = np.load(p["labels"])
    np.save(tmp_path / "index.npy", np.searchsorted([3, 5, 9], y))
    np.save(tmp_path / "str.npy", y.astype(str))
    cases = [("m.npz", "index.npy", "label [0-2] is not one of the model's classes "
                                    "\\[3, 5, 9\\]"),
             ("m.npz", "str.npy", "the labels are strings but the model's classes are "
                                  "integers"),
             ("plain.npz", "labels.npy", "label [359] is not a class index 0..2 .* has no "
                                         "classes")]
    for model, labels, message in cases:
        result = _pim_here("infer", "--model", tmp_path / model, "--input", tmp_path / "xq.npy",
                           "--labels", tmp_path / labels)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert re.fullmatch(f"pim: error: --labels: {message}.*\n", result.stderr), \
            result.stderr
    result = _pim_here("quantize", "--model", p["pkl"], "--calib", p["x"], "--labels",
                       tmp_path / "index.npy", "--out", tmp_path / "q.npz")
    assert result.returncode == 2 and not (tmp_path / "q.npz").exists()
    assert re.search("label [0-2] is not one of the model's classes", result.stderr)


def _onnx_mlp(tmp_path, w1_value=None, b1_value=None):
    """A float ONNX MLP 4-8-3 (Gemm, Relu, Gemm), optionally with one weight or bias of
    layer 0 replaced; its calibration data in calib.npy."""
    from onnx import TensorProto, helper, numpy_helper
    import onnx
    rng = np.random.default_rng(3)
    w0, b0 = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    w1, b1 = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    if w1_value is not None:
        w0[2, 1] = w1_value
    if b1_value is not None:
        b0[5] = b1_value
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], name="fc0", transB=1),
         helper.make_node("Relu", ["h"], ["r"], name="relu0"),
         helper.make_node("Gemm", ["r", "w1", "b1"], ["y"], name="fc1", transB=1)],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w0, "w0"), (b0, "b0"), (w1, "w1"),
                                                     (b1, "b1"))])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", rng.normal(size=(50, 4)))


@pytest.mark.parametrize("weight, bias, message", [
    (np.nan, None, "initializer 'w0' holds NaN: a model's weights and biases must be finite"),
    (np.inf, None, "initializer 'w0' holds inf: a model's weights and biases must be finite"),
    (None, np.inf, "initializer 'b0' holds inf: a model's weights and biases must be finite"),
])
def test_quantize_refuses_non_finite_weights(tmp_path, weight, bias, message):
    """Wrong result 3 of issue 13: main accepted a NaN weight (weight scale 1.0, int8 weights
    -1/0/1, exit 0, a bare NaN in --json) and refused an infinite bias as not fitting int32."""
    _onnx_mlp(tmp_path, weight, bias)
    result = _pim_here("quantize", "--model", tmp_path / "m.onnx", "--calib",
                       tmp_path / "calib.npy", "--out", tmp_path / "q.npz", "--json")
    assert result.returncode == 2 and result.stdout == ""
    assert re.fullmatch(f"pim: error: cannot quantize .*m.onnx: {message}\n", result.stderr), \
        result.stderr
    assert not (tmp_path / "q.npz").exists()


def test_json_is_strict():
    """--json never prints a bare NaN or Infinity (not JSON): an error instead."""
    assert cli._json({"a": 1.5, "b": [1, 2]}) == '{"a": 1.5, "b": [1, 2]}'
    with pytest.raises(cli._Error, match="non-finite number \\(relative_error\\)"):
        cli._json({"relative_error": float("nan")})


def test_quantize_warns_about_feature_ranges(tmp_path):
    """Features whose ranges differ by 1000x: the report's relative error is large, and
    `pim quantize` says so on stderr (and in the JSON) with the reason; the same classifier
    trained on standardized features quantizes without a warning."""
    import warnings
    import joblib
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4)) * np.array([1000.0, 1.0, 1.0, 0.5])
    y = (x[:, 1] + x[:, 2] > 0).astype(np.int64)
    z = (x - x.mean(0)) / x.std(0)
    np.save(tmp_path / "labels.npy", y)
    for name, data in (("raw", x), ("std", z)):
        clf = MLPClassifier((16,), max_iter=400, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(data, y)
        joblib.dump(clf, tmp_path / f"{name}.pkl")
        np.save(tmp_path / f"{name}.npy", data)
    raw = _pim_here("quantize", "--model", tmp_path / "raw.pkl", "--calib", tmp_path / "raw.npy",
                    "--labels", tmp_path / "labels.npy", "--out", tmp_path / "raw.npz", "--json")
    summary = json.loads(ok(raw).stdout)
    assert summary["relative_error"] > 0.1 and summary["int8_accuracy"] < 0.8
    lines = raw.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pim: warning: the int8 outputs are off by")
    assert "feature 0 spans" in lines[0] and "feature 3" in lines[0] \
        and "standardize" in lines[0]
    assert summary["warnings"] == [lines[0][len("pim: warning: "):]]
    std = ok(_pim_here("quantize", "--model", tmp_path / "std.pkl", "--calib", tmp_path / "std.npy",
                       "--labels", tmp_path / "labels.npy", "--out", tmp_path / "std.npz"))
    assert std.stderr == "" and "int8 accuracy" in std.stdout
    assert float(re.search(r"int8 accuracy: ([0-9.]+)", std.stdout).group(1)) > 0.95


def test_infer_names_the_act_depth_that_fits(tmp_path):
    """The README's digits CNN at the default 1 KiB activation buffer: the refusal names the
    smallest --act-depth that fits (main only said it did not fit), and that one runs."""
    from pim_macro.sw.models.digits import split
    x_train, x_test, _, y_test = split()
    np.save(tmp_path / "calib.npy", x_train)
    ok(_pim_here("quantize", "--model", MODELS_DIR / "digits_cnn.onnx", "--calib",
                 tmp_path / "calib.npy", "--out", tmp_path / "cnn.npz"))
    from pim_macro.sw.compiler.network import load_network
    from pim_macro.sw.compiler.quantize import quantize_input
    net = load_network(tmp_path / "cnn.npz")
    np.save(tmp_path / "xq.npy", quantize_input(net, x_test[:4]))
    np.save(tmp_path / "y.npy", y_test[:4])
    result = _pim_here("infer", "--model", tmp_path / "cnn.npz", "--input", tmp_path / "xq.npy")
    assert result.returncode == 2
    match = re.fullmatch(r"pim: error: one sample needs (\d+) bytes of activation buffer .*"
                         r"the macro has 1024: the smallest that fits is act_depth \1 "
                         r"\(--act-depth \1;.*\n", result.stderr)
    assert match, result.stderr
    need = int(match.group(1))
    ok(_pim_here("infer", "--model", tmp_path / "cnn.npz", "--input", tmp_path / "xq.npy",
                 "--act-depth", need))
    result = _pim_here("infer", "--model", tmp_path / "cnn.npz", "--input", tmp_path / "xq.npy",
                       "--act-depth", need - 4)
    assert result.returncode == 2 and f"act_depth {need}" in result.stderr


def _tflite_classifier(tmp_path, outputs, monkeypatch, classes):
    """An int8 FULLY_CONNECTED .tflite of 12 inputs and ``outputs`` outputs (output zero
    point 7) whose Graph.metadata carries ``classes`` (what the importer reads from a .tflite
    made by pim quantize), 10 int8 samples and the golden outputs."""
    import dataclasses
    from pim_macro.sw.compiler import tflite_import
    from pim_macro.sw.compiler.tflite_builder import ModelBuilder
    rng = np.random.default_rng(outputs)
    b = ModelBuilder()
    x = b.input((1, 12), scale=0.02, zero_point=3)
    y = b.fully_connected(x, rng.integers(-127, 128, (outputs, 12)),
                          rng.integers(-500, 500, outputs), w_scale=0.01, out_scale=0.05,
                          out_zero_point=7)
    (tmp_path / "m.tflite").write_bytes(b.to_bytes([x], [y]))
    samples = rng.integers(-128, 128, (10, 12)).astype(np.int8)
    np.save(tmp_path / "X.npy", samples)
    real = tflite_import.load_tflite
    graph = real(tmp_path / "m.tflite")
    out = np.concatenate([graph.run([s[None]])[0] for s in samples])

    def load(path):
        return dataclasses.replace(real(path), metadata={"classes": classes})
    if classes is not None:
        monkeypatch.setattr(tflite_import, "load_tflite", load)
    return out


@pytest.mark.parametrize("outputs, classes", [(1, ["no", "yes"]), (3, [3, 5, 9]),
                                              (3, None)])
def test_infer_tflite_labels(tmp_path, capsys, monkeypatch, outputs, classes):
    """`pim infer --model M.tflite --labels`: main refused it. The int8 outputs are decoded
    with the output tensor's zero point (7 here), through the model's classes."""
    y = _tflite_classifier(tmp_path, outputs, monkeypatch, classes)
    index = (y[:, 0] > 7).astype(int) if outputs == 1 else y.argmax(axis=1)
    if outputs == 1:
        assert 0 < index.sum() < len(index), "both classes occur"
    names = np.arange(outputs) if classes is None else np.array(classes)
    labels = names[index]
    labels[[0, 3]] = names[(index[[0, 3]] + 1) % len(names)]       # two wrong: 0.8
    np.save(tmp_path / "L.npy", labels)
    code, out, err = _run_cli(capsys, "infer", {
        "--model": tmp_path / "m.tflite", "--input": tmp_path / "X.npy",
        "--labels": tmp_path / "L.npy", "--predictions": tmp_path / "P.npy", "--json": None})
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == pytest.approx(0.8)
    assert report["output"] == y.tolist()
    assert np.array_equal(np.load(tmp_path / "P.npy"), names[index])
    assert report.get("classes") == classes


def test_infer_predictions_and_out_must_differ(tmp_path, network_files):
    p, _ = network_files
    result = _pim_here("infer", "--model", p["model"], "--input", p["x"], "--out",
                       tmp_path / "a.npy", "--predictions", tmp_path / "a.npy")
    assert result.returncode == 2 and "--out and --predictions name the same file" in \
        result.stderr


def test_lenet_sized_tflite_runs_with_the_default_macro(tmp_path, capsys):
    """A LeNet-5-sized int8 .tflite (28x28 input, conv 6 5x5, max pool, conv 16 5x5, max pool,
    dense 120-84-10) runs at MacroConfig's defaults (1 KiB activation buffer, 2 KiB of weights):
    the graph compiler streams a layer's input and spills the weights; equal to Graph.run."""
    from pim_macro.sw.compiler.tflite_import import load_tflite
    from pim_macro.sw.compiler.tflite_builder import ModelBuilder
    rng = np.random.default_rng(28)
    b = ModelBuilder()
    q = dict(w_scale=0.01, out_scale=0.05, out_zero_point=-128, activation="RELU")
    t = image = b.input((1, 28, 28, 1), scale=0.02, zero_point=-128)
    for c_in, c_out in ((1, 6), (6, 16)):
        t = b.conv2d(t, rng.integers(-127, 128, (c_out, 5, 5, c_in)),
                     rng.integers(-500, 500, c_out), **q)
        t = b.pool("MAX_POOL_2D", t, filter=(2, 2), stride=(2, 2))
    t = b.reshape(t, (1, 7 * 7 * 16))
    for k, n in ((784, 120), (120, 84)):
        t = b.fully_connected(t, rng.integers(-127, 128, (n, k)), rng.integers(-500, 500, n),
                              **q)
    t = b.fully_connected(t, rng.integers(-127, 128, (10, 84)), rng.integers(-500, 500, 10),
                          w_scale=0.01, out_scale=0.05, out_zero_point=0)
    (tmp_path / "lenet.tflite").write_bytes(b.to_bytes([image], [t]))
    x = rng.integers(-128, 128, (2, 28, 28, 1)).astype(np.int8)
    np.save(tmp_path / "X.npy", x)
    code, out, err = _run_cli(capsys, "infer", {"--model": tmp_path / "lenet.tflite",
                                                "--input": tmp_path / "X.npy", "--json": None})
    assert code == 0, err
    graph = load_tflite(tmp_path / "lenet.tflite")
    expected = np.concatenate([graph.run([s[None]])[0] for s in x])
    assert json.loads(out)["output"] == expected.tolist()
