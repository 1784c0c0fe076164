// miniray dashboard page: plain JavaScript, no dependencies, no build step.
// Snapshots come from the JSON API; live changes from the /ws/events WebSocket.
"use strict";

const HISTORY = 900;          // metric samples kept (15 minutes at 1/s)
const CHART_WINDOW_S = 300;   // seconds shown in the charts
const TASK_PAGE = 100;

const state = {
  tab: "overview",
  summary: null,
  samples: [],
  ws: null,
  connected: false,
  retryDelay: 1000,
  retryTimer: null,
  taskOffset: 0,
  taskTotal: 0,
  selectedTask: null,
  objectOffset: 0,
  logName: null,
  logOffset: 0,
  routes: new Set(),
  dirty: new Set(),     // views whose data changed while hidden or since the last refresh
};

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};
const SVG_NS = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};

// -- formatting ----------------------------------------------------------------
function fmtBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
}
function fmtNum(n) {
  if (n == null) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}
function fmtDuration(s) {
  if (s == null) return "";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1000).toFixed(1) + " ms";
  if (s < 120) return s.toFixed(2) + " s";
  return (s / 60).toFixed(1) + " min";
}
function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function fmtUptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}
// Ids are a random prefix then a little-endian counter: show a bit of each.
const shortId = (id) => (id ? id.slice(0, 4) + "…" + id.slice(16, 22) : "");
const badge = (s) => el("span", { class: "badge " + s, text: s });

// -- HTTP ------------------------------------------------------------------------
async function api(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) {
    showBanner("This dashboard needs its token: open the URL miniray printed (it ends in ?token=…).");
  }
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
function showBanner(text) {
  const b = $("#banner");
  b.textContent = text;
  b.classList.toggle("hidden", !text);
}

