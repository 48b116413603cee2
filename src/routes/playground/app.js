// fluxgate playground: a vanilla JS module that uses only the public API of the gateway that
// serves it. The API token lives in this browser's localStorage and nowhere else; it is never
// put into the page's code snippets (they read $FLUXGATE_API_KEY instead).

const TOKEN_KEY = 'fluxgate.token';
const GALLERY_KEY = 'fluxgate.gallery';
const GALLERY_MAX = 50;
const THUMB_SIDE = 256;

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') node.textContent = v;
    else if (k in node && typeof v !== 'string') node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};

const state = {
  models: [],          // ids from /v1/models
  details: new Map(),  // id -> GET /v1/models/{id} body
  model: null,         // the selected model's detail
  refs: [],            // File objects, in upload order
  refUrls: [],         // object URLs of their previews
  running: null,       // AbortController of the job in flight
  resultUrl: null,     // object URL of the shown result
};

// ---------- storage ----------

function storageGet(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : v;
  } catch {
    return fallback;
  }
}

function storageSet(key, value) {
  try {
    if (value === '' || value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
    return true;
  } catch {
    return false;
  }
}

function token() {
  return $('token').value.trim();
}

function authHeaders(t = token()) {
  return t ? { Authorization: `Bearer ${t}` } : {};
}

// ---------- API ----------

/** The API's own words for a failed reply: `error.message` of its JSON body. */
async function apiError(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.message === 'string') return body.error.message;
  } catch { /* not JSON */ }
  return `HTTP ${res.status}${text ? `: ${text.slice(0, 300)}` : ''}`;
}

async function getJson(path, t) {
  const res = await fetch(path, { headers: { Accept: 'application/json', ...authHeaders(t) } });
  if (!res.ok) throw new Error(await apiError(res));
  return res.json();
}

// ---------- size rules (the same checks and words as src/job/size.rs) ----------

const MAX_PART_DEFAULT = 100000;

function parseTerm(t, maxPart) {
  t = t.trim();
  if (t === '' || !/^[0-9]+$/.test(t)) return { why: 'each term must be a whole number' };
  const digits = t.replace(/^0+/, '');
  if (digits === '') return { why: 'each term must be positive' };
  if (digits.length > 6 || Number(digits) > maxPart) return { why: `each term must be at most ${maxPart}` };
  return { n: Number(digits) };
}

function parsePair(s, sep, maxPart) {
  const i = s.indexOf(sep);
  if (i < 0) return { why: 'two numbers are needed' };
  const a = parseTerm(s.slice(0, i), maxPart);
  if (a.why) return a;
  const b = parseTerm(s.slice(i + 1), maxPart);
  if (b.why) return b;
  return { pair: [a.n, b.n] };
}

function clip(s) {
  const chars = Array.from(s);
  return chars.length > 40 ? `${chars.slice(0, 40).join('')}…` : s;
}

function gcd(a, b) {
  return b === 0 ? a : gcd(b, a % b);
}

/** null when `size` is fine for the model, else the message the API would answer. */
function sizeMessage(detail, size) {
  if (!detail) return null;
  const rules = detail.fluxgate.size;
  const maxPart = rules.max_part || MAX_PART_DEFAULT;
  const s = size.trim();
  if (s === '' || s === 'auto') return null;
  const parsed = parsePair(s, 'x', maxPart);
  if (parsed.why) return `\`size\` must be "auto" or "WIDTHxHEIGHT" (${parsed.why}), got "${clip(s)}"`;
  const [w, h] = parsed.pair;
  if (rules.kind === 'dimensions') {
    let why = null;
    if (w < rules.min || w > rules.max || h < rules.min || h > rules.max) {
      why = `each side must be between ${rules.min} and ${rules.max}`;
    } else if (w % rules.multiple !== 0 || h % rules.multiple !== 0) {
      why = `width and height must be multiples of ${rules.multiple}`;
    } else if (rules.max_pixels !== null && w * h > rules.max_pixels) {
      const side = Math.round(Math.sqrt(rules.max_pixels));
      why = `at most ${Math.round(rules.max_pixels / 1048576)} megapixels (${side}x${side})`;
    }
    return why ? `size ${w}x${h} is not valid for ${detail.id}: ${why}` : null;
  }
  const g = Math.max(gcd(w, h), 1);
  const [rw, rh] = [w / g, h / g];
  const [ww, wh] = rules.widest.split(':').map(Number);
  if (rw * wh > rh * ww || rh * wh > rw * ww) {
    return `aspect ratio ${rw}:${rh} must lie between ${rules.widest} and ${rules.tallest}`;
  }
  return null;
}

