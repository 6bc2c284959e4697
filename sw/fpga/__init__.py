"""FPGA builds with Yosys and nextpnr (``make synth``)."""
