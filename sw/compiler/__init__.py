"""From a problem to a command stream: GEMV tiling, networks, their compiler, quantization."""
