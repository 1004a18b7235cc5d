// fewsam annotate: a thin client of the JSON API (annotate/server.py). No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null, slices: [], id: null, w: 0, h: 0,
  label: null, etag: null, dirty: false, discard: false,
  cls: 1, tool: "box", prompts: {}, history: [], future: [],
  scale: 1, tx: 0, ty: 0, drag: null, space: false, busy: false, k: 1,
};
// The ui canvas (box, clicks) has k x k canvas pixels per slice pixel, so a box outline can be
// thinner than a slice pixel and leave the draft's edge pixels visible.
const UI_PIXELS = 1024, UI_MAX_K = 8;

// ---- API ----
async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

// ---- PNG: decode through a canvas, encode 8-bit grey by hand (the API wants class ids) ----
function decodePng(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.width; c.height = img.height;
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const rgba = ctx.getImageData(0, 0, img.width, img.height).data;
      const out = new Uint8Array(img.width * img.height);
      for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
      resolve({ data: out, w: img.width, h: img.height, img });
    };
    img.onerror = () => reject(new Error("could not decode " + url.slice(0, 40)));
    img.src = url;
  });
}

const CRC = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function u32(n) { return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]; }
function chunk(type, data) {
  const body = new Uint8Array(4 + data.length);
  body.set([...type].map((ch) => ch.charCodeAt(0)), 0);
  body.set(data, 4);
  return [...u32(data.length), ...body, ...u32(crc32(body))];
}
function encodeGreyPng(pixels, w, h) {
  const raw = new Uint8Array((w + 1) * h); // filter byte 0 per row
  for (let y = 0; y < h; y++) raw.set(pixels.subarray(y * w, (y + 1) * w), y * (w + 1) + 1);
  const blocks = [0x78, 0x01]; // zlib header, stored (uncompressed) deflate blocks
  for (let i = 0; i < raw.length || i === 0; i += 65535) {
    const part = raw.subarray(i, Math.min(i + 65535, raw.length));
    const last = i + 65535 >= raw.length ? 1 : 0;
    blocks.push(last, part.length & 255, part.length >> 8, ~part.length & 255, (~part.length >> 8) & 255, ...part);
    if (last) break;
  }
  let a = 1, b = 0;
  for (const v of raw) { a = (a + v) % 65521; b = (b + a) % 65521; }
  blocks.push(...u32(((b << 16) | a) >>> 0));
  const ihdr = [...u32(w), ...u32(h), 8, 0, 0, 0, 0];
  const png = [137, 80, 78, 71, 13, 10, 26, 10, ...chunk("IHDR", ihdr), ...chunk("IDAT", blocks), ...chunk("IEND", [])];
  return new Blob([new Uint8Array(png)], { type: "image/png" });
}

// ---- drawing ----
function rgb(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }

