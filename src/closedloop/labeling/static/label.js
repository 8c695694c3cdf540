// closedloop label: keyboard-first labeling page. No build step; talks to /api/* (see app.py).
// Keys are handled one after another (a promise chain), so fast typing never overtakes a save:
// the next item is drawn only after the server has written the previous label to labels.csv.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const body = document.body;
let Q = null;            // the queue view from /api/queue
let decisions = {};      // id -> decision in force
let idx = 0;             // index of the item on screen
let zoom = 0;            // 0 = fit on first image
let toggled = new Set(); // multi-label: classes switched on for the item on screen
const undoStack = [];    // ids this page decided, newest last
let chain = Promise.resolve();
// What happened when (page clock): "saved" when the server confirmed a row, "shown" when an item's
// image (or row) is on screen. Tests and the benchmark read it to check that each save came first.
window.labelLog = [];
function logEvent(event, id) { window.labelLog.push({ event, id, t: Date.now() }); }

async function api(path, payload) {
  const init = payload === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
  };
  const r = await fetch(path, init);
  let data;
  try { data = await r.json(); } catch (e) { data = { detail: r.status + " " + r.statusText }; }
  if (!r.ok) {
    throw new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
  }
  return data;
}

function showError(msg) {
  $("error").textContent = msg;
  $("error").hidden = false;
  body.dataset.state = "error";
}

function hint(msg) { $("hint").textContent = msg || ""; }

// A rejected save: a broken labels.csv (someone edited it) stops the page with the line to fix;
// anything else (a bad label) is a hint and the item stays on screen.
function failed(prefix, e) {
  if (e.message.includes("labels.csv line")) showError(e.message);
  else hint(prefix + e.message);
}

function annotator() { return params.get("annotator") || Q.annotator; }

function pct(p) { return (100 * p).toFixed(p >= 0.995 || p < 0.005 ? 1 : 0) + "%"; }

function nextOpen(from) {
  const n = Q.items.length;
  for (let k = 1; k <= n; k++) {
    const j = (from + k) % n;
    if (!decisions[Q.items[j].id]) return j;
  }
  return -1;
}

function buildClasses() {
  const ul = $("classes");
  ul.textContent = "";
  Q.classes.forEach((name, i) => {
    const li = document.createElement("li");
    li.dataset.cls = name;
    li.innerHTML = (i < 9 ? `<kbd>${i + 1}</kbd>` : "<kbd>&nbsp;</kbd>");
    li.appendChild(document.createTextNode(name));
    li.addEventListener("click", () => enqueue(() => classKey(i)));
    ul.appendChild(li);
  });
}

function fitZoom(img) {
  if (!zoom && img.naturalWidth) zoom = Math.max(1, Math.floor(392 / Math.max(img.naturalWidth, img.naturalHeight)));
  if (img.naturalWidth) img.style.width = img.naturalWidth * zoom + "px";
  $("zoom").textContent = zoom;
}

function progress() {
  const c = { labeled: 0, skipped: 0, unsure: 0 };
  for (const d of Object.values(decisions)) c[d.status] = (c[d.status] || 0) + 1;
  const left = Q.items.length - Object.keys(decisions).length;
  $("progress").textContent = `${c.labeled} labeled · ${c.skipped} skipped · ${c.unsure} unsure · ${left} to go`;
  body.dataset.labeled = c.labeled;
  $("done").hidden = left > 0;
  $("done").textContent = `All ${Q.items.length} items have a decision (labels.csv). ` +
    "Export them with: closedloop label QUEUE_DIR --export DIR";
}

function render() {
  const it = Q.items[idx];
  body.dataset.index = idx;
  body.dataset.itemId = it.id;
  $("counter").textContent = `${idx + 1} / ${Q.items.length}`;
  $("itemid").textContent = `id ${it.id}`;
  if (Q.kind === "images") {
    const img = $("img");
    img.onload = () => { fitZoom(img); logEvent("shown", it.id); };
    img.src = "/api/image/" + encodeURIComponent(it.id);
  } else {
    const t = $("features");
    t.textContent = "";
    for (const [k, v] of Object.entries(it.features)) {
      const tr = t.insertRow();
      const th = document.createElement("th");
      th.textContent = k;
      tr.appendChild(th);
      tr.insertCell().textContent = v;
    }
    logEvent("shown", it.id);
  }
  if ($("prediction")) {  // absent in blind mode: the server sends the page without model panels
    const sugg = it.predicted.length ? it.predicted.join(" + ") : "(none)";
    const conf = it.confidence === null ? "" : ` · confidence ${pct(it.confidence)}`;
    $("prediction").innerHTML = "";
    const b = document.createElement("b");
    b.textContent = sugg;
    $("prediction").append(b, document.createTextNode(conf));
    const ol = $("top3");
    ol.textContent = "";
    for (const s of it.top) {
      const li = document.createElement("li");
      li.textContent = `${s.name} ${pct(s.p)}`;
      ol.appendChild(li);
    }
    $("reason").textContent = it.reason ? `${it.reason}: ${it.reason_text}` : "(not recorded)";
  }
  const d = decisions[it.id];
  const dec = $("decision");
  dec.className = d ? d.status : "";
  dec.textContent = d ? `${d.status}${d.label.length ? ": " + d.label.join(" + ") : ""} (by ${d.annotator})`
                      : "not labeled yet";
  toggled = new Set(d && d.status === "labeled" ? d.label : it.predicted);
  for (const li of $("classes").children) {
    li.classList.toggle("suggested", it.predicted.includes(li.dataset.cls));
    li.classList.toggle("on", Q.multilabel ? toggled.has(li.dataset.cls) : !!(d && d.label.includes(li.dataset.cls)));
  }
  progress();
}