function sizeRulesText(detail) {
  const r = detail.fluxgate.size;
  if (r.kind === 'dimensions') {
    const px = r.max_pixels ? `, at most ${Math.round(r.max_pixels / 1048576)} MP` : '';
    return `Sides ${r.min}–${r.max}, multiples of ${r.multiple}${px}. Leave both empty for the model's default.`;
  }
  return `Only the ratio counts (reduced, between ${r.widest} and ${r.tallest}). Leave both empty for the model's default.`;
}

function presetsFor(detail) {
  const r = detail.fluxgate.size;
  const all = [
    ['Square', 1024, 1024], ['Landscape 4:3', 1024, 768], ['Portrait 3:4', 768, 1024],
    ['Wide 16:9', 1280, 720], ['Tall 9:16', 720, 1280], ['Small 4:3', 512, 384],
    ['Large square', 1440, 1440], ['Ultrawide 21:9', 1344, 576],
  ];
  return all.filter(([, w, h]) => sizeMessage(detail, `${w}x${h}`) === null && (r.kind !== 'dimensions' || w * h <= (r.max_pixels || Infinity)));
}

// ---------- the form ----------

function sizeValue() {
  const w = $('width').value.trim();
  const h = $('height').value.trim();
  if (w === '' && h === '') return '';
  return `${w}x${h}`;
}

function checkSize() {
  const badInput = $('width').validity.badInput || $('height').validity.badInput;
  const msg = badInput
    ? 'Width and Height must be whole numbers.'
    : sizeMessage(state.model, sizeValue());
  $('size-error').textContent = msg || '';
  for (const id of ['width', 'height']) $(id).setAttribute('aria-invalid', msg ? 'true' : 'false');
  const match = Array.from($('preset').options).find((o) => o.value === sizeValue());
  $('preset').value = match ? match.value : 'custom';
  return msg;
}

function estimateTokens(text) {
  // About 4 bytes of UTF-8 per token for English prose; the API counts exactly (cl100k_base).
  return Math.ceil(new TextEncoder().encode(text).length / 4);
}

function updateTokenCount() {
  const max = state.model ? state.model.fluxgate.max_prompt_tokens : 32768;
  const n = estimateTokens($('prompt').value);
  const counter = $('token-count');
  counter.textContent = `~${n} / ${max} tokens (estimate)`;
  counter.classList.toggle('over', n > max);
  $('prompt-error').textContent = n > max ? `The prompt looks longer than the ${max}-token limit; the API will count exactly.` : '';
}

function describeModel(d) {
  const f = d.fluxgate;
  const parts = [`$${f.price_usd.toFixed(3)} per image`];
  parts.push(f.edits ? `up to ${f.max_reference_images} reference image${f.max_reference_images === 1 ? '' : 's'}` : 'generation only');
  if (f.steps) parts.push(`steps ${f.steps.min}–${f.steps.max}`);
  if (f.guidance) parts.push(`guidance ${f.guidance.min}–${f.guidance.max}`);
  if (f.raw) parts.push('raw mode');
  return parts.join(' · ');
}

async function loadModelDetail(id) {
  if (!state.details.has(id)) state.details.set(id, await getJson(`/v1/models/${encodeURIComponent(id)}`));
  return state.details.get(id);
}

