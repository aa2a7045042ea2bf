"""How the experts are held for blending: checked against the architecture and stacked
once on the device (:mod:`spsa_mix.blend.held.experts`), and the blend as pure tensor
functions over that flat buffer (:mod:`spsa_mix.blend.held.functional`).

Imports only :mod:`spsa_mix.blend.sources` and the support modules.
"""
