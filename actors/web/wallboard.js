// The supervisors' wallboard: the CTI protocol over ctid's WebSocket (/ws), one JSON
// message per frame. Queue figures and agent states come computed by ctid (queue_stats);
// live calls from call events; a lost connection is resumed with the last seq, so that
// no event is missed. Opened with ?token= (an HTTP API token, &context= to pick one of
// its contexts), it reads the same figures from the HTTP API every second instead.
"use strict";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);

const state = {
  ws: null,
  token: null,        // resume token
  seq: 0,             // last call event applied
  gaps: 0,            // call events whose seq did not follow the last one
  skew: 0,            // server clock minus ours, seconds
  calls: new Map(),   // id -> call
  board: null,        // last queue_stats
  pbxes: new Map(),   // name -> state
  credentials: null,  // {user, password} while logging in
  ended: null,        // calls ended while the list of calls is awaited
  retry: 0,
  loggedIn: false,
};

const now = () => Date.now() / 1000 + state.skew;

function show(el, visible) { el.hidden = !visible; }

function fail(text) {
  const e = $("#error");
  e.textContent = text;
  show(e, !!text);
}

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

function party(p) {
  if (!p) return "";
  return p.name && p.number ? `${p.name} (${p.number})` : text(p.name || p.number);
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function setLink(label, cls) {
  const l = $("#link");
  l.textContent = label;
  l.className = `badge ${cls}`;
}

function connect() {
  const ws = new WebSocket(wsUrl());
  state.ws = ws;
  setLink("connecting", "connecting");
  ws.onopen = () => {
    if (state.token) {
      send({ class: "resume", token: state.token, last_seq: state.seq, commandid: "resume" });
    } else if (state.credentials) {
      send({ class: "login_id", userlogin: state.credentials.user, ident: "wallboard", xivoversion: "2.0" });
    }
  };
  ws.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    if (typeof msg.timenow === "number") state.skew = msg.timenow - Date.now() / 1000;
    handle(msg);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (!state.loggedIn && !state.token) {
      setLink("disconnected", "down");
      return;
    }
    lost();
  };
}

// The connection is gone: say so, keep what is shown, and resume shortly.
function lost() {
  show($("#conn-warning"), true);
  setLink("disconnected", "down");
  const wait = Math.min(5000, 250 * 2 ** state.retry);
  state.retry += 1;
  setTimeout(connect, wait);
}

function loggedIn(msg) {
  state.loggedIn = true;
  state.retry = 0;
  state.token = msg.resume_token;
  state.credentials = null;
  show($("#conn-warning"), false);
  show($("#login"), false);
  show($("#board"), true);
  fail("");
  setLink("live", "up");
  $("#context").textContent = text(msg.context);
  send({ class: "wallboard", commandid: "wallboard" });
  send({ class: "getlist", function: "updatestatus", listname: "pbxes", commandid: "pbxes" });
}

function handle(msg) {
  switch (msg.class) {
    case "login_id":
      if (msg.error_string) return fail(`Login refused: ${msg.error_string}`);
      return send({ class: "login_pass", password: state.credentials.password });
    case "login_pass":
      if (msg.error_string) {
        state.credentials = null;
        show($("#login"), true);
        return fail("Wrong login or password");
      }
      return send({ class: "login_capas", capaid: msg.capalist[0], state: "available" });
    case "login_capas":
      if (msg.error_string) return refuse(msg.error_string);
      state.seq = msg.seq;
      state.calls.clear();
      loggedIn(msg);
      state.ended = new Set();
      return send({ class: "getlist", function: "updateconfig", listname: "calls", commandid: "calls" });
    case "resume":
      if (msg.status === "ok") {
        loggedIn(msg);
        return;
      }
      // Too late to resume: start again from a fresh login, and a fresh list of calls.
      state.token = null;
      state.loggedIn = false;
      state.calls.clear();
      state.ws.close();
      show($("#board"), false);
      show($("#login"), true);
      return fail("The connection was lost for too long: log in again");
    case "wallboard":
      if (msg.error_string) return refuse(msg.error_string);
      return;
    case "getlist":
      return list(msg);
    case "call_event":
      return callEvent(msg);
    case "queue_stats":
      state.board = msg;
      return render();
    case "pbx_status":
      state.pbxes.set(msg.pbx, msg.state);
      return renderHealth();
    case "disconnect":
      if (msg.error_string === "user_changed" || msg.error_string === "kicked") {
        state.token = null;
        state.loggedIn = false;
        refuse(msg.error_string);
      }
      return;
    default:
      return;
  }
}

function refuse(code) {
  const why = code === "unallowed"
    ? "The wallboard is for supervisors: this login may not see it."
    : `Refused: ${code}`;
  fail(why);
  show($("#board"), false);
  show($("#login"), true);
  state.token = null;
  state.loggedIn = false;
  if (state.ws) state.ws.close();
}

