"""``spsa-mix merge``: from expert checkpoints and target data to a merged checkpoint.

* :mod:`~spsa_mix.merge.config`: the configuration (YAML, every key also a flag), checked
  before any work.

Example
-------
>>> from spsa_mix.merge.config import MergeConfig
>>> MergeConfig.from_dict({"experts": ["a", "b"], "data": "t.jsonl"}).method
'spsa'
"""
