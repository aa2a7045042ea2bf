"""Where expert weights come from: modules, state dicts, ``.pt`` / ``.safetensors`` files,
Hugging Face directories (sharded or not), read lazily, one tensor at a time
(:mod:`spsa_mix.blend.sources.checkpoints`).

The lowest layer of :mod:`spsa_mix.blend`: it imports nothing else from the package but the
support modules (``devices``, ``skeleton``).
"""
