// The page of a closedloop export-web folder: reads spec.json (the input contract Python reads too),
// runs model.onnx with onnxruntime-web (wasm, one thread) and shows label, calibrated probabilities,
// the decision at the shipped threshold and the latency measured here. Nothing is sent anywhere.
"use strict";

const page = { state: "loading", spec: null, session: null, lastInput: null, results: [] };
window.closedloopPage = page;

const $ = (id) => document.getElementById(id);

function setState(state, message, kind) {
  page.state = state;
  document.body.dataset.state = state;
  const box = $("message");
  box.textContent = message || "";
  box.className = kind || "info";
}

// ---- the link function and decision rule (closedloop.serving.predictor / serving.model.decisions) ----
function toProba(logits, spec) {
  const T = spec.temperature;
  const z = Array.from(logits, (v) => v / T);
  switch (spec.problem_type) {
    case "regression":
      return Array.from(logits, (v) => v);
    case "binary": {
      const p = 1.0 / (1.0 + Math.exp(-z[0]));
      return [1 - p, p];
    }
    case "multilabel":
      return z.map((v) => 1.0 / (1.0 + Math.exp(-v)));
    default: {
      const m = Math.max(...z);
      const e = z.map((v) => Math.exp(v - m));
      const s = e.reduce((a, b) => a + b, 0);
      return e.map((v) => v / s);
    }
  }
}

function decide(proba, spec) {
  const names = spec.class_names;
  const thr = spec.threshold === null ? 0.5 : spec.threshold;
  const name = (i) => (names.length ? names[i] : i);
  switch (spec.problem_type) {
    case "regression":
      return { label: proba[0], text: `predicted value ${proba[0].toPrecision(5)}` };
    case "binary": {
      const pos = proba[1] >= thr ? 1 : 0;
      const rel = pos ? ">=" : "<";
      return { label: name(pos), text: `P(${name(1)}) = ${proba[1].toFixed(4)} ${rel} threshold ${thr.toFixed(4)}` };
    }
    case "multilabel": {
      const on = proba.map((p, j) => (p >= thr ? name(j) : null)).filter((v) => v !== null);
      return { label: on, text: `labels with probability >= ${thr.toFixed(4)}: ${on.join(", ") || "none"}` };
    }
    default: {
      let best = 0;
      proba.forEach((p, j) => { if (p > proba[best]) best = j; });
      return { label: name(best), text: `most probable class (p = ${proba[best].toFixed(4)})` };
    }
  }
}

// ---- images: converted as closedloop serve converts them (serving/images.py, Pillow) ----
function toChannels(rgba, n, channels) {
  const out = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
    if (channels === 1) out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; // Pillow's L
    else { out[3 * i] = r; out[3 * i + 1] = g; out[3 * i + 2] = b; }
  }
  return out;
}

// Pillow's bilinear resample (libImaging/Resample.c): a triangle filter widened by the scale when
// shrinking, coefficients in 22-bit fixed point, horizontal pass then vertical pass.
const PRECISION_BITS = 32 - 8 - 2;
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = [], kk = new Int32Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const w = new Float64Array(xmax);
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      let t = Math.abs((x + xmin - center + 0.5) * ss);
      w[x] = t < 1.0 ? 1.0 - t : 0.0;
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds.push([xmin, xmax]);
  }
  return { bounds, kk, ksize };
}

function clip8(v) {
  v = v >> PRECISION_BITS;
  return v >= 255 ? 255 : v <= 0 ? 0 : v;
}

function resize(src, w, h, c, outW, outH) {
  let cur = src, cw = w;
  if (outW !== w) {
    const { bounds, kk, ksize } = coefficients(w, outW);
    const tmp = new Uint8Array(outW * h * c);
    for (let y = 0; y < h; y++) for (let xx = 0; xx < outW; xx++) {
      const [xmin, n] = bounds[xx];
      for (let ch = 0; ch < c; ch++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let x = 0; x < n; x++) ss += cur[(y * cw + xmin + x) * c + ch] * kk[xx * ksize + x];
        tmp[(y * outW + xx) * c + ch] = clip8(ss);
      }
    }
    cur = tmp; cw = outW;
  }
  if (outH !== h) {
    const { bounds, kk, ksize } = coefficients(h, outH);
    const tmp = new Uint8Array(cw * outH * c);
    for (let yy = 0; yy < outH; yy++) {
      const [ymin, n] = bounds[yy];
      for (let x = 0; x < cw; x++) for (let ch = 0; ch < c; ch++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < n; y++) ss += cur[((ymin + y) * cw + x) * c + ch] * kk[yy * ksize + y];
        tmp[(yy * cw + x) * c + ch] = clip8(ss);
      }
    }
    cur = tmp;
  }
  return cur;
}

