"""Memory per device of a compiled step, from XLA's memory analysis (no step is run)."""


def per_device(compiled):
  """{peak, temp, argument}_bytes_per_device of `compiled` (a `jax.stages.Compiled`): the
  temporary buffers plus the arguments (the state and the batch) make the peak."""
  analysis = compiled.memory_analysis()
  return {'peak_bytes_per_device': int(analysis.temp_size_in_bytes
                                       + analysis.argument_size_in_bytes),
          'temp_bytes_per_device': int(analysis.temp_size_in_bytes),
          'argument_bytes_per_device': int(analysis.argument_size_in_bytes)}
