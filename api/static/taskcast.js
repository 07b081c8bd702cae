// taskcast.js: the taskcast client as one ES module (@taskcast/client).
// Built from clients/js (npm run build); do not edit by hand.
var __defProp = Object.defineProperty;
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

// src/client.ts
var CLOSE_UNAUTHORIZED = 4401;
var RETRY_CODES = /* @__PURE__ */ new Set(["unavailable", "rate_limited"]);
var Channel = class {
  constructor(name, options) {
    __publicField(this, "name", name);
    /** The last seq delivered (null: nothing yet, start from now). */
    __publicField(this, "seq");
    __publicField(this, "epoch");
    /** True once the server said `recovered: false`: some events were never delivered. */
    __publicField(this, "historyLost", false);
    /** The latest `subscribed` frame (its `state` is the task's state at that frame's seq). */
    __publicField(this, "subscribed", null);
    __publicField(this, "listeners", /* @__PURE__ */ new Set());
    this.seq = options.since ?? null;
    this.epoch = options.epoch ?? null;
  }
};
function socketUrl(url, token) {
  const base = globalThis.location?.href;
  const full = base ? new URL(url, base) : new URL(url);
  if (full.protocol === "http:") full.protocol = "ws:";
  if (full.protocol === "https:") full.protocol = "wss:";
  if (token) full.searchParams.set("token", token);
  return full.toString();
}
var Taskcast = class extends EventTarget {
  constructor(url, options = {}) {
    super();
    __publicField(this, "url");
    __publicField(this, "token");
    __publicField(this, "state", "idle");
    /** The signed-in user, from `welcome`. */
    __publicField(this, "user", null);
    /** The token's expiry (unix seconds), from `welcome` or `refreshed`, when the server says. */
    __publicField(this, "expiresAt", null);
    __publicField(this, "channels", /* @__PURE__ */ new Map());
    __publicField(this, "baseDelay");
    __publicField(this, "maxDelay");
    __publicField(this, "pingInterval");
    __publicField(this, "pongTimeout");
    __publicField(this, "refreshLead");
    __publicField(this, "Socket");
    __publicField(this, "ws", null);
    __publicField(this, "attempt", 0);
    __publicField(this, "refs", 0);
    __publicField(this, "pending", /* @__PURE__ */ new Map());
    // subscribe ref -> channel
    __publicField(this, "refreshRef", null);
    __publicField(this, "usedToken", null);
    // the token of the current connection
    __publicField(this, "rejectedToken", null);
    // the token a 4401 refused
    __publicField(this, "timers", { retry: void 0, ping: void 0, pong: void 0, refresh: void 0 });
    this.url = url;
    this.token = options.token ?? null;
    this.baseDelay = options.baseDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 1e4;
    this.pingInterval = options.pingInterval ?? 25e3;
    this.pongTimeout = options.pongTimeout ?? 1e4;
    this.refreshLead = options.refreshLead ?? 30;
    const Socket = options.WebSocket ?? globalThis.WebSocket;
    if (!Socket) throw new Error("taskcast: no WebSocket here; pass options.WebSocket");
    this.Socket = Socket;
  }
  /** Open the connection (or reopen after "signed-out" / "closed", e.g. with a new token). */
  connect() {
    if (this.state === "connecting" || this.state === "open" || this.state === "reconnecting") {
      return this;
    }
    this.attempt = 0;
    this.rejectedToken = null;
    void this.open("connecting");
    return this;
  }
  /** Close for good: no reconnect. */
  close() {
    this.stopTimers();
    this.setState("closed");
    const ws = this.ws;
    this.ws = null;
    ws?.close(1e3, "bye");
  }
  /**
   * Call `handler(event, frame)` for each event of `channel`, each seq once, across reconnects.
   * A second listener on a channel already subscribed joins its stream where it stands (its
   * `since` is not replayed) and receives the latest `subscribed` frame at once.
   */
  subscribe(channel, handler, options = {}) {
    const listener = { handler, options };
    let stream = this.channels.get(channel);
    if (stream) {
      stream.listeners.add(listener);
      const last = stream.subscribed;
      if (last) queueMicrotask(() => stream?.listeners.has(listener) && options.onSubscribed?.(last));
    } else {
      stream = new Channel(channel, options);
      stream.listeners.add(listener);
      this.channels.set(channel, stream);
      if (this.state === "open") this.sendSubscribe(stream);
    }
    const joined = stream;
    return {
      channel: joined,
      unsubscribe: () => {
        joined.listeners.delete(listener);
        if (joined.listeners.size === 0) this.unsubscribe(channel);
      }
    };
  }
  /** Stop the channel for every listener. */
  unsubscribe(channel) {
    if (!this.channels.delete(channel)) return;
    if (this.state === "open") this.send({ op: "unsubscribe", channel });
  }
  // -- connection ----------------------------------------------------------------------------
  async resolveToken() {
    const source = this.token;
    if (typeof source !== "function") return source;
    try {
      return await source() ?? null;
    } catch {
      return null;
    }
  }
  async open(state) {
    this.setState(state);
    const token = await this.resolveToken();
    if (this.state !== state || this.ws) return;
    if (this.rejectedToken !== null && (token === null || token === this.rejectedToken)) {
      this.setState("signed-out");
      return;
    }
    let ws;
    try {
      ws = new this.Socket(socketUrl(this.url, token));
    } catch {
      this.setState("reconnecting");
      this.scheduleRetry();
      return;
    }
    this.usedToken = token;
    this.ws = ws;
    ws.onmessage = (message) => this.onFrame(ws, message.data);
    ws.onclose = (event) => this.onClose(ws, event.code);
    ws.onerror = () => {
    };
  }
  onClose(ws, code) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.stopTimers();
    this.pending.clear();
    this.refreshRef = null;
    if (this.state === "closed") return;
    if (code === CLOSE_UNAUTHORIZED) {
      this.rejectedToken = this.usedToken ?? "";
      if (typeof this.token !== "function") {
        this.setState("signed-out");
        return;
      }
    }
    this.setState("reconnecting");
    this.scheduleRetry();
  }
  scheduleRetry() {
    const ceiling = Math.min(this.maxDelay, this.baseDelay * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.timers.retry = setTimeout(() => void this.open("reconnecting"), delay);
  }
  stopTimers() {
    clearTimeout(this.timers.retry);
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    clearTimeout(this.timers.refresh);
    this.timers = { retry: void 0, ping: void 0, pong: void 0, refresh: void 0 };
  }
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }
  send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }
  sendSubscribe(stream) {
    const ref = `s${++this.refs}`;
    this.pending.set(ref, stream.name);
    const frame = { op: "subscribe", channel: stream.name, ref };
    if (stream.seq !== null) frame.since = stream.seq;
    if (stream.seq !== null && stream.epoch) frame.epoch = stream.epoch;
    this.send(frame);
  }
  // -- token refresh -------------------------------------------------------------------------
  scheduleRefresh(expiresAt) {
    clearTimeout(this.timers.refresh);
    this.expiresAt = expiresAt ?? null;
    if (!expiresAt || typeof this.token !== "function") return;
    const left = expiresAt - Date.now() / 1e3;
    const lead = Math.min(this.refreshLead, left * 0.1);
    const delay = Math.max(0, (left - lead) * 1e3);
    this.timers.refresh = setTimeout(() => void this.refresh(), delay);
  }
  /** Send the token function's newest token on the open connection (`op: refresh`). */
  async refresh() {
    const ws = this.ws;
    const token = await this.resolveToken();
    if (!token || token === this.usedToken || ws !== this.ws || this.state !== "open") return;
    this.refreshRef = `r${++this.refs}`;
    this.usedToken = token;
    this.send({ op: "refresh", token, ref: this.refreshRef });
  }
  // -- frames --------------------------------------------------------------------------------
  onFrame(ws, raw) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(String(raw));
    } catch {
      return;
    }
    switch (frame.type) {
      case "welcome":
        this.onWelcome(frame);
        break;
      case "subscribed":
        this.onSubscribed(frame);
        break;
      case "event":
        this.onEvent(frame);
        break;
      case "unsubscribed":
        this.onUnsubscribed(frame);
        break;
      case "refreshed":
        this.onRefreshed(frame);
        break;
      case "pong":
        clearTimeout(this.timers.pong);
        break;
      case "error":
        this.onError(frame);
        break;
      default:
        break;
    }
  }
  onWelcome(frame) {
    this.user = frame.user;
    this.attempt = 0;
    this.rejectedToken = null;
    this.setState("open");
    this.startPing();
    this.scheduleRefresh(frame.expires_at);
    this.dispatchEvent(new CustomEvent("welcome", { detail: frame }));
    for (const stream of this.channels.values()) this.sendSubscribe(stream);
  }
  onSubscribed(frame) {
    if (typeof frame.ref === "string") this.pending.delete(frame.ref);
    const stream = this.channels.get(frame.channel);
    if (!stream) return;
    if (stream.seq === null || frame.recovered === false) stream.seq = frame.seq;
    stream.epoch = frame.epoch;
    stream.subscribed = frame;
    if (frame.recovered === false) stream.historyLost = true;
    for (const listener of [...stream.listeners]) listener.options.onSubscribed?.(frame);
    if (frame.recovered === false) {
      this.dispatchEvent(new CustomEvent("reset", { detail: frame }));
    }
  }
  onEvent(frame) {
    const stream = this.channels.get(frame.channel);
    if (!stream || stream.seq !== null && frame.seq <= stream.seq) return;
    stream.seq = frame.seq;
    for (const listener of [...stream.listeners]) {
      try {
        listener.handler(frame.event, frame);
      } catch (err) {
        console.error("taskcast handler failed", err);
      }
    }
  }
  onUnsubscribed(frame) {
    const stream = this.channels.get(frame.channel);
    if (!stream || !frame.reason) return;
    this.channels.delete(frame.channel);
    for (const listener of stream.listeners) listener.options.onError?.(frame);
  }
  onRefreshed(frame) {
    if (frame.ref === this.refreshRef) this.refreshRef = null;
    this.scheduleRefresh(frame.expires_at);
    this.dispatchEvent(new CustomEvent("refreshed", { detail: frame }));
  }
  onError(frame) {
    const ref = typeof frame.ref === "string" ? frame.ref : void 0;
    if (ref !== void 0 && ref === this.refreshRef) {
      this.refreshRef = null;
    }
    const name = ref !== void 0 ? this.pending.get(ref) : void 0;
    if (ref !== void 0) this.pending.delete(ref);
    const stream = name !== void 0 ? this.channels.get(name) : void 0;
    if (stream && !RETRY_CODES.has(frame.code)) {
      this.channels.delete(stream.name);
      for (const listener of stream.listeners) listener.options.onError?.(frame);
    } else if (stream) {
      const retry = () => {
        if (this.channels.get(stream.name) === stream && this.state === "open") {
          this.sendSubscribe(stream);
        }
      };
      setTimeout(retry, 1e3);
    }
    this.dispatchEvent(new CustomEvent("error", { detail: frame }));
  }
  startPing() {
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => {
      this.send({ op: "ping" });
      clearTimeout(this.timers.pong);
      this.timers.pong = setTimeout(() => {
        const ws = this.ws;
        if (!ws) return;
        ws.close(4e3, "no pong");
        this.onClose(ws, 4e3);
      }, this.pongTimeout);
    }, this.pingInterval);
  }
};

