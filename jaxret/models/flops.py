"""Model FLOPs counted from the configuration (for model-FLOPs utilisation).

Counts multiply-adds of the matrix products (2 FLOPs each) of one forward pass;
a training step is 3x that (the backward pass is twice the forward), whatever
rematerialisation recomputes. LayerNorms, softmaxes and the loss are left out.
"""

from jaxret.models import text as text_lib
from jaxret.models import towers
from jaxret.models import variants
from jaxret.models import video


def transformer_flops(tokens, width, depth, mlp_dim):
  """Forward FLOPs of `depth` blocks over `tokens` tokens: projections, MLP, attention."""
  per_token = 8 * width * width + 4 * width * mlp_dim + 4 * tokens * width
  return depth * tokens * per_token


def vit_flops(variant, image_size, pool='cls', **sizes):
  """`sizes`: overrides of the variant's (`variants.OVERRIDES`), as the ViT takes them."""
  return _vit_flops(variants.decode(variant, **sizes), image_size, pool)


def text_flops(variant, text_len, **sizes):
  return _text_flops(variants.decode(variant, **sizes), text_len)


def _vit_flops(size, image_size, pool):
  patches = (image_size // size['patch_size']) ** 2
  tokens = patches + (pool == 'cls')
  embed = 2 * patches * size['patch_size'] ** 2 * 3 * size['width']
  return embed + transformer_flops(tokens, size['width'], size['depth'], size['mlp_dim'])


def _text_flops(size, text_len):
  return transformer_flops(text_len, size['width'], size['depth'], size['mlp_dim'])


def dual_encoder_train_flops(model_config, image_size, text_len, num_frames=0):
  """FLOPs of one training example (forward + backward) of a dual encoder; with a video
  tower, of a clip of `num_frames` frames (each through the ViT, then the temporal
  transformer over the frame vectors and a CLS token)."""
  # The towers as the model builds them, so that a setting the config leaves out
  # (depth, pool, ...) takes the tower's own default.
  image = towers.image_tower(model_config.image)
  text = text_lib.TextTransformer(vocab_size=0, max_len=text_len, **model_config.text)
  image_sizes, text_sizes = image.sizes(), text.sizes()
  image_forward = _vit_flops(image_sizes, image_size, image.pool)
  if isinstance(image, video.VideoViT):
    image_forward *= num_frames
    if image.temporal == 'transformer':
      image_forward += transformer_flops(num_frames + 1, image_sizes['width'],
                                         image.temporal_depth, image_sizes['mlp_dim'])
  forward = image_forward + _text_flops(text_sizes, text_len)
  forward += sum(2 * sizes['width'] * model_config.embed_dim
                 for sizes in (image_sizes, text_sizes))
  return 3 * forward
