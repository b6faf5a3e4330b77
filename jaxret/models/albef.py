"""ALBEF: a dual encoder for image–text contrast plus a fusion encoder that
scores pairs (image–text matching) and fills in masked words (MLM)."""

import flax.linen as nn
import jax.numpy as jnp

from jaxret.models import capabilities
from jaxret.models import fusion as fusion_lib
from jaxret.models import towers

MIN_TEMPERATURE = 0.001  # ALBEF clamps its learnable temperature to [0.001, 0.5].
MAX_TEMPERATURE = 0.5


class Albef(nn.Module, capabilities.PooledEncoder, capabilities.PairScorer):
  """ViT and text towers with projections to a joint space (ITC), a fusion
  encoder over (text tokens, image tokens) with ITM and MLM heads, and a
  learnable temperature (ALBEF's `temp`, initialised to 0.07, clamped to
  [0.001, 0.5]; as a scalar it gets no weight decay).

  `encode_image` / `encode_text` give the ITC embeddings used for retrieval,
  with the tokens the fusion encoder needs in the intermediates (`encoded`
  for images, `tokens` for texts); `itm_scores` scores (image, text) pairs.
  """
  vocab_size: int
  text_len: int
  image: dict
  text: dict
  fusion: dict
  embed_dim: int = 256
  temperature: float = 0.07
  dtype: str = 'float32'
  remat_policy: str = 'none'
  scan_layers: bool = False

  def setup(self):
    self.image_encoder, self.text_encoder = towers.image_and_text(self)
    self.image_projection, self.text_projection = towers.projections(self.embed_dim)
    self.fusion_encoder = fusion_lib.FusionEncoder(
        **self.fusion, remat_policy=self.remat_policy, dtype=self.dtype)
    self.itm_head = fusion_lib.ItmHead()
    self.mlm_head = fusion_lib.MlmHead(self.vocab_size)
    self.temp = self.param('temp', nn.initializers.constant(self.temperature), ())

  def encode_image(self, images, train=False):
    """(B, H, W, 3) -> ((B, embed_dim) unit vectors, intermediates incl. `encoded` tokens)."""
    return towers.encode_pooled(self.image_encoder, self.image_projection, images, train=train)

  def encode_text(self, tokens, mask, train=False):
    """(B, L) tokens and mask -> ((B, embed_dim) unit vectors, intermediates incl. `tokens`)."""
    return towers.encode_pooled(self.text_encoder, self.text_projection, tokens, mask,
                                train=train)

  def clamped_temperature(self):
    return jnp.clip(self.temp, MIN_TEMPERATURE, MAX_TEMPERATURE)

  def features(self, images, tokens, mask, train=False):
    """Both towers: ITC embeddings, the tokens the fusion encoder reads, the temperature."""
    image_emb, image_out = self.encode_image(images, train)
    text_emb, text_out = self.encode_text(tokens, mask, train)
    return {'image_emb': image_emb, 'text_emb': text_emb, 'image_tokens': image_out['encoded'],
            'text_tokens': text_out['tokens'], 'temperature': self.clamped_temperature()}

  def itm_logits(self, text_tokens, text_mask, image_tokens):
    """Matching logits (B, 2) of text-tower tokens fused with image tokens."""
    fused, _ = self.fusion_encoder(text_tokens, text_mask, image_tokens)
    return self.itm_head(fused)

  def mlm_logits(self, tokens, mask, image_tokens, train=False):
    """Vocabulary logits (B, L, V) for (masked) token ids, conditioned on the image."""
    _, text_out = self.text_encoder(tokens, mask, train=train)
    fused, _ = self.fusion_encoder(text_out['tokens'], mask, image_tokens)
    return self.mlm_head(fused)

  def itm_scores(self, image_tokens, tokens, mask):
    """Match scores (B,) of pairs (image_tokens[b], tokens[b]): higher = better match.

    `image_tokens` (B, T, C) are `encode_image`'s `intermediates['encoded']`;
    `tokens`, `mask` (B, L) the tokenised captions. The score is the log-odds
    log p(match) − log p(no match) = logit₁ − logit₀. (ALBEF ranks by logit₁
    alone, but a two-way softmax leaves a per-pair shift of both logits
    unconstrained, so only their difference is meaningful.)
    """
    _, text_out = self.text_encoder(tokens, mask)
    logits = self.itm_logits(text_out['tokens'], mask, image_tokens)
    return logits[:, 1] - logits[:, 0]

  def visual_tokens(self, images):
    """`capabilities.PairScorer`: the image tokens the fusion encoder reads, computed once
    per gallery image."""
    return self.encode_image(images)[1]['encoded']

  def score(self, visual, tokens, mask, visual_index=None):
    """`capabilities.PairScorer`: the ITM log-odds of each pair, the discriminative
    alternative to the captioner's h (`models/slow.py`) for re-ranking.
    `visual_index` (P,): pair p reads visual[visual_index[p]]."""
    if visual_index is not None:
      visual = visual[visual_index]
    return self.itm_scores(visual, tokens, mask)

  def __call__(self, images, tokens, mask, train=False):
    """Every part once (used to initialise): ITC outputs plus ITM and MLM logits."""
    outputs = self.features(images, tokens, mask, train)
    outputs['itm_logits'] = self.itm_logits(outputs['text_tokens'], mask, outputs['image_tokens'])
    outputs['mlm_logits'] = self.mlm_head(
        self.fusion_encoder(outputs['text_tokens'], mask, outputs['image_tokens'])[0])
    return outputs, {}