async function selectModel(id) {
  let detail;
  try {
    detail = await loadModelDetail(id);
  } catch (e) {
    showError(e.message);
    return;
  }
  state.model = detail;
  const f = detail.fluxgate;
  $('model-info').textContent = describeModel(detail);
  $('size-rules').textContent = sizeRulesText(detail);

  const preset = $('preset');
  const current = sizeValue();
  preset.replaceChildren(el('option', { value: '', text: "Model's default" }));
  for (const [name, w, h] of presetsFor(detail)) {
    preset.append(el('option', { value: `${w}x${h}`, text: `${name} (${w}×${h})` }));
  }
  preset.append(el('option', { value: 'custom', text: 'Custom' }));
  if (current === '') preset.value = '';

  $('steps-field').hidden = !f.steps;
  if (f.steps) Object.assign($('steps'), { min: f.steps.min, max: f.steps.max });
  $('guidance-field').hidden = !f.guidance;
  if (f.guidance) Object.assign($('guidance'), { min: f.guidance.min, max: f.guidance.max });
  $('raw-field').hidden = !f.raw;
  $('safety').max = f.safety_tolerance.max;

  const refsOk = f.max_reference_images > 0;
  $('files').disabled = !refsOk;
  $('dropzone').classList.toggle('disabled', !refsOk);
  $('refs-hint').textContent = refsOk
    ? `Up to ${f.max_reference_images}. Drop images here or pick files; the prompt can name them “image 1”, “image 2”, ….`
    : `${detail.id} makes new images only; choose a FLUX.2 or Kontext model to edit.`;
  renderRefs();
  checkSize();
  checkKnobs();
  updateTokenCount();
  updateCode();
  $('model').dataset.loaded = detail.id;
}

function checkKnobs() {
  const f = state.model ? state.model.fluxgate : null;
  const msgs = [];
  const safety = $('safety').value.trim();
  if (safety !== '' && !(/^[0-9]+$/.test(safety) && Number(safety) <= 6)) {
    msgs.push('`safety_tolerance` must be between 0 and 6');
  }
  if (f && f.guidance && $('guidance').value.trim() !== '') {
    const g = Number($('guidance').value);
    if (!(g >= f.guidance.min && g <= f.guidance.max)) msgs.push(`\`guidance\` must be between ${f.guidance.min} and ${f.guidance.max}`);
  }
  if (f && f.steps && $('steps').value.trim() !== '') {
    const s = Number($('steps').value);
    if (!(Number.isInteger(s) && s >= f.steps.min && s <= f.steps.max)) msgs.push(`\`steps\` must be between ${f.steps.min} and ${f.steps.max}`);
  }
  $('knob-error').textContent = msgs.join(' ');
}

// ---------- references ----------

function addFiles(files) {
  const max = state.model ? state.model.fluxgate.max_reference_images : 0;
  const images = Array.from(files).filter((f) => f.type.startsWith('image/'));
  const skipped = files.length - images.length;
  const room = Math.max(max - state.refs.length, 0);
  state.refs.push(...images.slice(0, room));
  const notes = [];
  if (images.length > room) notes.push(`${state.model ? state.model.id : 'This model'} takes at most ${max} reference image${max === 1 ? '' : 's'}; ${images.length - room} not added.`);
  if (skipped > 0) notes.push(`${skipped} file${skipped === 1 ? ' is' : 's are'} not an image.`);
  $('refs-error').textContent = notes.join(' ');
  renderRefs();
  updateCode();
}

