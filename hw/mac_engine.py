"""The MAC engine: a small queue of MATVEC and capture operations, run in the background."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .isa import MacroConfig, ACC_BITS
from .mac_array import MacArray
from .scoreboard import Span


__all__ = ["MacEngine", "OP_SLOTS", "Tag"]


#: Operations the engine holds: the one being issued, and the ones queued behind it.
OP_SLOTS = 4

#: What travels with a weight row request through the weight store.
Tag = data.StructLayout({"act": 16, "first": 1, "capture": 1, "last": 1, "slot": 2})

#: A queued operation: the weight rows and activation bytes a MATVEC reads (``rows.hi =
#: rows.lo + count``, ``acts.hi = acts.lo + count * R``) come precomputed, so that the hazard
#: checks compare registers without adding.
_Op = data.StructLayout({"capture": 1, "rows": Span(16), "acts": Span(16), "count": 16,
                         "first": 1})


class MacEngine(wiring.Component):
    """Runs MATVECs and accumulator captures in order while the controller decodes ahead.

    Operations
    ----------
    * MATVEC (``row``, ``act``, ``count``, ``first``): requests rows ``row .. row+count-1`` from
      the weight store, one whenever it is ready; the activations of row ``j`` (``R`` bytes at
      ``act + R*j``) are read from the activation buffer the cycle before the row lands. ``first``
      clears the accumulators with the first row (no ACCUMULATE flag).
    * CAPTURE: copies the accumulators, as they stand after every earlier MATVEC, into
      ``acc_out`` for the output engine. Only one capture can be outstanding: it waits until the
      output engine has released the previous one (``release``). When a MATVEC is queued right
      behind it, the capture rides on that MATVEC's first row (no bubble); otherwise (nothing or
      another capture behind it) it waits until the store is empty and enters the MAC pipeline
      on its own.

    Timing
    ------
    ``push`` (when ``can_push``) enqueues an operation in one cycle; it can start the next cycle.
    A slot is free again when its operation has retired: a MATVEC when its last row has landed,
    a capture when it has been issued. ``w_conflict`` / ``a_conflict`` say, combinationally,
    whether a live MATVEC reads weight rows in the span ``chk_rows`` or activation bytes in
    ``chk_acts`` (:class:`pim_macro.hw.scoreboard.Span`). ``idle``: nothing queued, in flight or
    in the MAC pipeline.
    """

    def __init__(self, config: MacroConfig, weight_store):
        self._config = config
        self._store_class = weight_store
        super().__init__({
            "push":         In(1),
            "push_op":      In(_Op),
            "can_push":     Out(1),
            "chk_rows":     In(Span(16)),
            "chk_acts":     In(Span(16)),
            "w_conflict":   Out(1),
            "a_conflict":   Out(1),
            "idle":         Out(1),
            "acc_out":      Out(data.ArrayLayout(signed(ACC_BITS), config.lanes)),
            "acc_out_full": Out(1),
            "release":      In(1),
            "act_addr":     Out(range(config.act_depth // 4)),
            "act_en":       Out(1),
            "act_data":     In(32),
            "wr_en":        In(1),
            "wr_row":       In(range(config.depth)),
            "wr_word":      In(range(config.row_words)),
            "wr_data":      In(32),
            "mac_active":   Out(1),
            "row_read":     Out(1),
            "bus_beat":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows = cfg.rows_per_cycle
        m.submodules.weight_store = store = self._store_class(cfg, tag_shape=Tag)
        m.submodules.macs = macs = MacArray(cfg)

        m.d.comb += [
            store.wr_en.eq(self.wr_en), store.wr_row.eq(self.wr_row),
            store.wr_word.eq(self.wr_word), store.wr_data.eq(self.wr_data),
            self.row_read.eq(store.row_read), self.bus_beat.eq(store.bus_beat),
            self.acc_out.eq(macs.acc_out),
        ]

        # ---- The operation queue: OP_SLOTS slots in a ring --------------------------------
        ops = Array(Signal(_Op, name=f"op{i}") for i in range(OP_SLOTS))
        live = Signal(OP_SLOTS)
        wp = Signal(range(OP_SLOTS))         # next slot to fill
        ip = Signal(range(OP_SLOTS))         # slot being issued
        pending = Signal(range(OP_SLOTS + 1))  # filled but not yet fully issued
        index = Signal(16)                   # next row of the MATVEC at ip
        m.d.comb += self.can_push.eq(~live.bit_select(wp, 1))
        retire_issue = Signal(OP_SLOTS)      # capture slots retired as they issue
        retire_land = Signal(OP_SLOTS)       # MATVEC slots retired as their last row lands
        push_now = self.push & self.can_push
        with m.If(push_now):
            m.d.sync += ops[wp].eq(self.push_op)
            m.d.sync += wp.eq(wp + 1)
        m.d.sync += live.eq((live | Mux(push_now, 1 << wp, 0)) & ~retire_issue & ~retire_land)
        issued = Signal(range(3))            # operations fully issued this cycle
        m.d.sync += pending.eq(pending + push_now - issued)

        # Hazard checks over live MATVECs.
        w_hits, a_hits = [], []
        for i in range(OP_SLOTS):
            op = ops[i]
            is_mv = live[i] & ~op.capture
            w_hits.append(is_mv & op.rows.overlaps(self.chk_rows))
            a_hits.append(is_mv & op.acts.overlaps(self.chk_acts))
        m.d.comb += [self.w_conflict.eq(Cat(w_hits).any()), self.a_conflict.eq(Cat(a_hits).any())]

        # ---- Issue -------------------------------------------------------------------------
        head, nxt = ops[ip], ops[(ip + 1) % OP_SLOTS]
        have_head, have_next = pending >= 1, pending >= 2
        capture_in_flight = Signal()
        capture_ok = ~self.acc_out_full & ~capture_in_flight
        tag = Signal(Tag)
        inject = Signal()                    # a capture enters the MAC pipeline without a row
        m.d.comb += store.rd_tag.eq(tag)
        with m.If(have_head & ~head.capture):
            m.d.comb += [
                store.rd_en.eq(1), store.rd_row.eq(head.rows.lo + index),
                tag.act.eq(head.acts.lo + index * rows), tag.first.eq(head.first & (index == 0)),
                tag.last.eq(index == head.count - 1), tag.slot.eq(ip),
            ]
            with m.If(store.rd_ready):
                m.d.sync += index.eq(index + 1)
                with m.If(index == head.count - 1):
                    m.d.comb += issued.eq(1)
                    m.d.sync += [index.eq(0), ip.eq(ip + 1)]
        with m.Elif(have_head & head.capture & capture_ok):
            with m.If(have_next & ~nxt.capture):
                # Ride on the next MATVEC's first row.
                m.d.comb += [
                    store.rd_en.eq(1), store.rd_row.eq(nxt.rows.lo),
                    tag.act.eq(nxt.acts.lo), tag.first.eq(nxt.first), tag.capture.eq(1),
                    tag.last.eq(nxt.count == 1), tag.slot.eq(ip + 1),
                ]
                with m.If(store.rd_ready):
                    m.d.comb += retire_issue.eq(1 << ip)
                    m.d.sync += capture_in_flight.eq(1)
                    with m.If(nxt.count == 1):
                        m.d.comb += issued.eq(2)
                        m.d.sync += [index.eq(0), ip.eq(ip + 2)]
                    with m.Else():
                        m.d.comb += issued.eq(1)
                        m.d.sync += [index.eq(1), ip.eq(ip + 1)]
            with m.Elif((~have_next | nxt.capture) & store.idle):
                m.d.comb += [inject.eq(1), retire_issue.eq(1 << ip), issued.eq(1)]
                m.d.sync += [capture_in_flight.eq(1), ip.eq(ip + 1)]

        # ---- Landing: activations are read the cycle before a row lands ---------------------
        soon_tag = Signal(Tag)
        landing = Signal(Tag)
        m.d.comb += [soon_tag.eq(store.soon_tag), landing.eq(store.rd_tag_out)]
        offset = Signal(2)
        m.d.comb += [self.act_addr.eq(soon_tag.act >> 2), self.act_en.eq(store.soon)]
        m.d.sync += offset.eq(soon_tag.act[:2])
        act_bytes = Signal(32)
        m.d.comb += act_bytes.eq(self.act_data >> (offset * 8))
        m.d.comb += [
            macs.valid.eq(store.rd_valid),
            macs.first.eq(store.rd_valid & landing.first),
            macs.capture.eq((store.rd_valid & landing.capture) | inject),
            macs.weights.eq(store.rd_data),
            self.mac_active.eq(store.rd_valid),
        ]
        for r in range(rows):
            m.d.comb += macs.acts[r].eq(act_bytes[8 * r:8 * r + 8])
        with m.If(store.rd_valid & landing.last):
            m.d.comb += retire_land.eq(1 << landing.slot)

        # ---- acc_out handshake with the output engine --------------------------------------
        with m.If(macs.captured):
            m.d.sync += [self.acc_out_full.eq(1), capture_in_flight.eq(0)]
        with m.If(self.release):
            m.d.sync += self.acc_out_full.eq(0)

        m.d.comb += self.idle.eq((pending == 0) & ~live.any() & store.idle & ~macs.busy
                                 & ~capture_in_flight & ~inject)
        return m
