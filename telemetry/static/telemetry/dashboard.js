// The live fleet view. Protocol: see "Dashboard WebSocket" in docs/websocket.md.
"use strict";

const WINDOW_SECONDS = 3600;
const HISTORY_BUCKET_SECONDS = 10; // the history's sampling interval: one point per stored sample
// The metric names, in chart order, as the page gives them (telemetry.frames.METRICS).
const METRICS = JSON.parse(document.getElementById("metric-names").textContent);
const robots = new Map(); // robot_id -> {row, state}
let selected = null;
let robotSeries = [[], [], [], [], []]; // t, cpu, memory, latency, battery
let robotChart = null;
let missionChart = null;
const missionSeries = new Map(); // status -> [[t, value], ...]
const alerts = new Map(); // robot_id -> Map(rule -> active alert)
let historyRequest = 0; // so that a slow answer for an earlier selection is dropped

const $ = (selector) => document.querySelector(selector);
const fmt = (value, digits = 1) => (value === null || value === undefined ? "—" : Number(value).toFixed(digits));
const timeOf = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleTimeString() : "never");

function chartWidth(element) {
  return Math.max(300, element.clientWidth || element.parentElement.clientWidth - 32);
}

function makeRobotChart() {
  const element = $("#robot-chart");
  robotChart = new uPlot(
    {
      width: chartWidth(element),
      height: 220,
      series: [
        {},
        { label: "CPU %", stroke: "#3b82f6" },
        { label: "Memory %", stroke: "#8b5cf6" },
        { label: "Latency ms", stroke: "#d9822b", scale: "ms" },
        { label: "Battery %", stroke: "#1f9d55" },
      ],
      scales: { y: { range: [0, 100] } },
      axes: [{}, { scale: "y" }, { scale: "ms", side: 1, grid: { show: false } }],
    },
    robotSeries,
    element,
  );
}

function selectRobot(robotId) {
  selected = robotId;
  robotSeries = [[], [], [], [], []];
  robotChart.setData(robotSeries);
  $("#robot-chart").dataset.points = "0";
  $("#robot-chart").dataset.history = "loading";
  $("#selected-robot").textContent = robotId;
  for (const [id, entry] of robots) entry.row.classList.toggle("selected", id === robotId);
  loadRobotHistory(robotId);
}

// The last hour from the bucketed history (one average per bucket), before the live frames.
async function loadRobotHistory(robotId) {
  const request = ++historyRequest;
  const since = Date.now() / 1000 - WINDOW_SECONDS;
  const url =
    `/api/telemetry/robots/${encodeURIComponent(robotId)}/history/` +
    `?bucket=${HISTORY_BUCKET_SECONDS}&since=${since.toFixed(3)}`;
  let body;
  try {
    body = await fetchJson(url);
  } catch (error) {
    console.warn("robot history unavailable", error);
    if (request === historyRequest) $("#robot-chart").dataset.history = "unavailable";
    return;
  }
  if (request !== historyRequest) return;
  // Live frames may have arrived meanwhile: history goes before the first of them.
  const firstLive = robotSeries[0].length ? robotSeries[0][0] : Infinity;
  const points = body.results.filter((bucket) => Date.parse(bucket.start) / 1000 < firstLive);
  const history = [points.map((bucket) => Date.parse(bucket.start) / 1000)];
  METRICS.forEach((name) => history.push(points.map((bucket) => bucket[name].avg)));
  robotSeries = robotSeries.map((series, index) => [...history[index], ...series]);
  robotChart.setData(robotSeries);
  $("#robot-chart").dataset.points = String(robotSeries[0].length);
  $("#robot-chart").dataset.history = String(points.length);
}

function addRobotPoint(frame) {
  const t = frame.reported_at;
  robotSeries[0].push(t);
  METRICS.forEach((name, index) => robotSeries[index + 1].push(frame.metrics[name]));
  const cutoff = t - WINDOW_SECONDS;
  while (robotSeries[0].length && robotSeries[0][0] < cutoff) robotSeries.forEach((series) => series.shift());
  robotChart.setData(robotSeries);
  $("#robot-chart").dataset.points = String(robotSeries[0].length);
}

