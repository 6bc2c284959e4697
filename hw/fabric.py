"""How a macro maps onto an FPGA: which multipliers go to DSP blocks, and in what form.

The behaviour of a macro never depends on its fabric; only the primitives it is built from do,
and the timing of the requantizing commands where the requantizers take several multiplier passes
(``requant_passes``; :class:`pim_macro.sw.models.cycle_model.CycleModel` takes the fabric).
Simulation (no platform) uses the portable form unless a test asks for another.
"""

from dataclasses import dataclass, replace


__all__ = ["Fabric", "PORTABLE", "ICE40_DUAL", "ICE40_SPRAM", "LOGIC_REQUANT", "FABRICS",
           "WEIGHT_MEMORIES", "fabric_for"]


#: Where the weight store's SRAM is built: ``"bram"``, Amaranth memories (block RAM on an FPGA;
#: a simple dual port), or ``"spram"``, the iCE40 UltraPlus single-port SB_SPRAM256KA blocks
#: (:class:`pim_macro.hw.spram.SPRAM`).
WEIGHT_MEMORIES = ("bram", "spram")


@dataclass(frozen=True)
class Fabric:
    """Mapping choices, fixed at elaboration.

    ``mac``: ``"infer"`` writes the MAC lanes' products as ``*`` and leaves them to synthesis
    (one DSP per int8 product where it infers DSPs, such as an ECP5's MULT18X18D);
    ``"ice40_dual"`` instantiates iCE40 UltraPlus SB_MAC16 blocks in their dual 8x8 mode, two
    lanes per block with the product registers on: Yosys only infers the 16x16 mode, one lane
    per block. ``soft_requant``: build the output engine's requantizer multiplies from logic
    (:class:`pim_macro.hw.requantizer.Requantizer` ``soft``), so that no DSP goes to them.
    ``requant_passes``: the requantizers' 32x31 multiply in 1, 2 or 4 cycles of two 32x16,
    32x8 or 32x4 partial products; with more than one, ``EMIT_INT8`` and ``WRITEBACK`` issue a
    lane group every ``requant_passes`` cycles instead of every cycle.
    ``weight_memory``: one of :data:`WEIGHT_MEMORIES`; with ``"spram"`` the weight store has a
    single port (:attr:`single_port`), so ``WRITE_WEIGHTS`` waits until no ``MATVEC`` is queued
    or running (:class:`pim_macro.hw.mac_engine.MacEngine`), whichever rows they name.
    """
    mac: str = "infer"
    soft_requant: bool = False
    requant_passes: int = 1
    weight_memory: str = "bram"

    def __post_init__(self):
        from .requantizer import PASSES
        if self.mac not in ("infer", "ice40_dual"):
            raise ValueError(f"mac must be 'infer' or 'ice40_dual', not {self.mac!r}")
        if self.requant_passes not in PASSES:
            raise ValueError(f"requant_passes must be one of {PASSES}, not "
                             f"{self.requant_passes!r}")
        if self.weight_memory not in WEIGHT_MEMORIES:
            raise ValueError(f"weight_memory must be one of {', '.join(WEIGHT_MEMORIES)}, not "
                             f"{self.weight_memory!r}")

    @property
    def single_port(self):
        """Whether the weight store reads and writes through one port: a write and a read of it
        never share a cycle, so a ``WRITE_WEIGHTS`` waits for every live ``MATVEC`` (the
        engine's ``rows_busy`` and the cycle model's rule, both from here)."""
        return self.weight_memory == "spram"

    def describe(self):
        """One line for reports: where the multipliers go."""
        lanes = ("lanes on SB_MAC16 in dual 8x8 mode, two per block" if self.mac == "ice40_dual"
                 else "lanes' products inferred (one DSP each where there are DSPs)")
        requant = ("requantizers in logic" if self.soft_requant
                   else "requantizers' products inferred")
        if self.requant_passes > 1:
            requant += f", {self.requant_passes} cycles per lane group"
        weights = ("; weights in the SB_SPRAM256KA single-port RAM" if self.single_port else "")
        return f"{lanes}; {requant}{weights}"


#: Simulation and generic synthesis.
PORTABLE = Fabric()
#: iCE40 UltraPlus (8 SB_MAC16): two lanes per DSP; the requantizer's two 32x8 partial products
#: take the rest (two cycles for its 32x31 multiply).
ICE40_DUAL = Fabric(mac="ice40_dual", requant_passes=2)
#: iCE40 UltraPlus with the weights in its four SB_SPRAM256KA (128 KB, 64 bits per cycle) instead
#: of block RAM: otherwise :data:`ICE40_DUAL`.
ICE40_SPRAM = replace(ICE40_DUAL, weight_memory="spram")
#: ECP5 (one MULT18X18D per lane): every DSP to the lanes, the requantizers in logic, their 32x31
#: multiply in two passes of 32x16 (1837 instead of 4947 LUT4 each, synthesized alone, with two
#: more pipeline stages; 0.2 to 0.3 % more cycles on 28-lane GEMVs, from the cycle model).
LOGIC_REQUANT = Fabric(soft_requant=True, requant_passes=2)

FABRICS = {"portable": PORTABLE, "ice40_dual": ICE40_DUAL, "ice40_spram": ICE40_SPRAM,
           "logic_requant": LOGIC_REQUANT}


def fabric_for(platform):
    """The :class:`Fabric` a platform asks for: its ``pim_fabric`` attribute, or
    :data:`PORTABLE` (also for ``platform=None``, simulation)."""
    return getattr(platform, "pim_fabric", PORTABLE)
