"""Evaluators by name (`config.eval.evaluator`): a key of EVALUATORS or a 'module:Class' path.

Training evaluates with `config.eval.periodic_evaluator` on
`eval.periodic_split`; `--mode=eval` with `config.eval.evaluator` on
`eval.split`. An evaluator is a subclass of `base.Evaluator`, which says how it
is built and called.
"""

from jaxret import errors
from jaxret import registry
from jaxret.evaluate import base
from jaxret.models import capabilities

EVALUATORS = {
    'retrieval': 'jaxret.evaluate.retrieval:RetrievalEvaluator',
    'slow_retrieval': 'jaxret.evaluate.slow_retrieval:SlowRetrievalEvaluator',
    'fast_slow': 'jaxret.evaluate.fast_slow:FastSlowEvaluator',
}


def resolve(name):
  """The evaluator class `name` names (`config.eval.evaluator` for --mode=eval,
  `config.eval.periodic_evaluator` during training)."""
  evaluator_cls = registry.resolve(name, EVALUATORS, 'evaluator')
  if not (isinstance(evaluator_cls, type) and issubclass(evaluator_cls, base.Evaluator)):
    raise errors.UserError(f'evaluator {name!r} is not a subclass of '
                           'jaxret.evaluate.base.Evaluator')
  return evaluator_cls


def check_model(name, model):
  """Refuses a model that lacks a capability evaluator `name` requires."""
  for capability in resolve(name).requires:
    capabilities.require(model, capability, f'the {name} evaluator')


def build(name, config, model, mesh, records, tokenizer, split, output_dir=None):
  """Evaluator `name` for `model` on `records` (`base.Evaluator` says what the rest are)."""
  check_model(name, model)
  evaluator_cls = resolve(name)
  return evaluator_cls(model, mesh, records, tokenizer, config, split=split,
                       output_dir=output_dir)