function list(msg) {
  if (msg.listname === "calls" && msg.config) {
    // A call that ended after the list was taken, before it came, stays ended.
    for (const [id, call] of Object.entries(msg.config)) {
      if (!(state.ended && state.ended.has(id))) state.calls.set(id, call);
    }
    state.ended = null;
    return render();
  }
  if (msg.listname === "pbxes" && msg.status) {
    for (const [name, st] of Object.entries(msg.status)) state.pbxes.set(name, st.state);
    return renderHealth();
  }
}

function callEvent(msg) {
  if (typeof msg.seq === "number") {
    if (msg.seq <= state.seq) return;
    if (msg.seq !== state.seq + 1) state.gaps += 1;
    state.seq = msg.seq;
  }
  const call = msg.call || {};
  if (msg.event === "hungup" || msg.event === "left") {
    state.calls.delete(call.id);
    if (state.ended) state.ended.add(call.id);
  } else state.calls.set(call.id, call);
  renderCalls();
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function slClass(sl) {
  if (sl === null || sl === undefined) return "";
  return sl >= 0.8 ? "sl-ok" : sl >= 0.6 ? "sl-warn" : "sl-bad";
}

function renderQueues() {
  const body = $("#queues tbody");
  body.replaceChildren();
  for (const q of (state.board && state.board.queues) || []) {
    const tr = document.createElement("tr");
    tr.dataset.queue = q.name;
    cell(tr, q.name);
    cell(tr, q.waiting, "num big waiting");
    cell(tr, q.oldest_since ? duration(now() - q.oldest_since) : "–", "num longest");
    cell(tr, q.answered, "num answered");
    cell(tr, q.abandoned, "num abandoned");
    const sl = q.service_level;
    cell(tr, sl === null ? "–" : `${Math.round(sl * 100)}%`, `num ${slClass(sl)}`);
    body.appendChild(tr);
  }
}

const AGENT_STATES = {
  idle: "idle", ringing: "ringing", on_call: "on call", paused: "paused", logged_out: "logged out",
};

function renderAgents() {
  const body = $("#agents tbody");
  body.replaceChildren();
  for (const a of (state.board && state.board.agents) || []) {
    const tr = document.createElement("tr");
    tr.dataset.login = a.login;
    cell(tr, a.name || a.login);
    cell(tr, a.number);
    const st = cell(tr, "");
    const badge = document.createElement("span");
    badge.className = `state ${a.state}`;
    badge.textContent = AGENT_STATES[a.state] || a.state;
    st.appendChild(badge);
    st.dataset.state = a.state;
    cell(tr, a.since ? duration(now() - a.since) : "", "num");
    cell(tr, a.call ? text(a.call.caller) : "");
    cell(tr, a.call ? text(a.call.queue) : "");
    body.appendChild(tr);
  }
}

function renderCalls() {
  const body = $("#calls tbody");
  body.replaceChildren();
  const calls = [...state.calls.values()].sort((a, b) => a.created - b.created);
  for (const c of calls) {
    const tr = document.createElement("tr");
    tr.dataset.callId = c.id;
    cell(tr, party(c.caller), "caller");
    cell(tr, party(c.callee));
    cell(tr, text(c.state), "call-state");
    cell(tr, duration(now() - (c.answered || c.created)), "num");
    cell(tr, text(c.queue));
    cell(tr, c.agent ? text(c.agent.name || c.agent.login) : "");
    cell(tr, c.media && c.media.codec ? text(c.media.codec) : "", "codec");
    body.appendChild(tr);
  }
  $("#call-count").textContent = `(${calls.length})`;
}

function renderHealth() {
  const el = $("#pbxes");
  el.replaceChildren();
  for (const [name, st] of state.pbxes) {
    const b = document.createElement("span");
    const up = st === "up";
    b.className = `badge ${up ? "up" : "down"}`;
    b.textContent = `PBX ${name}: ${text(st)}`;
    el.appendChild(b);
  }
  const lag = state.board && state.board.lag_p99_ms;
  $("#lag").textContent = lag === null || lag === undefined ? "–" : `${lag < 10 ? lag.toFixed(2) : Math.round(lag)} ms`;
  $("#gaps").textContent = state.gaps;
}

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#58a6ff", "#d29922", "#3fb950", "#f778ba", "#a371f7", "#79c0ff", "#ffa657"];

function svgEl(name, attrs, content) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (content !== undefined) el.textContent = content;
  return el;
}

// A frame of width w × height h with a left margin for the scale; returns the plot area.
function frame(svg, top) {
  svg.replaceChildren();
  const box = { x: 28, y: 8, w: 480 - 36, h: 160 - 28 };
  for (let i = 0; i <= 2; i++) {
    const y = box.y + box.h - (box.h * i) / 2;
    svg.appendChild(svgEl("line", { x1: box.x, x2: box.x + box.w, y1: y, y2: y, class: "grid" }));
    svg.appendChild(svgEl("text", { x: box.x - 4, y: y + 3, "text-anchor": "end" }, String(Math.round((top * i) / 2))));
  }
  return box;
}

