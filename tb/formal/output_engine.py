"""The output engine (:class:`pim_macro.hw.output_engine.OutputEngine`): every response gets
exactly its words (bounded), and none is pushed into a full output FIFO (unbounded).

The environment is the macro's: the response queue keeps the stream rule (a response offered and
not taken is offered again, unchanged); the responses are such as the controller queues (an
emitting one counts 1 to ``lanes`` lanes); a capture, once ``full``, stays until the engine
releases it; the output FIFO is a level counter that a free sink drains (the engine sees the
pop of the cycle, as in the macro); accumulators and channels are free values. ``-p2`` proofs
build the two-pass requantizers of the iCE40 (:class:`pim_macro.hw.fabric.Fabric`
``requant_passes``), which pace the lane groups.

``oe-*`` (``bmc``): in every cycle of a run from reset:

* the engine never pushes while the FIFO is full (a word pushed then would be lost);
* no word without a response behind it: words pushed never exceed those owed by the responses
  taken (a status word each, then ``count`` words for ``EMIT_RAW``, ``ceil(count / 4)`` for
  ``EMIT_INT8``, none for ``WRITEBACK`` and a bare status);
* whenever the engine is idle, every response taken has had all its words, and every
  ``WRITEBACK`` its ``writeback_done``;
* a response's first word is its status word.

``oe-room-*`` (``prove``): the first of these, unbounded, with the invariant that makes it
inductive (the FIFO's level plus the groups in the engine's pipeline never exceed its depth, and
no group is in flight while the engine waits for a response).
"""

from amaranth import *
from amaranth.hdl import Assert, Assume

from pim_macro.hw.fabric import Fabric
from pim_macro.hw.isa import MacroConfig
from pim_macro.hw.output_engine import OutputEngine, ResponseKind, OUT_FIFO_DEPTH, Response

from .engine import Proof, find_signal


__all__ = ["OutputEngineHarness", "PROOFS"]


#: Yosys commands that make the requantizers' multipliers free values: the properties count
#: words and never look at them, and a free value stands for every product (sound for
#: assertions).
CUT_MULTIPLIERS = ("cutpoint top.dut.requant*/t:$mul",)


class _FabricOnly:
    """A stand-in platform that only names a :class:`pim_macro.hw.fabric.Fabric`."""

    def __init__(self, fabric):
        self.pim_fabric = fabric


