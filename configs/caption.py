r"""The slow model of Thinking Fast and Slow: a bidirectional captioner on the built-in data.

  python -m jaxret.main --mode=train --config=configs/caption.py --workdir=/tmp/jaxret-slow
  python -m jaxret.main --mode=eval --workdir=/tmp/jaxret-slow   # exhaustive Slow R@K

A ViT (nano/8, as the fast demo model) with a feature pyramid (`pyramid=fine`:
16x16 visual tokens from the 8x8 patch grid; `pyramid=coarse`: the patch grid)
and two 2-block decoders (forward, backward), trained with the bidirectional
captioning loss; h(x, y) = log p_fwd(y|x) + log p_bwd(y|x) scores a pair. It is
the teacher of `configs/distill.py` and its re-ranker. Results:
docs/fast_slow.md.

Arguments: `runlocal`, `pyramid=fine|coarse`, `steps=N`.
"""

import ml_collections

from jaxret.config import args as args_lib
from jaxret.config import config_file

demo = config_file.sibling(__file__, 'demo')


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, runlocal=False, pyramid='fine', steps=0)
  config = demo.get_config('runlocal' if arg.runlocal else None)
  config.total_steps = arg.steps or (4 if arg.runlocal else 400)
  if not arg.runlocal:  # h over every (caption, image) pair is costly: --mode=eval does it.
    config.eval_every = 0
  config.model = ml_collections.ConfigDict()
  config.model.name = 'slow_captioner'
  config.model.image = ml_collections.ConfigDict(
      {'variant': 'mu/8' if arg.runlocal else 'nano/8', 'pool': 'cls', 'posemb': 'learn'})
  config.model.decoder = ml_collections.ConfigDict(
      {'variant': 'mu' if arg.runlocal else 'nano', 'depth': 1 if arg.runlocal else 2})
  config.model.pyramid = arg.pyramid
  config.model.dtype = 'float32'
  config.model.remat_policy = 'none'
  config.model.scan_layers = False
  config.loss = ml_collections.ConfigDict({'name': 'caption'})
  config.eval.evaluator = 'slow_retrieval'
  config.eval.periodic_evaluator = 'slow_retrieval'
  # Queries for the exhaustive evaluation: one caption per image, for this many
  # images spread over the split (0: all of them).
  config.eval.max_queries = 16 if arg.runlocal else 100
  # Their captions that are queries: 'first' or 'all' (the five of each image).
  config.eval.query_captions = 'first'
  # Shapes the slow scorer compiles for (see jaxret/rerank/scorer.py).
  config.rerank.candidate_buckets = (10, 50, 100)
  config.rerank.length_buckets = (8, 16, 24)
  config.rerank.storage_dtype = 'bfloat16'
  config.rerank.features = 'tokens'
  return config
