"""Synthetic frames and the BLISS-layout writer behind ``xreduce demo`` and the tests."""
