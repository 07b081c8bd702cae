// The dashboard: sign in, submit orders and imports, watch my tasks, toasts and topic feeds.
import { Taskcast } from "/static/taskcast.js";

const TOKEN_KEY = "taskcast.token";
const MAX_TASKS = 50;
const MAX_FEED = 25;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATUS_OF = {
  "task.queued": "queued",
  "task.started": "running",
  "task.progress": "running",
  "task.retrying": "retrying",
  "task.succeeded": "succeeded",
  "task.failed": "failed",
  "task.cancelled": "cancelled",
};
const STATE_LABEL = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  "signed-out": "Signed out",
  closed: "Disconnected",
};

const $ = (selector, root = document) => root.querySelector(selector);

// What the page has seen, for people debugging and for the browser tests.
const debug = { states: [], seen: {}, resets: [] };
window.taskcastDebug = debug;

let client = null;
let me = null; // { user, scopes, token }
const tasks = new Map(); // task_id -> <li>

// -- tokens and sign-in ------------------------------------------------------------------

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

function mayRead(topic) {
  const scopes = me?.scopes ?? [];
  return scopes.includes("admin") || scopes.includes("topic:*") || scopes.includes(`topic:${topic}`);
}

function showSignIn(message = "") {
  $("#app").hidden = true;
  $("#whoami").hidden = true;
  $("#signout").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message;
  // The server says whether demo sign-in exists (the embedded default), so no probe is needed.
  const demo = document.querySelector("meta[name=taskcast-demo]")?.content === "on";
  $("#demo-signin").hidden = !demo;
  $("#token-signin").hidden = demo;
}