async function imageInput(file, spec) {
  const [H, W, C] = spec.input.shape;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (err) {
    throw new Error(`file "${file.name}" (${file.size} bytes) is not a readable image; expected a PNG or JPEG file`);
  }
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  let pixels = toChannels(rgba, bitmap.width * bitmap.height, C);
  let note = "";
  if (bitmap.width !== W || bitmap.height !== H) {
    pixels = resize(pixels, bitmap.width, bitmap.height, C, W, H);
    note = `resized from ${bitmap.width}x${bitmap.height} to ${W}x${H} (bilinear, as the server does)`;
  }
  return { data: Float32Array.from(pixels), pixels, note };
}

function thumbnail(pixels, spec) {
  const [H, W, C] = spec.input.shape;
  const canvas = document.createElement("canvas");
  canvas.width = W; canvas.height = H; canvas.className = "thumb";
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(W, H);
  for (let i = 0; i < W * H; i++) {
    for (let k = 0; k < 3; k++) img.data[4 * i + k] = pixels[C === 1 ? i : 3 * i + k];
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

// ---- tables: one row per line ----
function parseRow(line, lineNo, spec) {
  const names = spec.input.feature_names || spec.input.shape.map((_, i) => `feature ${i}`);
  const n = spec.input.shape[0];
  const cells = line.split(",");
  if (cells.length !== n) {
    throw new Error(`line ${lineNo}: ${cells.length} values, expected ${n} (${names.join(", ")})`);
  }
  return Float32Array.from(cells, (cell, j) => {
    const t = cell.trim();
    if (t === "" || t.toLowerCase() === "nan") return NaN; // missing: the graph imputes
    const v = Number(t);
    if (!Number.isFinite(v)) throw new Error(`line ${lineNo}, ${names[j]}: ${JSON.stringify(t)} is not a number`);
    return v;
  });
}

// ---- inference ----
async function predictOne(data) {
  const spec = page.spec;
  const t0 = performance.now();
  const tensor = new ort.Tensor("float32", data, [1, ...spec.input.shape]);
  const out = await page.session.run({ [spec.input.name]: tensor });
  const logits = out[page.session.outputNames[0]].data;
  const proba = toProba(logits, spec);
  return { proba, ms: performance.now() - t0 };
}

function addRow(name, result, visual) {
  const spec = page.spec;
  const table = $("results");
  table.hidden = false;
  const tr = document.createElement("tr");
  tr.dataset.file = name;
  const cell = (content, cls) => {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    tr.appendChild(td);
    return td;
  };
  cell(visual || "");
  cell(name);
  if (result.error) {
    tr.className = "refused";
    tr.dataset.status = "refused";
    tr.dataset.reason = result.error;
    cell(`refused: ${result.error}`).colSpan = 4;
  } else {
    const d = decide(result.proba, spec);
    tr.dataset.status = "ok";
    tr.dataset.proba = JSON.stringify(result.proba);
    tr.dataset.label = JSON.stringify(d.label);
    tr.dataset.ms = String(result.ms);
    cell(Array.isArray(d.label) ? d.label.join(", ") || "none" : String(d.label), "label");
    const pr = cell("", "proba");
    const names = spec.class_names.length ? spec.class_names : result.proba.map((_, j) => String(j));
    result.proba.forEach((p, j) => {
      const s = document.createElement("span");
      s.textContent = spec.problem_type === "regression" ? p.toPrecision(6) : `${names[j]}: ${p.toFixed(4)}`;
      pr.appendChild(s);
    });
    cell(d.text + (result.note ? ` (${result.note})` : ""));
    cell(`${result.ms.toFixed(2)} ms`);
  }
  table.tBodies[0].appendChild(tr);
  page.results.push({ name, ...result });
}

async function handleFiles(files) {
  if (page.state !== "ready") return;
  setState("busy", `Predicting ${files.length} file(s)...`, "info");
  for (const file of files) {
    try {
      const inp = await imageInput(file, page.spec);
      const res = await predictOne(inp.data);
      page.lastInput = inp.data;
      addRow(file.name, { ...res, note: inp.note }, thumbnail(inp.pixels, page.spec));
    } catch (err) {
      addRow(file.name, { error: err.message });
    }
  }
  $("bench").disabled = page.lastInput === null;
  setState("ready", "", "info");
  document.body.dataset.done = String(page.results.length);
}

async function handleRows() {
  if (page.state !== "ready") return;
  setState("busy", "Predicting...", "info");
  const lines = $("rows").value.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    try {
      const data = parseRow(lines[i], i + 1, page.spec);
      const res = await predictOne(data);
      page.lastInput = data;
      addRow(`line ${i + 1}`, res);
    } catch (err) {
      addRow(`line ${i + 1}`, { error: err.message });
    }
  }
  $("bench").disabled = page.lastInput === null;
  setState("ready", "", "info");
  document.body.dataset.done = String(page.results.length);
}

async function bench(n = 200) {
  if (page.state !== "ready" || page.lastInput === null) return;
  setState("busy", `Timing ${n} runs...`, "info");
  const times = [];
  for (let i = 0; i < n; i++) times.push((await predictOne(page.lastInput)).ms);
  page.benchTimes = times.slice();
  times.sort((a, b) => a - b);
  const median = n % 2 ? times[(n - 1) / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;
  const out = $("bench-result");
  out.dataset.medianMs = String(median);
  out.dataset.runs = String(n);
  out.textContent = `median ${median.toFixed(3)} ms per input over ${n} runs (model + probabilities, wasm, 1 thread)`;
  setState("ready", "", "info");
  return median;
}
page.bench = bench;

// ---- start ----
function showCard(spec) {
  $("title").textContent = `${spec.card.name}: ${spec.problem_type} model (${spec.model.variant})`;
  $("intended-use").textContent = spec.card.intended_use;
  const ul = $("known-misuse");
  for (const m of spec.card.known_misuse.length ? spec.card.known_misuse : ["none declared"]) {
    const li = document.createElement("li");
    li.textContent = m;
    ul.appendChild(li);
  }
  $("about").textContent = `run ${spec.source.run_id}; classes: ${spec.class_names.join(", ") || "n/a"}; `
    + `threshold ${spec.threshold === null ? "argmax / 0.5" : spec.threshold}; temperature ${spec.temperature}; `
    + `${spec.runtime.package} ${spec.runtime.version}`;
  $("card").hidden = false;
  $("unblessed").hidden = spec.source.blessed;
}

async function start() {
  if (typeof WebAssembly !== "object" || typeof WebAssembly.instantiate !== "function") {
    setState("nowasm", "This browser has no WebAssembly (or it is switched off), so it cannot run the model. "
      + "Use a current Chrome, Edge, Firefox or Safari with WebAssembly enabled.", "error");
    return;
  }
  if (location.protocol === "file:") {
    setState("error", "Open this page over HTTP, not as a file: run `python -m http.server -d THIS_FOLDER 8000` "
      + "and go to http://127.0.0.1:8000/ (browsers do not let a file:// page load the model).", "error");
    return;
  }
  if (typeof ort === "undefined") {
    setState("error", "runtime/ort.wasm.min.js did not load; is the runtime/ folder next to this page?", "error");
    return;
  }
  try {
    const resp = await fetch("spec.json");
    if (!resp.ok) throw new Error(`spec.json: HTTP ${resp.status}`);
    const spec = await resp.json();
    page.spec = spec;
    showCard(spec);
    ort.env.wasm.numThreads = 1; // no SharedArrayBuffer / cross-origin isolation needed
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmPaths = new URL("runtime/", location.href).href;
    const t0 = performance.now();
    page.session = await ort.InferenceSession.create(spec.model.file, { executionProviders: ["wasm"] });
    // one run on zeros, so the first picture does not pay the runtime's lazy setup
    const n = spec.input.shape.reduce((a, b) => a * b, 1);
    await predictOne(new Float32Array(n));
    page.loadMs = performance.now() - t0;
    document.body.dataset.loadMs = String(page.loadMs);
  } catch (err) {
    setState("error", `Cannot load the model: ${err.message || err}`, "error");
    return;
  }
  const spec = page.spec;
  if (spec.input.kind === "images") {
    const [H, W, C] = spec.input.shape;
    $("image-note").textContent = `The model takes ${W}x${H} ${C === 1 ? "grayscale" : "RGB"} images; `
      + "others are converted as the server converts them.";
    $("image-input").hidden = false;
    $("files").addEventListener("change", (e) => {
      const files = Array.from(e.target.files);
      e.target.value = ""; // picking the same files again is a new request
      handleFiles(files);
    });
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      handleFiles(Array.from(e.dataTransfer.files));
    });
  } else {
    $("feature-names").textContent = (spec.input.feature_names || []).join(", ");
    $("table-input").hidden = false;
    $("predict-rows").addEventListener("click", handleRows);
  }
  $("bench").addEventListener("click", () => bench(200));
  setState("ready", `Model loaded in ${page.loadMs.toFixed(0)} ms; it runs in this page only.`, "info");
}

start();
