"""Evaluators by name (`config.eval.evaluator`): a key of EVALUATORS or a 'module:Class' path.

Training evaluates with `config.eval.periodic_evaluator` on
`eval.periodic_split`; `--mode=eval` with `config.eval.evaluator` on
`eval.split`. An evaluator is built as `cls(model, mesh, records, tokenizer, config,
split=..., output_dir=None)` (`split` names the records' split) and called with the parameters; it returns flat metrics with
at least `t2i/R@1`, `t2i/R@5`, `t2i/R@10` (and may write extra files to
`output_dir`, which `--mode=eval` sets to `DIR/eval`).
"""

from jaxret import registry

EVALUATORS = {
    'retrieval': 'jaxret.evaluate.retrieval:RetrievalEvaluator',
    'slow_retrieval': 'jaxret.evaluate.slow_retrieval:SlowRetrievalEvaluator',
    'fast_slow': 'jaxret.evaluate.fast_slow:FastSlowEvaluator',
}


def build(name, config, model, mesh, records, tokenizer, split, output_dir=None):
  """`name`: `config.eval.evaluator` (--mode=eval) or `config.eval.periodic_evaluator`."""
  evaluator_cls = registry.resolve(name, EVALUATORS, 'evaluator')
  return evaluator_cls(model, mesh, records, tokenizer, config, split=split,
                       output_dir=output_dir)