function signIn(token) {
  const c = claims(token);
  if (!c || typeof c.sub !== "string") {
    $("#signin-error").textContent = "That does not look like a taskcast token.";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  me = { user: c.sub, scopes: Array.isArray(c.scopes) ? c.scopes : [], token };
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#whoami").textContent = me.user;
  $("#whoami").hidden = false;
  $("#signout").hidden = false;
  start();
}

function signOut(message = "") {
  client?.close();
  client = null;
  me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  tasks.clear();
  $("#tasks").replaceChildren();
  for (const list of document.querySelectorAll(".feed-list")) list.replaceChildren();
  setConnection("signed-out");
  showSignIn(message);
}

// -- the connection ----------------------------------------------------------------------

function setConnection(state) {
  const el = $("#connection");
  el.dataset.connectionState = state;
  $(".label", el).textContent = STATE_LABEL[state] ?? state;
  debug.states.push(state);
}

function start() {
  client = new Taskcast("/ws", { token: () => me.token });
  client.addEventListener("state", () => {
    setConnection(client.state);
    if (client.state === "signed-out") signOut("Your session ended; please sign in again.");
  });
  client.addEventListener("reset", (ev) => debug.resets.push(ev.detail.channel));
  client.subscribe(`user:${me.user}`, onUserEvent);
  for (const topic of ["orders", "inventory"]) {
    const card = $(`#feed-${topic}-card`);
    card.hidden = !mayRead(topic);
    if (!card.hidden) client.subscribe(`topic:${topic}`, (event) => addFeed(topic, event));
  }
  for (const saved of loadTasks()) watchTask(saved.id, saved.name, null);
  client.connect();
}

function onUserEvent(event) {
  if (event.type === "notification") {
    const d = event.data ?? {};
    toast(d.title ?? "Notification", d.message ?? "", d.level ?? "info");
  } else if (event.type === "task.queued" && event.task_id && !tasks.has(event.task_id)) {
    watchTask(event.task_id, event.data?.name ?? "task", 0); // submitted from another tab
  }
}

// -- REST --------------------------------------------------------------------------------

async function api(method, path, body) {
  const reply = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${me.token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await reply.json().catch(() => ({}));
  if (reply.status === 401) signOut("Your session ended; please sign in again.");
  if (!reply.ok) throw new Error(data?.error?.message ?? `request failed (${reply.status})`);
  return data;
}

// -- tasks -------------------------------------------------------------------------------

function storageKey() {
  return `taskcast.tasks.${me.user}`;
}

function loadTasks() {
  try {
    return JSON.parse(localStorage.getItem(storageKey()) ?? "[]");
  } catch {
    return [];
  }
}

function saveTasks() {
  const list = [...tasks.entries()].map(([id, li]) => ({ id, name: li.dataset.name }));
  localStorage.setItem(storageKey(), JSON.stringify(list.slice(0, MAX_TASKS)));
}

/** Show a task and follow its channel; `since` 0 replays it all, null starts from its state. */
function watchTask(taskId, name, since) {
  if (tasks.has(taskId)) return;
  const li = $("#task-template").content.firstElementChild.cloneNode(true);
  li.dataset.taskId = taskId;
  li.dataset.name = name;
  $("[data-role=name]", li).textContent = `${label(name)} · ${taskId.slice(0, 8)}`;
  $("[data-action=cancel]", li).addEventListener("click", () => cancel(taskId, li));
  $("#tasks").prepend(li);
  tasks.set(taskId, li);
  while (tasks.size > MAX_TASKS) {
    const [oldest] = tasks.keys();
    tasks.get(oldest).remove();
    tasks.delete(oldest);
    client.unsubscribe(`task:${oldest}`);
  }
  $("#tasks-empty").hidden = true;
  saveTasks();
  const channel = `task:${taskId}`;
  debug.seen[channel] = [];
  client.subscribe(
    channel,
    (event, frame) => {
      debug.seen[channel].push(frame.seq);
      applyEvent(li, event);
    },
    {
      since: since ?? undefined,
      onSubscribed: (frame) => frame.state && applyState(li, frame.state),
      onError: (frame) => {
        setError(li, frame.code === "forbidden" ? "This task is not visible to you." : frame.message);
      },
    },
  );
}

function label(name) {
  return { "orders.process": "Order", "inventory.import": "Inventory import" }[name] ?? name;
}

function applyEvent(li, event) {
  const status = STATUS_OF[event.type];
  const data = event.data ?? {};
  if (event.type === "task.progress") setProgress(li, data.percent, data.message);
  if (event.type === "task.started") setProgress(li, null, "Started");
  if (event.type === "task.retrying") setProgress(li, null, `Retrying: ${data.error?.message ?? ""}`);
  if (event.type === "task.succeeded") {
    setProgress(li, 100, "Done");
    setResult(li, data.result);
  }
  if (event.type === "task.failed") setError(li, data.error?.message ?? "failed");
  if (event.type === "task.cancelled") setProgress(li, null, data.reason ?? "Cancelled");
  if (status) setStatus(li, status);
}

/** A full state (from `subscribed` after a reload, or when history could not resume). */
function applyState(li, state) {
  const p = state.progress ?? {};
  setProgress(li, p.percent ?? 0, p.message ?? "");
  if (state.status === "succeeded") {
    setProgress(li, 100, p.message || "Done");
    setResult(li, state.result);
  }
  if (state.status === "failed") setError(li, state.error?.message ?? "failed");
  setStatus(li, state.status);
}

function setStatus(li, status) {
  if (TERMINAL.has(li.dataset.status)) return; // one terminal state, never changed
  li.dataset.status = status;
  $("[data-role=status]", li).textContent = status;
  $("[data-action=cancel]", li).hidden = TERMINAL.has(status);
}

function setProgress(li, percent, message) {
  if (percent !== null && percent !== undefined && !TERMINAL.has(li.dataset.status)) {
    const value = Math.max(0, Math.min(100, Math.round(percent)));
    $("[data-role=fill]", li).style.width = `${value}%`;
    $(".bar", li).setAttribute("aria-valuenow", String(value));
    $("[data-role=percent]", li).textContent = `${value}%`;
  }
  if (message && !TERMINAL.has(li.dataset.status)) {
    $("[data-role=message]", li).textContent = message;
  }
}

function setResult(li, result) {
  const el = $("[data-role=result]", li);
  if (result && typeof result === "object") {
    el.textContent = Object.entries(result)
      .map(([k, v]) => `${k.replace(/_/g, " ")}: ${v}`)
      .join(" · ");
  } else {
    el.textContent = result === null || result === undefined ? "" : String(result);
  }
  el.hidden = !el.textContent;
}

function setError(li, message) {
  const el = $("[data-role=error]", li);
  el.textContent = message;
  el.hidden = false;
}

async function cancel(taskId, li) {
  const button = $("[data-action=cancel]", li);
  button.disabled = true;
  try {
    await api("POST", `/tasks/${taskId}/cancel`);
  } catch (err) {
    toast("Could not cancel", err.message, "error");
    button.disabled = false;
  }
}

// -- forms -------------------------------------------------------------------------------

function parseItems(text) {
  const items = text
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const [sku, qty = "1"] = part.split(/[:x×\s]+/);
      return { sku, qty: Number(qty) };
    });
  if (!items.length || items.some((i) => !i.sku || !Number.isInteger(i.qty) || i.qty < 1)) {
    throw new Error("Items look like A1:2, B7:1 (sku:quantity).");
  }
  return items;
}