function renderRefs() {
  for (const u of state.refUrls) URL.revokeObjectURL(u);
  state.refUrls = state.refs.map((f) => URL.createObjectURL(f));
  const max = state.model ? state.model.fluxgate.max_reference_images : 0;
  const list = $('ref-list');
  list.replaceChildren();
  state.refs.forEach((file, i) => {
    const remove = el('button', { type: 'button', class: 'small', text: 'Remove' });
    remove.setAttribute('aria-label', `Remove image ${i + 1} (${file.name})`);
    remove.addEventListener('click', () => {
      state.refs.splice(i, 1);
      renderRefs();
      updateCode();
    });
    const over = i >= max;
    list.append(el('li', { class: over ? 'over' : '' },
      el('img', { src: state.refUrls[i], alt: `image ${i + 1}: ${file.name}` }),
      el('span', { class: 'ref-name', text: `image ${i + 1}` }),
      el('small', { class: 'hint', text: over ? `${file.name} — over this model's limit` : file.name }),
      remove));
  });
}

// ---------- the request ----------

function buildRequest() {
  const d = state.model;
  const f = d.fluxgate;
  const fields = { model: d.id, prompt: $('prompt').value };
  const size = sizeValue();
  if (size) fields.size = size;
  const seed = $('seed').value.trim();
  if (seed !== '') fields.seed = Number(seed);
  const safety = $('safety').value.trim();
  if (safety !== '') fields.safety_tolerance = Number(safety);
  fields.output_format = $('format').value;
  if (f.steps && $('steps').value.trim() !== '') fields.steps = Number($('steps').value);
  if (f.guidance && $('guidance').value.trim() !== '') fields.guidance = Number($('guidance').value);
  if (f.raw && $('raw').checked) fields.raw = true;
  fields.stream = true;
  return { edit: state.refs.length > 0, fields, files: state.refs.slice() };
}

function shellQuote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

function pyLiteral(v) {
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (v === null || v === undefined) return 'None';
  return JSON.stringify(v);
}

function curlFor(req) {
  const base = location.origin;
  const lines = [];
  if (req.edit) {
    lines.push(`curl -N ${base}/v1/images/edits`);
    lines.push(`  -H "Authorization: Bearer $FLUXGATE_API_KEY"`);
    for (const [k, v] of Object.entries(req.fields)) lines.push(`  -F ${shellQuote(`${k}=${v}`)}`);
    for (const file of req.files) lines.push(`  -F ${shellQuote(`image[]=@${file.name}`)}`);
  } else {
    lines.push(`curl -N ${base}/v1/images/generations`);
    lines.push(`  -H "Authorization: Bearer $FLUXGATE_API_KEY"`);
    lines.push(`  -H 'Content-Type: application/json'`);
    lines.push(`  -d ${shellQuote(JSON.stringify(req.fields))}`);
  }
  return lines.join(' \\\n');
}

function pythonFor(req) {
  const standard = new Set(['model', 'prompt', 'size', 'stream']);
  const extra = Object.entries(req.fields).filter(([k]) => !standard.has(k));
  const args = [`    model=${pyLiteral(req.fields.model)},`];
  if (req.edit) {
    args.push(`    image=[${req.files.map((f) => `open(${pyLiteral(f.name)}, "rb")`).join(', ')}],`);
  }
  args.push(`    prompt=${pyLiteral(req.fields.prompt)},`);
  if (req.fields.size) args.push(`    size=${pyLiteral(req.fields.size)},`);
  args.push('    stream=True,');
  if (extra.length) args.push(`    extra_body={${extra.map(([k, v]) => `${pyLiteral(k)}: ${pyLiteral(v)}`).join(', ')}},`);
  const call = req.edit ? 'client.images.edit' : 'client.images.generate';
  const done = req.edit ? 'image_edit.completed' : 'image_generation.completed';
  const ext = req.fields.output_format === 'jpeg' ? 'jpg' : req.fields.output_format;
  return [
    'import base64, os',
    'from openai import OpenAI',
    '',
    `client = OpenAI(base_url=${pyLiteral(`${location.origin}/v1`)}, api_key=os.environ.get("FLUXGATE_API_KEY", "demo"))`,
    `stream = ${call}(`,
    ...args,
    ')',
    'for event in stream:',
    `    if event.type == ${pyLiteral(done)}:`,
    `        open(${pyLiteral(`image.${ext}`)}, "wb").write(base64.b64decode(event.b64_json))`,
  ].join('\n');
}

