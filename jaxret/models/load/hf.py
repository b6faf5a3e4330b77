"""Hugging Face BERT-family and CLIP checkpoints -> jaxret parameter paths.

Layouts: torch Linear weights are (out, in) and become flax kernels (in, out);
attention q/k/v kernels are (D, heads, head_dim) and the output kernel
(heads, head_dim, D); conv weights (D, 3, P, P) become (P, P, 3, D). BERT's
token-type embedding of type 0 (every token of a single segment) is folded
into the position embeddings, which makes the sum exact. Key biases are read
and dropped: jaxret's attention has none, because a key bias shifts all of a
query's logits by the same amount, which the softmax removes (outputs are
unchanged; see `jaxret/models/layers.py` Attention).
"""

import re

import numpy as np

from jaxret import errors

# Tensors that are buffers, not parameters.
BUFFERS = re.compile(r'.*(position_ids|token_type_ids)$')


def _linear(prefix, weight, bias=None):
  out = {f'{prefix}/kernel': weight.T}
  if bias is not None:
    out[f'{prefix}/bias'] = bias
  return out


def _attention_in(prefix, weight, bias, num_heads):
  width_out, width_in = weight.shape
  head_dim = width_out // num_heads
  return {f'{prefix}/kernel': weight.T.reshape(width_in, num_heads, head_dim),
          f'{prefix}/bias': bias.reshape(num_heads, head_dim)}


def _attention_qkv(prefix, weights_and_biases, num_heads):
  """query/key/value from {name: (weight, bias)}; the key bias is dropped (see above)."""
  out = {}
  for name, (weight, bias) in weights_and_biases.items():
    mapped = _attention_in(f'{prefix}/{name}', weight, bias, num_heads)
    if name == 'key':
      del mapped[f'{prefix}/key/bias']
    out.update(mapped)
  return out


