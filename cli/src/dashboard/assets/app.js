// The dashboard page's script: reads /api/* every two seconds and redraws
// the graph and tables. Plain JavaScript, no framework, no build step.
"use strict";

// An edge or service below this success rate is drawn red.
const FAILING_BELOW = 0.95;
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const ns = ["svg", "g", "rect", "path", "text", "defs", "marker"].includes(tag)
    ? "http://www.w3.org/2000/svg" : null;
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

const pct = (r) => (r == null ? "-" : (100 * r).toFixed(r === 1 ? 0 : 1) + "%");
const ms = (s) => (s == null ? "-" : s < 0.001 ? (s * 1e6).toFixed(0) + " µs" : (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + " ms");
const rps = (r) => (r == null ? "-" : r.toFixed(r < 10 ? 2 : 1));
const failing = (g) => g.success_rate != null && g.success_rate < FAILING_BELOW;
function dur(s) {
  if (s == null) return "-";
  if (s < 120) return s + " s";
  if (s < 7200) return Math.floor(s / 60) + " min";
  return Math.floor(s / 3600) + " h";
}
const mib = (b) => (b == null ? "-" : (b / 1048576).toFixed(1) + " MiB");

function fill(table, rows) {
  const body = $(table + " tbody");
  body.replaceChildren(...rows);
}

function row(cells, attrs = {}) {
  const tr = el("tr", attrs);
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.append(c); else td.textContent = c;
    tr.append(td);
  }
  return tr;
}

function success(g) {
  return el("span", { class: g.success_rate == null ? "muted" : failing(g) ? "bad" : "good" }, pct(g.success_rate));
}

// Nodes in columns by their depth in the call graph (callers left).
function layout(names, edges) {
  const depth = Object.fromEntries(names.map((n) => [n, 0]));
  for (let i = 0; i < names.length; i++) {
    for (const e of edges) {
      if (e.from !== e.to && depth[e.from] != null && depth[e.to] != null && depth[e.to] < depth[e.from] + 1) {
        depth[e.to] = Math.min(depth[e.from] + 1, names.length);
      }
    }
  }
  const columns = {};
  for (const n of names) (columns[depth[n]] ||= []).push(n);
  const pos = {};
  const cols = Object.keys(columns).map(Number).sort((a, b) => a - b);
  cols.forEach((c, ci) => {
    columns[c].forEach((n, ri) => {
      pos[n] = { x: 90 + ci * 400, y: 70 + ri * 90 + (columns[c].length === 1 ? 90 : 0), col: ci };
    });
  });
  return pos;
}

function drawGraph(workloads, stat) {
  const svg = $("#graph");
  const names = [...new Set(workloads.map((w) => w.service))];
  const pos = layout(names, stat.edges);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" },
    el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#7a8699" }));
  const parts = [el("defs", {}, marker)];
  for (const e of stat.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const g = el("g", { class: "edge" + (failing(e) ? " failing" : ""), "data-from": e.from, "data-to": e.to });
    const x1 = a.x + 60, x2 = b.x - 60, mx = (x1 + x2) / 2;
    // An edge that skips a column bows above the nodes between, so it hides none of them.
    const skip = b.col - a.col > 1;
    const c1 = skip ? a.y - 110 : a.y, c2 = skip ? b.y - 110 : b.y;
    g.append(el("path", { d: `M${x1},${a.y} C${mx},${c1} ${mx},${c2} ${x2},${b.y}`, "marker-end": "url(#arrow)" }));
    // The label at the curve's middle.
    const t = 0.5, u = 1 - t;
    const lx = u * u * u * x1 + 3 * u * u * t * mx + 3 * u * t * t * mx + t * t * t * x2;
    const ly = u * u * u * a.y + 3 * u * u * t * c1 + 3 * u * t * t * c2 + t * t * t * b.y;
    g.append(el("text", { x: lx, y: ly - 6, "text-anchor": "middle" },
      `${rps(e.rps)} rps · ${pct(e.success_rate)} · p99 ${ms(e.p99)}`));
    parts.push(g);
  }
  for (const n of names) {
    const p = pos[n];
    const g = el("g", { class: "node", "data-name": n });
    g.append(el("rect", { x: p.x - 60, y: p.y - 16, width: 120, height: 32, rx: 6 }));
    g.append(el("text", { x: p.x, y: p.y + 5 }, n));
    parts.push(g);
  }
  const height = Math.max(300, ...Object.values(pos).map((p) => p.y + 50));
  svg.setAttribute("viewBox", `0 0 1000 ${height}`);
  svg.style.height = height + "px";
  svg.replaceChildren(...parts);
}

async function getJson(path) {
  const answer = await fetch(path);
  if (!answer.ok) throw new Error(path + ": " + answer.status);
  return answer.json();
}