function updateCode() {
  if (!state.model) return;
  const req = buildRequest();
  $('curl-code').textContent = curlFor(req);
  $('python-code').textContent = pythonFor(req);
}

// ---------- running a job ----------

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text, progress) {
  $('status').textContent = text;
  const bar = $('progress');
  if (progress === undefined) {
    bar.hidden = true;
  } else {
    bar.hidden = false;
    if (progress === null) bar.removeAttribute('value');
    else bar.value = progress;
  }
}

/** Reads an SSE body, calling `onEvent(name, data)` and `onComment(text)`. */
async function readEvents(res, onEvent, onComment, signal) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const dispatch = (block) => {
    let name = 'message';
    const data = [];
    for (const raw of block.split(/\r\n|\r|\n/)) {
      if (raw === '') continue;
      if (raw.startsWith(':')) {
        onComment(raw.slice(1).trim());
        continue;
      }
      const colon = raw.indexOf(':');
      const field = colon < 0 ? raw : raw.slice(0, colon);
      let value = colon < 0 ? '' : raw.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length) return onEvent(name, data.join('\n'));
    return false;
  };
  for (;;) {
    if (signal.aborted) throw new DOMException('stopped', 'AbortError');
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let m;
    while ((m = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
      const block = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      if (dispatch(block) === 'done') return;
    }
    if (done) {
      if (buffer.trim()) dispatch(buffer);
      return;
    }
  }
}

function b64ToBlob(b64, type) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type });
}

async function generate(event) {
  event.preventDefault();
  if (!state.model || state.running) return;
  checkSize();
  const req = buildRequest();
  updateCode();
  showError('');
  $('figure').hidden = true;
  const controller = new AbortController();
  state.running = controller;
  $('generate').disabled = true;
  $('cancel').hidden = false;
  const started = performance.now();
  let phase = 'Sending';
  let progress = null;
  const tick = () => {
    const secs = Math.round((performance.now() - started) / 1000);
    const pct = progress === null ? '' : ` ${Math.round(progress * 100)}%`;
    setStatus(`${phase}…${pct} (${secs} s)`, progress);
  };
  tick();
  const timer = setInterval(tick, 1000);
  let image = null;
  let failure = null;
  try {
    let res;
    if (req.edit) {
      const form = new FormData();
      for (const [k, v] of Object.entries(req.fields)) form.append(k, String(v));
      for (const file of req.files) form.append('image[]', file, file.name);
      res = await fetch('/v1/images/edits', { method: 'POST', headers: authHeaders(), body: form, signal: controller.signal });
    } else {
      res = await fetch('/v1/images/generations', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...authHeaders() },
        body: JSON.stringify(req.fields),
        signal: controller.signal,
      });
    }
    if (!res.ok) {
      failure = await apiError(res);
    } else if (!(res.headers.get('content-type') || '').startsWith('text/event-stream')) {
      const body = await res.json();
      const datum = body.data && body.data[0];
      if (datum) image = { b64: datum.b64_json, url: datum.url, format: body.output_format };
      else failure = 'The reply carried no image.';
    } else {
      phase = 'Running';
      tick();
      await readEvents(res, (name, data) => {
        if (data === '[DONE]') return 'done';
        let body;
        try { body = JSON.parse(data); } catch { return false; }
        if (name === 'error' || body.type === 'error') {
          failure = (body.error && body.error.message) || body.message || 'The job failed.';
        } else if (name.endsWith('.completed') && !image) {
          image = { b64: body.b64_json, format: body.output_format, size: body.size };
        }
        return false;
      }, (comment) => {
        const p = /progress=([0-9.]+)/.exec(comment);
        if (comment.includes('queued')) { phase = 'Queued for a slot'; progress = null; }
        else if (p) { phase = 'Running'; progress = Math.min(Math.max(Number(p[1]), 0), 1); }
        else if (comment.startsWith('keep-alive')) phase = 'Running';
        tick();
      }, controller.signal);
      if (!image && !failure) failure = 'The stream ended without an image.';
    }
  } catch (e) {
    failure = e.name === 'AbortError'
      ? 'Stopped waiting. The job, once submitted, still runs on the gateway (and is billed if it succeeds).'
      : `Network error: ${e.message}`;
  } finally {
    clearInterval(timer);
    state.running = null;
    $('generate').disabled = false;
    $('cancel').hidden = true;
  }
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  if (failure) {
    setStatus(`Failed after ${secs} s.`);
    showError(failure);
    return;
  }
  setStatus(`Done in ${secs} s.`);
  await showImage(image, req);
}

