"""Embedded datasets, the one loader interface, and the input pipeline."""