class OutputEngineHarness(Elaboratable):
    """An :class:`OutputEngine` of ``config`` under the macro's environment, its requantizers
    of ``passes`` multiplier passes."""

    def __init__(self, config, *, room_only=False, passes=1):
        self.config, self.room_only, self.passes = config, room_only, passes
        self.dut = OutputEngine(config)
        self.dut._MustUse__silence = True   # elaborated by hand below, to reach its pipeline
        self.r_valid, self.r_payload = Signal(), Signal(Response)
        self.full, self.pop = Signal(), Signal()
        self.acc = Signal(len(self.dut.captured.acc.as_value()))
        self.bias = Signal(len(self.dut.bias_read.data.as_value()))
        self.ports = [self.r_valid, self.r_payload.as_value(), self.full, self.pop, self.acc,
                      self.bias]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        dut = self.dut
        engine = dut.elaborate(_FabricOnly(Fabric(requant_passes=self.passes)))
        m.submodules.dut = engine
        lanes = self.config.lanes
        responses, head = dut.responses, self.r_payload
        m.d.comb += [responses.valid.eq(self.r_valid), responses.payload.eq(head),
                     dut.captured.full.eq(self.full), dut.captured.acc.eq(self.acc),
                     dut.bias_read.data.eq(self.bias)]

        # ---- The environment --------------------------------------------------------------
        stalled, offered = Signal(), Signal(Response)
        m.d.sync += [stalled.eq(responses.valid & ~responses.ready), offered.eq(head)]
        with m.If(stalled):
            m.d.comb += Assume(self.r_valid & (head.as_value() == offered.as_value()))
        with m.If(self.r_valid & (head.kind != ResponseKind.STATUS_ONLY)):
            m.d.comb += Assume((head.count >= 1) & (head.count <= lanes))
        held = Signal()
        m.d.sync += held.eq(self.full & ~dut.captured.release)
        with m.If(held):
            m.d.comb += Assume(self.full)
        level = Signal(range(OUT_FIFO_DEPTH + 1))
        popped = self.pop & (level != 0)
        m.d.comb += [dut.out.rdy.eq(level != OUT_FIFO_DEPTH), dut.out.level.eq(level),
                     dut.out.pop.eq(popped)]
        m.d.sync += level.eq(level + (dut.out.en & dut.out.rdy) - popped)

        # ---- What the responses taken owe -------------------------------------------------
        taken = responses.valid & responses.ready
        words = Signal(range(lanes + 2))
        with m.Switch(head.kind):
            with m.Case(ResponseKind.EMIT_RAW):
                m.d.comb += words.eq(1 + head.count)
            with m.Case(ResponseKind.EMIT_INT8):
                m.d.comb += words.eq(1 + (head.count + 3) // 4)
            with m.Default():
                m.d.comb += words.eq(1)
        owed, pushed = Signal(10), Signal(10)
        writebacks, written = Signal(6), Signal(6)
        m.d.sync += [owed.eq(owed + Mux(taken, words, 0)), pushed.eq(pushed + dut.out.en),
                     writebacks.eq(writebacks + (taken & (head.kind == ResponseKind.WRITEBACK))),
                     written.eq(written + dut.writeback_done)]
        m.d.comb += Assert(~dut.out.en | dut.out.rdy, "never a push into a full FIFO")
        if self.room_only:
            # The invariant that makes it inductive: every group in the pipeline has its room
            # (it pushes at most one word), and none is in flight while the engine waits for
            # a response.
            stage_valid = find_signal(engine, "stage_valid")
            fsm = engine._generated["out"]
            waiting = fsm._data["signal"] == fsm.encoding["IDLE"]
            in_flight = sum(stage_valid[k] for k in range(len(stage_valid)))
            m.d.comb += [
                Assert(level + in_flight <= OUT_FIFO_DEPTH, "room for every group in flight"),
                Assert(~waiting | (stage_valid == 0), "no group in flight while waiting"),
            ]
            return m
        m.d.comb += [
            Assert(pushed + dut.out.en <= owed + Mux(taken, words, 0),
                   "no word without a response behind it"),
            Assert(~dut.idle | (pushed == owed), "idle: every response had all its words"),
            Assert(~dut.idle | (written == writebacks),
                   "idle: every write-back reported done"),
            Assert(~taken | (dut.out.en & (dut.out.data == head.status)),
                   "a response's first word is its status word"),
        ]
        return m


def _suffix(passes):
    return "" if passes == 1 else f"-p{passes}"


def _proof(requantizers, depth, passes=1):
    config = MacroConfig(lanes=4, rows_per_cycle=1, depth=1, act_depth=4, bias_depth=1,
                         requantizers=requantizers)
    return Proof(f"oe-q{requantizers}{_suffix(passes)}", config.tag(), "output engine: each "
                 "response exactly its words, never a push into a full FIFO",
                 lambda: OutputEngineHarness(config, passes=passes), "bmc", depth,
                 CUT_MULTIPLIERS)


def _room_proof(requantizers, passes=1):
    config = MacroConfig(lanes=4, rows_per_cycle=1, depth=1, act_depth=4, bias_depth=1,
                         requantizers=requantizers)
    return Proof(f"oe-room-q{requantizers}{_suffix(passes)}", config.tag(), "output engine: "
                 "never a push into a full FIFO, unbounded",
                 lambda: OutputEngineHarness(config, room_only=True, passes=passes), "prove", 3,
                 CUT_MULTIPLIERS)


PROOFS = [*(_proof(q, 30) for q in (1, 2, 4)), *(_room_proof(q) for q in (1, 2, 4)),
          _proof(1, 30, passes=2), _room_proof(1, passes=2)]
