"""Stream players (cocotb and Amaranth simulator), test programs and the DUT-versus-model
comparison: everything that runs a design, shared by tests, experiments and ``pim --sim``."""
