"""Tests of spsa_mix.blend (a package, so that its conftest and helpers have unique module names)."""
