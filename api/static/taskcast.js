// taskcast browser client: one WebSocket, many channel subscriptions, resumed after any drop.
//
//   import { Taskcast } from "/static/taskcast.js";
//   const tc = new Taskcast("/ws", { token });          // token: a string or () => string|Promise
//   tc.addEventListener("state", () => console.log(tc.state));
//   const sub = tc.subscribe("task:abc", (event, frame) => …, { since: 0, onSubscribed });
//   tc.connect();  …  sub.unsubscribe();  tc.close();
//
// States: "idle" → "connecting" → "open" → "reconnecting" → "open" … ; "signed-out" after close
// 4401 (it stops retrying until `connect()` is called again, e.g. with a new token); "closed".
// Every subscription is resumed with `since` (its last seq) and `epoch`; duplicates are dropped
// by seq. When the server cannot resume (`recovered: false`), `onSubscribed` receives the frame
// (with `state` for task channels) and a "reset" event fires, so the page can reload its state.

const CLOSE_UNAUTHORIZED = 4401;
const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;

/** Resolve a URL like "/ws" against the page, as ws:// or wss://. */
function socketUrl(url) {
  const full = new URL(url, window.location.href);
  if (full.protocol === "http:") full.protocol = "ws:";
  if (full.protocol === "https:") full.protocol = "wss:";
  return full;
}

/** One channel's subscription: its handler and where its stream is up to. */
class Subscription {
  constructor(client, channel, handler, options) {
    this.client = client;
    this.channel = channel;
    this.handler = handler;
    this.options = options;
    this.seq = options.since ?? null; // last seq delivered (null: start from now)
    this.epoch = options.epoch ?? null;
    this.active = true;
    this.error = null;
  }

  unsubscribe() {
    this.client.unsubscribe(this.channel);
  }
}

export class Taskcast extends EventTarget {
  /**
   * @param {string} url  the /ws endpoint, absolute or relative to the page
   * @param {{token?: string | (() => string | Promise<string>), baseDelay?: number,
   *          maxDelay?: number, WebSocket?: typeof WebSocket}} options
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.token = options.token ?? null;
    this.baseDelay = options.baseDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 10000;
    this.WebSocket = options.WebSocket ?? window.WebSocket;
    this.state = "idle";
    this.user = null;
    this.subs = new Map();
    this.attempt = 0;
    this.ws = null;
    this.refs = 0;
    this.pending = new Map(); // ref -> channel, for errors on subscribe
    this.timers = { retry: null, ping: null, pong: null };
  }

  /** Open the connection (or reopen after "signed-out" / "closed"). */
  connect() {
    if (["connecting", "open", "reconnecting"].includes(this.state)) return this;
    this.attempt = 0;
    this.#open("connecting");
    return this;
  }

  /** Close for good: no reconnect. */
  close() {
    this.#stopTimers();
    this.#setState("closed");
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
  }

  /**
   * Subscribe `handler(event, frame)` to `channel`. Options: `since` (seq you already have),
   * `epoch`, `onSubscribed(frame)` (every `subscribed` frame, including after reconnects),
   * `onError(frame)` (e.g. forbidden: the subscription is dropped).
   */
  subscribe(channel, handler, options = {}) {
    const existing = this.subs.get(channel);
    if (existing) return existing;
    const sub = new Subscription(this, channel, handler, options);
    this.subs.set(channel, sub);
    if (this.state === "open") this.#sendSubscribe(sub);
    return sub;
  }

  unsubscribe(channel) {
    const sub = this.subs.get(channel);
    if (!sub) return;
    sub.active = false;
    this.subs.delete(channel);
    if (this.state === "open") this.#send({ op: "unsubscribe", channel });
  }

  // -- connection --------------------------------------------------------------------------

