"""Talking to a macro: encoder/decoder, drivers for models, simulators and boards."""