async function overview() {
  const [workloads, stat] = await Promise.all([getJson("/api/workloads"), getJson("/api/stat")]);
  $("#window").textContent = `last ${Math.round(stat.window_seconds)} s`;
  drawGraph(workloads, stat);
  fill("#services", stat.services.map((s) =>
    row([s.name, success(s), rps(s.rps), ms(s.p50), ms(s.p95), ms(s.p99), s.requests], { "data-service": s.name })));
  fill("#edges", stat.edges.map((e) =>
    row([e.from, e.to, success(e), rps(e.rps), ms(e.p50), ms(e.p95), ms(e.p99), e.retries, e.retries_refused, e.ejections],
      { "data-edge": e.from + "->" + e.to, class: failing(e) ? "failing" : "" })));
  fill("#workloads", workloads.map((w) =>
    row([w.name, w.kind, w.pid ?? "-", el("span", { class: w.ready ? "good" : "bad" }, w.ready ? "yes" : w.running ? "no" : "ended"),
      w.restarts, dur(w.uptime_seconds), mib(w.memory_bytes), dur(w.cert_expires_in_seconds)],
      { "data-workload": w.name, "data-ready": String(w.ready) })));
  const select = $("#log-workload");
  if (select.options.length === 1) {
    for (const w of workloads) select.append(el("option", { value: w.name }, w.name));
  }
}

async function traces() {
  let list;
  try { list = await getJson("/api/traces"); } catch (_) { return; }
  const box = $("#collector");
  box.replaceChildren();
  if (list.collector) {
    box.append("Spans go to the collector at ", el("code", {}, list.collector), "; see them there. ");
    if (list.collector_ui) box.append(el("a", { href: list.collector_ui }, "Open it"));
  }
  fill("#traces", list.traces.map((t) => {
    const tr = row([t.trace_id.slice(0, 12) + "…", t.root, t.services.join(", "), t.spans, ms(t.duration_seconds),
      el("span", { class: t.error ? "bad" : "good" }, t.error ? "error" : "ok"), new Date(t.start_ms).toLocaleTimeString()],
      { class: "clickable", "data-trace": t.trace_id });
    tr.onclick = () => { location.hash = "#traces/" + t.trace_id; };
    return tr;
  }));
}

async function showTrace(id) {
  const box = $("#trace");
  let t;
  try { t = await getJson("/api/traces/" + id); } catch (e) { box.textContent = "no such trace: " + id; return; }
  const start = Math.min(...t.spans.map((s) => s.start_ns));
  const end = Math.max(...t.spans.map((s) => s.end_ns));
  const total = Math.max(end - start, 1);
  const fall = el("div", { class: "waterfall", "data-trace": id });
  fall.append(el("h2", {}, `trace ${id} · ${t.spans.length} spans · ${ms(total / 1e9)}`));
  for (const s of t.spans) {
    const bar = el("div", { class: "span-bar" + (s.error ? " error" : ""),
      style: `left:${(100 * (s.start_ns - start)) / total}%;width:${Math.max((100 * (s.end_ns - s.start_ns)) / total, 0.3)}%` });
    const name = el("div", { class: "span-name", style: `padding-left:${s.depth * 14}px`, title: s.name }, `${s.service}: ${s.name}`);
    fall.append(el("div", { class: "span-row", "data-span": s.span_id, "data-parent": s.parent_span_id || "" },
      name, el("div", { class: "span-track" }, bar), el("div", { class: "span-time" }, ms((s.end_ns - s.start_ns) / 1e9))));
  }
  const logs = await getJson("/api/logs?trace=" + id);
  const pre = el("pre", { id: "trace-logs" }, logs.map((l) => `${l.workload} | ${l.line}`).join("\n") || "no log lines name this trace");
  box.replaceChildren(fall, el("h2", {}, "Log lines of this trace"), pre);
}

async function logsPage() {
  const q = new URLSearchParams({ workload: $("#log-workload").value, trace: $("#log-trace").value.trim(), q: $("#log-text").value });
  const lines = await getJson("/api/logs?" + q);
  $("#log-lines").textContent = lines.map((l) => `${new Date(l.at_ms).toLocaleTimeString()} ${l.workload} | ${l.line}`).join("\n");
}

function route() {
  const [page, arg] = (location.hash.slice(1) || "overview").split("/");
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== page + "-page";
  if (page === "traces") { traces(); if (arg) showTrace(arg); else $("#trace").replaceChildren(); }
  if (page === "logs") logsPage();
  if (page === "overview") overview();
}

window.addEventListener("hashchange", route);
$("#log-filter").addEventListener("input", logsPage);
setInterval(() => {
  const page = (location.hash.slice(1) || "overview").split("/")[0];
  (page === "overview" ? overview() : page === "traces" ? traces() : logsPage()).catch(() => {});
}, 2000);
route();