function drawOverlay() {
  const c = $("overlay"), ctx = c.getContext("2d");
  const img = ctx.createImageData(state.w, state.h);
  const colors = [null, ...state.info.classes.map((k) => rgb(k.color))];
  for (let i = 0; i < state.label.length; i++) {
    const k = state.label[i];
    if (k && colors[k]) img.data.set([...colors[k], 120], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  drawUi();
}

function drawUi(rubber) {
  const c = $("ui"), ctx = c.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.setTransform(state.k, 0, 0, state.k, 0, 0); // from here on: slice pixels
  ctx.lineWidth = Math.max(1 / state.k, 1.5 / state.scale); // 1.5 screen px, 1 canvas px at least
  const p = state.prompts[state.cls];
  const box = rubber || (p && p.box);
  if (box) {
    ctx.strokeStyle = "#ff0";
    ctx.strokeRect(box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1);
  }
  for (const [x, y, positive] of (p && p.points) || []) {
    ctx.fillStyle = positive ? "#0f0" : "#f00";
    ctx.beginPath();
    ctx.arc(x + 0.5, y + 0.5, Math.max(1.5, 3 / state.scale), 0, 2 * Math.PI);
    ctx.fill();
  }
}

function applyView() {
  $("stage").style.transform = `translate(${state.tx}px, ${state.ty}px) scale(${state.scale})`;
  drawUi();
}

function fit() {
  const v = $("view");
  state.scale = Math.min(v.clientWidth / state.w, v.clientHeight / state.h) * 0.95;
  state.tx = (v.clientWidth - state.w * state.scale) / 2;
  state.ty = (v.clientHeight - state.h * state.scale) / 2;
  applyView();
}

// ---- undo / redo: snapshots of the label map and the prompts ----
function snapshot() {
  return { label: state.label.slice(), prompts: JSON.parse(JSON.stringify(state.prompts, (k, v) => (v instanceof Uint8Array ? Array.from(v) : v))) };
}
function restore(s) {
  state.label = s.label.slice();
  state.prompts = {};
  for (const [k, p] of Object.entries(s.prompts)) {
    state.prompts[k] = { ...p, sam: p.sam ? Uint8Array.from(p.sam) : null };
  }
  state.dirty = true;
  drawOverlay();
}
function remember() {
  state.history.push(snapshot());
  if (state.history.length > 50) state.history.shift();
  state.future = [];
}
function undo() { if (state.history.length) { state.future.push(snapshot()); restore(state.history.pop()); } }
function redo() { if (state.future.length) { state.history.push(snapshot()); restore(state.future.pop()); } }

// ---- slices ----
async function loadSlices() {
  const body = await (await api("/api/slices")).json();
  state.slices = body.slices;
  const list = $("slices");
  list.innerHTML = "";
  for (const s of state.slices) {
    const li = document.createElement("li");
    li.dataset.id = s.id;
    li.className = (s.done ? "done " : "") + (s.id === state.id ? "selected" : "");
    li.innerHTML = `<span>#${s.rank} ${s.case} · ${s.slice}</span><span class="state">${s.done ? (s.negative ? "background" : "done") : "to do"}</span>`;
    li.onclick = () => select(s.id);
    list.appendChild(li);
  }
}

async function select(id) {
  if (state.dirty && !state.discard && id !== state.id) {
    state.discard = true;
    say("unsaved changes: s saves them; choose the slice again to discard them", true);
    return;
  }
  state.discard = false;
  say("loading…");
  const image = await decodePng(`/api/slices/${id}/image?t=${Date.now()}`);
  const response = await api(`/api/slices/${id}/label`);
  const etag = (response.headers.get("ETag") || "").replace(/"/g, "");
  const url = URL.createObjectURL(await response.blob());
  const label = await decodePng(url);
  URL.revokeObjectURL(url);
  Object.assign(state, { id, w: image.w, h: image.h, label: label.data, etag, dirty: false, prompts: {}, history: [], future: [] });
  for (const name of ["image", "overlay"]) { $(name).width = image.w; $(name).height = image.h; }
  state.k = Math.max(1, Math.min(UI_MAX_K, Math.floor(UI_PIXELS / Math.max(image.w, image.h))));
  const ui = $("ui");
  ui.width = image.w * state.k; ui.height = image.h * state.k;
  ui.style.width = `${image.w}px`; ui.style.height = `${image.h}px`;
  $("image").getContext("2d").drawImage(image.img, 0, 0);
  drawOverlay();
  fit();
  await loadSlices();
  const s = state.slices.find((x) => x.id === id);
  say(`${s.case}, slice ${s.slice} (axis ${s.axis}) — ${image.w}×${image.h}`);
}

function step(delta) {
  const at = state.slices.findIndex((s) => s.id === state.id);
  const next = state.slices[at + delta];
  if (next) select(next.id);
}

// ---- prompts ----
async function runPrompt(cls) {
  const p = state.prompts[cls];
  if (!p || (!p.box && !p.points.length)) return;
  state.busy = true;
  say("SAM…");
  try {
    const body = JSON.stringify({ class: cls, box: p.box, points: p.points, mask_input: p.points.length > 0 });
    const answer = await (await api(`/api/slices/${state.id}/prompt`, { method: "POST", headers: { "Content-Type": "application/json" }, body })).json();
    const mask = (await decodePng("data:image/png;base64," + answer.mask)).data;
    remember();
    const L = state.label, old = p.sam;
    for (let i = 0; i < L.length; i++) {
      if (old && old[i] && L[i] === cls) L[i] = 0; // the class's previous draft goes...
      if (mask[i] && L[i] === 0) L[i] = cls;       // ...never over another class's pixels
    }
    p.sam = new Uint8Array(L.length);
    for (let i = 0; i < L.length; i++) p.sam[i] = mask[i] && L[i] === cls ? 1 : 0;
    state.dirty = true;
    drawOverlay();
    say(`mask of ${state.info.classes[cls - 1].name}: score ${answer.score.toFixed(2)}, ${answer.ms} ms`);
  } catch (e) {
    say(e.message, true);
  } finally {
    state.busy = false;
  }
}

function prompts(cls) {
  if (!state.prompts[cls]) state.prompts[cls] = { box: null, points: [], sam: null };
  return state.prompts[cls];
}

// ---- painting ----
function paint(x, y, value) {
  const r = Number($("size").value) / 2;
  for (let yy = Math.floor(y - r); yy <= y + r; yy++) {
    for (let xx = Math.floor(x - r); xx <= x + r; xx++) {
      if (xx < 0 || yy < 0 || xx >= state.w || yy >= state.h) continue;
      if ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) state.label[yy * state.w + xx] = value;
    }
  }
  state.dirty = true;
}

function pixel(event) {
  const rect = $("ui").getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * state.w;
  const y = ((event.clientY - rect.top) / rect.height) * state.h;
  return [Math.min(state.w - 1, Math.max(0, Math.floor(x))), Math.min(state.h - 1, Math.max(0, Math.floor(y)))];
}

function onDown(event) {
  if (state.id === null) return;
  event.preventDefault();
  if (state.space || event.button === 1) {
    state.drag = { pan: true, x: event.clientX, y: event.clientY, tx: state.tx, ty: state.ty };
    return;
  }
  const [x, y] = pixel(event);
  if (state.tool === "box") state.drag = { box: true, x, y };
  else if (state.tool === "click") {
    const negative = event.button === 2 || event.shiftKey;
    prompts(state.cls).points.push([x, y, negative ? 0 : 1]);
    runPrompt(state.cls);
  } else {
    remember();
    state.drag = { paint: true };
    paint(x, y, state.tool === "brush" ? state.cls : 0);
    drawOverlay();
  }
}

function onMove(event) {
  const d = state.drag;
  if (!d) return;
  if (d.pan) {
    state.tx = d.tx + event.clientX - d.x;
    state.ty = d.ty + event.clientY - d.y;
    applyView();
  } else if (d.box) {
    const [x, y] = pixel(event);
    drawUi([Math.min(d.x, x), Math.min(d.y, y), Math.max(d.x, x), Math.max(d.y, y)]);
  } else if (d.paint) {
    const [x, y] = pixel(event);
    paint(x, y, state.tool === "brush" ? state.cls : 0);
    drawOverlay();
  }
}

function onUp(event) {
  const d = state.drag;
  state.drag = null;
  if (d && d.box) {
    const [x, y] = pixel(event);
    const p = prompts(state.cls);
    p.box = [Math.min(d.x, x), Math.min(d.y, y), Math.max(d.x, x), Math.max(d.y, y)];
    p.points = []; // a new box starts the class over
    runPrompt(state.cls);
  }
}

function onWheel(event) {
  event.preventDefault();
  const rect = $("view").getBoundingClientRect();
  const mx = event.clientX - rect.left, my = event.clientY - rect.top;
  const factor = event.deltaY < 0 ? 1.15 : 1 / 1.15;
  state.tx = mx - (mx - state.tx) * factor;
  state.ty = my - (my - state.ty) * factor;
  state.scale *= factor;
  applyView();
}

// ---- save ----
async function save(negative = false) {
  if (state.id === null) return;
  say("saving…");
  // An empty slice already marked background stays marked when saved again.
  const row = state.slices.find((s) => s.id === state.id);
  negative = negative || Boolean(row && row.negative && !state.label.some((v) => v));
  try {
    const body = encodeGreyPng(state.label, state.w, state.h);
    const response = await api(`/api/slices/${state.id}/label${negative ? "?negative=1" : ""}`, {
      method: "PUT", headers: { "Content-Type": "image/png", "If-Match": `"${state.etag}"` }, body,
    });
    const result = await response.json();
    state.etag = result.etag;
    state.dirty = false;
    await loadSlices();
    say(negative ? "saved as a background slice" : `saved${result.done ? "" : " (the slice still has no label)"}`);
  } catch (e) {
    say(e.message, true);
  }
}

async function background() {
  remember();
  state.label.fill(0);
  state.prompts = {};
  drawOverlay();
  await save(true);
}

// ---- controls ----
function setTool(tool) {
  state.tool = tool;
  for (const b of document.querySelectorAll("#tools button")) b.classList.toggle("active", b.dataset.tool === tool);
}
function setClass(k) {
  if (k < 1 || k > state.info.classes.length) return;
  state.cls = k;
  for (const li of document.querySelectorAll("#palette li")) li.classList.toggle("selected", Number(li.dataset.k) === k);
  drawUi();
}

function onKey(event) {
  if (event.target.tagName === "INPUT") return;
  const key = event.key.toLowerCase();
  if (key === " ") { state.space = event.type === "keydown"; event.preventDefault(); return; }
  if (event.type !== "keydown") return;
  if ((event.ctrlKey || event.metaKey) && key === "z") { event.preventDefault(); event.shiftKey ? redo() : undo(); return; }
  if ((event.ctrlKey || event.metaKey) && key === "y") { event.preventDefault(); redo(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (/^[1-9]$/.test(key)) setClass(Number(key));
  else if (key === "b") setTool("box");
  else if (key === "c") setTool("click");
  else if (key === "r") setTool("brush");
  else if (key === "e") setTool("eraser");
  else if (key === "s") { event.preventDefault(); save(); }
  else if (key === "n") step(1);
  else if (key === "p") step(-1);
  else if (key === "g") background();
  else if (key === "x") clearClass();
  else if (key === "0") fit();
}

function clearClass() {
  remember();
  for (let i = 0; i < state.label.length; i++) if (state.label[i] === state.cls) state.label[i] = 0;
  delete state.prompts[state.cls];
  state.dirty = true;
  drawOverlay();
}

async function main() {
  state.info = await (await api("/api/info")).json();
  $("engine").textContent = "engine: " + state.info.engine;
  const palette = $("palette");
  state.info.classes.forEach((k) => {
    const li = document.createElement("li");
    li.dataset.k = k.id;
    li.innerHTML = `<span class="swatch" style="background:${k.color}"></span>${k.id <= 9 ? k.id : ""} ${k.name}`;
    li.onclick = () => setClass(k.id);
    palette.appendChild(li);
  });
  for (const b of document.querySelectorAll("#tools button")) b.onclick = () => setTool(b.dataset.tool);
  $("undo").onclick = undo;
  $("redo").onclick = redo;
  $("save").onclick = () => save();
  $("background").onclick = background;
  $("clear-class").onclick = clearClass;
  const ui = $("ui");
  ui.addEventListener("mousedown", onDown);
  window.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);
  ui.addEventListener("contextmenu", (e) => e.preventDefault());
  $("view").addEventListener("wheel", onWheel, { passive: false });
  window.addEventListener("keydown", onKey);
  window.addEventListener("keyup", onKey);
  window.addEventListener("beforeunload", (e) => { if (state.dirty) e.preventDefault(); });
  setTool("box");
  setClass(1);
  await loadSlices();
  const first = state.slices.find((s) => !s.done) || state.slices[0];
  if (first) await select(first.id);
  else say("slices.csv lists no slice: run `fewsam synth suggest` first", true);
}

main().catch((e) => say(e.message, true));