async function save(status, label) {
  const it = Q.items[idx];
  body.dataset.busy = "1";
  try {
    const res = await api("/api/label", { id: it.id, status, label, annotator: annotator() });
    logEvent("saved", it.id);
    decisions = res.decisions;
    undoStack.push(it.id);
    body.dataset.saves = Number(body.dataset.saves) + 1;
    hint("");
    const nxt = nextOpen(idx);
    if (nxt >= 0) idx = nxt;
    render();
  } catch (e) {
    failed("not saved: ", e);
  } finally {
    body.dataset.busy = "";
  }
}

async function classKey(i) {
  if (i >= Q.classes.length) {
    const n = Q.classes.length;
    hint(`key ${i + 1} is not a class: this queue has ${n} (keys 1–${Math.min(n, 9)})`);
    return;
  }
  const name = Q.classes[i];
  if (Q.multilabel) {
    if (toggled.has(name)) toggled.delete(name); else toggled.add(name);
    for (const li of $("classes").children) li.classList.toggle("on", toggled.has(li.dataset.cls));
    hint("");
    return;
  }
  await save("labeled", [name]);
}

async function accept() {
  const it = Q.items[idx];
  if (Q.multilabel) return save("labeled", [...toggled]);
  if (Q.blind) { hint("blind labeling: no suggestion; press a class key"); return; }
  if (!it.predicted.length) { hint("no suggestion for this item: press a class key"); return; }
  await save("labeled", [it.predicted[0]]);
}

async function undo() {
  const id = undoStack.pop();
  if (id === undefined) { hint("nothing to undo on this page"); return; }
  body.dataset.busy = "1";
  try {
    const res = await api("/api/undo", { id, annotator: annotator() });
    decisions = res.decisions;
    body.dataset.saves = Number(body.dataset.saves) + 1;
    idx = Q.items.findIndex((it) => it.id === id);
    hint(`undone: item ${id}`);
    render();
  } catch (e) {
    undoStack.push(id);
    failed("not undone: ", e);
  } finally {
    body.dataset.busy = "";
  }
}

function move(step) {
  idx = Math.min(Q.items.length - 1, Math.max(0, idx + step));
  hint("");
  render();
}

function setZoom(step) {
  zoom = Math.max(1, Math.min(40, (zoom || 1) + step));
  fitZoom($("img"));
}

function handle(e) {
  const k = e.key;
  if (/^[0-9]$/.test(k)) return classKey(k === "0" ? 9 : Number(k) - 1);
  switch (k.length === 1 ? k.toLowerCase() : k) {
    case "Enter": return accept();
    case "s": return save("skipped", []);
    case "u": return save("unsure", []);
    case "z": return undo();
    case "ArrowLeft": return move(-1);
    case "ArrowRight": return move(1);
    case "+": case "=": return setZoom(1);
    case "-": return setZoom(-1);
    default: return undefined;
  }
}

function enqueue(fn) {
  chain = chain.then(fn).catch((err) => hint(String(err))).then(() => {
    body.dataset.handled = Number(body.dataset.handled || 0) + 1;  // keys fully processed so far
  });
  return chain;
}

document.addEventListener("keydown", (e) => {
  if (!Q || body.dataset.state !== "ready" || e.ctrlKey || e.metaKey || e.altKey) return;
  if (["Enter", "ArrowLeft", "ArrowRight", " "].includes(e.key)) e.preventDefault();
  enqueue(() => handle(e));
});

async function load() {
  try {
    const who = params.get("annotator");
    Q = await api("/api/queue" + (who ? "?annotator=" + encodeURIComponent(who) : ""));
  } catch (e) {
    showError(e.message);
    return;
  }
  decisions = Q.decisions;
  for (const it of Q.items) {  // blind items carry no model fields at all
    it.predicted = it.predicted || [];
    it.top = it.top || [];
    if (it.confidence === undefined) it.confidence = null;
  }
  if (!Q.items.length) { showError(`no items for annotator ${annotator()} in this queue`); return; }
  idx = Q.resume >= 0 ? Q.resume : 0;
  $("qname").textContent = `${Q.name} · annotator ${annotator()}${Q.blind ? " · blind" : ""}`;
  $("img").hidden = Q.kind !== "images";
  $("zoomline").hidden = Q.kind !== "images";
  $("features").hidden = Q.kind === "images";
  $("main").hidden = false;
  buildClasses();
  render();
  body.dataset.state = "ready";
}

load();
