"""Micro-batching: concurrent requests share one run of the model and one index search.

One worker thread takes whatever requests are waiting (up to `max_batch`
queries) and processes them together. A lone request is processed at once
(no waiting for company unless `max_wait_s` asks for it); under load, requests
that arrive while a batch runs form the next batch, so batches grow with the
load and latency stays close to one batch's time.
"""

import concurrent.futures
import dataclasses
import queue
import threading
import time
from typing import Any


@dataclasses.dataclass
class Item:
  """One request: `size` queries, its payload, and the future its result goes to."""
  payload: Any
  size: int
  future: concurrent.futures.Future
  submitted: float


@dataclasses.dataclass
class Stats:
  batches: int = 0
  queries: int = 0
  largest_batch: int = 0


class MicroBatcher:
  """Calls `process(items) -> results` (one result per item) in a worker thread."""

  def __init__(self, process, max_batch=64, max_wait_s=0.0, name='jaxret-batcher'):
    self.process = process
    self.max_batch = max_batch
    self.max_wait_s = max_wait_s
    self.stats = Stats()
    self._queue = queue.Queue()
    self._pending = None  # An item taken from the queue that did not fit the last batch.
    self._closed = threading.Event()
    self._thread = threading.Thread(target=self._run, name=name, daemon=True)
    self._thread.start()

  def submit(self, payload, size=1):
    """Queues a request; returns a future of its result."""
    if self._closed.is_set():
      raise RuntimeError('the batcher is closed')
    future = concurrent.futures.Future()
    self._queue.put(Item(payload, size, future, time.perf_counter()))
    return future

  def _next_batch(self):
    first = self._pending or self._queue.get()
    self._pending = None
    if first is None:
      return None
    batch, size = [first], first.size
    deadline = time.perf_counter() + self.max_wait_s
    while size < self.max_batch:
      timeout = deadline - time.perf_counter()
      try:
        item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
      except queue.Empty:
        break
      if item is None:
        self._queue.put(None)  # Close after this batch.
        break
      if size + item.size > self.max_batch:
        self._pending = item
        break
      batch.append(item)
      size += item.size
    return batch

  def _run(self):
    while True:
      batch = self._next_batch()
      if batch is None:
        return
      self.stats.batches += 1
      size = sum(item.size for item in batch)
      self.stats.queries += size
      self.stats.largest_batch = max(self.stats.largest_batch, size)
      try:
        results = self.process(batch)
      except Exception as e:  # pylint: disable=broad-except
        for item in batch:  # The requests fail; the worker goes on.
          item.future.set_exception(e)
        continue
      for item, result in zip(batch, results):
        item.future.set_result(result)

  def close(self):
    self._closed.set()
    self._queue.put(None)
    self._thread.join(timeout=10)