function rowFor(robotId) {
  let entry = robots.get(robotId);
  if (entry) return entry;
  const row = document.createElement("tr");
  row.dataset.robotId = robotId;
  row.innerHTML =
    '<td class="id"></td><td><span class="status"></span></td><td class="seen"></td>' +
    '<td class="num cpu"></td><td class="num memory"></td><td class="num latency"></td>' +
    '<td><span class="battery"><span></span></span> <span class="battery-value"></span></td>' +
    '<td class="alerts"></td>';
  row.querySelector(".id").textContent = robotId;
  row.addEventListener("click", () => selectRobot(robotId));
  const body = $("#robots tbody");
  const after = [...body.children].find((other) => other.dataset.robotId > robotId);
  body.insertBefore(row, after || null);
  entry = { row, state: { connected: false, reporting: false, last_seen_at: null, metrics: null } };
  robots.set(robotId, entry);
  $("#no-robots").hidden = true;
  if (selected === null) selectRobot(robotId);
  return entry;
}

function render(robotId) {
  const { row, state } = robots.get(robotId);
  const status = row.querySelector(".status");
  // A robot that just disconnected may still count as reporting (its last frame is recent);
  // what an operator needs first is whether it is connected.
  const label = !state.connected ? "not connected" : state.reporting ? "reporting" : "connected";
  status.className = `status ${label.replace(" ", "-")}`;
  status.textContent = label;
  row.dataset.connected = String(state.connected);
  row.querySelector(".seen").textContent = timeOf(state.last_seen_at);
  const m = state.metrics || {};
  row.querySelector(".cpu").textContent = fmt(m.cpu_usage);
  row.querySelector(".memory").textContent = fmt(m.memory_usage);
  row.querySelector(".latency").textContent = fmt(m.network_latency_ms);
  const battery = m.battery_percentage;
  row.querySelector(".battery > span").style.width = `${battery ?? 0}%`;
  row.querySelector(".battery").classList.toggle("low", battery !== undefined && battery < 20);
  row.querySelector(".battery-value").textContent = battery === undefined ? "—" : `${fmt(battery, 0)}%`;
  renderAlerts(robotId);
}

function renderAlerts(robotId) {
  const entry = robots.get(robotId);
  if (!entry) return;
  const active = [...(alerts.get(robotId) || new Map()).values()].sort((a, b) => a.rule.localeCompare(b.rule));
  entry.row.dataset.alerts = String(active.length);
  entry.row.querySelector(".alerts").replaceChildren(
    ...active.map((alert) => {
      const badge = document.createElement("span");
      badge.className = "alert-badge";
      badge.textContent = alert.rule;
      const since = new Date(alert.timestamp * 1000).toLocaleTimeString();
      badge.title = `${alert.metric} ${fmt(alert.value)} (threshold ${fmt(alert.threshold)}) since ${since}`;
      return badge;
    }),
  );
}

function setAlert(alert) {
  if (!alerts.has(alert.robot_id)) alerts.set(alert.robot_id, new Map());
  if (alert.state === "cleared") alerts.get(alert.robot_id).delete(alert.rule);
  else alerts.get(alert.robot_id).set(alert.rule, alert);
  renderAlerts(alert.robot_id);
}

function updateSummary() {
  const states = [...robots.values()].map((entry) => entry.state);
  $("#count-robots").textContent = states.length;
  $("#count-connected").textContent = states.filter((s) => s.connected).length;
  $("#count-reporting").textContent = states.filter((s) => s.connected && s.reporting).length;
  const active = [...alerts.values()].reduce((total, rules) => total + rules.size, 0);
  $("#count-alerts").textContent = active;
  $("#count-alerts").parentElement.classList.toggle("firing", active > 0);
}