// -- WebSocket -------------------------------------------------------------------
function connect() {
  clearTimeout(state.retryTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/events`);
  state.ws = ws;
  ws.onopen = () => {
    state.retryDelay = 1000;
    setConnected(true);
    showBanner("");
    refreshAll();
  };
  ws.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    onMessage(message);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    setConnected(false);
    scheduleReconnect();
  };
  ws.onerror = () => ws.close();
}
function scheduleReconnect() {
  const delay = state.retryDelay;
  state.retryDelay = Math.min(state.retryDelay * 2, 10000);
  const until = Date.now() + delay;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    $("#conn-text").textContent = `Disconnected — retrying in ${left}s`;
    if (Date.now() < until) state.retryTimer = setTimeout(tick, 250);
    else connect();
  };
  tick();
}
function setConnected(up) {
  state.connected = up;
  const pill = $("#conn");
  pill.classList.toggle("live", up);
  pill.classList.toggle("down", !up);
  $("#conn-text").textContent = up ? "Live" : "Disconnected";
  document.body.classList.toggle("disconnected", !up);
}

function onMessage(message) {
  switch (message.type) {
    case "update":
      if (message.summary) renderSummary(message.summary);
      if (message.metrics && message.metrics.length) {
        addSamples(message.metrics);
        // CPU, memory and queue lengths move every sample without an event.
        for (const v of ["workers", "actors", "objects"]) state.dirty.add(v);
      }
      applyEvents(message.events || {}, message.lost || {});
      break;
    case "dropped":
      // We read too slowly and missed changes: re-read the snapshots.
      for (const v of ["tasks", "graph", "actors", "workers", "objects"]) state.dirty.add(v);
      refreshCurrent();
      break;
    case "error":
      console.warn("dashboard stream:", message.error);
      break;
  }
}

// -- summary, cards and charts -------------------------------------------------------
function renderSummary(s) {
  state.summary = s;
  const cpu = s.resources_total.CPU || 0, free = s.resources_available.CPU || 0;
  $("#node-info").textContent = `${s.node_id} · up ${fmtUptime(s.uptime_s)} · ${s.workers.total} workers`;
  const last = state.samples[state.samples.length - 1];
  const values = {
    running: fmtNum(s.tasks.running), pending: fmtNum(s.tasks.pending),
    finished: fmtNum(s.tasks.finished_total), failed: fmtNum(s.tasks.failed_total),
    rate: last ? fmtNum(last.tasks_per_s) : "–",
    workers: `${s.workers.total}`, actors: fmtNum(s.actors.alive),
    cpus: `${fmtNum(cpu - free)} / ${fmtNum(cpu)}`, objects: fmtNum(s.object_store.objects),
    store: fmtBytes(s.object_store.used_bytes),
  };
  for (const node of document.querySelectorAll("#cards .value")) {
    const v = values[node.dataset.key];
    if (v !== undefined && node.textContent !== v) node.textContent = v;
  }
}

function addSamples(samples) {
  const lastTime = state.samples.length ? state.samples[state.samples.length - 1].time : 0;
  for (const sample of samples) if (sample.time > lastTime) state.samples.push(sample);
  if (state.samples.length > HISTORY) state.samples.splice(0, state.samples.length - HISTORY);
  if (state.summary) renderSummary(state.summary);
  if (state.tab === "overview") drawCharts();
}

const COLORS = ["#2f6fed", "#1f9d55", "#d08700", "#d64545", "#8b5cf6", "#0ea5e9", "#ec4899"];

function drawCharts() {
  const now = state.samples.length ? state.samples[state.samples.length - 1].time : Date.now() / 1000;
  const recent = state.samples.filter((s) => s.time >= now - CHART_WINDOW_S);
  const span = recent.length ? now - recent[0].time : 0;
  state.window = Math.min(CHART_WINDOW_S, Math.max(60, Math.ceil(span / 60) * 60));
  const pick = (f) => recent.map((s) => [s.time, f(s)]);
  lineChart("#chart-rate", now, [
    { name: "finished", values: pick((s) => s.tasks_per_s) },
    { name: "failed", values: pick((s) => s.failed_per_s), color: "#d64545" },
  ], fmtNum);
  lineChart("#chart-queue", now, [
    { name: "running", values: pick((s) => s.running) },
    { name: "pending", values: pick((s) => s.pending), color: "#d08700" },
  ], fmtNum);
  // Per-process CPU lines for the busiest few processes, plus the total.
  const keys = new Map();
  for (const s of recent) for (const [k, p] of Object.entries(s.processes || {}))
    keys.set(k, (keys.get(k) || 0) + p.cpu_percent);
  const busiest = [...keys.entries()].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([k]) => k);
  lineChart("#chart-cpu", now, [
    { name: "total", values: pick((s) => s.cpu_percent) },
    ...busiest.map((k) => ({
      name: k === "node" ? "node" : "worker " + k,
      values: pick((s) => (s.processes && s.processes[k] ? s.processes[k].cpu_percent : null)),
      thin: true,
    })),
  ], (v) => v.toFixed(0) + "%");
  lineChart("#chart-memory", now, [
    { name: "all processes", values: pick((s) => s.memory_bytes) },
    { name: "node", values: pick((s) => (s.processes && s.processes.node ? s.processes.node.rss : null)), color: "#8b5cf6" },
  ], fmtBytes);
  const capacity = recent.length ? recent[recent.length - 1].store_capacity : 0;
  lineChart("#chart-store", now, [
    { name: "used of " + fmtBytes(capacity), values: pick((s) => s.store_used) },
    { name: "objects", values: pick((s) => s.objects), color: "#1f9d55", axis: "right" },
  ], fmtBytes, fmtNum);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function lineChart(selector, now, series, format, formatRight) {
  const root = $(selector);
  const width = root.clientWidth || 420, height = root.clientHeight || 170;
  const pad = { l: 54, r: formatRight ? 44 : 10, t: 8, b: 20 };
  const w = width - pad.l - pad.r, h = height - pad.t - pad.b;
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.replaceChildren();
  const caption = root.parentNode.querySelector("figcaption");
  if (!caption.dataset.title) caption.dataset.title = caption.textContent;
  caption.replaceChildren(caption.dataset.title);
  const maxOf = (list) => niceMax(Math.max(0, ...list.flatMap((s) => s.values.map((p) => p[1] || 0))));
  const leftMax = maxOf(series.filter((s) => s.axis !== "right"));
  const rightMax = maxOf(series.filter((s) => s.axis === "right"));
  const windowS = state.window || 60;
  const x = (t) => pad.l + w * (1 - (now - t) / windowS);
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + h * (i / 4);
    root.append(svg("line", { class: "grid-line", x1: pad.l, x2: pad.l + w, y1: y, y2: y }));
    const label = svg("text", { class: "axis-text", x: pad.l - 6, y: y + 3, "text-anchor": "end" });
    label.textContent = format(leftMax * (1 - i / 4));
    root.append(label);
    if (formatRight) {
      const right = svg("text", { class: "axis-text", x: pad.l + w + 6, y: y + 3 });
      right.textContent = formatRight(rightMax * (1 - i / 4));
      root.append(right);
    }
  }
  for (let i = 5; i >= 0; i--) {
    const ago = (windowS * i) / 5;
    const t = svg("text", { class: "axis-text", x: x(now - ago), y: height - 5, "text-anchor": i === 0 ? "end" : i === 5 ? "start" : "middle" });
    t.textContent = ago ? (ago >= 60 && ago % 60 === 0 ? `-${ago / 60}m` : `-${ago}s`) : "now";
    root.append(t);
  }
  let points = 0;
  series.forEach((s, index) => {
    const color = s.color || COLORS[index % COLORS.length];
    const max = s.axis === "right" ? rightMax : leftMax;
    const y = (v) => pad.t + h * (1 - v / max);
    let d = "", started = false, first = null, last = null;
    for (const [t, v] of s.values) {
      if (v == null) { started = false; continue; }
      const px = x(t).toFixed(1), py = y(v).toFixed(1);
      d += (started ? "L" : "M") + px + " " + py;
      started = true;
      first = first || px; last = px;
      points++;
    }
    if (d && index === 0 && !s.thin) {
      root.append(svg("path", { class: "area", fill: color, d: `${d}L${last} ${pad.t + h}L${first} ${pad.t + h}Z` }));
    }
    root.append(svg("path", { class: "series", stroke: color, d, "stroke-width": s.thin ? 1.1 : 1.8 }));
    const latest = s.values.length ? s.values[s.values.length - 1][1] : null;
    caption.append(el("span", { class: "key" }, el("span", { class: "swatch", style: `background:${color}` }),
      `${s.name} ${latest == null ? "" : (s.axis === "right" ? formatRight : format)(latest)}`));
  });
  root.dataset.points = String(points);
  attachHover(root, series, x, pad, w, h, format, formatRight);
}

function attachHover(root, series, x, pad, w, h, format, formatRight) {
  const line = svg("line", { class: "hover-line hidden", y1: pad.t, y2: pad.t + h });
  const tip = svg("text", { class: "tip hidden", y: pad.t + 12 });
  root.append(line, tip);
  root.onmousemove = (event) => {
    const box = root.getBoundingClientRect();
    const px = (event.clientX - box.left) * (root.viewBox.baseVal.width / box.width);
    let best = null;
    for (const [t] of series[0].values) if (best == null || Math.abs(x(t) - px) < Math.abs(x(best) - px)) best = t;
    if (best == null) return;
    line.setAttribute("x1", x(best)); line.setAttribute("x2", x(best));
    const parts = series.map((s) => {
      const p = s.values.find((v) => v[0] === best);
      return p && p[1] != null ? `${s.name.split(" ")[0]} ${(s.axis === "right" ? formatRight : format)(p[1])}` : null;
    }).filter(Boolean);
    tip.textContent = fmtTime(best).slice(0, 8) + "  " + parts.join("  ");
    const right = x(best) > pad.l + w / 2;
    tip.setAttribute("x", right ? x(best) - 6 : x(best) + 6);
    tip.setAttribute("text-anchor", right ? "end" : "start");
    line.classList.remove("hidden"); tip.classList.remove("hidden");
  };
  root.onmouseleave = () => { line.classList.add("hidden"); tip.classList.add("hidden"); };
}

// -- live events ------------------------------------------------------------------
function applyEvents(events, lost) {
  const tasks = events.task || [];
  if (tasks.length || lost.task) {
    state.dirty.add("graph");
    if (state.tab === "tasks") mergeTasks(tasks, lost.task);
    else state.dirty.add("tasks");
  }
  if ((events.actor || []).length || lost.actor) state.dirty.add("actors");
  if ((events.worker || []).length || lost.worker) state.dirty.add("workers");
  if ((events.object || []).length || lost.object) state.dirty.add("objects");
  throttledRefresh();
}

let refreshTimer = null, lastRefresh = 0;
function throttledRefresh() {
  if (refreshTimer) return;
  const wait = Math.max(0, 1000 - (Date.now() - lastRefresh));
  refreshTimer = setTimeout(() => { refreshTimer = null; lastRefresh = Date.now(); refreshCurrent(); }, wait);
}

function refreshCurrent() {
  const tab = state.tab;
  if (!state.dirty.has(tab)) return;
  state.dirty.delete(tab);
  const loaders = { tasks: loadTasks, graph: loadGraph, actors: loadActors, workers: loadWorkers, objects: loadObjects };
  if (loaders[tab]) loaders[tab]().catch(reportError);
}

async function refreshAll() {
  try {
    const [summary, metrics, spec] = await Promise.all([
      api("/api/summary"), api("/api/metrics"), api("/api/openapi.json")]);
    state.samples = [];
    addSamples(metrics.samples);
    renderSummary(summary);
    updateRoutes(spec);
  } catch (e) { reportError(e); }
  for (const v of ["tasks", "graph", "actors", "workers", "objects", "logs", "tune", "clusters"]) state.dirty.add(v);
  showTab(state.tab);
}
function reportError(e) { console.warn("dashboard:", e && e.message ? e.message : e); }

// -- tabs ---------------------------------------------------------------------------
function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === "view-" + tab);
  if (location.hash !== "#" + tab) history.replaceState(null, "", "#" + tab);
  if (tab === "overview") drawCharts();
  else if (tab === "logs") loadLogList().catch(reportError);
  else if (tab === "tune") loadTune().catch(reportError);
  else if (tab === "clusters") loadClusters().catch(reportError);
  else { state.dirty.add(tab); refreshCurrent(); }
}

function updateRoutes(spec) {
  state.routes = new Set(Object.keys(spec.paths || {}));
  $("#tab-tune").classList.toggle("hidden", !state.routes.has("/api/tune"));
  $("#tab-clusters").classList.toggle("hidden", !state.routes.has("/api/clusters"));
}

// -- tasks -------------------------------------------------------------------------
function taskQuery() {
  const params = new URLSearchParams({ offset: state.taskOffset, limit: TASK_PAGE });
  const st = $("#task-state").value, name = $("#task-name").value.trim();
  if (st) params.set("state", st);
  if (name) params.set("name", name);
  return params;
}
async function loadTasks() {
  const page = await api("/api/tasks?" + taskQuery());
  state.taskTotal = page.total;
  const body = $("#tasks-table tbody");
  body.replaceChildren(...page.tasks.map(taskRow));
  updateTaskCount();
}
function updateTaskCount() {
  const shown = $("#tasks-table tbody").children.length;
  const from = shown ? state.taskOffset + 1 : 0;
  $("#task-count").textContent = `${from}–${state.taskOffset + shown} of ${state.taskTotal}`;
  $("#tasks-empty").classList.toggle("hidden", shown > 0);
  $("#task-prev").disabled = state.taskOffset === 0;
  $("#task-next").disabled = state.taskOffset + TASK_PAGE >= state.taskTotal;
}
function taskRow(t) {
  const row = el("tr", { class: "clickable", "data-id": t.task_id, "data-state": t.state },
    el("td", { class: "mono", text: shortId(t.task_id), title: t.task_id }),
    el("td", { text: t.name }),
    el("td", {}, badge(t.state)),
    el("td", { class: "muted", text: t.type === "ACTOR_TASK" ? "actor" : "task" }),
    el("td", { class: "num", text: t.worker_id == null ? "" : t.worker_id }),
    el("td", { class: "mono", text: fmtTime(t.submitted_at) }),
    el("td", { class: "num", text: fmtDuration(t.duration_s) }),
    el("td", { class: "err", text: t.error || "", title: t.error || "" }));
  if (t.task_id === state.selectedTask) row.classList.add("selected");
  row.addEventListener("click", () => showTask(t.task_id));
  return row;
}
function taskMatches(t) {
  const st = $("#task-state").value, name = $("#task-name").value.trim();
  return (!st || t.state === st) && (!name || t.name.includes(name));
}
function mergeTasks(tasks, lost) {
  if (!$("#task-live").checked) return;
  if (lost || state.taskOffset > 0) { state.dirty.add("tasks"); return; }
  const body = $("#tasks-table tbody");
  const rows = new Map([...body.children].map((r) => [r.dataset.id, r]));
  const fresh = [];
  for (const t of tasks) {
    const existing = rows.get(t.task_id);
    if (existing) {
      if (taskMatches(t)) {
        const row = taskRow(t);
        existing.replaceWith(row);
        rows.set(t.task_id, row);
      } else { existing.remove(); rows.delete(t.task_id); state.taskTotal = Math.max(0, state.taskTotal - 1); }
    } else if (taskMatches(t)) {
      fresh.push(t);
    }
  }
  // New tasks arrive oldest first; the table is newest first.
  fresh.sort((a, b) => b.submitted_at - a.submitted_at);
  if (fresh.length) {
    const calm = fresh.length > 20;  // a flood of new rows: no flashing
    const rowsNew = fresh.slice(0, TASK_PAGE).map((t) => { const r = taskRow(t); if (!calm) r.classList.add("flash"); return r; });
    body.prepend(...rowsNew);
    state.taskTotal += fresh.length;
    while (body.children.length > TASK_PAGE) body.lastChild.remove();
  }
  updateTaskCount();
  if (state.selectedTask && tasks.some((t) => t.task_id === state.selectedTask)) showTask(state.selectedTask, true);
}
async function showTask(id, quiet) {
  state.selectedTask = id;
  for (const r of $("#tasks-table tbody").children) r.classList.toggle("selected", r.dataset.id === id);
  const box = $("#task-detail");
  let t;
  try { t = await api("/api/tasks/" + id); } catch (e) {
    if (!quiet) { box.replaceChildren(el("p", { class: "muted", text: e.message })); box.classList.remove("hidden"); }
    return;
  }
  const dl = el("dl");
  const row = (k, v) => dl.append(el("dt", { text: k }), el("dd", {}, v));
  row("Task id", el("span", { class: "mono", text: t.task_id }));
  row("State", badge(t.state));
  row("Type", t.type);
  if (t.actor_id) row("Actor", el("span", { class: "mono", text: t.actor_id }));
  row("Worker", t.worker_id == null ? "–" : String(t.worker_id));
  row("Attempt", String(t.attempt));
  row("Submitted", fmtTime(t.submitted_at));
  row("Started", fmtTime(t.started_at) || "–");
  row("Ended", fmtTime(t.ended_at) || "–");
  row("Duration", fmtDuration(t.duration_s) || "–");
  row("Depends on", t.dependencies.length ? el("span", { class: "mono", text: t.dependencies.map(shortId).join(", ") }) : "–");
  row("Returns", el("span", { class: "mono", text: t.returns.map(shortId).join(", ") || "–" }));
  box.replaceChildren(
    el("h3", {}, el("span", { text: t.name }), el("button", { class: "close", title: "Close", text: "×", onclick: () => { state.selectedTask = null; box.classList.add("hidden"); } })),
    dl, t.traceback ? el("pre", { text: t.traceback }) : null);
  box.classList.remove("hidden");
}

// -- task graph -----------------------------------------------------------------------
const STATE_COLORS = {
  FINISHED: "#1f9d55", FAILED: "#d64545", RUNNING: "#2f6fed", SUBMITTED_TO_WORKER: "#d08700",
  PENDING_NODE_ASSIGNMENT: "#d08700", PENDING_ARGS_AVAIL: "#e0a400", OBJECT: "#8a94a6",
};
async function loadGraph() {
  const dag = await api("/api/dag?limit=" + $("#dag-limit").value);
  drawGraph(dag);
}
function drawGraph(dag) {
  const root = $("#dag-svg");
  const nodes = new Map(dag.nodes.map((n, i) => [n.id, { ...n, order: i, parents: [], depth: -1 }]));
  const parentOf = new Map([...nodes.keys()].map((k) => [k, k]));
  const find = (k) => { while (parentOf.get(k) !== k) { parentOf.set(k, parentOf.get(parentOf.get(k))); k = parentOf.get(k); } return k; };
  for (const e of dag.edges) {
    const target = nodes.get(e.target);
    if (!target || !nodes.has(e.source)) continue;
    target.parents.push(e.source);
    parentOf.set(find(e.source), find(e.target));
  }
  // Layer = longest path from a source (iterative: graphs may be deep).
  const depthOf = (start) => {
    const stack = [start];
    while (stack.length) {
      const n = stack[stack.length - 1];
      if (n.depth >= 0) { stack.pop(); continue; }
      const pending = n.parents.map((p) => nodes.get(p)).filter((p) => p.depth < 0 && !p.visiting);
      if (pending.length && !n.visiting) { n.visiting = true; stack.push(...pending); continue; }
      n.depth = n.parents.length ? 1 + Math.max(...n.parents.map((p) => Math.max(0, nodes.get(p).depth))) : 0;
      stack.pop();
    }
  };
  for (const n of nodes.values()) depthOf(n);
  // Connected components are laid out separately (layered, left to right)
  // and packed onto shelves; tasks with no dependencies share one grid.
  const groups = new Map(), singles = [];
  for (const n of nodes.values()) {
    const key = find(n.id);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(n);
  }
  const NODE_W = 132, NODE_H = 26, ROW = 34, COL = 172, MAX_ROWS = 16, GAP = 28;
  const blocks = [];
  for (const members of groups.values()) {
    if (members.length === 1) { singles.push(members[0]); continue; }
    const layers = [];
    for (const n of members) (layers[n.depth] = layers[n.depth] || []).push(n);
    let column = 0, rows = 1;
    for (const layer of layers) {
      if (!layer) continue;
      // Order children by where their parents sit, to uncross edges.
      layer.forEach((n) => { n.key = n.parents.length ? n.parents.reduce((a, p) => a + (nodes.get(p).ry || 0), 0) / n.parents.length : n.order; });
      layer.sort((a, b) => a.key - b.key);
      layer.forEach((n, i) => { n.rx = (column + Math.floor(i / MAX_ROWS)) * COL; n.ry = (i % MAX_ROWS) * ROW; });
      column += Math.ceil(layer.length / MAX_ROWS);
      rows = Math.max(rows, Math.min(MAX_ROWS, layer.length));
    }
    blocks.push({ members, width: column * COL - (COL - NODE_W), height: rows * ROW - (ROW - NODE_H), first: Math.min(...members.map((m) => m.order)) });
  }
  blocks.sort((a, b) => a.first - b.first);
  if (singles.length) {
    const rows = Math.min(MAX_ROWS, singles.length);
    singles.forEach((n, i) => { n.rx = Math.floor(i / rows) * COL; n.ry = (i % rows) * ROW; });
    blocks.push({ members: singles, width: Math.ceil(singles.length / rows) * COL - (COL - NODE_W), height: rows * ROW - (ROW - NODE_H) });
  }
  const maxWidth = Math.max(900, root.parentNode.clientWidth - 32);
  let x = 16, y = 16, shelf = 0, width = 400;
  for (const block of blocks) {
    if (x > 16 && x + block.width > maxWidth) { x = 16; y += shelf + GAP; shelf = 0; }
    for (const n of block.members) { n.x = x + n.rx; n.y = y + n.ry; }
    x += block.width + GAP * 2;
    shelf = Math.max(shelf, block.height);
    width = Math.max(width, x);
  }
  const height = y + shelf + 16;
  root.setAttribute("width", width); root.setAttribute("height", height);
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.replaceChildren();
  const edges = svg("g");
  for (const e of dag.edges) {
    const a = nodes.get(e.source), b = nodes.get(e.target);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2, mid = (x1 + x2) / 2;
    edges.append(svg("path", { class: "edge", d: `M${x1} ${y1}C${mid} ${y1} ${mid} ${y2} ${x2} ${y2}` }));
  }
  root.append(edges);
  for (const n of nodes.values()) {
    const color = STATE_COLORS[n.state] || "#8a94a6";
    const g = svg("g", { class: "node", transform: `translate(${n.x},${n.y})`, "data-id": n.id });
    const isObject = n.type === "object";
    g.append(svg("rect", { width: NODE_W, height: NODE_H, rx: isObject ? 13 : 6, fill: color + "22", stroke: color }));
    const text = svg("text", { x: 8, y: 17 });
    const label = isObject ? "object " + shortId(n.id) : n.name;
    text.textContent = label.length > 19 ? label.slice(0, 18) + "…" : label;
    const title = svg("title");
    title.textContent = `${n.name}\n${n.state}\n${n.id}`;
    g.append(text, title);
    if (!isObject) g.addEventListener("click", () => { showTab("tasks"); showTask(n.id); });
    root.append(g);
  }
  root.dataset.nodes = String(nodes.size);
  $("#dag-count").textContent = `${dag.nodes.length} nodes, ${dag.edges.length} edges`;
}
function drawLegend() {
  $("#dag-legend").replaceChildren(...Object.entries(STATE_COLORS).map(([s, c]) =>
    el("span", {}, el("i", { style: `background:${c}` }), s.toLowerCase().replace(/_/g, " "))));
}

// -- actors, workers, objects -----------------------------------------------------------
function fillTable(selector, rows, emptySelector) {
  $(selector + " tbody").replaceChildren(...rows);
  if (emptySelector) $(emptySelector).classList.toggle("hidden", rows.length > 0);
}
async function loadActors() {
  const { actors } = await api("/api/actors");
  fillTable("#actors-table", actors.map((a) => el("tr", {},
    el("td", { class: "mono", text: shortId(a.actor_id), title: a.actor_id }),
    el("td", { text: a.class_name }), el("td", { text: a.name || "" }),
    el("td", {}, badge(a.state)), el("td", { class: "num", text: a.pid ?? "" }),
    el("td", { class: "num", text: a.pending_calls ?? 0 }), el("td", { class: "num", text: a.running_calls ?? "" }),
    el("td", { class: "num", text: a.num_restarts ?? 0 }), el("td", { class: "err", text: a.death_cause || "" }))),
  "#actors-empty");
}
async function loadWorkers() {
  const { workers } = await api("/api/workers");
  fillTable("#workers-table", workers.map((w) => el("tr", {},
    el("td", { class: "num", text: w.worker_id }), el("td", { class: "num", text: w.pid }),
    el("td", { text: w.type === "ACTOR" ? `actor ${w.actor_class || ""}` : "task" }),
    el("td", {}, badge(w.state), w.exit_reason ? el("div", { class: "muted", text: w.exit_reason }) : null),
    el("td", { class: "num", text: w.cpu_percent == null ? "" : w.cpu_percent.toFixed(0) + "%" }),
    el("td", { class: "num", text: w.rss == null ? "" : fmtBytes(w.rss) }),
    el("td", { text: (w.current_tasks || []).join(", ") }),
    el("td", {}, ...(w.log_files || []).map((name) => el("button", {
      class: "small", text: name.endsWith(".err") ? "stderr" : "stdout", title: name,
      onclick: () => { showTab("logs"); openLog(name); } }))))));
}
async function loadObjects() {
  const page = await api(`/api/objects?offset=${state.objectOffset}&limit=100`);
  fillTable("#objects-table", page.objects.map((o) => el("tr", {},
    el("td", { class: "mono", text: shortId(o.object_id), title: o.object_id }), el("td", {}, badge(o.state)),
    el("td", { class: "num", text: fmtBytes(o.size) }), el("td", { class: "num", text: o.refcount }),
    el("td", { class: "num", text: o.pins }), el("td", { text: o.task || "put()" }))));
  $("#objects-count").textContent = `${page.total} objects`;
  $("#objects-prev").disabled = state.objectOffset === 0;
  $("#objects-next").disabled = state.objectOffset + 100 >= page.total;
}

// -- logs ------------------------------------------------------------------------
async function loadLogList() {
  const { logs } = await api("/api/logs");
  $("#log-list").replaceChildren(...logs.map((l) => el("li", {
    class: l.name === state.logName ? "active" : "", "data-name": l.name, onclick: () => openLog(l.name) },
    el("span", { text: l.name }), el("span", { class: "muted", text: fmtBytes(l.size) }))));
  if (!logs.length) $("#log-list").append(el("li", { class: "muted", text: "no log files yet" }));
}
async function openLog(name) {
  state.logName = name;
  $("#log-name").textContent = name;
  for (const li of $("#log-list").children) li.classList.toggle("active", li.dataset.name === name);
  const out = await api(`/api/logs/${encodeURIComponent(name)}?lines=500`);
  state.logOffset = out.offset;
  $("#log-text").textContent = out.text;
  scrollLog();
}
function scrollLog() { const pre = $("#log-text"); pre.scrollTop = pre.scrollHeight; }
async function followLog() {
  if (state.tab !== "logs" || !state.logName || !$("#log-follow").checked) return;
  const out = await api(`/api/logs/${encodeURIComponent(state.logName)}?offset=${state.logOffset}`);
  if (out.offset !== state.logOffset && out.text) {
    const pre = $("#log-text");
    pre.append(out.text);
    if (pre.textContent.length > 2e6) pre.textContent = pre.textContent.slice(-1e6);
    scrollLog();
  }
  state.logOffset = out.offset;
}

// -- tune and clusters (routes registered by sub-libraries) ---------------------------------
function fmtValue(v) {
  if (v == null) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
async function loadTune() {
  const data = await api("/api/tune");
  const root = $("#tune-root");
  const experiments = data.experiments || [];
  if (!experiments.length) { root.replaceChildren(el("p", { class: "empty", text: "No Tune experiments yet." })); return; }
  root.replaceChildren(...experiments.map((x) => {
    const counts = Object.entries(x.counts || {}).map(([k, n]) => `${n} ${k.toLowerCase()}`).join(" · ");
    const metricKey = x.metric;
    const trials = (x.trials || []).map((t) => el("tr", {},
      el("td", { class: "mono", text: t.trial_id }), el("td", {}, badge(t.status)),
      el("td", { class: "mono", text: fmtValue(t.config) }),
      el("td", { class: "num", text: t.iteration ?? "" }),
      el("td", { class: "num", text: metricKey && t.last_result ? fmtValue(t.last_result[metricKey]) : "" }),
      el("td", { class: "err", text: t.error || "", title: t.error || "" })));
    return el("div", { class: "experiment" },
      el("h3", {}, el("span", { text: x.name }), badge(x.status || "")),
      el("div", { class: "meta" },
        el("span", { text: `metric: ${x.metric || "–"} (${x.mode || "–"})` }),
        el("span", { text: `${x.num_trials ?? trials.length} trials` }), el("span", { text: counts }),
        x.started_at ? el("span", { text: "started " + fmtTime(x.started_at) }) : null),
      x.best_trial_id ? el("div", { class: "best" }, el("strong", { text: "Best: " }),
        `${x.best_trial_id} — ${fmtValue(x.best_result && metricKey ? x.best_result[metricKey] : x.best_result)}`) : null,
      el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, ...["Trial", "Status", "Config", "Iter", metricKey || "metric", "Error"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...trials)),
      x.trials_truncated ? el("p", { class: "muted", text: "Showing the first trials only." }) : null);
  }));
}
async function loadClusters() {
  const data = await api("/api/clusters");
  const list = Array.isArray(data) ? data : data.clusters || Object.values(data).find(Array.isArray) || [];
  const root = $("#clusters-root");
  if (!list.length) { root.replaceChildren(el("p", { class: "empty", text: "No clusters registered." })); return; }
  const keys = [...new Set(list.flatMap((o) => Object.keys(o || {})))];
  root.replaceChildren(el("div", { class: "table-wrap" }, el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", { text: k })))),
    el("tbody", {}, ...list.map((o) => el("tr", {}, ...keys.map((k) => {
      const v = o[k];
      return el("td", {}, typeof v === "string" && /^[A-Z_]+$/.test(v) ? badge(v) : fmtValue(v));
    })))))));
}

// -- wiring ------------------------------------------------------------------------
function init() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  const resetTasks = () => { state.taskOffset = 0; loadTasks().catch(reportError); };
  $("#task-state").addEventListener("change", resetTasks);
  let typing = null;
  $("#task-name").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(resetTasks, 250); });
  $("#task-live").addEventListener("change", resetTasks);
  $("#task-prev").addEventListener("click", () => { state.taskOffset = Math.max(0, state.taskOffset - TASK_PAGE); loadTasks().catch(reportError); });
  $("#task-next").addEventListener("click", () => { state.taskOffset += TASK_PAGE; loadTasks().catch(reportError); });
  $("#objects-prev").addEventListener("click", () => { state.objectOffset = Math.max(0, state.objectOffset - 100); loadObjects().catch(reportError); });
  $("#objects-next").addEventListener("click", () => { state.objectOffset += 100; loadObjects().catch(reportError); });
  $("#dag-limit").addEventListener("change", () => loadGraph().catch(reportError));
  drawLegend();
  window.addEventListener("resize", () => { if (state.tab === "overview") drawCharts(); });
  setInterval(() => followLog().catch(reportError), 1000);
  // Tune and cluster views have no push events: poll them while visible,
  // and look for newly registered routes now and then.
  setInterval(() => {
    if (!state.connected) return;
    if (state.tab === "tune") loadTune().catch(reportError);
    if (state.tab === "clusters") loadClusters().catch(reportError);
    if (state.tab === "logs") loadLogList().catch(reportError);
  }, 2000);
  setInterval(() => { if (state.connected) api("/api/openapi.json").then(updateRoutes).catch(reportError); }, 10000);
  const tab = location.hash.slice(1);
  if (document.getElementById("view-" + tab)) state.tab = tab;
  showTab(state.tab);
  setConnected(false);
  $("#conn-text").textContent = "Connecting…";
  connect();
}
init();