function parseCsv(text) {
  const rows = [];
  for (const [index, line] of text.split(/\r?\n/).entries()) {
    const cells = line.split(",").map((c) => c.trim());
    if (!line.trim()) continue;
    if (index === 0 && cells[0].toLowerCase() === "sku") continue; // header
    const [sku, qty, location] = cells;
    const n = Number(qty);
    if (!sku || !Number.isInteger(n) || n < 0) {
      throw new Error(`Line ${index + 1}: expected sku,qty,location.`);
    }
    rows.push(location ? { sku, qty: n, location } : { sku, qty: n });
  }
  if (!rows.length) throw new Error("Paste or upload at least one row.");
  return rows;
}

function onSubmit(form, build) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = $("[data-role=form-error]", form);
    const button = $("button[type=submit]", form);
    error.textContent = "";
    button.disabled = true;
    try {
      const { path, body, name } = await build();
      const reply = await api("POST", path, body);
      watchTask(reply.task_id, name, 0);
      if (form.id === "import-form") form.reset(); // a long paste has done its job
    } catch (err) {
      error.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });
}

// -- toasts and feeds --------------------------------------------------------------------

function toast(title, message, level = "info") {
  const el = document.createElement("div");
  el.className = `toast ${level}`;
  el.setAttribute("role", "status");
  el.dataset.level = level;
  const strong = document.createElement("strong");
  strong.textContent = title;
  const p = document.createElement("p");
  p.textContent = message;
  el.append(strong, p);
  $("#toasts").append(el);
  setTimeout(() => el.remove(), 6000);
}

function describe(event) {
  const d = event.data ?? {};
  switch (event.type) {
    case "order.created":
      return `Order ${d.order_id} created for ${d.customer_id}`;
    case "order.status_changed":
      return `Order ${d.order_id}: ${d.previous} → ${d.status}`;
    case "inventory.updated":
      return `Batch ${d.batch}: ${d.items?.length ?? 0} rows updated`;
    case "inventory.low_stock":
      return `Low stock: ${d.sku} (${d.qty}) at ${d.location ?? "?"}`;
    default:
      return event.type;
  }
}

function addFeed(topic, event) {
  const list = $(`#feed-${topic}`);
  const li = document.createElement("li");
  li.dataset.type = event.type;
  const time = document.createElement("time");
  time.textContent = new Date(event.ts).toLocaleTimeString();
  const text = document.createElement("span");
  text.textContent = describe(event);
  li.append(time, text);
  list.prepend(li);
  while (list.children.length > MAX_FEED) list.lastElementChild.remove();
}

// -- wiring ------------------------------------------------------------------------------

$("#demo-signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const reply = await fetch("/auth/demo", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("#demo-user").value.trim() }),
    });
    const data = await reply.json();
    if (!reply.ok) throw new Error(data?.error?.message ?? "sign-in failed");
    signIn(data.token);
  } catch (err) {
    $("#signin-error").textContent = err.message;
  }
});

$("#token-signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("#token-input").value.trim());
});

$("#signout").addEventListener("click", () => signOut());

onSubmit($("#order-form"), async () => ({
  path: "/orders",
  name: "orders.process",
  body: { customer_id: $("#order-customer").value.trim(), items: parseItems($("#order-items").value) },
}));

onSubmit($("#import-form"), async () => {
  const file = $("#import-file").files[0];
  const text = file ? await file.text() : $("#import-csv").value;
  return { path: "/inventory/imports", name: "inventory.import", body: { rows: parseCsv(text) } };
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved && (claims(saved)?.exp ?? 0) * 1000 > Date.now()) signIn(saved);
else showSignIn();