async function showImage(image, req) {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  const format = image.format || req.fields.output_format || 'jpeg';
  const ext = format === 'jpeg' ? 'jpg' : format;
  let src;
  if (image.b64) {
    state.resultUrl = URL.createObjectURL(b64ToBlob(image.b64, `image/${format}`));
    src = state.resultUrl;
  } else {
    state.resultUrl = null;
    src = image.url;
  }
  const img = $('result-image');
  const loaded = new Promise((resolve) => {
    img.onload = resolve;
    img.onerror = resolve;
  });
  img.src = src;
  img.alt = `Result for: ${req.fields.prompt.slice(0, 200)}`;
  $('figure').hidden = false;
  await loaded;
  const dims = `${img.naturalWidth}×${img.naturalHeight}`;
  $('result-caption').textContent = `${req.fields.model} · ${dims} · ${format}${req.edit ? ` · ${req.files.length} reference${req.files.length === 1 ? '' : 's'}` : ''}`;
  const link = $('download');
  link.href = src;
  link.download = `fluxgate-${req.fields.model}-${Date.now()}.${ext}`;
  img.dataset.done = String(Date.now());
  saveToGallery(img, req, dims, image.url);
}

// ---------- gallery ----------

function galleryItems() {
  try {
    const items = JSON.parse(storageGet(GALLERY_KEY, '[]'));
    return Array.isArray(items) ? items.filter((i) => i && typeof i.prompt === 'string' && typeof i.model === 'string') : [];
  } catch {
    return [];
  }
}

