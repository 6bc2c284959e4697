"""The regression report's verdicts and files (pim_macro.tb.experiments.regression), on rows shaped
like real ones."""

import json

from pim_macro.hw.isa import MacroConfig
from pim_macro.tb.experiments import regression


def sweep_row(speedup, ideal=8, **overrides):
    row = {"lanes": 8, "rows_per_cycle": 1, "bus_bits": 8, "sim": "verilator", "macs": 1000,
           "pim_cycles": 100, "baseline_cycles": round(100 * speedup), "speedup": speedup,
           "ideal": ideal, "of_ideal": speedup / ideal, "utilization": 0.99, "bus_beats": 800,
           "bus_bound": ideal > 1, "model_match": True, "golden_match": True, "batch": 64,
           "energy": {}, "pim_pj": 1000.0,
           "baseline_pj": 1250.0, "energy_ratio": 1.25}
    row.update(overrides)
    return row


def workload_row(**overrides):
    row = {"workload": "w", "sim": "icarus", "config": MacroConfig().as_dict(), "macs": 512,
           "pim_cycles": 70, "baseline_cycles": 130, "speedup": 130 / 70, "ideal": 2,
           "utilization": 0.9, "row_reads": 64, "bus_beats": 128, "golden_match": True,
           "outputs_identical": True, "model_match": True, "errors": [], "batch": 1,
           "energy": {arch: {"table": "45nm", "node": "45 nm, 0.9 V", "total_pj": total,
                             "pj": {"mac": 0.1 * total, "sram_read": 0.9 * total},
                             "bytes": {"offchip": 512.0}}
                      for arch, total in (("pim", 2000.0), ("baseline", 3000.0))},
           "pim_pj": 2000.0, "baseline_pj": 3000.0, "energy_ratio": 1.5}
    row.update(overrides)
    return row


def test_sweep_tolerance_is_three_percent_of_ideal():
    assert regression.failures([], [sweep_row(7.8)]) == []          # 0.975 of ideal
    [problem] = regression.failures([], [sweep_row(7.7)])             # 0.9625 of ideal
    assert "below 97% of the ideal 8" in problem
    assert regression.failures([], [sweep_row(0.9, ideal=1)]) == [], \
        "a configuration that is not bus-bound has no ideal to reach"
    assert regression.failures([], [sweep_row(7.0)], check_ideal=False) == []


def test_mismatches_fail_the_regression():
    assert regression.failures([workload_row()], []) == []
    problems = regression.failures([workload_row(outputs_identical=False),
                                    workload_row(model_match=False)], [])
    assert len(problems) == 2
    assert "golden" in problems[0] and "cycle model" in problems[1]
    assert regression.failures([], [sweep_row(8.0, model_match=False)])


def test_report_files(tmp_path):
    rows = [sweep_row(7.9), sweep_row(15.8, ideal=16, lanes=16)]
    text = regression.write_report([workload_row()], rows, directory=tmp_path)
    assert "| w | icarus | 8 x 1, 32 | 70 | 130 | 1.86 | 2 |" in text
    assert "| 16 | 1 | 8 | 100 | 1580 | 15.80 | 16 | 0.988 | 0.990 | 1.250 | exact |" in text
    assert ("| w | 1 | 2.00 | 3.00 | 1.50 | sram_read 90%, mac 10% | sram_read 90%, mac 10% "
            "| 512 | exact (icarus) |") in text
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "regression.json").read_text())
    assert saved["sweep"][1]["ideal"] == 16
    assert (tmp_path / "regression.md").read_text() == text


def test_sweep_covers_the_required_grid():
    configs = regression.sweep_configs()
    grid = {(c.lanes, c.bus_bits, c.rows_per_cycle) for c in configs}
    assert grid == {(l, b, r) for l in (8, 16, 32, 64) for b in (8, 16, 32) for r in (1, 2)}
    for config in configs:
        workload = regression.sweep_workload(config)
        assert workload.macs == config.lanes * 256 * 64