const handlers = {
  snapshot(message) {
    alerts.clear();
    for (const alert of message.alerts || []) setAlert({ ...alert, state: "raised" });
    for (const robot of message.robots) {
      const entry = rowFor(robot.robot_id);
      Object.assign(entry.state, robot);
      render(robot.robot_id);
    }
  },
  alert(message) {
    rowFor(message.robot_id);
    setAlert(message);
  },
  telemetry(message) {
    const entry = rowFor(message.robot_id);
    Object.assign(entry.state, {
      metrics: message.metrics,
      last_seen_at: message.reported_at,
      connected: true,
      reporting: true,
    });
    render(message.robot_id);
    if (message.robot_id === selected) addRobotPoint(message);
  },
  presence(message) {
    const entry = rowFor(message.robot_id);
    Object.assign(entry.state, { connected: message.connected, reporting: message.reporting });
    render(message.robot_id);
  },
  counters(message) {
    const now = Date.now() / 1000;
    for (const counter of message.counters) {
      if (counter.name !== "mission_status_total") continue;
      addMissionPoint(counter.labels.status, now, counter.value);
    }
    drawMissions();
  },
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/telemetry/fleet/ws`);
  socket.onopen = () => {
    $("#link-state").textContent = "live";
    $("#link-state").className = "link up";
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "sync") {
      // Flow control: the server sends more only once we have caught up.
      socket.send(JSON.stringify({ type: "ack", sync: message.sync }));
      updateSummary();
      return;
    }
    const handler = handlers[message.type];
    if (handler) handler(message);
    if (message.type === "snapshot") updateSummary();
  };
  socket.onclose = () => {
    $("#link-state").textContent = "reconnecting";
    $("#link-state").className = "link down";
    setTimeout(connect, 1000);
  };
}

function addMissionPoint(status, t, value) {
  if (!missionSeries.has(status)) missionSeries.set(status, []);
  missionSeries.get(status).push([t, value]);
}

function drawMissions() {
  const element = $("#mission-chart");
  const statuses = [...missionSeries.keys()].sort();
  const times = [...new Set(statuses.flatMap((s) => missionSeries.get(s).map(([t]) => t)))].sort((a, b) => a - b);
  const data = [times];
  for (const status of statuses) {
    // Step each series forward: a counter keeps its last value until its next snapshot.
    const points = missionSeries.get(status).sort((a, b) => a[0] - b[0]);
    let index = 0;
    let last = null;
    data.push(
      times.map((t) => {
        while (index < points.length && points[index][0] <= t) last = points[index++][1];
        return last;
      }),
    );
  }
  const palette = ["#1f9d55", "#d64545", "#3b82f6", "#d9822b", "#8b5cf6", "#0e7490", "#6b7785"];
  if (missionChart) missionChart.destroy();
  missionChart = new uPlot(
    {
      width: chartWidth(element),
      height: 220,
      series: [{}, ...statuses.map((status, i) => ({ label: status, stroke: palette[i % palette.length] }))],
    },
    data,
    element,
  );
  element.dataset.points = String(times.length);
  $("#no-missions").hidden = times.length > 0;
}

async function fetchJson(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

async function loadMissionHistory() {
  const since = new Date(Date.now() - 6 * 3600 * 1000).toISOString();
  try {
    const counters = await fetchJson("/api/metrics/counters/?name=mission_status_total&limit=50");
    for (const counter of counters.results) {
      const history = await fetchJson(
        `/api/metrics/counters/${counter.id}/history/?since=${encodeURIComponent(since)}&limit=1000`,
      );
      for (const snapshot of history.results) {
        addMissionPoint(counter.labels.status, Date.parse(snapshot.taken_at) / 1000, snapshot.value);
      }
    }
  } catch (error) {
    console.warn("mission history unavailable", error);
  }
  drawMissions();
}

async function loadEvents() {
  try {
    const page = await fetchJson("/api/events/?limit=15");
    const list = $("#events");
    list.replaceChildren(
      ...page.results.map((event) => {
        const item = document.createElement("li");
        const time = document.createElement("time");
        time.textContent = new Date(event.timestamp * 1000).toLocaleTimeString();
        const text = document.createElement("span");
        const subject = event.payload.robot_id || event.payload.run_id || "";
        text.textContent = `${event.type} ${subject}`;
        item.append(time, text);
        return item;
      }),
    );
  } catch (error) {
    console.warn("events unavailable", error);
  }
}

// uPlot draws at a fixed width: follow the sections' widths when the window (or the layout) changes.
function followContainerWidths() {
  const charts = [
    ["#robot-chart", () => robotChart],
    ["#mission-chart", () => missionChart],
  ];
  const observer = new ResizeObserver(() => {
    for (const [selector, chart] of charts) {
      const element = $(selector);
      const width = chartWidth(element);
      if (chart() && chart().width !== width) chart().setSize({ width, height: chart().height });
    }
  });
  for (const [selector] of charts) observer.observe($(selector).parentElement);
}

makeRobotChart();
followContainerWidths();
connect();
loadMissionHistory();
loadEvents();
setInterval(loadEvents, 5000);
