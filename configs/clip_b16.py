r"""CLIP ViT-B/16 dual encoder (OpenAI CLIP sizes), bf16 compute, for accelerators.

  python -m jaxret.main --mode=train --config=configs/clip_b16.py --workdir=DIR
  launch/gpu_host.sh --config=configs/clip_b16.py --workdir=DIR
  python -m benchmarks.train_step --config=configs/clip_b16.py     # throughput and MFU

ViT-B/16 at 224x224 and a 12-layer, 512-wide causal text transformer (CLIP's
text tower is our 'M' size) with end-token pooling, 512-d joint space, global
batch 1024. On the built-in data this is far more model than the data needs;
it is the config for real data (`--config.data.source=...`, see docs/data.md) and
for throughput measurements. Not run on CPU in this repository.

Arguments: `runlocal` (a tiny smoke version), `remat` (rematerialise blocks),
`scan` (scanned layers), `fsdp` (shard kernels over the data axis).
"""

import ml_collections

from jaxret.config import args as args_lib
from jaxret.config import config_file

demo = config_file.sibling(__file__, 'demo')


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, runlocal=False, remat=False, scan=False, fsdp=False)
  config = demo.get_config('runlocal' if arg.runlocal else None)
  if arg.runlocal:
    return config
  config.batch_size = 1024
  config.total_steps = 10_000
  config.log_every = 50
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.data.image_size = 224
  config.data.text_len = 32
  config.data.num_threads = 16
  config.data.prefetch = 4
  config.model.image = ml_collections.ConfigDict(
      {'variant': 'B/16', 'pool': 'cls', 'posemb': 'learn'})
  config.model.text = ml_collections.ConfigDict(
      {'variant': 'M', 'pool': 'last', 'causal': True})
  config.model.embed_dim = 512
  config.model.dtype = 'bfloat16'
  config.model.remat_policy = 'dots' if arg.remat else 'none'
  config.model.scan_layers = arg.scan
  if arg.fsdp:
    config.sharding.rules = (('.*(kernel|embedding)$', ('data',)),)
  config.optimizer.lr = 5e-4
  config.optimizer.weight_decay = 0.2
  config.optimizer.warmup_steps = 500
  config.eval.batch_size = 1024
  return config
