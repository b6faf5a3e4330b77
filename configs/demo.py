r"""The default: a small CLIP-style dual encoder on the built-in data, CPU-sized.

  python -m jaxret.main --mode=demo --config=configs/demo.py --workdir=/tmp/jaxret-demo

Trains a 4-block ViT (64x64 images, 8x8 patches) and a 3-block text
transformer, both 128 wide, with symmetric InfoNCE, then evaluates, exports,
indexes and queries. See README.md for the Recall@K and time it reaches on a
2-core CPU.

Arguments (`configs/demo.py:runlocal,steps=50`):
  runlocal: a seconds-long smoke run (tiny model, few steps, small splits).
  steps: number of training steps (default from the mode).
  batch: the global batch (default 128); microbatches: chunks each device's
    rows go through (default 1; docs/scaling.md), e.g.
    `configs/clip.py:runlocal,steps=3,batch=16384,microbatches=256` on one CPU device.
"""

import ml_collections

from jaxret.config import args as args_lib
from jaxret.data import options as data_options


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, runlocal=False, steps=0, batch=0, microbatches=1)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = arg.batch or 128
  # Chunks each device's batch goes through (gradient caching, exact to M=1;
  # docs/scaling.md); must divide the per-device batch.
  config.microbatches = arg.microbatches
  config.total_steps = arg.steps or (4 if arg.runlocal else 350)
  config.log_every = 2 if arg.runlocal else 25
  config.eval_every = 4 if arg.runlocal else 100  # And at the last step; 0: never.
  config.checkpoint_every = 2 if arg.runlocal else 100
  config.keep_checkpoints = 2
  # A non-finite loss or gradient: 'stop' the run (naming the step and the
  # quantity, saving nothing), or 'skip' the update and go on.
  config.on_nonfinite = 'stop'

  # The source, location and preprocessing keys (jaxret/data/options.py): real
  # data with --config.data.source=karpathy|tfds|wds --config.data.path=...
  # Built-in data: no random crops (its captions say left, right, top, bottom).
  config.data = data_options.defaults()
  config.data.source = 'builtin'
  config.data.train_crop = 'none'
  config.data.seed = 0  # The generated dataset's seed (fixed across runs).
  config.data.image_size = 64
  config.data.num_train = 1000 if arg.runlocal else 20000
  config.data.num_val = 64 if arg.runlocal else 250
  config.data.num_test = 64 if arg.runlocal else 500
  config.data.captions_per_image = 5
  config.data.near_duplicates_per_group = 4
  config.data.text_len = 24
  config.data.image_mean = (0.5, 0.5, 0.5)
  config.data.image_std = (0.5, 0.5, 0.5)
  config.data.num_threads = 2
  config.data.prefetch = 2

  # Empty: a word-level vocabulary built from the training captions.
  config.tokenizer = ml_collections.ConfigDict({'path': ''})

  config.model = ml_collections.ConfigDict()
  config.model.name = 'dual_encoder'
  config.model.image = ml_collections.ConfigDict(
      {'variant': 'mu/8' if arg.runlocal else 'nano/8', 'pool': 'cls', 'posemb': 'learn'})
  config.model.text = ml_collections.ConfigDict(
      {'variant': 'mu' if arg.runlocal else 'nano', 'depth': 1 if arg.runlocal else 3,
       'pool': 'first', 'causal': False})
  config.model.embed_dim = 32 if arg.runlocal else 128
  config.model.dtype = 'float32'
  config.model.remat_policy = 'none'  # none | full | dots | dots_saveable
  config.model.scan_layers = False

  # Pretrained towers (jaxret/models/load): a BERT-family Hugging Face directory
  # (or 'minilm') for the text tower, a Hugging Face CLIP directory for both,
  # or a trained jaxret workdir (its image tower, and the rest when it fits:
  # jaxret/train/warm_start.py), and regexes of parameters allowed to differ in
  # shape (re-initialised).
  config.init = ml_collections.ConfigDict({'text': '', 'clip': '', 'workdir': '', 'reinit': ()})

  config.loss = ml_collections.ConfigDict({'name': 'clip'})

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adamw'
  config.optimizer.lr = 1e-3
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.98
  config.optimizer.weight_decay = 0.1
  config.optimizer.grad_clip = 1.0
  config.optimizer.schedule = 'warmup_cosine'
  config.optimizer.warmup_steps = 1 if arg.runlocal else 50
  config.optimizer.end_lr_factor = 0.0
  # Regexes of parameter paths that are not trained (LiT's locked tower).
  config.optimizer.frozen = ()

  # (axis, size) pairs; -1: all remaining devices. The batch is split over
  # every axis but `model`.
  config.mesh = (('data', -1),)
  # (regex over parameter paths, partition spec) pairs; unmatched: replicated.
  # FSDP, for example: (('.*(kernel|embedding)$', ('data',)),).
  config.sharding = ml_collections.ConfigDict({'rules': ()})

  config.eval = ml_collections.ConfigDict()
  # By name from jaxret/evaluate/__init__.py: for --mode=eval, and during training.
  config.eval.evaluator = 'retrieval'
  config.eval.periodic_evaluator = 'retrieval'
  config.eval.split = 'test'  # --mode=eval.
  config.eval.periodic_split = 'val'  # During training.
  config.eval.batch_size = 64 if arg.runlocal else 256
  # text_image: text→image and image→text Recall@K; image_image adds image→image
  # Recall@K by label over `eval.views` renderings of each scene (configs/irt_image.py).
  config.eval.task = 'text_image'

  config.export = ml_collections.ConfigDict({'split': 'test'})
  # PCA-reduced copies of the exported descriptors (jaxret/export/pca.py): the
  # reduced dimension (0: none), fitted on this many training images.
  config.export.pca_dim = 0
  config.export.pca_fit_images = 2000

  config.index = ml_collections.ConfigDict()
  config.index.method = 'auto'  # auto | brute_force | tree_ah
  config.index.brute_force_below = 10_000
  config.index.num_leaves = 0  # 0: chosen from the gallery size.
  config.index.num_leaves_to_search = 0
  config.index.reorder = 0
  config.index.dims_per_block = 2
  config.index.anisotropic_threshold = 0.2
  # The export's captions as a second gallery (DIR/texts/), for image→text search
  # (POST /search with an image query and "target": "texts"); it keeps their
  # float32 embeddings, as the image index does: captions x embed_dim x 4 bytes.
  config.index.texts = True
  # A late-interaction model's (configs/filip.py) patch tokens of the gallery,
  # stored by --mode=index for token-wise serving: '' (none), float32, bfloat16
  # or int8 (one float32 scale per token); the pooled index's shortlist that
  # the token-wise score re-ranks, and the shapes that scorer compiles for.
  config.index.token_dtype = ''
  config.index.token_shortlist = 100
  config.index.token_candidate_buckets = (25, 100)

  # Re-ranking the fast top K by a slow model (Thinking Fast and Slow:
  # configs/caption.py, configs/distill.py). `slow_workdir`: the slow model's
  # workdir ('': no re-ranking); --mode=index then stores its visual tokens of
  # the gallery, and serving re-ranks with them.
  config.rerank = ml_collections.ConfigDict()
  config.rerank.slow_workdir = ''
  config.rerank.k = 25  # Candidates re-ranked when serving.
  config.rerank.beta = 1.0  # final = h + β · fast score.
  # Serving: a latency budget per query (ms) picks the largest candidate bucket whose
  # measured cost fits (0: re-rank `k` candidates); a request's budget_ms overrides it.
  config.rerank.budget_ms = 0.0
  # Shapes the slow scorer compiles for (jaxret/rerank/scorer.py), and the
  # stored visual tokens' dtype.
  config.rerank.candidate_buckets = (10, 50, 100)
  config.rerank.length_buckets = (8, 16, 24)
  config.rerank.storage_dtype = 'bfloat16'
  # Stored per gallery image: the slow model's visual 'tokens', or its decoders'
  # cross-attention 'keys_values' of them (no projection per query, more bytes).
  config.rerank.features = 'tokens'
  # The fast_slow evaluator's (configs/distill.py): the undistilled fast model's
  # workdir to compare with ('': none), and the numbers of candidates re-ranked.
  config.rerank.fast_workdir = ''
  config.rerank.ks = (10, 50, 100)

  config.query = ml_collections.ConfigDict()
  config.query.text = 'a large yellow triangle above a little red square above a big purple cross'
  config.query.k = 5
  return config
