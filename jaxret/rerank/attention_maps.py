"""Where a slow model looks: per-word maps over an image's visual tokens, for /explain.

  captioner_cross_attention: the slow captioner's (`models/slow.py`) forward
    decoder's cross-attention while it predicts each word, averaged over heads
    and blocks: which visual tokens it read to generate that word.
  albef_grad_cam: ALBEF's visual grounding (Li et al. 2021, §5): Grad-CAM of the
    ITM score on the cross-attention of one fusion block, mean over heads of
    relu(∂score/∂A) ⊙ A, per text token.

Both take one image's stored visual tokens (T, C) and one tokenised caption
(L,) and return (words' token positions, (words, T) maps). The layers record
their cross-attention weights only in these calls (`layers.Attention`'s
`expose_weights`), so scoring and training run unchanged.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxret.models import albef as albef_lib
from jaxret.models import slow as slow_lib


def _cross_attention(tree, module, leaf):
  """The arrays named `leaf` of the cross-attention layers under `module` (a module
  name on the path), in block order."""
  found = []
  for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [str(getattr(key, 'key', getattr(key, 'idx', key))) for key in path]
    if module in names and 'cross_attention' in names and leaf in names:
      found.append(('/'.join(names), value))
  return [np.asarray(value) for _, value in sorted(found, key=lambda item: item[0])]


def captioner_cross_attention(model, params, visual, tokens, mask):
  """(positions of the predicted words in `tokens`, (words, T) attention maps)."""
  real = int(np.sum(mask > 0))
  _, state = model.apply({'params': params}, jnp.asarray(visual, jnp.float32)[None],
                         jnp.asarray(tokens)[None], jnp.asarray(mask)[None],
                         method=model.next_token_logits, mutable=['intermediates'])
  blocks = _cross_attention(state['intermediates'], 'forward_decoder', 'weights')
  # (blocks, 1, heads, L-1, T): position t reads token t and predicts token t + 1.
  maps = np.mean(np.stack(blocks), axis=(0, 1, 2))
  return list(range(1, real)), maps[:real - 1]


def albef_grad_cam(model, params, visual, tokens, mask, block):
  """(positions of the real tokens, (tokens, T) Grad-CAM maps) on fusion block `block`."""
  real = int(np.sum(mask > 0))
  inputs = (jnp.asarray(visual, jnp.float32)[None], jnp.asarray(tokens)[None],
            jnp.asarray(mask)[None])
  _, state = model.apply({'params': params}, *inputs, method=model.score,
                         mutable=['perturbations', 'intermediates'])
  perturbations = state['perturbations']
  name = f'block{block:02d}'

  def score(perturbations):
    return model.apply({'params': params, 'perturbations': perturbations}, *inputs,
                       method=model.score)[0]

  grad = _cross_attention(jax.grad(score)(perturbations), name, 'attention_weights')[0]
  weights = _cross_attention(state['intermediates'], name, 'weights')[0]
  cam = np.mean(np.maximum(grad, 0) * weights, axis=1)[0]  # (L, T), mean over heads.
  return list(range(real)), cam[:real]


def is_captioner(model):
  return isinstance(model, slow_lib.SlowCaptioner)


def supported(model):
  """Whether the slow model has one of the maps above."""
  return isinstance(model, (slow_lib.SlowCaptioner, albef_lib.Albef))


def word_maps(model, params, visual, tokens, mask):
  """The model's maps: the captioner's cross-attention or ALBEF's Grad-CAM (on its middle
  fusion block, as the paper uses its third of six)."""
  if isinstance(model, slow_lib.SlowCaptioner):
    return 'cross_attention', captioner_cross_attention(model, params, visual, tokens, mask)
  depth = len([name for name in params['fusion_encoder'] if name.startswith('block')])
  return 'grad_cam', albef_grad_cam(model, params, visual, tokens, mask, depth // 2)
