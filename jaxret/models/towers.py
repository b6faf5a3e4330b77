"""The image and text towers of the two-tower models (dual encoder, FILIP, ALBEF).

Each model builds them in its `setup` and keeps them under the same attribute
names, `image_encoder` and `text_encoder` (and its projections): those names
are the parameter paths that checkpoints and pretrained-weight loading read.
"""

import flax.linen as nn

from jaxret.models import layers
from jaxret.models import text as text_lib
from jaxret.models import video
from jaxret.models import vit


def image_tower(settings, **shared):
  """The image tower `settings` (a model config's `image`) describe: the ViT, or, when
  they name a `temporal` modelling, the video tower (`models/video.py`) over clips."""
  tower_cls = video.VideoViT if 'temporal' in settings else vit.ViT
  return tower_cls(**settings, **shared)


def image_and_text(model):
  """(ViT, text transformer) of a two-tower `model`, from the fields that every
  such model's config has: `image` and `text` (each tower's settings),
  `vocab_size`, `text_len`, and `dtype`, `remat_policy` and `scan_layers`,
  which both towers share. The image tower is a video tower when `image` says so
  (`image_tower`)."""
  shared = {'remat_policy': model.remat_policy, 'scan': model.scan_layers, 'dtype': model.dtype}
  return (image_tower(model.image, **shared),
          text_lib.TextTransformer(vocab_size=model.vocab_size, max_len=model.text_len,
                                   **model.text, **shared))


def projections(embed_dim):
  """(image, text) bias-free linear maps to the joint space, as in CLIP."""
  return nn.Dense(embed_dim, use_bias=False), nn.Dense(embed_dim, use_bias=False)


def encode_pooled(encoder, projection, *inputs, train=False):
  """A tower's pooled output, projected and L2-normalised, with the tower's intermediates."""
  pooled, intermediates = encoder(*inputs, train=train)
  return layers.l2_normalize(projection(pooled)), intermediates