def _attention_out(prefix, weight, bias, num_heads):
  width_out, width_in = weight.shape
  return {f'{prefix}/kernel': weight.T.reshape(num_heads, width_in // num_heads, width_out),
          f'{prefix}/bias': bias}


def _norm(prefix, tensors, name):
  scale = tensors.get(f'{name}.weight', tensors.get(f'{name}.gamma'))
  bias = tensors.get(f'{name}.bias', tensors.get(f'{name}.beta'))
  return {f'{prefix}/scale': scale, f'{prefix}/bias': bias}


class _Taker:
  """Hands out checkpoint tensors by name and remembers which were used."""

  def __init__(self, tensors):
    self.tensors = {k: v for k, v in tensors.items() if not BUFFERS.fullmatch(k)}
    self.used = set()

  def __call__(self, name):
    if name not in self.tensors:
      raise errors.UserError(f'the checkpoint has no tensor {name!r}; its tensors start with '
                             f'{sorted(self.tensors)[:5]}')
    self.used.add(name)
    return np.asarray(self.tensors[name])

  def has(self, name):
    return name in self.tensors

  def norm(self, prefix, name):
    names = [f'{name}.{s}' for s in ('weight', 'bias', 'gamma', 'beta') if self.has(f'{name}.{s}')]
    return _norm(prefix, {n: self(n) for n in names}, name)

  def unused(self):
    return sorted(set(self.tensors) - self.used)


def bert_text_tower(tensors, hf_config, prefix='text_encoder'):
  """BertModel tensors -> ({jaxret path: array}, unused names) for a post-LN
  `TextTransformer(embed_norm=True, final_norm=False, prenorm=False)`."""
  take = _Taker({re.sub(r'^(bert|model)\.', '', k): v for k, v in tensors.items()})
  heads = hf_config['num_attention_heads']
  out = {f'{prefix}/token_embedding/embedding': take('embeddings.word_embeddings.weight')}
  position = take('embeddings.position_embeddings.weight')
  if take.has('embeddings.token_type_embeddings.weight'):
    position = position + take('embeddings.token_type_embeddings.weight')[0][None]
  out[f'{prefix}/position_embedding'] = position
  out.update(take.norm(f'{prefix}/embedding_norm', 'embeddings.LayerNorm'))
  for i in range(hf_config['num_hidden_layers']):
    src, dst = f'encoder.layer.{i}', f'{prefix}/encoder/block{i:02d}'
    out.update(_attention_qkv(f'{dst}/attention', {
        name: (take(f'{src}.attention.self.{name}.weight'),
               take(f'{src}.attention.self.{name}.bias'))
        for name in ('query', 'key', 'value')}, heads))
    out.update(_attention_out(f'{dst}/attention/out', take(f'{src}.attention.output.dense.weight'),
                              take(f'{src}.attention.output.dense.bias'), heads))
    out.update(take.norm(f'{dst}/norm1', f'{src}.attention.output.LayerNorm'))
    out.update(_linear(f'{dst}/mlp/fc1', take(f'{src}.intermediate.dense.weight'),
                       take(f'{src}.intermediate.dense.bias')))
    out.update(_linear(f'{dst}/mlp/fc2', take(f'{src}.output.dense.weight'),
                       take(f'{src}.output.dense.bias')))
    out.update(take.norm(f'{dst}/norm2', f'{src}.output.LayerNorm'))
  return out, take.unused()


def _clip_blocks(take, src_prefix, dst_prefix, num_layers, heads):
  out = {}
  for i in range(num_layers):
    src, dst = f'{src_prefix}.encoder.layers.{i}', f'{dst_prefix}/encoder/block{i:02d}'
    out.update(_attention_qkv(f'{dst}/attention', {
        name: (take(f'{src}.self_attn.{proj}.weight'), take(f'{src}.self_attn.{proj}.bias'))
        for name, proj in (('query', 'q_proj'), ('key', 'k_proj'), ('value', 'v_proj'))}, heads))
    out.update(_attention_out(f'{dst}/attention/out', take(f'{src}.self_attn.out_proj.weight'),
                              take(f'{src}.self_attn.out_proj.bias'), heads))
    out.update(take.norm(f'{dst}/norm1', f'{src}.layer_norm1'))
    out.update(take.norm(f'{dst}/norm2', f'{src}.layer_norm2'))
    for fc in ('fc1', 'fc2'):
      out.update(_linear(f'{dst}/mlp/{fc}', take(f'{src}.mlp.{fc}.weight'),
                         take(f'{src}.mlp.{fc}.bias')))
  return out


def clip_dual_encoder(tensors, hf_config):
  """CLIPModel tensors -> ({jaxret path: array}, unused names) for a `DualEncoder` whose
  ViT has cls_posemb, pre_norm, patch_bias=False and whose text tower is causal pre-LN."""
  take = _Taker(tensors)
  text_cfg, vision_cfg = hf_config['text_config'], hf_config['vision_config']
  embeddings = 'text_model.embeddings'
  out = {
      'text_encoder/token_embedding/embedding': take(f'{embeddings}.token_embedding.weight'),
      'text_encoder/position_embedding': take(f'{embeddings}.position_embedding.weight'),
  }
  out.update(_clip_blocks(take, 'text_model', 'text_encoder', text_cfg['num_hidden_layers'],
                          text_cfg['num_attention_heads']))
  out.update(take.norm('text_encoder/final_norm', 'text_model.final_layer_norm'))
  patch = take('vision_model.embeddings.patch_embedding.weight')
  out['image_encoder/embedding/kernel'] = patch.transpose(2, 3, 1, 0)
  out['image_encoder/cls'] = take('vision_model.embeddings.class_embedding').reshape(1, 1, -1)
  out['image_encoder/pos_embedding'] = take(
      'vision_model.embeddings.position_embedding.weight')[None]
  out.update(take.norm('image_encoder/pre_norm', 'vision_model.pre_layrnorm'))
  out.update(_clip_blocks(take, 'vision_model', 'image_encoder', vision_cfg['num_hidden_layers'],
                          vision_cfg['num_attention_heads']))
  out.update(take.norm('image_encoder/encoder_norm', 'vision_model.post_layernorm'))
  out['image_projection/kernel'] = take('visual_projection.weight').T
  out['text_projection/kernel'] = take('text_projection.weight').T
  out['logit_scale'] = take('logit_scale').reshape(())
  return out, take.unused()


def _activation(name):
  known = {'gelu': 'gelu', 'quick_gelu': 'quick_gelu', 'gelu_new': 'gelu_tanh',
           'gelu_pytorch_tanh': 'gelu_tanh', 'relu': 'relu'}
  if name not in known:
    raise errors.UserError(f'unsupported activation {name!r} in config.json')
  return known[name]


def bert_text_config(hf_config, pool='first'):
  """`config.model.text` settings that reproduce a BertModel."""
  if hf_config.get('position_embedding_type', 'absolute') != 'absolute':
    raise errors.UserError('only absolute position embeddings are supported')
  return {'variant': 'S', 'width': hf_config['hidden_size'],
          'depth': hf_config['num_hidden_layers'], 'num_heads': hf_config['num_attention_heads'],
          'mlp_dim': hf_config['intermediate_size'], 'pool': pool, 'causal': False,
          'prenorm': False, 'embed_norm': True, 'final_norm': False,
          'activation': _activation(hf_config.get('hidden_act', 'gelu')),
          'layer_norm_eps': hf_config.get('layer_norm_eps', 1e-12)}


def clip_model_config(hf_config):
  """(`config.model.image`, `config.model.text`, embed_dim, image_size, patch size) of a
  CLIPModel."""
  text, vision = hf_config['text_config'], hf_config['vision_config']
  image = {'variant': f'S/{vision["patch_size"]}', 'width': vision['hidden_size'],
           'depth': vision['num_hidden_layers'], 'num_heads': vision['num_attention_heads'],
           'mlp_dim': vision['intermediate_size'], 'pool': 'cls', 'posemb': 'learn',
           'activation': _activation(vision.get('hidden_act', 'quick_gelu')),
           'layer_norm_eps': vision.get('layer_norm_eps', 1e-5), 'patch_bias': False,
           'cls_posemb': True, 'pre_norm': True}
  text_model = {'variant': 'S', 'width': text['hidden_size'], 'depth': text['num_hidden_layers'],
                'num_heads': text['num_attention_heads'], 'mlp_dim': text['intermediate_size'],
                'pool': 'last', 'causal': True, 'prenorm': True, 'embed_norm': False,
                'final_norm': True, 'activation': _activation(text.get('hidden_act', 'quick_gelu')),
                'layer_norm_eps': text.get('layer_norm_eps', 1e-5)}
  return image, text_model, hf_config['projection_dim'], vision['image_size'], vision['patch_size']
