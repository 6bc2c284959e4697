"""The whole macro, bounded: its stream contracts and the reach of its controller.

:class:`MacroHarness` drives a :class:`pim_macro.hw.macro.Macro` of the smallest configuration
from free stream inputs. The environment keeps the stream rule on the input stream (an
``Assume``: a word offered and not taken is offered again, unchanged). The harness reads the
input stream as the ISA says (header, :func:`~pim_macro.tb.formal.decoder.specification`'s
argument and payload words) and the output stream (a status word, then as many data words as its
count says), and keeps its own queue of the commands not yet answered.

``macro-stream`` (``bmc``): in every cycle of a run from reset (the harness's initial state):

* the output stream keeps the stream rule: ``valid`` and ``payload`` held while not ready;
* no output word without a command behind it: a word is offered only while the commands taken
  so far owe one (a status word each, then the data words of an OK one, by the specification);
* every status word answers the oldest command not yet answered: its opcode, its error code
  (the specification's verdict on the words the harness took) and its count;
* neither internal FIFO is written while full (nothing is dropped on the way out);
* a failed command executes nothing: a weight, channel or activation write of a load, an operation
  for the MAC engine or a queued write-back happens only for a command the specification
  passed.

``macro-cover`` (``cover``): every state of the controller's FSM is reached, and every
:class:`~pim_macro.hw.isa.Error` code leaves the macro in a status word.

Both are bounded (BMC of ``depth`` cycles from reset): a whole macro has too much state for
k-induction without invariants on every engine.
"""

from amaranth import *
from amaranth.hdl import Assert, Assume, Cover

from pim_macro.hw.isa import STREAM_BITS, Error, Header, Status, MacroConfig
from pim_macro.hw.macro import Macro

from .decoder import specification, args_of
from .engine import Proof, find_signal


__all__ = ["MacroHarness", "PROOFS", "CONFIG"]


#: The smallest legal configuration, one requantizer: the least state for the solver.
CONFIG = MacroConfig(lanes=4, rows_per_cycle=1, depth=1, act_depth=4, bias_depth=1,
                     requantizers=1)
#: Commands the harness remembers between taking their last argument and seeing their status.
QUEUE = 8


