"""The web page at `GET /`: a query box, and the hits as thumbnails with their scores.

A dropped image (or one picked with the file button) is the query instead of
the text (`POST /search` with `"image"`), and finds images or, where captions
are indexed, captions (`"target": "texts"`); an optional metadata filter is JSON;
with re-ranking, the fast order and the re-ranked order are shown side by side.

Plain HTML and JavaScript, no external resources. Result text is set with
`textContent`, never parsed as HTML, so queries and ids cannot inject markup.
A click on a hit fetches `GET /explain` and shows, for each scorer, the image
once per word with that word's heatmap overlaid (`explainHit`).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jaxret search</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem;
         color: #222; }
  form { display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
  #query { flex: 1 1 24rem; font-size: 1.1rem; padding: .4rem; }
  #k { width: 4rem; font-size: 1.1rem; padding: .4rem; }
  button { font-size: 1.1rem; padding: .4rem 1rem; }
  #status { color: #666; margin: .8rem 0; min-height: 1.2em; }
  #error { color: #b00020; margin: .8rem 0; }
  #results, .results { display: grid;
                       grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 1rem; }
  #results[hidden] { display: none; }
  figure { margin: 0; text-align: center; }
  figure img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
  figcaption { font-size: .85rem; overflow-wrap: anywhere; }
  figure.hit { cursor: pointer; }
  #explain figure.heatmap { display: inline-block; margin: .3rem; }
  #explain canvas { width: 96px; height: 96px; image-rendering: pixelated; }
  #drop { border: 2px dashed #aaa; padding: .6rem; margin: .8rem 0; color: #666; }
  #drop.over { border-color: #1a73e8; color: #1a73e8; }
  #filter { width: 100%; font-family: monospace; padding: .3rem; box-sizing: border-box; }
  #orders { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  #orders[hidden] { display: none; }
</style>
</head>
<body>
<h1>jaxret search</h1>
<p id="about">Loading&hellip;</p>
<form id="search-form">
  <input id="query" name="q" type="search" placeholder="a large red circle on the left"
         autocomplete="off" required autofocus>
  <label>k <input id="k" name="k" type="number" min="1" value="10"></label>
  <label id="rerank-label" hidden><input id="rerank" type="checkbox"> re-rank</label>
  <label id="budget-label" hidden>budget ms <input id="budget" type="number" min="0"
         step="any" style="width: 5rem"></label>
  <button id="search-button" type="submit">Search</button>
  <input id="filter" placeholder='filter, e.g. {"layout": "single", "objects": {"gte": 2}}'
         autocomplete="off">
</form>
<div id="drop">Drop an image here to search with it, or <input id="image-file" type="file"
     accept="image/png,image/jpeg"><label id="target-label" hidden> and find <select
     id="target"><option value="images">images</option><option value="texts">captions</option>
     </select></label></div>
<div id="error" role="alert"></div>
<div id="status"></div>
<div id="results"></div>
<div id="orders" hidden>
  <section><h2>Fast order</h2><div id="fast-results" class="results"></div></section>
  <section><h2>Re-ranked order</h2><div id="slow-results" class="results"></div></section>
</div>
<div id="explain" aria-live="polite"></div>
<script>
'use strict';
const form = document.getElementById('search-form');
const results = document.getElementById('results');
const statusLine = document.getElementById('status');
const errorBox = document.getElementById('error');

fetch('healthz').then(r => r.json()).then(h => {
  document.getElementById('about').textContent =
      `${h.num_items} images, model step ${h.model_step}, ${h.index_method} index` +
      (h.texts ? `, ${h.texts} captions` : '') + (h.reranker ? `, re-ranker ${h.reranker}` : '');
  document.getElementById('target-label').hidden = !h.texts;
  document.getElementById('k').max = Math.min(h.num_items, 1000);
  document.getElementById('rerank-label').hidden = !h.reranker;
  document.getElementById('budget-label').hidden = !h.reranker;
});

// `text`: the query text, for click-to-explain (null for an image query: nothing to explain).
// `imageIds`: the image shown for each hit (the one a caption describes), if not its id.
function figures(container, ids, captionOf, text, imageIds) {
  container.replaceChildren();
  ids.forEach((id, i) => {
    const figure = document.createElement('figure');
    figure.className = 'hit';
    const img = document.createElement('img');
    img.className = 'hit-image';
    const imageId = imageIds ? imageIds[i] : id;
    img.src = 'image?' + new URLSearchParams({id: String(imageId)});
    img.alt = `image ${imageId}`;
    const caption = document.createElement('figcaption');
    caption.textContent = captionOf(id, i);
    figure.append(img, caption);
    if (text !== null) figure.addEventListener('click', () => explainHit(text, id, img.src));
    container.append(figure);
  });
}

async function search(query) {
  errorBox.textContent = '';
  statusLine.textContent = 'Searching…';
  const request = {k: Number(document.getElementById('k').value), ...query};
  const rerank = document.getElementById('rerank').checked && !query.image;
  if (rerank) {
    request.rerank = true;
    const budget = document.getElementById('budget').value;
    if (budget) request.budget_ms = Number(budget);
  }
  let body;
  try {
    const filterText = document.getElementById('filter').value.trim();
    if (filterText) {
      try { request.filter = JSON.parse(filterText); }
      catch (e) { throw new Error('the filter is not JSON: ' + e.message); }
    }
    const response = await fetch('search', {method: 'POST', body: JSON.stringify(request),
                                            headers: {'Content-Type': 'application/json'}});
    body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
  } catch (e) {
    statusLine.textContent = '';
    errorBox.textContent = String(e.message || e);
    return;
  }
  const hit = body.results[0];
  const text = typeof hit.query === 'string' ? hit.query : null;
  explainBox.replaceChildren();
  const orders = document.getElementById('orders');
  orders.hidden = !hit.fast_ids;
  results.hidden = Boolean(hit.fast_ids);
  const ranked = (id, i) => {
    let label = `${i + 1}. ${id} · ${hit.fast_scores[i].toFixed(3)}`;
    if (hit.token_scores) label += ` · token ${hit.token_scores[i].toFixed(3)}`;
    if (hit.slow_scores) label += ` · slow ${hit.slow_scores[i].toFixed(3)}`;
    return label;
  };
  if (hit.fast_ids) {
    figures(document.getElementById('fast-results'), hit.fast_ids, (id, i) => `${i + 1}. ${id}`,
            text);
    figures(document.getElementById('slow-results'), hit.ids, ranked, text);
  } else if (hit.texts) {  // Captions found by an image: each under the image it describes.
    figures(results, hit.ids,
            (id, i) => `${i + 1}. ${hit.texts[i]} · ${hit.fast_scores[i].toFixed(3)}`, null,
            hit.image_ids);
  } else {
    figures(results, hit.ids, ranked, text);
  }
  if (hit.fast_ids) results.replaceChildren();
  else for (const box of ['fast-results', 'slow-results'])
    document.getElementById(box).replaceChildren();
  const t = body.timings_ms;
  let line = `${hit.ids.length} results in ${t.total_ms.toFixed(1)} ms ` +
      `(encode ${t.encode_ms.toFixed(1)} ms, search ${t.search_ms.toFixed(1)} ms`;
  if (body.rerank) line += `, re-rank K=${body.rerank_k} in ${t.rerank_ms.toFixed(1)} ms`;
  if (body.filter) line += `, filter matched ${body.filter.matched}`;
  statusLine.textContent = line + ')';
}

form.addEventListener('submit', event => {
  event.preventDefault();
  search({queries: [document.getElementById('query').value]});
});

function searchFile(file) {
  if (!file) return;
  const reader = new FileReader();
  const target = document.getElementById('target').value;
  reader.onload = () => search({image: String(reader.result).split(',')[1],
                                ...(target === 'texts' ? {target} : {})});
  reader.readAsDataURL(file);
}
const drop = document.getElementById('drop');
drop.addEventListener('dragover', event => { event.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', event => {
  event.preventDefault();
  drop.classList.remove('over');
  searchFile(event.dataTransfer.files[0]);
});
document.getElementById('image-file').addEventListener('change',
    event => searchFile(event.target.files[0]));

// Why this result: each scorer's per-word heatmaps (GET /explain), red where the
// word is drawn to, scaled per word from its lowest to its highest value.
const explainBox = document.getElementById('explain');
async function explainHit(query, id, imageUrl) {
  explainBox.replaceChildren();
  explainBox.textContent = 'Explaining…';
  let body;
  try {
    const response = await fetch('explain?' + new URLSearchParams({q: query, id: String(id)}));
    body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
  } catch (e) {
    explainBox.textContent = String(e.message || e);
    return;
  }
  const image = new Image();
  image.src = imageUrl;
  try { await image.decode(); } catch (e) { /* No thumbnail: heatmaps alone. */ }
  explainBox.replaceChildren();
  for (const [name, scorer] of Object.entries(body.scorers)) {
    const section = document.createElement('section');
    section.className = 'explain-scorer';
    section.dataset.scorer = name;
    const title = document.createElement('h3');
    title.textContent = `${name} (image ${id}, score ${scorer.score.toFixed(3)}): ${scorer.about}`;
    section.append(title);
    scorer.words.forEach((word, w) => {
      const figure = document.createElement('figure');
      figure.className = 'heatmap';
      const canvas = document.createElement('canvas');
      canvas.width = canvas.height = 96;
      drawHeatmap(canvas, image, scorer.heatmaps[w], scorer.grid);
      const caption = document.createElement('figcaption');
      caption.textContent = word;
      figure.append(canvas, caption);
      section.append(figure);
    });
    explainBox.append(section);
  }
}

function drawHeatmap(canvas, image, values, grid) {
  const context = canvas.getContext('2d');
  context.imageSmoothingEnabled = false;
  if (image.complete && image.naturalWidth) {
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
  }
  const low = Math.min(...values), high = Math.max(...values);
  const [rows, cols] = grid;
  const width = canvas.width / cols, height = canvas.height / rows;
  values.forEach((value, i) => {
    const alpha = high > low ? 0.7 * (value - low) / (high - low) : 0;
    context.fillStyle = `rgba(255, 0, 0, ${alpha})`;
    context.fillRect((i % cols) * width, Math.floor(i / cols) * height, width, height);
  });
}
</script>
</body>
</html>
"""