function saveToGallery(img, req, dims, url) {
  let thumb = null;
  try {
    const scale = Math.min(1, THUMB_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
    canvas.getContext('2d').drawImage(img, 0, 0, canvas.width, canvas.height);
    thumb = canvas.toDataURL('image/jpeg', 0.8);
  } catch {
    // A cross-origin URL result cannot be drawn; its link is kept instead.
  }
  const item = {
    thumb, url: url || null, prompt: req.fields.prompt, model: req.fields.model,
    size: req.fields.size || '', seed: req.fields.seed ?? null, dims, refs: req.files.length, at: Date.now(),
  };
  let items = [item, ...galleryItems()].slice(0, GALLERY_MAX);
  // Local storage is small (about 5 MB): the oldest results go first when it is full.
  while (items.length && !storageSet(GALLERY_KEY, JSON.stringify(items))) items = items.slice(0, -1);
  renderGallery();
}

function renderGallery() {
  const list = $('gallery');
  list.replaceChildren();
  const items = galleryItems();
  if (!items.length) {
    list.append(el('li', { class: 'hint', text: 'No results yet in this browser.' }));
    return;
  }
  for (const item of items) {
    const use = el('button', { type: 'button', class: 'small', text: 'Use these settings' });
    use.addEventListener('click', () => reuse(item));
    const when = new Date(item.at).toLocaleString();
    // Only pictures and links this page made itself: a data: thumbnail, or an http(s) result URL.
    const url = typeof item.url === 'string' && /^https?:\/\//.test(item.url) ? item.url : null;
    const thumb = typeof item.thumb === 'string' && item.thumb.startsWith('data:image/') ? item.thumb : null;
    const picture = thumb || url;
    list.append(el('li', {},
      picture ? el('img', { src: picture, alt: `Result for: ${item.prompt.slice(0, 120)}`, loading: 'lazy' }) : '',
      el('p', { class: 'gallery-prompt', text: String(item.prompt) }),
      el('small', { class: 'hint', text: `${item.model} · ${item.dims}${item.refs ? ` · ${item.refs} ref.` : ''} · ${when}` }),
      url ? el('a', { href: url, target: '_blank', rel: 'noopener noreferrer', text: 'Open link' }) : '',
      use));
  }
}

async function reuse(item) {
  if (state.models.includes(item.model)) $('model').value = item.model;
  $('prompt').value = item.prompt;
  const [w, h] = (item.size || 'x').split('x');
  $('width').value = w || '';
  $('height').value = h || '';
  $('seed').value = item.seed ?? '';
  selectTab('create');
  await selectModel($('model').value);
  $('prompt').focus();
}

// ---------- usage ----------

const fmtUsd = (v) => (typeof v === 'number' ? v.toFixed(3) : '—');

async function loadUsage(event) {
  event.preventDefault();
  const box = $('usage-error');
  box.hidden = true;
  const since = Number($('since').value);
  const from = since ? Math.floor(Date.now() / 1000) - since : 0;
  let body;
  try {
    body = await getJson(`/v1/usage?since=${from}`, $('admin-token').value.trim() || token());
  } catch (e) {
    box.textContent = e.message;
    box.hidden = false;
    return;
  }
  const rows = body.data || [];
  const table = $('usage-table');
  const tbody = table.querySelector('tbody');
  tbody.replaceChildren();
  for (const r of rows) {
    const failures = Object.entries(r.failures || {}).map(([k, v]) => `${k}: ${v}`).join(', ') || '—';
    tbody.append(el('tr', {},
      el('td', { text: r.client_id }), el('td', { text: r.model }),
      el('td', { class: 'num', text: String(r.images) }), el('td', { class: 'num', text: fmtUsd(r.price_usd) }),
      el('td', { class: 'num', text: fmtUsd(r.upstream_cost_usd) }), el('td', { text: failures })));
  }
  if (!rows.length) tbody.append(el('tr', {}, el('td', { colspan: '6', text: 'Nothing billed in this period.' })));
  table.hidden = false;
  renderChart(rows);
}

/** A horizontal bar chart of price per client and model, in inline SVG. */
function renderChart(rows) {
  const NS = 'http://www.w3.org/2000/svg';
  const box = $('usage-chart');
  box.replaceChildren();
  if (!rows.length) return;
  const bar = 22;
  const gap = 8;
  const labelW = Math.min(320, 16 + 7.5 * Math.max(...rows.map((r) => `${r.client_id} · ${r.model}`.length)));
  const valueW = 150;
  const width = 760;
  const height = rows.length * (bar + gap) + gap;
  const max = Math.max(...rows.map((r) => r.price_usd || 0), 0.000001);
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'Price in USD per client and model');
  const title = document.createElementNS(NS, 'title');
  title.textContent = 'Price in USD per client and model';
  svg.append(title);
  rows.forEach((r, i) => {
    const y = gap + i * (bar + gap);
    const label = document.createElementNS(NS, 'text');
    label.setAttribute('x', '0');
    label.setAttribute('y', String(y + bar * 0.7));
    label.setAttribute('class', 'chart-label');
    label.textContent = `${r.client_id} · ${r.model}`;
    const w = Math.max(2, ((width - labelW - valueW) * (r.price_usd || 0)) / max);
    const rect = document.createElementNS(NS, 'rect');
    rect.setAttribute('x', String(labelW));
    rect.setAttribute('y', String(y));
    rect.setAttribute('width', String(w));
    rect.setAttribute('height', String(bar));
    rect.setAttribute('class', 'chart-bar');
    const value = document.createElementNS(NS, 'text');
    value.setAttribute('x', String(labelW + w + 6));
    value.setAttribute('y', String(y + bar * 0.7));
    value.setAttribute('class', 'chart-label');
    value.textContent = `$${fmtUsd(r.price_usd)} · ${r.images} img`;
    svg.append(label, rect, value);
  });
  box.append(svg);
}

