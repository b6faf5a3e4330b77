"""Starting JAX's multi-process runtime (multi-host TPU/GPU, or several CPU processes)."""

import os

import jax

from jaxret import errors


def _cluster_detected():
  """Whether jax.distributed can find its peers on its own (TPU pod or SLURM job)."""
  slurm_tasks = int(os.environ.get('SLURM_NTASKS', '1') or 1)
  tpu_hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return slurm_tasks > 1 or ',' in tpu_hosts


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """Initialises jax.distributed when the run spans several processes.

  Explicit flags win; otherwise TPU pods and SLURM jobs are detected from their
  environment; otherwise this is a single process and nothing is done. Must run
  before JAX touches any device. CPU processes exchange collectives over gloo.
  """
  explicit = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise errors.UserError('multi-process runs need all of --coordinator_address, '
                             '--num_processes and --process_id (or none of them on TPU/SLURM)')
    if not 0 <= process_id < num_processes:
      raise errors.UserError(f'--process_id={process_id} must be in [0, {num_processes})')
    if num_processes == 1:
      return
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif _cluster_detected():
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize()