  async #open(state) {
    this.#setState(state);
    let token = this.token;
    try {
      if (typeof token === "function") token = await token();
    } catch {
      token = null;
    }
    if (this.state !== state) return; // closed meanwhile
    const url = socketUrl(this.url);
    if (token) url.searchParams.set("token", token);
    let ws;
    try {
      ws = new this.WebSocket(url.toString());
    } catch {
      this.#setState("reconnecting");
      this.#scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onmessage = (msg) => this.#onFrame(ws, msg.data);
    ws.onclose = (ev) => this.#onClose(ws, ev.code);
    ws.onerror = () => {}; // onclose follows and decides
  }

  #onClose(ws, code) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.#stopTimers();
    if (this.state === "closed") return;
    if (code === CLOSE_UNAUTHORIZED) {
      this.#setState("signed-out");
      return;
    }
    this.#setState("reconnecting");
    this.#scheduleRetry();
  }

  #scheduleRetry() {
    // Exponential backoff with jitter: half fixed, half random, capped at maxDelay.
    const ceiling = Math.min(this.maxDelay, this.baseDelay * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.timers.retry = setTimeout(() => this.#open("reconnecting"), delay);
  }

  #stopTimers() {
    clearTimeout(this.timers.retry);
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    this.timers = { retry: null, ping: null, pong: null };
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }

  #send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  #sendSubscribe(sub) {
    const ref = `s${++this.refs}`;
    this.pending.set(ref, sub.channel);
    const frame = { op: "subscribe", channel: sub.channel, ref };
    if (sub.seq !== null) frame.since = sub.seq;
    if (sub.seq !== null && sub.epoch) frame.epoch = sub.epoch;
    this.#send(frame);
  }

  // -- frames ------------------------------------------------------------------------------

  #onFrame(ws, raw) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      return;
    }
    switch (frame.type) {
      case "welcome":
        this.user = frame.user;
        this.attempt = 0;
        this.#setState("open");
        this.#startPing();
        for (const sub of this.subs.values()) this.#sendSubscribe(sub);
        break;
      case "subscribed":
        this.#onSubscribed(frame);
        break;
      case "event":
        this.#onEvent(frame);
        break;
      case "pong":
        clearTimeout(this.timers.pong);
        break;
      case "error":
        this.#onError(frame);
        break;
      default:
        break;
    }
  }

  #onSubscribed(frame) {
    if (frame.ref) this.pending.delete(frame.ref);
    const sub = this.subs.get(frame.channel);
    if (!sub) return;
    // Fresh or not recovered: the stream goes on from the server's seq; recovered: from ours.
    if (sub.seq === null || frame.recovered === false) sub.seq = frame.seq;
    sub.epoch = frame.epoch;
    sub.options.onSubscribed?.(frame);
    if (frame.recovered === false) {
      this.dispatchEvent(new CustomEvent("reset", { detail: frame }));
    }
  }

  #onEvent(frame) {
    const sub = this.subs.get(frame.channel);
    if (!sub || (sub.seq !== null && frame.seq <= sub.seq)) return; // duplicate or stale
    sub.seq = frame.seq;
    try {
      sub.handler(frame.event, frame);
    } catch (err) {
      console.error("taskcast handler failed", err);
    }
  }

  #onError(frame) {
    const channel = frame.ref ? this.pending.get(frame.ref) : undefined;
    if (frame.ref) this.pending.delete(frame.ref);
    const sub = channel ? this.subs.get(channel) : undefined;
    if (sub && frame.code !== "unavailable" && frame.code !== "rate_limited") {
      sub.error = frame;
      sub.active = false;
      this.subs.delete(channel);
      sub.options.onError?.(frame);
    } else if (sub) {
      // A passing problem: try this subscription again shortly.
      setTimeout(() => sub.active && this.state === "open" && this.#sendSubscribe(sub), 1000);
    }
    this.dispatchEvent(new CustomEvent("error", { detail: frame }));
  }

  #startPing() {
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => {
      this.#send({ op: "ping" });
      clearTimeout(this.timers.pong);
      // No pong: the connection is dead without a close (a lost network); start again.
      this.timers.pong = setTimeout(() => this.ws && this.ws.close(4000, "no pong"), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }
}
