"""Model FLOPs counted from the configuration (for model-FLOPs utilisation).

Counts multiply-adds of the matrix products (2 FLOPs each) of one forward pass;
a training step is 3x that (the backward pass is twice the forward), whatever
rematerialisation recomputes. LayerNorms, softmaxes and the loss are left out.
"""

from jaxret.models import variants


def transformer_flops(tokens, width, depth, mlp_dim):
  """Forward FLOPs of `depth` blocks over `tokens` tokens: projections, MLP, attention."""
  per_token = 8 * width * width + 4 * width * mlp_dim + 4 * tokens * width
  return depth * tokens * per_token


def vit_flops(variant, image_size, pool='cls', depth=None):
  size = variants.decode(variant, depth=depth)
  patches = (image_size // size['patch_size']) ** 2
  tokens = patches + (pool == 'cls')
  embed = 2 * patches * size['patch_size'] ** 2 * 3 * size['width']
  return embed + transformer_flops(tokens, size['width'], size['depth'], size['mlp_dim'])


def text_flops(variant, text_len, depth=None):
  size = variants.decode(variant, depth=depth)
  return transformer_flops(text_len, size['width'], size['depth'], size['mlp_dim'])


def dual_encoder_train_flops(model_config, image_size, text_len):
  """FLOPs of one training example (forward + backward) of a dual encoder."""
  image, text = model_config.image, model_config.text
  forward = (vit_flops(image.variant, image_size, image.get('pool', 'cls'), image.get('depth'))
             + text_flops(text.variant, text_len, text.get('depth')))
  widths = (variants.decode(image.variant)['width'], variants.decode(text.variant)['width'])
  forward += sum(2 * w * model_config.embed_dim for w in widths)
  return 3 * forward
