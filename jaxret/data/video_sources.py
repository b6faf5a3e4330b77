"""Real video datasets: MSR-VTT and VATEX caption files plus a folder of .mp4 files.

MSR-VTT (`data.source='msrvtt'`): `data.path` is a JSON object with `videos`
([{"video_id", "split"}]) and `sentences` ([{"video_id", "caption"}]); the
splits are the file's own (`train`, `validate`, `test`), chosen through
`data.splits` like the Karpathy source's.

VATEX (`data.source='vatex'`): `data.path` is a JSON list of
{"videoID", "enCap": [captions]}, one file per split: a '{split}' in the path
is replaced by the source split `data.splits` maps to (e.g.
/data/vatex_{split}_v1.0.json with splits training, validation); without it,
every split reads the one file ('[a:b]' slices it).

Videos are `data.video_root/<id>.mp4` (default: the JSON file's folder). A
caption naming a video that is not there is reported by name (missing video)
and dropped; unreadable, empty or corrupt videos are reported when decoded
and skipped in training, black in evaluation (`videos.EncodedClips`), with
the image sources' bad-record accounting (`data.on_bad_record`).
"""

import collections
import json
import os

import numpy as np

from jaxret import errors
from jaxret.data import bad_records as bad_records_lib
from jaxret.data import records as records_lib
from jaxret.data import split_spec
from jaxret.data import videos as videos_lib


def _read_json(path, source):
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise errors.UserError(f'cannot read the {source} caption file data.path={path!r}: {e}') from e
  except json.JSONDecodeError as e:
    raise errors.UserError(f'data.path={path!r} is not valid JSON: {e}') from e


def _msrvtt_entries(options, split):
  """[(video id, [captions])] of `split` in the MSR-VTT file's order."""
  payload = _read_json(options.path, 'MSR-VTT')
  if not (isinstance(payload, dict) and isinstance(payload.get('videos'), list)
          and isinstance(payload.get('sentences'), list)):
    raise errors.UserError(f'{options.path} is not an MSR-VTT file: it needs "videos" and '
                           '"sentences" lists')
  captions = collections.defaultdict(list)
  for sentence in payload['sentences']:
    captions[str(sentence.get('video_id'))].append(str(sentence.get('caption', '')))
  videos = payload['videos']
  selected = []
  for name, part in split_spec.parse(split_spec.lookup(options.splits, split)):
    selected.extend([v for v in videos if v.get('split') == name][part])
  if not selected:
    present = sorted({str(v.get('split')) for v in videos})
    raise errors.UserError(f'split {split!r} ({split_spec.lookup(options.splits, split)}) has '
                           f'no videos in {options.path}; its splits: {", ".join(present)} '
                           '(set --config.data.splits.<split>=...)')
  return [(str(v.get('video_id')), captions.get(str(v.get('video_id')), [])) for v in selected]


def _vatex_entries(options, split):
  entries = []
  for name, part in split_spec.parse(split_spec.lookup(options.splits, split)):
    path = options.path.replace('{split}', name)
    payload = _read_json(path, 'VATEX')
    if not isinstance(payload, list):
      raise errors.UserError(f'{path} is not a VATEX file: it needs a list of '
                             '{"videoID", "enCap"}')
    entries.extend([(str(e.get('videoID')), list(e.get('enCap') or ())) for e in payload][part])
  return entries


ENTRIES = {'msrvtt': _msrvtt_entries, 'vatex': _vatex_entries}


def load_split(options, split, data_config):
  """`records.Records` of jaxret split `split`: clips (N, T, size, size, 3) decoded on access."""
  entries = ENTRIES[options.source](options, split)
  root = options.video_root or os.path.dirname(os.path.abspath(options.path))
  bad = bad_records_lib.BadRecords(options.on_bad_record, name=split)
  files, ids, captions, seen = [], [], [], set()
  for video_id, texts in entries:
    name = f'{video_id}.mp4'
    if video_id in seen:  # One gallery row per video, whatever the file repeats.
      continue
    seen.add(video_id)
    kept = [' '.join(t.split()) for t in texts if ' '.join(str(t).split())]
    if len(kept) < len(texts):
      bad.report('empty_caption', name, f'{len(texts) - len(kept)} of {len(texts)}')
    if not kept:
      bad.report('no_captions', name)
      continue
    path = records_lib.existing_file(root, name, bad, 'missing_video')
    if path is None:
      continue
    files.append(path)
    ids.append(video_id)
    captions.append(kept)
  if not files:
    raise errors.UserError(f'no usable videos in split {split!r} of {options.path} '
                           f'(videos looked for under {root}; set data.video_root)')

  clips = videos_lib.EncodedClips(records_lib.file_reader(files),
                                  [os.path.basename(f) for f in files], options.num_frames,
                                  data_config.image_size, bad, options.short_clip,
                                  data_config.num_threads)
  return records_lib.Records(images=clips, image_ids=np.asarray(ids), captions=captions,
                             bad_records=bad)