// ---------- tabs ----------

function selectTab(name) {
  for (const tab of ['create', 'gallery', 'usage']) {
    const on = tab === name;
    const button = $(`tab-${tab}`);
    button.setAttribute('aria-selected', String(on));
    button.tabIndex = on ? 0 : -1;
    $(`panel-${tab}`).hidden = !on;
  }
  if (name === 'gallery') renderGallery();
}

function wireTabs() {
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  tabs.forEach((tab, i) => {
    tab.addEventListener('click', () => selectTab(tab.id.slice(4)));
    tab.addEventListener('keydown', (e) => {
      const target = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (target === undefined) return;
      e.preventDefault();
      const next = tabs[(target + tabs.length) % tabs.length];
      selectTab(next.id.slice(4));
      next.focus();
    });
  });
}

// ---------- start ----------

async function loadModels() {
  const select = $('model');
  try {
    const list = await getJson('/v1/models');
    state.models = list.data.map((m) => m.id);
  } catch (e) {
    showError(e.message);
    setStatus('Could not load the models: enter a valid API token above.');
    return;
  }
  showError('');
  const previous = select.value;
  select.replaceChildren(...state.models.map((id) => el('option', { value: id, text: id })));
  select.value = state.models.includes(previous) ? previous : (state.models.includes('flux-2-pro') ? 'flux-2-pro' : state.models[0]);
  setStatus('Nothing generated yet.');
  await selectModel(select.value);
}

function wire() {
  $('token').value = storageGet(TOKEN_KEY, '');
  $('token').addEventListener('change', () => {
    storageSet(TOKEN_KEY, token());
    state.details.clear();
    loadModels();
  });
  $('model').addEventListener('change', () => selectModel($('model').value));
  $('prompt').addEventListener('input', () => { updateTokenCount(); updateCode(); });
  $('preset').addEventListener('change', () => {
    const v = $('preset').value;
    if (v === 'custom') { $('width').focus(); return; }
    const [w, h] = v ? v.split('x') : ['', ''];
    $('width').value = w;
    $('height').value = h;
    checkSize();
    updateCode();
  });
  for (const id of ['width', 'height']) $(id).addEventListener('input', () => { checkSize(); updateCode(); });
  for (const id of ['seed', 'safety', 'format', 'steps', 'guidance', 'raw']) {
    $(id).addEventListener('input', () => { checkKnobs(); updateCode(); });
    $(id).addEventListener('change', () => { checkKnobs(); updateCode(); });
  }
  $('files').addEventListener('change', () => {
    addFiles($('files').files);
    $('files').value = '';
  });
  const zone = $('dropzone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    if (!$('files').disabled) addFiles(e.dataTransfer.files);
  });
  $('form').addEventListener('submit', generate);
  $('cancel').addEventListener('click', () => state.running && state.running.abort());
  $('usage-form').addEventListener('submit', loadUsage);
  $('clear-gallery').addEventListener('click', () => { storageSet(GALLERY_KEY, ''); renderGallery(); });
  for (const button of document.querySelectorAll('button.copy')) {
    button.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText($(button.dataset.copy).textContent);
        button.textContent = 'Copied';
        setTimeout(() => { button.textContent = button.dataset.copy === 'curl-code' ? 'Copy curl' : 'Copy Python'; }, 1500);
      } catch { /* clipboard refused: the text can still be selected */ }
    });
  }
  wireTabs();
}

wire();
loadModels().then(() => document.body.setAttribute('data-ready', 'true'));
