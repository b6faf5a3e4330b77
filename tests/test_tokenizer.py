"""Tokenizer: round trip, determinism, padding/truncation, saving and HF directories."""

import os

import numpy as np

from jaxret.data import tokenizer as tokenizer_lib

TEXTS = ['a small red circle to the left of a big blue square',
         'a big blue square to the right of a small red circle',
         'from left to right: a red cross, a green triangle']


def test_round_trip():
  tok = tokenizer_lib.build_word_level(TEXTS, max_len=16)
  tokens, mask = tok.encode(TEXTS[:1])
  assert tok.decode(tokens[0]) == TEXTS[0]
  assert tokens.shape == mask.shape == (1, 16)
  assert tokens[0, 0] == tok.backend.token_to_id('[CLS]')
  end = int(mask[0].sum()) - 1
  assert tokens[0, end] == tok.backend.token_to_id('[SEP]')
  assert (tokens[0, end + 1:] == tok.pad_id).all() and (mask[0, end + 1:] == 0).all()


def test_deterministic_vocabulary():
  a = tokenizer_lib.build_word_level(TEXTS, max_len=16)
  b = tokenizer_lib.build_word_level(list(reversed(TEXTS)), max_len=16)
  assert a.backend.get_vocab() == b.backend.get_vocab()


def test_truncation_keeps_end_token_and_unknown_words():
  tok = tokenizer_lib.build_word_level(TEXTS, max_len=6)
  tokens, mask = tok.encode(['a zebra ' * 10])
  assert mask.sum() == 6
  assert tokens[0, -1] == tok.backend.token_to_id('[SEP]')
  assert tok.backend.token_to_id('[UNK]') in tokens[0]


def test_save_and_load_from_workdir(tmp_path):
  tok = tokenizer_lib.build_word_level(TEXTS, max_len=16)
  tok.save(str(tmp_path))
  loaded = tokenizer_lib.load_workdir(str(tmp_path), max_len=16)
  np.testing.assert_array_equal(tok.encode(TEXTS)[0], loaded.encode(TEXTS)[0])


def test_bert_vocab_directory(tmp_path):
  vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a', 'red', 'circ', '##le']
  (tmp_path / 'vocab.txt').write_text('\n'.join(vocab) + '\n')
  tok = tokenizer_lib.load_hf_directory(str(tmp_path), max_len=8)
  tokens, _ = tok.encode(['A red circle'])
  assert tokens[0].tolist() == [2, 5, 6, 7, 8, 3, 0, 0]
  assert tok.mask_id == 4


def test_workdir_tokenizer_is_built_once(tmp_path, tiny_config):
  from jaxret.data import records  # pylint: disable=import-outside-toplevel
  train = records.Records(images=np.zeros((2, 4, 4, 3), np.uint8), image_ids=np.arange(2),
                          captions=[[TEXTS[0]], [TEXTS[1]]])
  first = tokenizer_lib.for_workdir(tiny_config.tokenizer, 16, str(tmp_path), train)
  assert not os.path.exists(tmp_path / 'tokenizer.json')
  tokenizer_lib.save_once(first, str(tmp_path))
  assert os.path.exists(tmp_path / 'tokenizer.json')
  other = records.Records(images=train.images, image_ids=train.image_ids,
                          captions=[['zebra'], ['giraffe']])
  second = tokenizer_lib.for_workdir(tiny_config.tokenizer, 16, str(tmp_path), other)
  assert first.backend.get_vocab() == second.backend.get_vocab()
