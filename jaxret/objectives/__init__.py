"""Training objectives by name: `config.loss.name` is a key of OBJECTIVES or a
'module:Class' path. An objective wires a model to its pure loss (`losses/`)."""

from jaxret import registry

OBJECTIVES = {
    'clip': 'jaxret.objectives.clip:ClipObjective',
    'caption': 'jaxret.objectives.caption:CaptionObjective',
    'distill': 'jaxret.objectives.distill:DistillObjective',
    'albef': 'jaxret.objectives.albef:AlbefObjective',
    'wenlan': 'jaxret.objectives.wenlan:WenLanObjective',
    'filip': 'jaxret.objectives.filip:FilipObjective',
    'irt': 'jaxret.objectives.irt:IrtObjective',
    'irt_image': 'jaxret.objectives.irt:IrtImageObjective',
    'siglip': 'jaxret.objectives.siglip:SiglipObjective',
}


def build(loss_config, model, mesh, tokenizer):
  """The objective `loss_config.name` names, for `model` and the training tokenizer."""
  objective_cls = registry.resolve(loss_config.name, OBJECTIVES, 'loss')
  return objective_cls(model, mesh, loss_config, tokenizer)
