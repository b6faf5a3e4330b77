"""The trainer: one loop for every method. Resumes from the workdir's latest checkpoint.

A checkpoint holds the whole `TrainState` (parameters, optimizer state, the
objective's extra state such as momentum encoders and queues, the RNG and the
step) and the input iterator's position, so a resumed run computes exactly what
an uninterrupted one would have.
"""

import os
import time

import jax

from jaxret import errors
from jaxret import evaluate as evaluate_lib
from jaxret.config import workdir as workdir_config
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib
from jaxret.inference import checkpoints as checkpoints_lib
from jaxret.train import guards
from jaxret.train import metrics_writer
from jaxret.train import preemption
from jaxret.train import setup


def log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


def _duration(seconds):
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes}m{seconds:02d}s'


def _due(step, every, total):
  return step == total or (every > 0 and step % every == 0)


def check_writable(workdir):
  """Refuses a workdir that cannot be written, before anything is computed."""
  probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise errors.UserError(f'cannot write to --workdir={workdir}: {e.strerror or e}; '
                           'pick a writable directory') from e


class _Throughput:
  """Examples/s and ETA between log steps, excluding evaluation time."""

  def __init__(self, step):
    self.time, self.step = time.time(), step

  def update(self, step):
    now = time.time()
    per_step = (now - self.time) / max(step - self.step, 1)
    self.time, self.step = now, step
    return per_step

  def pause_ended(self):
    self.time = time.time()


def train(config, workdir, mesh=None):
  """Trains `config` in `workdir` up to `config.total_steps`; returns the final state.

  Raises `errors.Preempted` after saving a checkpoint when asked to stop
  (SIGTERM), and `errors.RunError` on non-finite values or a failed write.
  """
  mesh = mesh_lib.make_mesh(config.mesh) if mesh is None else mesh
  local_batch = mesh_lib.check_global_batch(config.batch_size, mesh)
  setup.check_config(config)
  check_writable(workdir)
  train_records = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.for_workdir(config.tokenizer, config.data.text_len, workdir,
                                        train_records)
  trainable = setup.Trainable(config, tokenizer, mesh)
  if config.eval_every > 0:  # The evaluator is built at the first evaluation; its needs now.
    evaluate_lib.check_model(config.eval.periodic_evaluator, trainable.model)
  dataset = pipeline.train_dataset(
      train_records, tokenizer, config.data, seed=config.seed, global_batch=config.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())
  data_iterator = pipeline.train_iterator(dataset, config.data)
  checkpoints = checkpoints_lib.Checkpoints(workdir, config.keep_checkpoints)
  if checkpoints.latest_step() is not None:
    state = checkpoints.restore(trainable.restore_target(), data_iterator=data_iterator)
    log(f'resumed from step {int(state.step)} in {checkpoints_lib.directory(workdir)}')
  else:
    state = trainable.init_state()
  if jax.process_index() == 0:  # Written once everything above has been accepted.
    tokenizer_lib.save_once(tokenizer, workdir)
    workdir_config.save(config, workdir)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  log(f'{num_params:,} parameters; global batch {config.batch_size} '
      f'({local_batch} per process) on {mesh.devices.size} devices')

  start_step = int(state.step)
  step_fn = trainable.compiled_step()
  writer = metrics_writer.MetricWriter(workdir, resume_step=start_step)
  guard = guards.FiniteGuard(state.params, config.on_nonfinite, log)
  watcher = preemption.PreemptionWatcher()
  throughput = _Throughput(start_step)
  evaluator = None  # Built at the first evaluation.
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      state, step_metrics = step_fn(state, host.to_global(next(data_iterator), mesh))
      guard.record(step, step_metrics)
      preempted = watcher.reached(step)
      record = {}
      if _due(step, config.log_every, config.total_steps) or preempted:
        guard.check()
        step_metrics = jax.device_get(step_metrics)
        per_step = throughput.update(step)
        record.update(step_metrics)
        record['learning_rate'] = float(trainable.learning_rate(step - 1))
        record['examples_per_sec'] = config.batch_size / per_step
        log(f'step {step}/{config.total_steps} | loss {float(step_metrics["loss"]):.4f} | '
            f'lr {record["learning_rate"]:.2e} | {record["examples_per_sec"]:.0f} ex/s | '
            f'ETA {_duration(per_step * (config.total_steps - step))}')
      # eval_every <= 0: no evaluation during training (--mode=eval does it).
      if config.eval_every > 0 and _due(step, config.eval_every, config.total_steps) and (
          not preempted):
        if evaluator is None:
          evaluator = evaluate_lib.build(
              config.eval.periodic_evaluator, config, trainable.model, mesh,
              sources.load_split(config.data, config.eval.periodic_split), tokenizer,
              config.eval.periodic_split)
        results = evaluator(state.params)
        record.update({f'{config.eval.periodic_split}/{k}': v for k, v in results.items()})
        log(f'step {step} {config.eval.periodic_split}: ' + ' '.join(
            f'{k} {results[k]:.3f}' for k in ('t2i/R@1', 't2i/R@5', 't2i/R@10', 'i2t/R@1')
            if k in results))
        throughput.pause_ended()
      writer.write(step, record)
      if _due(step, config.checkpoint_every, config.total_steps) or preempted:
        guard.check()  # Never save a state that came from a non-finite step.
        checkpoints.save(step, state, data_iterator)
      if preempted:
        checkpoints.wait()
        raise errors.Preempted(
            f'preempted: saved the checkpoint of step {step} in '
            f'{checkpoints_lib.directory(workdir)}; rerun the same command to resume')
    guard.check()
  finally:
    try:
      watcher.close()
      writer.close()
    finally:  # Even when a log cannot be written: a save in flight finishes or is reported.
      checkpoints.close()
  if start_step >= config.total_steps:
    log(f'already trained to step {start_step} (total_steps={config.total_steps})')
  return state
