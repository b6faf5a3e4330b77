"""jaxret: text-to-visual retrieval in JAX/Flax, from training to serving.

The package is a stack of layers. A module may import from its own layer and
from the layers below it, never from one above, not even inside a function
(`tests/test_layers.py` reads every import and enforces it). Lowest first:
"""

LAYERS = (
    # One-line errors, choosing by name, atomic writes, parameter path names.
    ('errors', 'registry', 'files', 'tree'),
    ('config',),      # Config arguments, a workdir's saved config.
    ('parallel',),    # Mesh, shardings, shard_map wrappers, multi-process start.
    ('losses',),      # Pure loss functions of arrays (plus an axis name).
    ('models',),      # Flax modules, variants, pretrained-weight loading.
    ('data',),        # Sources, tokenizer, the input pipeline, the built-in data.
    ('inference',),   # A workdir's checkpoints; a trained model restored for any mode.
    ('objectives',),  # A model wired to its loss: the method a config names.
    ('index',),       # The gallery's ScaNN index on disk.
    ('rerank',),      # A slow model scoring a fast model's candidates.
    ('evaluate',),    # Recall@K evaluators, --mode=eval.
    ('train',),       # The train step, the sharded state, the trainer (--mode=train).
    ('export',),      # --mode=export (embeddings) and --mode=index.
    ('serve',),       # --mode=query and --mode=serve.
    ('main',),        # The command line.
)
