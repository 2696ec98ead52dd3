// Switchyard live dashboard: no build step, no dependencies.
// The key lives in sessionStorage and travels only in the Authorization header; the live
// stream is read with fetch() (EventSource cannot send headers), so it is never in a URL.
// Every value from the server is inserted with textContent, never as HTML.
"use strict";

const KEY = "switchyard.key", SPACE = "switchyard.space";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let session = null;       // {key, space, me}
let streamAbort = null;
let focusTenant = null;   // the tenant an operator opened
let selected = null;      // command id whose trace is shown

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
const fmt = {
  rate: (v) => v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2),
  ms: (v) => v == null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(v >= 100 ? 0 : 1) + " ms",
  pct: (v) => v == null ? "–" : (v * 100).toFixed(v === 1 ? 0 : 1) + "%",
  int: (v) => (v ?? 0).toLocaleString("en-US"),
  time: (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }),
  hm: (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  ago: (t) => { const s = Math.max(0, Date.now() / 1000 - t); return s < 60 ? `${s.toFixed(0)}s ago` : s < 3600 ? `${(s / 60).toFixed(0)}m ago` : fmt.time(t); },
};

function headers() {
  const h = { Authorization: "Bearer " + session.key };
  if (session.space) h["X-Switchyard-Space"] = session.space;
  return h;
}
async function api(path) {
  const r = await fetch(path, { headers: headers(), cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(body?.error?.message || r.statusText), { status: r.status });
  return body;
}

// ---------------------------------------------------------------- session
async function login(key, space) {
  session = { key, space: space || null };
  try {
    session.me = await api("/v1/observe/me");
  } catch (e) {
    session = null;
    throw e;
  }
  sessionStorage.setItem(KEY, key);
  if (space) sessionStorage.setItem(SPACE, space); else sessionStorage.removeItem(SPACE);
  show();
}
function logout() {
  if (streamAbort) streamAbort.abort();
  sessionStorage.removeItem(KEY); sessionStorage.removeItem(SPACE);
  session = null; focusTenant = null; selected = null;
  $("login-key").value = "";
  show();
}
function show() {
  const signedIn = !!session;
  $("login").hidden = signedIn;
  $("who").hidden = !signedIn;
  const admin = signedIn && session.me.is_admin;
  const tenant = admin ? focusTenant : signedIn ? session.me.tenant_id : null;
  $("admin-view").hidden = !(admin && !focusTenant);
  $("tenant-view").hidden = !tenant;
  $("back-btn").hidden = !(admin && focusTenant);
  if (signedIn) $("who-label").textContent = admin ? "operator" : `tenant ${session.me.tenant_id}`;
  if (tenant) { $("tenant-name").textContent = tenant; }
  if (signedIn) startStream(admin && !focusTenant ? "admin" : "tenant", tenant);
}

// ---------------------------------------------------------------- live stream
async function startStream(view, tenant) {
  if (streamAbort) streamAbort.abort();
  const abort = new AbortController();
  streamAbort = abort;
  let backoff = 500;
  while (!abort.signal.aborted) {
    try {
      const q = new URLSearchParams({ view });
      if (view === "tenant" && session.me.is_admin) q.set("tenant", tenant);
      const r = await fetch("/v1/stream?" + q, { headers: headers(), signal: abort.signal, cache: "no-store" });
      if (r.status === 401 || r.status === 403) { logout(); $("login-error").textContent = "The key was refused."; return; }
      if (!r.ok || !r.body) throw new Error("stream " + r.status);
      $("pulse").classList.add("on");
      backoff = 500;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          let event = "message", data = "";
          for (const line of chunk.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (event === "snapshot" && !abort.signal.aborted) render(JSON.parse(data));
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
      $("pulse").classList.remove("on");
      await new Promise((ok) => setTimeout(ok, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }
}
function render(snap) {
  if (snap.view === "admin") renderAdmin(snap); else renderTenant(snap);
}

// ---------------------------------------------------------------- widgets
function kpis(target, items) {
  target.replaceChildren(...items.map(([label, value, unit, color]) =>
    el("div", { class: "kpi", style: `--c:${color}` },
      el("div", { class: "label" }, label),
      el("div", { class: "value" }, value, unit ? el("small", {}, unit) : ""))));
}
function bars(target, entries, { c1, c2, format = fmt.int, label } = {}) {
  if (!entries.length) { target.replaceChildren(el("div", { class: "empty" }, "Nothing to show — all clear.")); return; }
  const max = Math.max(...entries.map((e) => e[1]), 1e-9);
  target.replaceChildren(...entries.map(([name, value]) =>
    el("div", { class: "bar", "data-name": name, title: label ? label(name, value) : `${name}: ${value}` },
      el("span", { class: "name" }, name),
      el("div", { class: "track" }, el("div", { class: "fill", style: `width:${Math.max(2, (value / max) * 100)}%;${c1 ? `--c1:${c1};--c2:${c2 || c1}` : ""}` })),
      el("span", { class: "val" }, format(value)))));
}
function lineChart(node, timeline, series, { stacked = false, unit = "" } = {}) {
  const w = Math.max(300, node.clientWidth || 600), h = node.clientHeight || 210;
  const pad = { l: 50, r: 12, t: 10, b: 24 };
  node.setAttribute("viewBox", `0 0 ${w} ${h}`);
  node.replaceChildren();
  const n = timeline.length;
  const x = (i) => pad.l + (i / Math.max(1, n - 1)) * (w - pad.l - pad.r);
  const vals = series.flatMap((s) => timeline.map((p) => s.value(p)).filter((v) => v != null));
  let max = Math.max(...vals, 0);
  if (stacked) max = Math.max(...timeline.map((p) => series.reduce((a, s) => a + (s.value(p) || 0), 0)), 0);
  max = max <= 0 ? 1 : niceMax(max);
  const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);
  const defs = svg("defs");
  node.append(defs);
  for (let g = 0; g <= 4; g++) {
    const v = (max / 4) * g, yy = y(v);
    node.append(svg("line", { x1: pad.l, x2: w - pad.r, y1: yy, y2: yy, stroke: "#1b2434", "stroke-width": 1 }));
    const t = svg("text", { x: pad.l - 8, y: yy + 4, "text-anchor": "end" });
    t.textContent = (unit === "ms" ? fmt.ms(v) : fmt.rate(v));
    node.append(t);
  }
  for (const i of [0, Math.floor((n - 1) / 2), n - 1]) {
    if (!timeline[i]) continue;
    const t = svg("text", { x: x(i), y: h - 6, "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle" });
    t.textContent = fmt.hm(timeline[i].t);
    node.append(t);
  }
  let base = timeline.map(() => 0);
  series.forEach((s, k) => {
    const gid = `g${node.id}${k}`;
    const grad = svg("linearGradient", { id: gid, x1: 0, x2: 0, y1: 0, y2: 1 });
    grad.append(svg("stop", { offset: "0%", "stop-color": s.color, "stop-opacity": s.fill ?? 0.28 }),
      svg("stop", { offset: "100%", "stop-color": s.color, "stop-opacity": 0 }));
    defs.append(grad);
    const top = timeline.map((p, i) => { const v = s.value(p); return v == null ? null : (stacked ? base[i] + v : v); });
    const pts = top.map((v, i) => (v == null ? null : [x(i), y(v)]));
    const segs = []; let cur = [];
    pts.forEach((p) => { if (p) cur.push(p); else if (cur.length) { segs.push(cur); cur = []; } });
    if (cur.length) segs.push(cur);
    for (const seg of segs) {
      const d = seg.map((p, i) => `${i ? "L" : "M"}${p[0].toFixed(1)},${p[1].toFixed(1)}`).join("");
      if (s.area) {
        const b0 = seg.map((p) => { const i = pts.indexOf(p); return [p[0], y(stacked ? base[i] : 0)]; }).reverse();
        node.append(svg("path", { d: d + b0.map((p) => `L${p[0].toFixed(1)},${p[1].toFixed(1)}`).join("") + "Z", fill: `url(#${gid})` }));
      }
      node.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2, "stroke-linejoin": "round", "stroke-linecap": "round" }));
      if (seg.length === 1) node.append(svg("circle", { cx: seg[0][0], cy: seg[0][1], r: 2.5, fill: s.color }));
    }
    const last = [...pts].reverse().find((p) => p);
    if (last) node.append(svg("circle", { cx: last[0], cy: last[1], r: 3.5, fill: s.color, stroke: "#0a0e16", "stroke-width": 2 }));
    if (stacked) base = top.map((v, i) => v ?? base[i]);
  });
  const legend = node.nextElementSibling?.classList.contains("legend") ? node.nextElementSibling : null;
  const items = series.map((s) => el("span", {}, el("i", { style: `background:${s.color}` }), s.name));
  if (legend) legend.replaceChildren(...items); else node.after(el("div", { class: "legend" }, ...items));
}
function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * p;
}
const perSecond = (key) => (p) => p[key] / 10;

