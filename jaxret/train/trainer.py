"""The trainer: one loop for every method. Resumes from the workdir's latest checkpoint."""

import time

import jax
from jaxret.config import workdir as workdir_config
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.evaluate import retrieval
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import checkpoint
from jaxret.train import metrics_writer
from jaxret.train import setup


def log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


def _duration(seconds):
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes}m{seconds:02d}s'


def _due(step, every, total):
  return step == total or (every > 0 and step % every == 0)


def train(config, workdir, mesh=None):
  """Trains `config` in `workdir` up to `config.total_steps`; returns the final state."""
  mesh = mesh_lib.make_mesh(config.mesh) if mesh is None else mesh
  local_batch = mesh_lib.check_global_batch(config.batch_size, mesh)
  setup.check_config(config)
  train_records = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.for_workdir(config.tokenizer, config.data.text_len, workdir,
                                        train_records, write=jax.process_index() == 0)
  trainable = setup.Trainable(config, tokenizer, mesh)
  dataset = pipeline.train_dataset(
      train_records, tokenizer, config.data, seed=config.seed, global_batch=config.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())
  data_iterator = pipeline.train_iterator(dataset, config.data)
  checkpoints = checkpoint.Checkpoints(workdir, config.keep_checkpoints)
  if checkpoints.latest_step() is not None:
    state = checkpoints.restore(trainable.restore_target(), data_iterator=data_iterator)
    log(f'resumed from step {int(state.step)} in {checkpoint.directory(workdir)}')
  else:
    state = trainable.init_state()
  if jax.process_index() == 0:
    workdir_config.save(config, workdir)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  log(f'{num_params:,} parameters; global batch {config.batch_size} '
      f'({local_batch} per process) on {mesh.devices.size} devices')

  step_fn = trainable.compiled_step()
  writer = metrics_writer.MetricWriter(workdir)
  evaluator = None  # Built at the first evaluation.
  start_step = int(state.step)
  last_time, last_step = time.time(), start_step
  for step in range(start_step + 1, config.total_steps + 1):
    batch = host.to_global(next(data_iterator), mesh)
    state, step_metrics = step_fn(state, batch)
    record = {}
    if _due(step, config.log_every, config.total_steps):
      step_metrics = jax.device_get(step_metrics)
      now = time.time()
      per_step = (now - last_time) / max(step - last_step, 1)
      last_time, last_step = now, step
      record.update(step_metrics)
      record['learning_rate'] = float(trainable.learning_rate(step - 1))
      record['examples_per_sec'] = config.batch_size / per_step
      log(f'step {step}/{config.total_steps} | loss {float(step_metrics["loss"]):.4f} | '
          f'lr {record["learning_rate"]:.2e} | {record["examples_per_sec"]:.0f} ex/s | '
          f'ETA {_duration(per_step * (config.total_steps - step))}')
    if _due(step, config.eval_every, config.total_steps):
      if evaluator is None:
        evaluator = retrieval.RetrievalEvaluator(
            trainable.model, mesh, sources.load_split(config.data, config.eval.periodic_split),
            tokenizer, config)
      results = evaluator(state.params)
      record.update({f'{config.eval.periodic_split}/{k}': v for k, v in results.items()})
      log(f'step {step} {config.eval.periodic_split}: ' + ' '.join(
          f'{k} {results[k]:.3f}' for k in ('t2i/R@1', 't2i/R@5', 't2i/R@10', 'i2t/R@1')))
      last_time = time.time()  # Evaluation time is not training throughput.
    writer.write(step, record)
    if _due(step, config.checkpoint_every, config.total_steps):
      checkpoints.save(step, state, data_iterator)
  checkpoints.close()
  writer.close()
  if start_step >= config.total_steps:
    log(f'already trained to step {start_step} (total_steps={config.total_steps})')
  return state