function clock(t) {
  const d = new Date(t * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

function renderWaitingChart() {
  const svg = $("#waiting-chart");
  const queues = (state.board && state.board.queues) || [];
  const top = Math.max(2, ...queues.flatMap((q) => q.history));
  const box = frame(svg, top);
  queues.forEach((q, i) => {
    const n = q.history.length;
    const points = q.history.map((v, k) => {
      const x = box.x + (box.w * k) / Math.max(1, n - 1);
      const y = box.y + box.h - (box.h * v) / top;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const color = COLORS[i % COLORS.length];
    svg.appendChild(svgEl("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    svg.appendChild(svgEl("text", { x: box.x + 6 + i * 80, y: box.y + 10, color, class: "legend" }, q.name));
  });
  if (queues.length) {
    const start = queues[0].history_start;
    svg.appendChild(svgEl("text", { x: box.x, y: 156 }, clock(start)));
    svg.appendChild(svgEl("text", { x: box.x + box.w, y: 156, "text-anchor": "end" }, "now"));
  }
}

// The last 32 periods of 15 minutes (8 hours) of today, all queues together.
function renderPeriodChart() {
  const svg = $("#period-chart");
  const board = state.board;
  const PERIOD = 900, COUNT = 32;
  const current = Math.floor((now() - (board ? board.day_start : 0)) / PERIOD);
  const first = Math.max(0, current - COUNT + 1);
  const sums = new Map();
  for (const q of (board && board.queues) || []) {
    for (const [start, answered, abandoned] of q.periods) {
      const k = Math.floor((start - board.day_start) / PERIOD);
      const s = sums.get(k) || [0, 0];
      sums.set(k, [s[0] + answered, s[1] + abandoned]);
    }
  }
  const top = Math.max(2, ...[...sums.values()].map(([a, b]) => Math.max(a, b)));
  const box = frame(svg, top);
  const slot = box.w / COUNT;
  for (let k = first; k <= first + COUNT - 1; k++) {
    const [answered, abandoned] = sums.get(k) || [0, 0];
    const x = box.x + (k - first) * slot;
    const bar = (v, dx, cls) => {
      const h = (box.h * v) / top;
      svg.appendChild(svgEl("rect", { x: (x + dx).toFixed(1), y: (box.y + box.h - h).toFixed(1), width: (slot * 0.4).toFixed(1), height: h.toFixed(1), class: cls }));
    };
    bar(answered, slot * 0.1, "answered");
    bar(abandoned, slot * 0.5, "abandoned");
    if ((k - first) % 8 === 0 && board) {
      svg.appendChild(svgEl("text", { x: x.toFixed(1), y: 156 }, clock(board.day_start + k * PERIOD)));
    }
  }
}

function render() {
  renderQueues();
  renderAgents();
  renderCalls();
  renderHealth();
  renderWaitingChart();
  renderPeriodChart();
}

// Waits and durations tick every second between two pushes.
setInterval(() => {
  $("#clock").textContent = new Date(now() * 1000).toLocaleTimeString();
  if (state.loggedIn) {
    renderQueues();
    renderAgents();
    renderCalls();
  }
}, 1000);

$("#login").addEventListener("submit", (e) => {
  e.preventDefault();
  state.credentials = { user: $("#user").value, password: $("#password").value };
  fail("");
  if (state.ws) state.ws.close();
  connect();
});

// Token mode: each poll is a whole picture (board, calls, PBXes), so none can leave a gap.
async function poll() {
  const token = params.get("token");
  const context = params.get("context");
  const get = async (path) => {
    const r = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
    const body = await r.json();
    if (!r.ok) throw Object.assign(new Error(body.error), { refused: true });
    return body;
  };
  const q = context ? `?context=${encodeURIComponent(context)}` : "";
  try {
    const board = await get(`/api/v1/wallboard${q}`);
    const calls = await get(`/api/v1/calls?context=${encodeURIComponent(board.context)}`);
    const pbxes = await get("/api/v1/pbxes");
    state.skew = board.timenow - Date.now() / 1000;
    state.board = board;
    state.calls = new Map(calls.calls.map((c) => [c.id, c]));
    state.pbxes = new Map(pbxes.pbxes.map((p) => [p.name, p.state]));
    state.loggedIn = true;
    $("#context").textContent = board.context;
    show($("#conn-warning"), false);
    show($("#board"), true);
    setLink("live (token)", "up");
    render();
  } catch (e) {
    if (e.refused) {
      state.loggedIn = false;
      show($("#board"), false);
      setLink("refused", "down");
      return fail(e.message === "unallowed"
        ? "The wallboard is for supervisors: this token may not see it."
        : `Refused: ${e.message}`);
    }
    show($("#conn-warning"), state.loggedIn);
    setLink("disconnected", "down");
  }
  setTimeout(poll, 1000);
}

if (params.get("token")) {
  poll();
} else {
  show($("#login"), true);
  setLink("logged out", "down");
}
