"""Request and response models of the HTTP API (pydantic), published at /openapi.json.

Requests are validated with these models; a failure becomes one line naming
the key (`one_line`). Strict types: a JSON `true` is not a k, `2.5` is not an
integer. The service checks the values (ranges, limits, texts, ids).
"""

from typing import Annotated, Any, Literal, Union

import pydantic

Id = Union[pydantic.StrictInt, pydantic.StrictStr]
MetadataValue = Union[pydantic.StrictStr, pydantic.StrictInt, pydantic.StrictFloat]


class _Strict(pydantic.BaseModel):
  model_config = pydantic.ConfigDict(extra='forbid', strict=True)


class SearchRequest(_Strict):
  """POST /search: texts, or one image query (`image` base64 or `image_id`)."""
  queries: Annotated[list[Any], pydantic.Field(min_length=1)] | None = None
  image: str | None = None
  image_id: Id | None = None
  k: int | None = None
  rerank: bool = False
  budget_ms: float | None = pydantic.Field(
      None, description='re-ranking latency budget per query; picks the largest candidate '
      'bucket whose measured cost fits (with rerank)')
  filter: dict[str, Any] | None = pydantic.Field(
      None, description='metadata filter, AND across fields: {"tag": "x"}, {"tag": {"in": '
      '["x", "y"]}}, {"year": {"gte": 2000, "lt": 2010}}')
  target: Literal['images', 'texts'] = pydantic.Field(
      'images', description='the gallery searched: images, or the indexed captions (texts, '
      'with an image query: image→text)')


class Item(_Strict):
  id: Id
  embedding: list[float] | None = None
  image: str | None = pydantic.Field(None, description='base64 PNG or JPEG')
  metadata: dict[str, MetadataValue] | None = pydantic.Field(
      None, description='strings, numbers, dates as YYYY-MM-DD')


class ItemsRequest(_Strict):
  """POST /items; each item as `Item` (checked by the service, with one-line errors)."""
  items: list[Any]


class DeleteRequest(_Strict):
  ids: list[Any]


class Hit(pydantic.BaseModel):
  query: Any
  ids: list[Id]
  fast_scores: list[float]
  token_scores: list[float] | None = pydantic.Field(
      None, description="FILIP's token-wise scores, which order a text query's hits")
  slow_scores: list[float] | None = None
  final_scores: list[float] | None = None
  fast_ids: list[Id] | None = pydantic.Field(None, description='the fast order, when re-ranked')
  texts: list[str] | None = pydantic.Field(
      None, description='the captions found (target texts); `ids` are then caption ids')
  image_ids: list[Id] | None = pydantic.Field(
      None, description='the image each caption describes (target texts)')
  image_urls: list[str]


class FilterReport(pydantic.BaseModel):
  matched: int
  strategy: str


class SearchInfo(pydantic.BaseModel):
  """What a search answer says about how it was made, for one query or many."""
  k: int
  rerank: bool
  target: str = pydantic.Field('images', description='the gallery searched')
  shortlist: int | None = pydantic.Field(
      None, description='pooled candidates re-ordered token-wise (FILIP)')
  rerank_k: int | None = None
  rerank_budget_ms: float | None = None
  filter: FilterReport | None = None
  timings_ms: dict[str, float]
  model_step: int
  index_size: int


class SearchResponse(SearchInfo):
  results: list[Hit]


class SingleSearchResponse(SearchInfo, Hit):
  """One query's hits (`Hit`'s fields first), then `SearchInfo`."""


class ItemsResponse(pydantic.BaseModel):
  added_or_updated: int
  num_items: int


class DeleteResponse(pydantic.BaseModel):
  deleted: int
  num_items: int


class Health(pydantic.BaseModel):
  status: str
  model_step: int
  num_items: int
  embedding_dim: int
  index_method: str
  changes_since_build: dict[str, int]
  reranker: str | None
  rerank_bucket_costs_ms: dict[str, float] | None = None
  metadata_fields: dict[str, str]
  texts: int | None = pydantic.Field(None, description='indexed captions (None: not indexed)')
  tokenwise: dict[str, Any] | None = None
  explainers: list[str]
  writes_enabled: bool
  uptime_s: float
  warmup_s: float
  batches: int
  queries: int
  largest_batch: int


class Error(pydantic.BaseModel):
  error: str


_KEY_HINTS = {
    'queries': 'queries must be a non-empty list of strings',
    'k': 'k must be an integer',
    'rerank': 'rerank must be true or false',
    'budget_ms': 'budget_ms must be a number',
    'filter': 'malformed filter: it must be an object of field: condition',
    'image': '"image" must be a base64-encoded PNG or JPEG string',
    'image_id': 'image_id must be an int or a string',
    'target': 'unknown target: use "images" (the default) or "texts"',
    'items': 'the body must be {"items": [...]}',
    'ids': 'the body must be {"ids": [...]}',
}


def one_line(error, body, model):
  """A pydantic ValidationError on `body` as one line naming the key."""
  first = error.errors()[0]
  location = [str(part) for part in first['loc']]
  key = location[0] if location else ''
  if first['type'] == 'extra_forbidden':
    unknown = sorted(set(body) - set(model.model_fields))
    return f'unknown keys {unknown}; known: {list(model.model_fields)}'
  hint = _KEY_HINTS.get(key, f'bad value for {key}')
  if key in ('items', 'ids'):
    return hint
  if first['type'] == 'missing':
    return f'missing "{key}"'
  hint = _KEY_HINTS.get(key, f'bad value for {key}')
  value = body.get(key) if isinstance(body, dict) else None
  return f'{hint}, not {value!r}'[:300]
