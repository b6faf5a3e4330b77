"""The web page at `GET /`: a query box, and the hits as thumbnails with their scores.

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
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr));
             gap: 1rem; }
  figure { margin: 0; text-align: center; }
  figure img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
  figcaption { font-size: .85rem; overflow-wrap: anywhere; }
  figure.hit { cursor: pointer; }
  #explain figure.heatmap { display: inline-block; margin: .3rem; }
  #explain canvas { width: 96px; height: 96px; image-rendering: pixelated; }
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
  <button id="search-button" type="submit">Search</button>
</form>
<div id="error" role="alert"></div>
<div id="status"></div>
<div id="results"></div>
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
      (h.reranker ? `, re-ranker ${h.reranker}` : '');
  document.getElementById('k').max = Math.min(h.num_items, 1000);
  document.getElementById('rerank-label').hidden = !h.reranker;
});

form.addEventListener('submit', async event => {
  event.preventDefault();
  errorBox.textContent = '';
  statusLine.textContent = 'Searching…';
  const params = new URLSearchParams({
    q: document.getElementById('query').value,
    k: document.getElementById('k').value,
    rerank: document.getElementById('rerank').checked ? '1' : '0'});
  let body;
  try {
    const response = await fetch('search?' + params);
    body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
  } catch (e) {
    statusLine.textContent = '';
    errorBox.textContent = String(e.message || e);
    return;
  }
  results.replaceChildren();
  body.ids.forEach((id, i) => {
    const figure = document.createElement('figure');
    figure.className = 'hit';
    const img = document.createElement('img');
    img.className = 'hit-image';
    img.src = body.image_urls[i];
    img.alt = `image ${id}`;
    const caption = document.createElement('figcaption');
    let text = `${i + 1}. ${id} · ${body.fast_scores[i].toFixed(3)}`;
    if (body.slow_scores) text += ` · slow ${body.slow_scores[i].toFixed(3)}`;
    caption.textContent = text;
    figure.append(img, caption);
    figure.addEventListener('click', () => explainHit(body.query, id, body.image_urls[i]));
    results.append(figure);
  });
  const t = body.timings_ms;
  statusLine.textContent = `${body.ids.length} results in ${t.total_ms.toFixed(1)} ms ` +
      `(encode ${t.encode_ms.toFixed(1)} ms, search ${t.search_ms.toFixed(1)} ms)`;
});

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
