"""How a macro maps onto an FPGA: which multipliers go to DSP blocks, and in what form.

The behaviour of a macro never depends on its fabric; only the primitives it is built from do,
and the timing of the requantizing commands where the requantizers take several multiplier passes
(``requant_passes``; :class:`pim_macro.sw.models.cycle_model.CycleModel` takes the fabric).
Simulation (no platform) uses the portable form unless a test asks for another.
"""

from dataclasses import dataclass


__all__ = ["Fabric", "PORTABLE", "ICE40_DUAL", "LOGIC_REQUANT", "FABRICS", "fabric_for"]


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
    """
    mac: str = "infer"
    soft_requant: bool = False
    requant_passes: int = 1

    def __post_init__(self):
        from .requantizer import PASSES
        if self.mac not in ("infer", "ice40_dual"):
            raise ValueError(f"mac must be 'infer' or 'ice40_dual', not {self.mac!r}")
        if self.requant_passes not in PASSES:
            raise ValueError(f"requant_passes must be one of {PASSES}, not "
                             f"{self.requant_passes!r}")

    def describe(self):
        """One line for reports: where the multipliers go."""
        lanes = ("lanes on SB_MAC16 in dual 8x8 mode, two per block" if self.mac == "ice40_dual"
                 else "lanes' products inferred (one DSP each where there are DSPs)")
        requant = ("requantizers in logic" if self.soft_requant
                   else "requantizers' products inferred")
        if self.requant_passes > 1:
            requant += f", {self.requant_passes} cycles per lane group"
        return f"{lanes}; {requant}"


#: Simulation and generic synthesis.
PORTABLE = Fabric()
#: iCE40 UltraPlus (8 SB_MAC16): two lanes per DSP; the requantizer's two 32x8 partial products
#: take the rest (two cycles for its 32x31 multiply).
ICE40_DUAL = Fabric(mac="ice40_dual", requant_passes=2)
#: ECP5 (one MULT18X18D per lane): every DSP to the lanes, the requantizers in logic.
LOGIC_REQUANT = Fabric(soft_requant=True)

FABRICS = {"portable": PORTABLE, "ice40_dual": ICE40_DUAL, "logic_requant": LOGIC_REQUANT}


def fabric_for(platform):
    """The :class:`Fabric` a platform asks for: its ``pim_fabric`` attribute, or
    :data:`PORTABLE` (also for ``platform=None``, simulation)."""
    return getattr(platform, "pim_fabric", PORTABLE)
