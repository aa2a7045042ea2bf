"""Tests of spsa_mix.blend.sources."""
