"""Tests of spsa_mix.blend.held."""