// ---------------------------------------------------------------- tenant view
function renderTenant(snap) {
  const m = snap.metrics, lat = m.latency_5m;
  $("tenant-updated").textContent = "updated " + fmt.time(snap.at);
  kpis($("tenant-kpis"), [
    ["Throughput", fmt.rate(m.rate_1m), "/s", "var(--accent)"],
    ["Success", fmt.pct(m.success_ratio), "", "var(--green)"],
    ["p50", fmt.ms(lat.p50_ms), "", "var(--blue)"],
    ["p95", fmt.ms(lat.p95_ms), "", "var(--violet)"],
    ["p99", fmt.ms(lat.p99_ms), "", "var(--amber)"],
    ["Errors 5m", fmt.int(m.errors_5m), "", "var(--red)"],
    ["Commands", fmt.int(m.total), "", "#64748b"],
  ]);
  lineChart($("chart-throughput"), m.timeline, [
    { name: "errors", color: "#f87171", value: perSecond("errors"), area: true },
    { name: "succeeded", color: "#2dd4bf", value: perSecond("ok"), area: true },
  ], { stacked: true });
  lineChart($("chart-latency"), m.timeline, [
    { name: "p50", color: "#60a5fa", value: (p) => p.p50_ms, area: true, fill: 0.18 },
    { name: "p95", color: "#a78bfa", value: (p) => p.p95_ms },
    { name: "p99", color: "#fbbf24", value: (p) => p.p99_ms, width: 1.5 },
  ], { unit: "ms" });
  const sorted = (o) => Object.entries(o).sort((a, b) => b[1] - a[1]);
  bars($("errors-by-connector"), sorted(m.errors_by_connector));
  bars($("errors-by-code"), sorted(m.errors_by_code), { c1: "#fbbf24", c2: "#f97316" });
  const tbody = $("commands").tBodies[0];
  tbody.replaceChildren(...snap.commands.map((c) => {
    const row = el("tr", { "data-command-id": c.command_id, class: c.command_id === selected ? "selected" : "" },
      el("td", {}, el("span", { class: `pill ${c.status}` }, c.status.replace("_", " "))),
      el("td", {}, c.action),
      el("td", {}, c.connector || "–"),
      el("td", { class: "num" }, fmt.ms(c.latency_ms)),
      el("td", { class: "muted" }, fmt.ago(c.finished_at)),
      el("td", { class: "mono" }, c.command_id.slice(0, 12)));
    row.addEventListener("click", () => openTrace(snap.tenant_id, c.command_id));
    return row;
  }));
  if (!snap.commands.length) tbody.replaceChildren(el("tr", {}, el("td", { colSpan: 6, class: "empty" }, "No commands yet.")));
  const fails = snap.errors.failures.slice(0, 10);
  $("failures").replaceChildren(...(fails.length ? fails.map((f) => el("li", {},
    el("span", { class: "code" }, f.code || f.status),
    el("span", { class: "muted" }, `${f.connector || "–"} · ${fmt.ago(f.finished_at)}`),
    el("span", { class: "msg", title: f.message || "" }, f.message || ""),
    el("span", { class: "tid", title: "trace id" }, f.trace_id || ""))) : [el("li", { class: "empty" }, "No failures. ✓")]));
  if (!selected && snap.commands.length) openTrace(snap.tenant_id, snap.commands[0].command_id);
}
async function openTrace(tenant, commandId) {
  selected = commandId;
  for (const tr of $("commands").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.commandId === commandId);
  let t;
  try { t = await api(`/v1/tenants/${encodeURIComponent(tenant)}/commands/${encodeURIComponent(commandId)}/trace`); }
  catch (e) { $("waterfall").replaceChildren(el("div", { class: "empty" }, e.message)); return; }
  $("trace-id").textContent = t.trace_id ? `trace ${t.trace_id}` : `command ${t.command_id}`;
  const spans = t.spans || [];
  if (!spans.length) { $("waterfall").replaceChildren(el("div", { class: "empty" }, "This command carried no spans.")); return; }
  const start = Math.min(...spans.map((s) => s.start_unix_nano));
  const end = Math.max(...spans.map((s) => s.end_unix_nano), start + 1);
  const byId = Object.fromEntries(spans.map((s) => [s.span_id, s]));
  const depth = (s) => { let d = 0, p = s; while (p && p.parent_span_id && byId[p.parent_span_id] && d < 10) { p = byId[p.parent_span_id]; d++; } return d; };
  const ordered = [...spans].sort((a, b) => a.start_unix_nano - b.start_unix_nano);
  $("waterfall").replaceChildren(...ordered.map((s) => {
    const left = ((s.start_unix_nano - start) / (end - start)) * 100;
    const width = ((s.end_unix_nano - s.start_unix_nano) / (end - start)) * 100;
    const dur = (s.end_unix_nano - s.start_unix_nano) / 1e6;
    return el("div", { class: "span-row", title: `${s.name} · ${s.kind} · ${fmt.ms(dur)}` },
      el("span", { class: "span-name", style: `padding-left:${depth(s) * 14}px` }, s.name),
      el("div", { class: "span-track" },
        el("div", { class: `span-bar ${s.status === "error" ? "error" : s.kind}`, style: `left:${left}%;width:${width}%` }),
        el("span", { class: "span-dur" }, fmt.ms(dur))));
  }));
}