class MacroHarness(Elaboratable):
    """A :class:`Macro` of ``config`` between a free source and a free sink. ``checks`` adds
    the assertions of ``macro-stream``, ``covers`` the covers of ``macro-cover``."""

    def __init__(self, config=CONFIG, *, checks=True, covers=False):
        self.config, self.checks, self.covers = config, checks, covers
        self.dut = Macro(config)
        self.dut._MustUse__silence = True   # elaborated by hand below, to reach its FSM
        self.i_valid, self.i_payload = Signal(), Signal(STREAM_BITS)
        self.o_ready = Signal()
        self.ports = [self.i_valid, self.i_payload, self.o_ready]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        dut, cfg = self.dut, self.config
        macro = dut.elaborate(platform)
        m.submodules.macro = macro
        i, o = dut.i_stream, dut.o_stream
        m.d.comb += [i.valid.eq(self.i_valid), i.payload.eq(self.i_payload),
                     o.ready.eq(self.o_ready)]
        taken, given = i.valid & i.ready, o.valid & o.ready

        # ---- The source keeps the stream rule (an assumption on the environment) ------------
        i_stalled, i_offered = Signal(), Signal(STREAM_BITS)
        m.d.sync += [i_stalled.eq(i.valid & ~i.ready), i_offered.eq(i.payload)]
        with m.If(i_stalled):
            m.d.comb += Assume(i.valid & (i.payload == i_offered))

        # ---- The input stream, read as the ISA says --------------------------------------
        phase = Signal(range(4))            # 0 header, 1 first argument, 2 second, 3 payload
        header, arg0, arg1 = Signal(32), Signal(32), Signal(32)
        payload_left = Signal(32)
        # The command words as they are once this cycle's word is taken.
        h_now = Mux(taken & (phase == 0), i.payload, header)
        a0_now = Mux(phase == 0, 0, Mux(taken & (phase == 1), i.payload, arg0))
        a1_now = Mux(phase == 0, 0, Mux(taken & (phase == 2), i.payload, arg1))
        spec = specification(m, cfg, h_now, a0_now, a1_now)
        n_args = args_of(m, i.payload)
        complete = Signal()                 # this cycle's word completes a command
        with m.If(taken):
            with m.Switch(phase):
                with m.Case(0):
                    m.d.sync += [header.eq(i.payload), arg0.eq(0), arg1.eq(0)]
                    m.d.comb += complete.eq(n_args == 0)
                    m.d.sync += phase.eq(Mux(n_args == 0, 0, 1))
                with m.Case(1):
                    m.d.sync += arg0.eq(i.payload)
                    m.d.comb += complete.eq(spec["args"] == 1)
                    m.d.sync += phase.eq(Mux(spec["args"] == 1, 0, 2))
                with m.Case(2):
                    m.d.sync += arg1.eq(i.payload)
                    m.d.comb += complete.eq(1)
                    m.d.sync += phase.eq(0)
                with m.Case(3):
                    m.d.sync += payload_left.eq(payload_left - 1)
                    with m.If(payload_left == 1):
                        m.d.sync += phase.eq(0)
            with m.If(complete & (spec["payload"] != 0)):
                m.d.sync += [phase.eq(3), payload_left.eq(spec["payload"])]

        # ---- What the commands owe, and a queue of their expected status words -------------
        ok = spec["error"] == Error.OK.value
        expected = Signal(Status)
        m.d.comb += [expected.opcode.eq(Header(h_now).opcode),
                     expected.error.eq(spec["error"]),
                     expected.count.eq(Mux(ok, spec["response"], 0))]
        owed, sent = Signal(16), Signal(16)
        m.d.sync += [owed.eq(owed + Mux(complete, 1 + expected.count, 0)), sent.eq(sent + given)]
        queue = [Signal(Status, name=f"expect{k}") for k in range(QUEUE)]
        queued = Signal(range(QUEUE + 2))
        data_left = Signal(16)              # data words still to come after a status word
        is_status = data_left == 0
        popped = given & is_status
        kept = Mux(popped, queued - 1, queued)
        for k, slot in enumerate(queue):
            after_pop = queue[k + 1] if k + 1 < QUEUE else slot
            m.d.sync += slot.eq(Mux(complete & (kept == k), expected,
                                    Mux(popped, after_pop, slot)))
        m.d.sync += queued.eq(kept + complete)
        word = Status(o.payload)
        with m.If(given):
            m.d.sync += data_left.eq(Mux(is_status, word.count, data_left - 1))

        if self.checks:
            o_stalled, o_offered = Signal(), Signal(STREAM_BITS)
            m.d.sync += [o_stalled.eq(o.valid & ~o.ready), o_offered.eq(o.payload)]
            with m.If(o_stalled):
                m.d.comb += Assert(o.valid & (o.payload == o_offered),
                                   "output valid and payload held while not ready")
            with m.If(o.valid):
                m.d.comb += Assert(sent < owed, "no output word without a command behind it")
            with m.If(o.valid & is_status):
                m.d.comb += [
                    Assert(queued != 0, "a status word answers a command"),
                    Assert(o.payload == queue[0].as_value(),
                           "the status word of the oldest command not yet answered"),
                ]
            m.d.comb += Assert(queued <= QUEUE, "the harness's queue is deep enough")
            # A failed command executes nothing: every write of a load, every operation handed
            # to the MAC engine and every write-back queued belongs to the last command taken,
            # and happens only when the specification said OK.
            engine = macro._named_submodules["mac_engine"][0]
            bias_mem = macro._named_submodules["bias_mem"][0]
            writebacks = macro._named_submodules["writebacks"][0]
            last_ok = Signal()
            with m.If(complete):
                m.d.sync += last_ok.eq(ok)
            channel_write = (bias_mem.write.bias | bias_mem.write.multiplier
                             | bias_mem.write.shift)
            for name, strobe in [("weight write", engine.write.en),
                                 ("channel write", channel_write),
                                 ("activation load", find_signal(macro, "load_act_en").any()),
                                 ("MAC engine operation", engine.ops.valid),
                                 ("write-back queued", writebacks.add)]:
                m.d.comb += Assert(~strobe | last_ok, f"{name} only for a command that passed")
            for name in ("out_fifo", "responses"):
                fifo = macro._named_submodules[name][0]
                m.d.comb += Assert(~fifo.w_en | fifo.w_rdy, f"{name} never written while full")

        if self.covers:
            fsm = macro._generated["ctrl"]
            state = fsm._data["signal"]
            for name, value in fsm.encoding.items():
                m.d.comb += Cover(state == value, f"controller state {name}")
            for error in Error:
                m.d.comb += Cover(given & is_status & (word.error == error),
                                  f"status {error.name} answered")
        return m


PROOFS = [
    Proof("macro-stream", CONFIG.tag(), "whole macro: output stream rule, no word without a "
          "command, statuses in order = spec, no FIFO overflow",
          lambda: MacroHarness(), "bmc", 12),
    Proof("macro-cover", CONFIG.tag(), "whole macro: every controller state, every error code "
          "answered", lambda: MacroHarness(checks=False, covers=True), "cover", 12),
]
