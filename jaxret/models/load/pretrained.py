"""Starting training from pretrained weights (`config.init`), loaded into fresh parameters.

  config.init.text = 'minilm' | '/path/to/bert_dir'  # BERT-family text tower
  config.init.clip = '/path/to/clip_dir'             # HF CLIPModel: both towers,
                                                     # projections, logit scale
  config.init.reinit = ('image_encoder/pos_embedding',)  # shapes allowed to differ

The checkpoint's tensors are converted (`hf.py`), merged into the freshly
initialised parameters (`checkpoint.merge`: shape mismatches fail unless
named in `reinit`), and the report (loaded / resized / re-initialised / not
loaded / unused) is printed. The optimizer state and the objective's extra
state are then re-created from the loaded parameters.
"""

import jax
import numpy as np

from jaxret.models import towers
from jaxret.models.load import checkpoint
from jaxret.models.load import hf
from jaxret.models.load import local_models

TEXT_POSEMB = 'text_encoder/position_embedding'
IMAGE_POSEMB = 'image_encoder/pos_embedding'


def requested(config):
  return bool(config.init.text or config.init.clip)


def _image_has_cls(config):
  """Whether the image tower's position embedding covers the CLS token, as the ViT
  built from `config.model.image` (with its defaults) has it."""
  return towers.image_tower(config.model.image).cls_posemb


def convert(config):
  """({jaxret path: array}, unused checkpoint names, source description) of `config.init`."""
  mapped, unused, sources = {}, [], []
  if config.init.clip:
    directory = local_models.resolve(config.init.clip)
    converted, rest = hf.clip_dual_encoder(checkpoint.read_safetensors(directory),
                                           checkpoint.read_config(directory))
    mapped.update(converted)
    unused += [f'clip:{name}' for name in rest]
    sources.append(f'CLIP {directory}')
  if config.init.text:
    directory = local_models.resolve(config.init.text)
    converted, rest = hf.bert_text_tower(checkpoint.read_safetensors(directory),
                                         checkpoint.read_config(directory))
    mapped.update(converted)  # The text tower replaces a CLIP one when both are given.
    unused += [f'text:{name}' for name in rest]
    sources.append(f'text tower {directory}')
  return mapped, unused, ' + '.join(sources)


def load(config, params):
  """({path: value} for every parameter, report lines); pretrained values are numpy."""
  mapped, unused, source = convert(config)
  merged, report = checkpoint.merge(
      params, mapped, unused, reinit=tuple(config.init.reinit), text_posemb={TEXT_POSEMB},
      image_posemb={IMAGE_POSEMB: _image_has_cls(config)})
  return merged, report.lines(f'pretrained weights from {source}')


def apply_to_state(state, config, state_shardings, optimizer, objective, log=print):
  """`state` with pretrained parameters, and optimizer and extra state re-created from them."""
  merged, lines = load(config, state.params)
  return replace_params(state, merged, lines, state_shardings, optimizer, objective, log)


def replace_params(state, merged, lines, state_shardings, optimizer, objective, log=print):
  """`state` with the parameters `merged` ({path: value}, numpy where loaded) placed with
  their shardings, its optimizer and extra state re-created from them; process 0 logs
  `lines` (the load's report). Shared by every way of loading weights into a fresh state."""
  if jax.process_index() == 0:
    for line in lines:
      log(line)
  shardings = checkpoint.flatten(state_shardings.params)
  placed = {}
  for path, value in merged.items():
    if isinstance(value, np.ndarray):
      placed[path] = jax.make_array_from_callback(value.shape, shardings[path],
                                                  lambda index, v=value: v[index])
    else:
      placed[path] = value
  params = checkpoint.unflatten_like(state.params, placed)

  def rebuild(old_state, new_params):
    return old_state.replace(params=new_params, opt_state=optimizer.init(new_params),
                             extra=objective.init_extra(new_params))

  return jax.jit(rebuild, out_shardings=state_shardings, donate_argnums=(0,))(state, params)
