"""``spsa-mix merge``: from expert checkpoints and target data to a merged checkpoint.

* :mod:`~spsa_mix.merge.config`: the configuration (YAML, every key also a flag), checked
  before any work;
* :mod:`~spsa_mix.merge.run`: :func:`~spsa_mix.merge.run.run_merge`, the merge itself;
* :mod:`~spsa_mix.merge.report`: what it tells its user (the blend kept and why, the
  figure, the model card); :mod:`~spsa_mix.merge.cost`: where its time goes;
* :func:`load_merged` (:mod:`~spsa_mix.merge.load`): the merged model, whatever the experts were.

Example
-------
>>> from spsa_mix.merge.config import MergeConfig
>>> MergeConfig.from_dict({"experts": ["a", "b"], "data": "t.jsonl"}).method
'spsa'
"""

from spsa_mix.merge.load import load_merged

__all__ = ["load_merged"]
