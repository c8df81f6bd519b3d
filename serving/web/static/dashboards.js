// Renders a dashboard page from its declaration (serving/dashboards.py) with Chart.js.
// Every panel reads one API endpoint; the page re-reads them all every refresh_seconds and when
// the date range changes. window.eventhouse.panels[id] says what each panel drew (the browser
// tests read it): {status: "drawn" | "empty" | "error", points, error}.
"use strict";

const config = JSON.parse(document.getElementById("page-config").textContent);
const state = { panels: {}, charts: {}, refreshes: 0 };
window.eventhouse = state;
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
  "#ea580c", "#4b5563", "#0d9488", "#9333ea"];

function rangeParams() {
  const form = document.getElementById("range");
  const params = {};
  if (form.start.value) params.start_date = form.start.value;
  if (form.end.value) params.end_date = form.end.value;
  return params;
}

function withParams(path, params) {
  const entries = Object.entries(params);
  if (!entries.length) return path;
  const query = entries.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
  return path + (path.includes("?") ? "&" : "?") + query;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (response.status === 404) return { notFound: true, body: await response.json() };
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${await response.text()}`);
  return { body: await response.json() };
}

function format(value, field = "") {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number" && !/(^|_)(id|rank)$/.test(field)) {
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    return Math.abs(value) < 1 ? value.toFixed(4) : value.toLocaleString("en-US", { maximumFractionDigits: 2 });
  }
  return String(value);
}

function label(value) {
  // ISO timestamps as "MM-DD hh:mm", dates as they are
  if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return value.slice(5, 16).replace("T", " ");
  return String(value);
}

function datasetsOf(panel, rows) {
  if (panel.series) {
    const labels = [...new Set(rows.map((r) => label(r[panel.x])))];
    const groups = [...new Set(rows.map((r) => String(r[panel.series])))];
    const datasets = groups.map((group, i) => {
      const byLabel = new Map(rows.filter((r) => String(r[panel.series]) === group)
        .map((r) => [label(r[panel.x]), r[panel.y[0]]]));
      return { label: group, data: labels.map((l) => byLabel.get(l) ?? null), backgroundColor: PALETTE[i % 12],
        borderColor: PALETTE[i % 12] };
    });
    return { labels, datasets };
  }
  const labels = rows.map((r) => label(r[panel.x]));
  const datasets = panel.y.map((field, i) => ({ label: field, data: rows.map((r) => r[field]),
    backgroundColor: panel.kind === "doughnut" ? PALETTE : PALETTE[i % 12], borderColor: PALETTE[i % 12] }));
  return { labels, datasets };
}

function drawChart(panel, body, rows) {
  // time runs left to right whatever order the endpoint answers in (/metrics/daily: newest first)
  if (rows.length && /^\d{4}-\d\d-\d\d/.test(String(rows[0][panel.x]))) {
    rows = [...rows].sort((a, b) => String(a[panel.x]).localeCompare(String(b[panel.x])));
  }
  const canvas = document.createElement("canvas");
  body.replaceChildren(canvas);
  const data = datasetsOf(panel, rows);
  const type = { line: "line", bar: "bar", hbar: "bar", stacked: "bar", doughnut: "doughnut" }[panel.kind];
  const stacked = panel.kind === "stacked";
  const options = { animation: false, responsive: true, maintainAspectRatio: false,
    plugins: { legend: { display: data.datasets.length > 1 || panel.kind === "doughnut" } } };
  if (panel.kind !== "doughnut") {
    options.scales = { x: { stacked }, y: panel.log_scale ? { type: "logarithmic" } : { stacked, beginAtZero: true } };
    if (panel.kind === "hbar") options.indexAxis = "y";
  }
  if (state.charts[panel.id]) state.charts[panel.id].destroy();
  state.charts[panel.id] = new Chart(canvas, { type, data, options });
  return data.datasets.reduce((n, d) => n + d.data.filter((v) => v !== null && v !== undefined).length, 0);
}

function drawTable(panel, body, rows) {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const field of panel.y) head.insertCell().outerHTML = `<th>${field}</th>`;
  const tbody = table.createTBody();
  for (const row of rows) {
    const tr = tbody.insertRow();
    for (const field of panel.y) tr.insertCell().textContent = format(
      typeof row[field] === "string" ? label(row[field]) : row[field], field);
  }
  body.replaceChildren(table);
  return rows.length;
}

function drawCards(panel, body, row) {
  const cards = document.createElement("div");
  cards.className = "cards";
  for (const field of panel.y) {
    const card = document.createElement("div");
    card.className = "card";
    card.innerHTML = `<div class="value"></div><div class="name"></div>`;
    card.querySelector(".value").textContent = format(row[field]);
    card.querySelector(".name").textContent = field.replaceAll("_", " ");
    cards.appendChild(card);
  }
  body.replaceChildren(cards);
  return panel.y.filter((f) => row[f] !== null && row[f] !== undefined).length;
}

function drawHeatmap(panel, body, rows) {
  // rows: one per (x, series) cell with y[0] in 0..1; columns are x values, lines series values
  const columns = [...new Set(rows.map((r) => String(r[panel.x])))].sort();
  const lines = [...new Set(rows.map((r) => String(r[panel.series])))].sort((a, b) => a - b);
  const cell = new Map(rows.map((r) => [`${r[panel.series]}|${r[panel.x]}`, r[panel.y[0]]]));
  const table = document.createElement("table");
  table.className = "heatmap";
  const head = table.createTHead().insertRow();
  head.insertCell().outerHTML = `<th>${panel.series.replaceAll("_", " ")}</th>`;
  for (const c of columns) head.insertCell().outerHTML = `<th>${c.slice(5)}</th>`;
  let drawn = 0;
  for (const line of lines) {
    const tr = table.insertRow();
    tr.insertCell().outerHTML = `<th>${line}</th>`;
    for (const c of columns) {
      const value = cell.get(`${line}|${c}`);
      const td = tr.insertCell();
      if (value !== undefined && value !== null) {
        td.textContent = (value * 100).toFixed(0) + "%";
        td.style.background = `hsl(${Math.round(value * 120)}, 70%, ${85 - value * 30}%)`;
        drawn += 1;
      }
    }
  }
  body.replaceChildren(table);
  return drawn;
}

async function renderPanel(panel, day, range) {
  const body = document.getElementById(`panel-${panel.id}`).querySelector(".body");
  const title = document.getElementById(`panel-${panel.id}`).querySelector("h2");
  title.textContent = panel.title.replace("{day}", day || "the newest day");
  try {
    if (panel.endpoint.includes("{day}") && !day) {
      body.replaceChildren(Object.assign(document.createElement("p"), { className: "empty",
        textContent: "no day with data in this range" }));
      state.panels[panel.id] = { status: "empty", points: 0 };
      return;
    }
    const path = withParams(panel.endpoint.replace("{day}", day || ""), panel.range ? range : {});
    const answer = await getJSON(path);
    let rows = answer.notFound ? [] : answer.body;
    if (panel.rows_key && !answer.notFound) rows = rows[panel.rows_key];
    const isRows = Array.isArray(rows);
    if ((isRows && rows.length === 0) || (!isRows && Object.keys(rows).length === 0)) {
      const text = answer.notFound ? answer.body.detail : "no data in this range";
      body.replaceChildren(Object.assign(document.createElement("p"), { className: "empty", textContent: text }));
      state.panels[panel.id] = { status: "empty", points: 0, path };
      return;
    }
    let points;
    if (panel.kind === "table") points = drawTable(panel, body, rows);
    else if (panel.kind === "cards") points = drawCards(panel, body, rows);
    else if (panel.kind === "heatmap") points = drawHeatmap(panel, body, rows);
    else points = drawChart(panel, body, rows);
    state.panels[panel.id] = { status: points > 0 ? "drawn" : "empty", points, path };
  } catch (error) {
    body.replaceChildren(Object.assign(document.createElement("p"), { className: "error", textContent: String(error) }));
    state.panels[panel.id] = { status: "error", points: 0, error: String(error) };
    console.error(`panel ${panel.id}: ${error}`);
  }
}

async function newestDay(range) {
  const [endpoint, field] = config.days;
  if (!endpoint) return null;
  const answer = await getJSON(withParams(endpoint, range));
  const days = (answer.notFound ? [] : answer.body).map((r) => r[field]).sort();
  return days.length ? days[days.length - 1] : null;
}

async function refresh() {
  const range = rangeParams();
  state.done = false;
  let day = null;
  try {
    day = await newestDay(range);
  } catch (error) {
    console.error(`days: ${error}`);
  }
  await Promise.all(config.panels.map((panel) => renderPanel(panel, day, range)));
  state.refreshes += 1;
  state.done = true;
  document.getElementById("refreshed").textContent =
    `updated ${new Date().toLocaleTimeString()} · every ${config.refresh_seconds} s`;
}

function layout() {
  const section = document.getElementById("panels");
  for (const panel of config.panels) {
    const article = document.createElement("article");
    article.id = `panel-${panel.id}`;
    article.className = `panel ${panel.kind}${panel.wide ? " wide" : ""}`;
    article.innerHTML = `<h2></h2><div class="body"><p class="loading">loading…</p></div>`;
    section.appendChild(article);
  }
  const form = document.getElementById("range");
  const url = new URL(window.location.href);
  form.start.value = url.searchParams.get("start_date") || "";
  form.end.value = url.searchParams.get("end_date") || "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URL(window.location.href);
    for (const [name, input] of [["start_date", form.start], ["end_date", form.end]]) {
      if (input.value) next.searchParams.set(name, input.value);
      else next.searchParams.delete(name);
    }
    window.history.replaceState(null, "", next);
    refresh();
  });
}

layout();
refresh();
setInterval(refresh, config.refresh_seconds * 1000);
