// The operator page: polls GET /admin/status, draws CTR per arm with its band, posts actions.
"use strict";
const COLORS = { production: "#1565c0", canary: "#ef6c00" };
const $ = (id) => document.getElementById(id);
let refreshes = 0;

function pct(x) { return (100 * x).toFixed(3) + "%"; }

function cells(row, values, tag) {
  const tr = document.createElement("tr");
  for (const v of values) {
    const td = document.createElement(tag || "td");
    td.textContent = v;
    tr.appendChild(td);
  }
  row.appendChild(tr);
}

function drawChart(series) {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const all = Object.values(series).flat();
  if (!all.length) {
    ctx.fillText("no impressions yet", 20, 20);
    return;
  }
  const t0 = Math.min(...all.map((p) => p.t)), t1 = Math.max(...all.map((p) => p.t)) || t0 + 1;
  const yMax = Math.max(...all.map((p) => p.high), 1e-6) * 1.05;
  const pad = 40, w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
  const x = (t) => pad + (t1 > t0 ? ((t - t0) / (t1 - t0)) * w : w / 2);
  const y = (v) => pad + h - (v / yMax) * h;
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad, pad, w, h);
  ctx.fillStyle = "#444";
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    ctx.fillText(pct(v), 2, y(v) + 3);
  }
  for (const [arm, points] of Object.entries(series)) {
    if (!points.length) continue;
    ctx.fillStyle = COLORS[arm] + "33";
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.high)) : ctx.moveTo(x(p.t), y(p.high))));
    [...points].reverse().forEach((p) => ctx.lineTo(x(p.t), y(p.low)));
    ctx.closePath();
    ctx.fill();
    ctx.strokeStyle = COLORS[arm];
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.ctr)) : ctx.moveTo(x(p.t), y(p.ctr))));
    ctx.stroke();
  }
}

function render(s) {
  $("production-version").textContent = s.production_version;
  $("canary-version").textContent = s.canary_version || "none";
  $("weight").textContent = s.weight.toFixed(3);
  const d = s.decision;
  $("decision").textContent = d ? d.decision.toUpperCase() + (d.applied ? " (applied)" : "") : "-";
  $("decision").className = d ? d.decision : "";
  $("p-value").textContent = d ? d.p_value.toFixed(4) : "-";
  $("reasons").textContent = d ? d.reasons.join("; ") : "";
  const g = $("guardrails");
  g.innerHTML = "";
  if (d) {
    for (const [k, v] of Object.entries(d.guardrails)) cells(g, [k, (+v).toPrecision(4)]);
  }
  const arms = $("arms");
  arms.innerHTML = "";
  cells(arms, ["arm", "impressions", "clicks", "CTR", "95% band"], "th");
  for (const [arm, points] of Object.entries(s.series)) {
    const p = points[points.length - 1];
    if (p) cells(arms, [arm, p.impressions, p.clicks, pct(p.ctr), pct(p.low) + " - " + pct(p.high)]);
  }
  drawChart(s.series);
  const ev = $("events");
  ev.innerHTML = "";
  for (const e of [...s.events].reverse()) {
    const { at, kind, ...rest } = e;
    cells(ev, [at, kind, JSON.stringify(rest)]);
  }
  refreshes += 1;
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.refreshes = String(refreshes);
  document.body.dataset.impressions = String(
    Object.values(s.series).map((p) => (p.length ? p[p.length - 1].impressions : 0))
      .reduce((a, b) => a + b, 0));
}

async function refresh() {
  try {
    const r = await fetch("/admin/status");
    const body = await r.json();
    if (r.ok) render(body.status);
    else show(body.error || r.statusText, true);
  } catch (e) {
    show("status unavailable: " + e, true);
  }
}

function show(text, bad) {
  $("message").textContent = text;
  $("message").className = bad ? "error" : "ok";
}

async function act(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer " + $("token").value },
    body: body ? JSON.stringify(body) : "",
  });
  const answer = await r.json();
  if (!r.ok) {
    show(r.status + ": " + answer.error, true);
    return;
  }
  show(path + ": " + JSON.stringify(answer.result), false);
  render(answer.status);
}

$("set-weight").onclick = () => act("/admin/canary", { weight: parseFloat($("weight-input").value) });
$("promote").onclick = () => act("/admin/promote");
$("rollback").onclick = () => act("/admin/rollback");
$("evaluate").onclick = () => act("/admin/evaluate");
refresh();
setInterval(refresh, 1000);