// ---------------------------------------------------------------- operator view
function renderAdmin(snap) {
  const o = snap.overview;
  $("admin-updated").textContent = "updated " + fmt.time(snap.at);
  const rate = o.tenants.reduce((a, t) => a + t.rate_1m, 0);
  const errors = o.tenants.reduce((a, t) => a + t.errors_5m, 0);
  const lagTotal = (o.pools || []).reduce((a, p) => a + (p.lag || 0), 0);
  kpis($("admin-kpis"), [
    ["Tenants", fmt.int(o.tenant_count), "", "var(--accent)"],
    ["Throughput", fmt.rate(rate), "/s", "var(--blue)"],
    ["Errors 5m", fmt.int(errors), "", "var(--red)"],
    ["Consumer lag", o.pools ? fmt.int(lagTotal) : "–", "", "var(--violet)"],
    ["Open breakers", fmt.int(o.breakers.length), "", "var(--amber)"],
  ]);
  lineChart($("chart-admin-throughput"), o.timeline, [
    { name: "errors", color: "#f87171", value: perSecond("errors"), area: true },
    { name: "succeeded", color: "#2dd4bf", value: perSecond("ok"), area: true },
  ], { stacked: true });
  bars($("noisiest"), o.noisiest.filter((t) => t.total > 0).map((t) => [t.tenant_id, t.rate_1m]),
    { c1: "#60a5fa", c2: "#a78bfa", format: (v) => fmt.rate(v) + "/s" });
  bars($("lag"), (o.pools || []).map((p) => [p.connector, p.lag ?? 0]), { c1: "#a78bfa", c2: "#f472b6" });
  $("breakers").replaceChildren(...(o.breakers.length ? o.breakers.map((b) => el("li", {},
    el("span", { class: "code" }, b.tenant_id),
    el("span", {}, b.connector),
    el("span", {}, el("span", { class: "pill open" }, "open"), ` ${b.rejections} rejected`),
    el("span", { class: "tid" }, fmt.ago(b.last_seen)))) : [el("li", { class: "empty" }, "All breakers closed. ✓")]));
  const tbody = $("tenants-table").tBodies[0];
  tbody.replaceChildren(...o.tenants.map((t) => {
    const row = el("tr", { "data-tenant": t.tenant_id },
      el("td", { class: "mono" }, t.tenant_id),
      el("td", { class: "num" }, fmt.rate(t.rate_1m)),
      el("td", { class: "num" }, fmt.int(t.total)),
      el("td", { class: "num" }, fmt.pct(t.success_ratio)),
      el("td", { class: "num" }, fmt.ms(t.p95_ms)),
      el("td", { class: "num" }, fmt.int(t.errors_5m)));
    row.addEventListener("click", () => { focusTenant = t.tenant_id; selected = null; show(); });
    return row;
  }));
}

// ---------------------------------------------------------------- boot
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try { await login($("login-key").value.trim(), $("login-space").value.trim()); }
    catch (e) { $("login-error").textContent = e.status === 401 ? "That key is not valid." : e.message; }
  });
  $("logout-btn").addEventListener("click", logout);
  $("back-btn").addEventListener("click", () => { focusTenant = null; selected = null; show(); });
  const saved = sessionStorage.getItem(KEY);
  if (saved) login(saved, sessionStorage.getItem(SPACE)).catch(() => logout());
});
