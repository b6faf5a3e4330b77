r"""Thinking Fast and Slow on the built-in data: the fast dual encoder distilled from the
slow captioner, evaluated alone, against the slow model, and re-ranked by it.

  python -m jaxret.main --mode=demo --config=configs/demo.py --workdir=/tmp/jaxret-demo
  python -m jaxret.main --mode=train --config=configs/caption.py --workdir=/tmp/jaxret-slow
  python -m jaxret.main --mode=train --config=configs/distill.py --workdir=/tmp/jaxret-fs
  python -m jaxret.main --mode=eval --workdir=/tmp/jaxret-fs   # -> eval/fast_slow.{json,md,png}

Training: the demo's dual encoder and schedule, with L = L_clip + α H(p, q), the
teacher p from the slow workdir (`slow=DIR`, default /tmp/jaxret-slow) over
|B_i| = `num_candidates` images per caption. Evaluation on the test split: Fast
(the undistilled dual encoder of `fast=DIR`, default /tmp/jaxret-demo), Fast
distilled (this model), Slow over the whole gallery, and Fast+Slow for each K
in `rerank.ks` (final score h + β · fast score). Results: docs/fast_slow.md.

Arguments: `runlocal`, `slow=DIR`, `fast=DIR`, `steps=N`, `candidates=random|student|teacher`,
`num_candidates=N` (|B_i|; 0: the whole batch), `targets=all|negatives`, `temperature=T`,
`alpha=A`, `seed=S`.
"""

import ml_collections

from jaxret.config import args as args_lib
from jaxret.config import config_file

demo = config_file.sibling(__file__, 'demo')
caption_config = config_file.sibling(__file__, 'caption')


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, runlocal=False, slow='/tmp/jaxret-slow',
                           fast='/tmp/jaxret-demo', steps=0, candidates='random',
                           num_candidates=8, targets='all', temperature=1.0, alpha=1.0, seed=0)
  config = demo.get_config('runlocal' if arg.runlocal else None)
  config.seed = arg.seed
  if arg.steps:
    config.total_steps = arg.steps
  # The student reads captions with the teacher's tokenizer.
  config.tokenizer.path = arg.slow
  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'distill'
  config.loss.teacher = arg.slow
  config.loss.alpha = arg.alpha
  config.loss.teacher_temperature = arg.temperature
  config.loss.student_temperature = 0.0  # 0: the student's own learned logit scale.
  # |B_i|, the caption's own image included; 0: the whole global batch (the paper's).
  config.loss.num_candidates = arg.num_candidates
  # B_i's other images: 'random', or the hardest of the global batch by the
  # (frozen) 'student' score or the 'teacher' h (B² teacher passes per step).
  config.loss.candidates = arg.candidates
  # p and q over 'all' of B_i (the paper's), or over its 'negatives' only: the teacher's
  # ranking of the other images, without the caption's own (decoupled distillation).
  config.loss.targets = arg.targets
  config.eval.evaluator = 'fast_slow'
  slow = caption_config.get_config('runlocal' if arg.runlocal else None)
  # Queries (one caption per image, spread over the split): exhaustive Slow scores
  # each against the whole gallery, which is what makes it slow.
  config.eval.max_queries = slow.eval.max_queries
  config.rerank = slow.rerank
  config.rerank.slow_workdir = arg.slow
  config.rerank.fast_workdir = arg.fast  # The undistilled baseline, for the comparison.
  config.rerank.ks = (10, 50, 100) if not arg.runlocal else (5, 10)
  config.rerank.k = 25  # Candidates re-ranked when serving.
  config.rerank.beta = 1.0  # final = h + β · fast score.
  return config
