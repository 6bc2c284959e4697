"""Host software of the macro, in four parts:

* :mod:`pim_macro.sw.runtime`: talking to a macro: the command encoder and decoder (``asm``),
  the drivers that play a stream on a model, a simulator or a board (``driver``, ``rtl``,
  ``board_link``);
* :mod:`pim_macro.sw.models`: what predicts the macro: the bit-exact golden model, the exact
  cycle model, the full-scale estimate and the networks they are asked about (``zoo``, ``digits``);
* :mod:`pim_macro.sw.compiler`: from a problem to a command stream: GEMV tiling, the quantized
  network container and its compiler, the float-model quantizer;
* :mod:`pim_macro.sw.fpga`: FPGA builds (``make synth``);

and the ``pim`` command line (:mod:`pim_macro.sw.cli`). :mod:`pim_macro.sw.paths` names the
repository's folders.
"""
