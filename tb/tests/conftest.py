"""Suite-wide pytest hooks."""

#: Tests of a minute or more (place and route, the longest RTL runs), run first: under
#: pytest-xdist the workers take tests in collection order, and these, left at the end of the
#: alphabet, finished alone while the other worker idled.
SLOW_FIRST = (
    "test_synth.py::test_small_configuration_builds",
    "test_limits.py::test_fault1_streams",
    "test_compiler.py::test_rtl_networks_with_stalls",
    "test_waves.py::test_waves_hand",
    "test_uart.py::test_bridge_rtl_over_the_serial_line",
    "test_fuzz.py::test_fuzz",
)


def pytest_collection_modifyitems(session, config, items):
    """Moves the :data:`SLOW_FIRST` tests to the front (the order is otherwise kept)."""
    items.sort(key=lambda item: not any(name in item.nodeid for name in SLOW_FIRST))
