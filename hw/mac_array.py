"""MAC lanes: one multiplier per SRAM column and sub-array, an adder tree per lane, accumulators."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .isa import MacroConfig, ACC_BITS
from .fabric import fabric_for
from .weight_store import row_layout


__all__ = ["MacArray"]


class MacArray(wiring.Component):
    """``lanes`` accumulators fed by ``lanes x rows_per_cycle`` int8 multipliers.

    Each cycle with ``valid`` high, lane ``l`` adds ``sum_r weights[r][l] * acts[r]`` to its
    accumulator; with ``first`` also high the accumulator is replaced instead (clear-then-add,
    so a fresh sum costs no extra cycle). Accumulators wrap modulo ``2 ** 32``.

    ``capture`` (with or without ``valid``) copies the accumulators into ``acc_out`` as they are
    *before* the row in the same slot lands, and strobes ``captured``: so the results of one
    accumulation can be read out while the next one, started in the same cycle, overwrites ``acc``.
    ``shift`` (0 .. ``requantizers``) moves ``acc_out`` down by that many lanes in the next cycle
    (``acc_out[l] <= acc_out[l + shift]``, lanes past the end undefined; a capture landing then
    wins): its reader takes the lanes from the front, with no lane multiplexer (on an iCE40,
    a 2:1 multiplexer before each capture flip-flop, in the same logic cell, instead of
    ``requantizers`` ``lanes``:1 multiplexers of 32 bits).

    Timing: fully pipelined, one slot per cycle, no backpressure. A row presented in cycle ``t`` is
    in ``acc`` from cycle ``t + LATENCY``; a capture presented in cycle ``t`` is in ``acc_out``
    (and ``captured`` strobes in cycle ``t + LATENCY - 1``). ``busy`` is high while any slot is in
    flight. Stages: registered weights and activations (the multipliers' input registers on
    FPGAs: the block RAM's output goes no further than them), registered products (their output
    registers), registered adder tree over the R sub-arrays, accumulate. The platform's
    :class:`pim_macro.hw.fabric.Fabric` picks the multipliers' form (``*`` or hand-placed iCE40
    DSPs); the timing is the same.
    """

    #: Cycles from a slot on the inputs to its effect on ``acc`` / ``acc_out``.
    LATENCY = 4

    def __init__(self, config: MacroConfig):
        self._config = config
        super().__init__({
            "valid":    In(1),
            "first":    In(1),
            "capture":  In(1),
            "weights":  In(row_layout(config)),
            "acts":     In(data.ArrayLayout(signed(8), config.rows_per_cycle)),
            "acc":      Out(data.ArrayLayout(signed(ACC_BITS), config.lanes)),
            "acc_out":  Out(data.ArrayLayout(signed(ACC_BITS), config.lanes)),
            "captured": Out(1),
            "shift":    In(range(config.requantizers + 1)),
            "busy":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, rows = self._config.lanes, self._config.rows_per_cycle

        # Stage 1: operands. Stage 2: products. Stage 3: per-lane sum over the sub-arrays.
        # Stage 4: accumulate.
        valid = Signal(self.LATENCY - 1)
        first = Signal(self.LATENCY - 1)
        capture = Signal(self.LATENCY - 1)
        m.d.sync += [valid.eq(Cat(self.valid, valid[:-1])), first.eq(Cat(self.first, first[:-1])),
                     capture.eq(Cat(self.capture, capture[:-1]))]
        m.d.comb += [self.busy.eq(valid.any() | capture.any()), self.captured.eq(capture[-1])]

        # Stages 1 and 2: products[r][lane] of the registered operands, registered. Stage 3:
        # lane_sums[lane], their registered sum over the sub-arrays.
        products = [[Signal(signed(16), name=f"prod_l{lane}_r{r}") for lane in range(lanes)]
                    for r in range(rows)]
        lane_sums = [Signal(signed(16 + (rows - 1).bit_length()), name=f"sum_l{lane}")
                     for lane in range(lanes)]
        in_dsp = fabric_for(platform).mac == "ice40_dual"
        sums_in_dsp = in_dsp and rows == 1
        if in_dsp:
            # Two lanes per SB_MAC16 in dual 8x8 mode: A = (odd lane, even lane) weights,
            # B = the activation twice, both registered in the block (A_REG, B_REG); the top and
            # bottom 8x8 products, registered too (TOP/BOT_8x8_MULT_REG), come out on O[31:16]
            # and O[15:0]. With one sub-array the block's output registers (the adders with
            # C = D = 0) are stage 3 as well, so no fabric flip-flop holds a product.
            for r in range(rows):
                for pair in range(lanes // 2):
                    out = Signal(32, name=f"dsp_r{r}_p{pair}")
                    m.submodules[f"dsp_r{r}_p{pair}"] = Instance(
                        "SB_MAC16",
                        p_MODE_8x8=1, p_A_SIGNED=1, p_B_SIGNED=1, p_A_REG=1, p_B_REG=1,
                        p_TOP_8x8_MULT_REG=1, p_BOT_8x8_MULT_REG=1,
                        p_TOPADDSUB_LOWERINPUT=1, p_TOPADDSUB_UPPERINPUT=1,
                        p_BOTADDSUB_LOWERINPUT=1, p_BOTADDSUB_UPPERINPUT=1,
                        p_TOPOUTPUT_SELECT=1 if sums_in_dsp else 2,
                        p_BOTOUTPUT_SELECT=1 if sums_in_dsp else 2,
                        i_CLK=ClockSignal(), i_CE=1,
                        i_A=Cat(self.weights[r][2 * pair], self.weights[r][2 * pair + 1]),
                        i_B=Cat(self.acts[r], self.acts[r]),
                        i_C=0, i_D=0, i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0,
                        i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=0, i_ORSTBOT=0,
                        i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0, i_ADDSUBBOT=0,
                        i_OHOLDTOP=0, i_OHOLDBOT=0, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
                        o_O=out)
                    if sums_in_dsp:
                        m.d.comb += [lane_sums[2 * pair].eq(out[:16].as_signed()),
                                     lane_sums[2 * pair + 1].eq(out[16:].as_signed())]
                    else:
                        m.d.comb += [products[r][2 * pair].eq(out[:16]),
                                     products[r][2 * pair + 1].eq(out[16:])]
        else:
            weights = Signal.like(self.weights)
            acts = Signal.like(self.acts)
            m.d.sync += [weights.eq(self.weights), acts.eq(self.acts)]
            for r in range(rows):
                for lane in range(lanes):
                    m.d.sync += products[r][lane].eq(weights[r][lane] * acts[r])
        if not sums_in_dsp:
            for lane in range(lanes):
                m.d.sync += lane_sums[lane].eq(sum(products[r][lane] for r in range(rows)))

        outs = [Signal(signed(ACC_BITS), name=f"out_l{lane}") for lane in range(lanes)]
        g = self._config.requantizers
        for lane in range(lanes):
            lane_sum = lane_sums[lane]
            acc = Signal(signed(ACC_BITS), name=f"acc_l{lane}")   # one name per lane, for waves
            out = outs[lane]
            m.d.comb += [self.acc[lane].eq(acc), self.acc_out[lane].eq(out)]
            with m.If(valid[-1]):
                m.d.sync += acc.eq(Mux(first[-1], 0, acc) + lane_sum)
            with m.If(capture[-1]):
                m.d.sync += out.eq(acc)
            with m.Elif(self.shift != 0):
                with m.Switch(self.shift):
                    for step in range(1, g + 1):
                        if lane + step < lanes:
                            with m.Case(step):
                                m.d.sync += out.eq(outs[lane + step])
        return m
