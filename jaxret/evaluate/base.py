"""The evaluator protocol: what `evaluate.build` makes and the trainer and `--mode=eval` call."""

import abc


class Evaluator(abc.ABC):
  """An evaluation of a model on one split of records.

  Built once as `cls(model, mesh, records, tokenizer, config, split=..., output_dir=None)`
  (`split` names the records' split; `output_dir`, set by `--mode=eval` to
  `DIR/eval`, is where it may write extra files), then called with the
  parameters each time it evaluates.

  `requires`: the capabilities (`models/capabilities.py`) the evaluated model
  must declare; `evaluate.check_model` refuses one that lacks any, before any work.
  """
  requires = ()

  @abc.abstractmethod
  def __call__(self, params):
    """Flat metrics, with at least `t2i/R@1`, `t2i/R@5` and `t2i/R@10`."""

  def summary(self):
    """Counts of the evaluator's own gallery for `--mode=eval`'s results file (such as
    the image task's images and its chance R@1); none by default."""
    return {}
