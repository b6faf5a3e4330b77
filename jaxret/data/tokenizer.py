"""Tokenisation with the `tokenizers` library, fully offline.

The default tokenizer is a word-level vocabulary built deterministically from
the training captions and saved as `tokenizer.json` in the workdir, so that the
query side uses exactly the training tokenizer. A local Hugging Face tokenizer
directory (`tokenizer.json`, or a BERT `vocab.txt`) can be used instead.
"""

import collections
import json
import os
import re
import unicodedata

import numpy as np
import tokenizers
from tokenizers import models as tok_models
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors

from jaxret.models.load import local_models

PAD, UNK, CLS, SEP, MASK = '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # Ids 0..4 in the built vocabulary.
FILENAME = 'tokenizer.json'


class Tokenizer:
  """Fixed-length tokenisation: `[CLS] words [SEP]`, truncated and padded."""

  def __init__(self, backend: tokenizers.Tokenizer, max_len: int):
    self.backend = backend
    self.max_len = max_len
    self.pad_id = self._special_id((PAD, '<pad>', '<|endoftext|>'))
    self.mask_id = self._special_id((MASK, '<mask>'), required=False)
    backend.enable_truncation(max_length=max_len)
    backend.enable_padding(length=max_len, pad_id=self.pad_id,
                           pad_token=backend.id_to_token(self.pad_id))

  def _special_id(self, candidates, required=True):
    for token in candidates:
      token_id = self.backend.token_to_id(token)
      if token_id is not None:
        return token_id
    if required:
      raise ValueError(f'tokenizer has none of the special tokens {candidates}')
    return None

  @property
  def vocab_size(self):
    return self.backend.get_vocab_size()

  def encode(self, texts):
    """Returns `(tokens, mask)`, both (len(texts), max_len) int32."""
    encodings = self.backend.encode_batch(list(texts))
    tokens = np.array([e.ids for e in encodings], np.int32).reshape(-1, self.max_len)
    mask = np.array([e.attention_mask for e in encodings], np.int32).reshape(-1, self.max_len)
    return tokens, mask

  def decode(self, tokens):
    return self.backend.decode([int(t) for t in tokens], skip_special_tokens=True)

  def save(self, directory):
    self.backend.save(os.path.join(directory, FILENAME))


def _post_processor(cls_id, sep_id):
  return processors.TemplateProcessing(
      single=f'{CLS} $A {SEP}', special_tokens=[(CLS, cls_id), (SEP, sep_id)])


def build_word_level(texts, max_len, min_count=1):
  """A word-level tokenizer over `texts`: specials first, then words by (-count, word).

  Words are what the tokenizer's own normaliser (NFKC, lowercase) and
  pre-tokeniser (`\\w+|[^\\w\\s]+`) make of the text, counted in one pass.
  """
  normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
  pre_tokenizer = pre_tokenizers.Whitespace()
  text = unicodedata.normalize('NFKC', '\n'.join(texts)).lower()
  counts = collections.Counter(re.findall(r'\w+|[^\w\s]+', text))
  words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
  vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(words))}
  backend = tokenizers.Tokenizer(tok_models.WordLevel(vocab, unk_token=UNK))
  backend.add_special_tokens(list(SPECIAL_TOKENS))
  backend.normalizer = normalizer
  backend.pre_tokenizer = pre_tokenizer
  backend.post_processor = _post_processor(vocab[CLS], vocab[SEP])
  return Tokenizer(backend, max_len)


def load_hf_directory(path, max_len):
  """A tokenizer from a local Hugging Face directory (no network), or a short name
  of one that a package ships (`minilm`)."""
  path = local_models.resolve(path)
  tokenizer_json = os.path.join(path, FILENAME)
  if os.path.exists(tokenizer_json):
    return Tokenizer(tokenizers.Tokenizer.from_file(tokenizer_json), max_len)
  vocab_txt = os.path.join(path, 'vocab.txt')
  if os.path.exists(vocab_txt):
    lowercase = True
    config_path = os.path.join(path, 'tokenizer_config.json')
    if os.path.exists(config_path):
      with open(config_path) as f:
        lowercase = json.load(f).get('do_lower_case', True)
    wordpiece = tokenizers.BertWordPieceTokenizer(vocab_txt, lowercase=lowercase)
    return Tokenizer(wordpiece._tokenizer, max_len)  # pylint: disable=protected-access
  raise FileNotFoundError(f'no {FILENAME} or vocab.txt in tokenizer directory {path}')


def load_workdir(workdir, max_len):
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no {FILENAME} in {workdir}; run --mode=train first')
  return Tokenizer(tokenizers.Tokenizer.from_file(path), max_len)


def for_workdir(tokenizer_config, max_len, workdir, train_records=None):
  """The workdir's tokenizer, or (given the training records) a new one.

  With `tokenizer.path` set, that local Hugging Face tokenizer is used; else
  the word-level vocabulary is built from the training captions. Training saves
  it as `DIR/tokenizer.json` (`save_once`), which every later mode loads.
  """
  saved = os.path.join(workdir, FILENAME)
  if os.path.exists(saved):
    return load_workdir(workdir, max_len)
  if train_records is None:
    raise FileNotFoundError(f'no {FILENAME} in {workdir}; run --mode=train first')
  if tokenizer_config.path:
    tokenizer = load_hf_directory(tokenizer_config.path, max_len)
  else:
    tokenizer = build_word_level((t for caps in train_records.captions for t in caps), max_len)
  return tokenizer


def save_once(tokenizer, workdir):
  """Saves `tokenizer` as the workdir's, unless the workdir already has one."""
  if not os.path.exists(os.path.join(workdir, FILENAME)):
    os.makedirs(workdir, exist_ok=True)
    tokenizer.save(workdir)
