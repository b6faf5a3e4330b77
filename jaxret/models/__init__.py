"""Models by name: `config.model.name` is a key of MODELS or a 'module:Class' path."""

from jaxret import registry

MODELS = {
    'dual_encoder': 'jaxret.models.dual_encoder:DualEncoder',
    'slow_captioner': 'jaxret.models.slow:SlowCaptioner',
    'albef': 'jaxret.models.albef:Albef',
    'late_interaction': 'jaxret.models.late_interaction:LateInteractionDualEncoder',
}


def build(model_config, **runtime):
  """Instantiates `model_config.name` with the config's other keys, plus `runtime`
  values only known at run time (such as the vocabulary size)."""
  kwargs = {k: v for k, v in model_config.to_dict().items() if k != 'name'}
  return registry.resolve(model_config.name, MODELS, 'model')(**kwargs, **runtime)