// src/task.ts
var TERMINAL = /* @__PURE__ */ new Set(["succeeded", "failed", "cancelled"]);
function emptyTask(taskId) {
  return {
    taskId,
    status: "queued",
    percent: 0,
    current: 0,
    total: 0,
    message: null,
    result: null,
    error: null,
    seq: 0,
    historyLost: false
  };
}
function applySubscribed(view, frame) {
  const historyLost = view.historyLost || frame.recovered === false;
  const state = frame.state;
  if (!state) return { ...view, historyLost };
  const error = state.error ? { type: state.error.type, message: state.error.message ?? "failed" } : null;
  return {
    ...view,
    status: state.status,
    percent: state.status === "succeeded" ? 100 : state.progress.percent,
    current: state.progress.current,
    total: state.progress.total,
    message: state.progress.message,
    result: state.result,
    error,
    seq: frame.seq,
    historyLost
  };
}
function applyEvent(view, event, seq) {
  if (TERMINAL.has(view.status)) return { ...view, seq };
  if (event.task_id && event.task_id !== view.taskId) return { ...view, seq };
  const next = { ...view, seq };
  switch (event.type) {
    case "task.queued":
      next.status = "queued";
      break;
    case "task.started":
      next.status = "running";
      break;
    case "task.progress":
      next.status = "running";
      next.percent = event.data.percent;
      next.current = event.data.current;
      next.total = event.data.total;
      if (event.data.message) next.message = event.data.message;
      break;
    case "task.retrying":
      next.status = "retrying";
      next.message = `Retrying: ${event.data.error?.message ?? ""}`.trim();
      break;
    case "task.succeeded":
      next.status = "succeeded";
      next.percent = 100;
      next.result = event.data.result ?? null;
      break;
    case "task.failed":
      next.status = "failed";
      next.error = { type: event.data.error.type, message: event.data.error.message };
      break;
    case "task.cancelled":
      next.status = "cancelled";
      next.message = event.data.reason ?? "Cancelled";
      break;
    default:
      break;
  }
  return next;
}

// src/follow.ts
function followTask(client, taskId, onChange, options = {}) {
  let view = emptyTask(taskId);
  let refusal = null;
  const sub = client.subscribe(
    `task:${taskId}`,
    (event, frame) => {
      view = applyEvent(view, event, frame.seq);
      onChange(view);
      options.onEvent?.(frame, view);
    },
    {
      since: options.since ?? 0,
      onSubscribed: (frame) => {
        view = applySubscribed(view, frame);
        onChange(view);
      },
      onError: (frame) => {
        refusal = frame;
        const message = frame.type === "error" ? frame.message ?? frame.code : `unsubscribed: ${frame.reason ?? ""}`;
        view = { ...view, error: { type: frame.type === "error" ? frame.code : "unsubscribed", message } };
        onChange(view);
      }
    }
  );
  return {
    taskId,
    get view() {
      return view;
    },
    get refusal() {
      return refusal;
    },
    stop: () => sub.unsubscribe()
  };
}
export {
  CLOSE_UNAUTHORIZED,
  Channel,
  TERMINAL,
  Taskcast,
  applyEvent,
  applySubscribed,
  emptyTask,
  followTask
};
