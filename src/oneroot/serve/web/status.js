// oneroot's status page: rows pushed by server-sent events (/api/v1/stream), boot timelines
// drawn as SVG. Node-controlled text (names, stage messages) goes in with textContent only.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = {"power-on": "#8e7cc3", dhcp: "#6fa8dc", loader: "#76a5af", kernel: "#f6b26b",
  layers: "#93c47d", union: "#6aa84f", init: "#e06666", runlevel: "#c27ba0", off: "#b7b7b7"};
let session = null;  // {csrf, actions} on the administrator's listener, else null

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function seconds(s) { return s < 10 ? s.toFixed(1) + " s" : Math.round(s) + " s"; }

function timelineSvg(tl, now) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "timeline");
  const phases = tl.phases || [];
  const width = 680, height = 34;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  if (!phases.length) return svg;
  const start = phases[0].start;
  const end = tl.up || phases[phases.length - 1].end || now;
  const total = Math.max(end - start, 0.001);
  // Each phase gets a minimum width so a 10 ms one stays visible and labelled.
  const minw = 80, spare = Math.max(width - minw * phases.length, 0);
  let x = 0;
  for (const p of phases) {
    const d = (p.end || end) - p.start;
    const w = minw + spare * (d / total);
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "phase");
    g.dataset.phase = p.name;
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", x); r.setAttribute("y", 0);
    r.setAttribute("width", Math.max(w - 1, 1)); r.setAttribute("height", 20);
    r.setAttribute("fill", COLORS[p.name] || "#999");
    const title = document.createElementNS(SVG, "title");
    title.textContent = p.label + ": " + seconds(d) + (p.end ? "" : " (under way)");
    r.appendChild(title);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", x + 2); label.setAttribute("y", 13);
    label.textContent = p.label;
    const dur = document.createElementNS(SVG, "text");
    dur.setAttribute("x", x + 2); dur.setAttribute("y", 31);
    dur.setAttribute("class", "duration");
    dur.textContent = seconds(d);
    g.append(r, label, dur);
    svg.appendChild(g);
    x += w;
  }
  return svg;
}

function powerButtons(node) {
  const td = el("td", undefined, "actions");
  for (const action of session.actions) {
    const b = el("button", action);
    b.dataset.action = action;
    b.addEventListener("click", () => powerAction(node, action, b));
    td.appendChild(b);
  }
  return td;
}

async function powerAction(node, action, button) {
  button.disabled = true;
  try {
    const r = await fetch("/api/v1/admin/power", {method: "POST",
      headers: {"Content-Type": "application/json", "X-Oneroot-CSRF": session.csrf},
      body: JSON.stringify({node: node, action: action})});
    const result = await r.json().catch(() => ({}));
    button.title = r.ok ? "done" : (result.error || r.statusText);
  } finally {
    button.disabled = false;
  }
}

function renderNode(n, now) {
  const tbody = document.querySelector("#nodes tbody");
  let tr = document.getElementById("node-" + n.node);
  const fresh = el("tr");
  fresh.id = "node-" + n.node;
  fresh.dataset.node = n.node;
  fresh.dataset.stage = n.stage;
  const tl = n.timeline || {};
  fresh.className = tl.current === "up" ? "up" : tl.current === "off" ? "off"
    : (tl.failed ? "failed" : "");
  fresh.append(el("td", n.node, "name"), el("td", n.ip, "ip"), el("td", n.stage, "stage"),
    el("td", n.message, "message"));
  const chart = el("td", undefined, "chart");
  chart.appendChild(timelineSvg(tl, now));
  fresh.appendChild(chart);
  if (session) fresh.appendChild(powerButtons(n.node));
  if (tr) tr.replaceWith(fresh); else tbody.appendChild(fresh);
}

function addError(e) {
  const li = el("li");
  li.append(el("strong", e.node), document.createTextNode(" "), el("span", e.message, "msg"));
  if (e.hint) li.appendChild(el("span", "hint: " + e.hint, "hint"));
  const list = document.getElementById("errors");
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
  document.getElementById("no-errors").hidden = true;
}

function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/api/v1/stream");
  source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn live"; });
  source.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; });
  source.addEventListener("snapshot", (m) => {
    const s = JSON.parse(m.data);
    document.querySelector("#nodes tbody").replaceChildren();
    document.getElementById("errors").replaceChildren();
    for (const n of s.nodes) renderNode(n, s.time);
    for (const e of s.errors) addError(e);
  });
  source.addEventListener("node", (m) => renderNode(JSON.parse(m.data), Date.now() / 1000));
  source.addEventListener("failure", (m) => addError(JSON.parse(m.data)));
}

async function start() {
  try {
    const r = await fetch("/api/v1/admin/session", {credentials: "same-origin"});
    if (r.ok) session = await r.json();
  } catch (e) { session = null; }
  document.getElementById("mode").textContent = session ? "administrator" : "read-only";
  document.querySelector(".actions-head").hidden = !session;
  connect();
}

document.addEventListener("DOMContentLoaded", start);
