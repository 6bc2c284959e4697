"""Tests of the ``pim`` command-line tool (pim_macro.sw.cli), run as a subprocess on temporary .npy
files: correct results, the --json and --out contracts, one-line errors, and RTL runs."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pim_macro.hw.isa import Counter, MacroConfig
from pim_macro.sw import cli
from pim_macro.sw.paths import MODELS_DIR


def _pim_command():
    script = Path(sys.executable).parent / "pim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pim_macro.sw.cli"]


PIM = _pim_command()


def reference(w, x, bias=None, mult=None, shift=None, relu=False):
    """Y = X @ W.T (+ bias) wrapped to int32, then the pim_macro.hw.isa requantization rule."""
    v = x.astype(np.int64) @ w.astype(np.int64).T
    if bias is not None:
        v = v + bias.astype(np.int64)
    v = (v + 2**31) % 2**32 - 2**31
    if mult is None:
        return v.astype(np.int32)
    y = np.floor_divide(v * mult + ((1 << (shift - 1)) if shift else 0), 2**shift)
    y = np.clip(y, -128, 127)
    return (np.maximum(y, 0) if relu else y).astype(np.int8)


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
    a, p, tmp = files
    out = tmp / "Y.npy"
    args = ["gemv", "--weights", p["W"], "--input", p["X"], "--bias", p["B"], "--mult", 900,
            "--shift", 16, "--out", out] + (["--relu"] if relu else [])
    result = ok(pim(*args))
    assert result.stdout == "", f"with --out and no --json stdout should be empty: {result.stdout}"
    y = np.load(out)
    expected = reference(a["W"], a["X"], a["B"], 900, 16, relu)
    assert y.dtype == np.int8 and y.shape == (3, 13), \
        f"Y.npy should be int8 (3, 13): {y.dtype} {y.shape}"
    assert np.array_equal(y, expected), "Y.npy should match the numpy reference"


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
    result = ok(pim("gemv", "--weights", p["W"], "--input", p["X"], "--mult", 1, "--shift", 8,
                    "--json", "--out", out))
    report = json.loads(result.stdout)
    assert "output" not in report, "with --out the JSON should not repeat Y"
    assert report["mode"] == "int8" and report["shape"]["batch"] == 3, f"wrong report: {report}"
    assert np.array_equal(np.load(out), reference(a["W"], a["X"], None, 1, 8)), \
        "--out should hold the requantized Y"


def test_defaults_come_from_macro_config():
    args = cli.build_parser().parse_args(["gemv", "--weights", "w", "--input", "x"])
    defaults = MacroConfig().as_dict()
    assert {name: getattr(args, name) for name in defaults} == defaults, \
        "configuration options should default to MacroConfig's defaults"


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
    "mult without shift": (["--weights", "W", "--input", "X", "--mult", "3"],
                           "--mult and --shift must be given together"),
    "shift without mult": (["--weights", "W", "--input", "X", "--shift", "3"],
                           "--mult and --shift must be given together"),
    "relu alone": (["--weights", "W", "--input", "X", "--relu"], "--relu needs --mult"),
    "shift range": (["--weights", "W", "--input", "X", "--mult", "3", "--shift", "32"],
                    "shift must be 0..31, not 32"),
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
    if sim == "icarus" and not shutil.which("iverilog"):
        pytest.skip("Icarus Verilog is not installed")
    result = ok(pim("gemv", "--weights", p["W"], "--input", p["X"], "--bias", p["B"],
                    "--mult", 2000, "--shift", 18, "--sim", sim, "--json"))
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{sim}: stdout should be exactly one JSON object, got:\n{result.stdout}")
    assert result.stderr == "", f"{sim}: nothing should reach stderr: {result.stderr!r}"
    assert report["sim"] == sim and report["cycles"] > 0, f"{sim}: expected real cycles: {report}"
    assert report["output"] == reference(a["W"], a["X"], a["B"], 2000, 18).tolist(), \
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
             rng.integers(-2000, 2000, 4, dtype=np.int32), 900, 13, True, (1, 6, 6),
             (1, 1), (1, 1)),
        Dense(rng.integers(-128, 128, (10, 144), dtype=np.int8),
              rng.integers(-2000, 2000, 10, dtype=np.int32), 700, 15, False)))
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
    "model missing a key": (["--model", "broken"], "key relu1 is missing"),
}


@pytest.mark.parametrize("case", INFER_ERRORS)
def test_infer_errors(network_files, tmp_path, case):
    p, _ = network_files
    np.save(tmp_path / "bad_x.npy", np.zeros((2, 1, 5, 5), np.int8))
    np.save(tmp_path / "bad_labels.npy", np.zeros(3, np.int64))
    with np.load(p["model"]) as data:
        arrays = {k: data[k] for k in data.files if k != "relu1"}
    np.savez(tmp_path / "broken.npz", **arrays)
    args = {"--model": str(p["model"]), "--input": str(p["x"]), "--labels": str(p["labels"])}
    extra, message = INFER_ERRORS[case]
    named = {"bad_x": tmp_path / "bad_x.npy", "bad_labels": tmp_path / "bad_labels.npy",
             "broken": tmp_path / "broken.npz"}
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
