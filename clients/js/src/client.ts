// The taskcast client: one WebSocket, many channel subscriptions, resumed after any drop.
//
// States: "idle" → "connecting" → "open" → "reconnecting" → "open" … ; "signed-out" after close
// 4401 when no new token can be had (it stops until `connect()` is called again); "closed".
// Every subscription resumes with `since` (its last seq) and `epoch`; duplicates are dropped by
// seq. When the server cannot resume (`recovered: false`, on subscribe or unsolicited mid-stream)
// the channel's tracking restarts at that frame's seq, `onSubscribed` receives the frame (with
// `state` on task channels) and a "reset" event fires, so the page can reload its view.

import type {
  ErrorFrame,
  EventFrame,
  Refreshed,
  ServerFrame,
  Subscribed,
  TaskcastEvent,
  Unsubscribed,
  Welcome,
} from "./generated.js";

export const CLOSE_UNAUTHORIZED = 4401;

export type ConnectionState =
  | "idle"
  | "connecting"
  | "open"
  | "reconnecting"
  | "signed-out"
  | "closed";

/** A token, or a function returning a fresh one (called on every connect and refresh). */
export type TokenSource = string | (() => string | null | undefined | Promise<string | null | undefined>);

/** The part of the browser's WebSocket the client uses (tests pass a fake). */
export interface SocketLike {
  readonly readyState: number;
  onmessage: ((message: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason?: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(text: string): void;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = new (url: string) => SocketLike;

export interface TaskcastOptions {
  token?: TokenSource;
  /** First reconnect delay in ms (doubling per attempt, with jitter); default 500. */
  baseDelay?: number;
  /** Longest reconnect delay in ms; default 10000. */
  maxDelay?: number;
  /** Ping interval in ms (no pong within `pongTimeout` reconnects); default 25000. */
  pingInterval?: number;
  pongTimeout?: number;
  /** Refresh the token this many seconds before it expires (at most 10% of its life); 30. */
  refreshLead?: number;
  WebSocket?: SocketFactory;
}

export type EventHandler = (event: TaskcastEvent, frame: EventFrame) => void;

export interface SubscribeOptions {
  /** The last seq you already have: events after it are replayed from history. */
  since?: number;
  /** The epoch that `since` belongs to. */
  epoch?: string;
  /** Every `subscribed` frame: the first, each after a reconnect, and any `recovered: false`. */
  onSubscribed?: (frame: Subscribed) => void;
  /** The subscription was refused (`error`) or ended by the server (`unsubscribed`). */
  onError?: (frame: ErrorFrame | Unsubscribed) => void;
}

interface Listener {
  handler: EventHandler;
  options: SubscribeOptions;
}

/** Passing problems: the subscription is tried again, not dropped. */
const RETRY_CODES = new Set(["unavailable", "rate_limited"]);

/** One channel's stream: where it is up to, shared by every listener on the channel. */
export class Channel {
  /** The last seq delivered (null: nothing yet, start from now). */
  seq: number | null;
  epoch: string | null;
  /** True once the server said `recovered: false`: some events were never delivered. */
  historyLost = false;
  /** The latest `subscribed` frame (its `state` is the task's state at that frame's seq). */
  subscribed: Subscribed | null = null;
  readonly listeners = new Set<Listener>();

  constructor(
    readonly name: string,
    options: SubscribeOptions,
  ) {
    this.seq = options.since ?? null;
    this.epoch = options.epoch ?? null;
  }
}

/** What `subscribe` returns: stop listening with `unsubscribe()`. */
export interface Subscription {
  readonly channel: Channel;
  unsubscribe(): void;
}

function socketUrl(url: string, token: string | null): string {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  const full = base ? new URL(url, base) : new URL(url);
  if (full.protocol === "http:") full.protocol = "ws:";
  if (full.protocol === "https:") full.protocol = "wss:";
  if (token) full.searchParams.set("token", token);
  return full.toString();
}

export class Taskcast extends EventTarget {
  readonly url: string;
  token: TokenSource | null;
  state: ConnectionState = "idle";
  /** The signed-in user, from `welcome`. */
  user: string | null = null;
  /** The token's expiry (unix seconds), from `welcome` or `refreshed`, when the server says. */
  expiresAt: number | null = null;
  readonly channels = new Map<string, Channel>();

  private readonly baseDelay: number;
  private readonly maxDelay: number;
  private readonly pingInterval: number;
  private readonly pongTimeout: number;
  private readonly refreshLead: number;
  private readonly Socket: SocketFactory;
  private ws: SocketLike | null = null;
  private attempt = 0;
  private refs = 0;
  private readonly pending = new Map<string, string>(); // subscribe ref -> channel
  private refreshRef: string | null = null;
  private usedToken: string | null = null; // the token of the current connection
  private rejectedToken: string | null = null; // the token a 4401 refused
  private timers: Record<"retry" | "ping" | "pong" | "refresh", ReturnType<typeof setTimeout> | undefined> =
    { retry: undefined, ping: undefined, pong: undefined, refresh: undefined };

  constructor(url: string, options: TaskcastOptions = {}) {
    super();
    this.url = url;
    this.token = options.token ?? null;
    this.baseDelay = options.baseDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 10000;
    this.pingInterval = options.pingInterval ?? 25000;
    this.pongTimeout = options.pongTimeout ?? 10000;
    this.refreshLead = options.refreshLead ?? 30;
    const Socket = options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket;
    if (!Socket) throw new Error("taskcast: no WebSocket here; pass options.WebSocket");
    this.Socket = Socket as SocketFactory;
  }

  /** Open the connection (or reopen after "signed-out" / "closed", e.g. with a new token). */
  connect(): this {
    if (this.state === "connecting" || this.state === "open" || this.state === "reconnecting") {
      return this;
    }
    this.attempt = 0;
    this.rejectedToken = null;
    void this.open("connecting");
    return this;
  }

  /** Close for good: no reconnect. */
  close(): void {
    this.stopTimers();
    this.setState("closed");
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "bye");
  }

  /**
   * Call `handler(event, frame)` for each event of `channel`, each seq once, across reconnects.
   * A second listener on a channel already subscribed joins its stream where it stands (its
   * `since` is not replayed) and receives the latest `subscribed` frame at once.
   */
  subscribe(channel: string, handler: EventHandler, options: SubscribeOptions = {}): Subscription {
    const listener: Listener = { handler, options };
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
      },
    };
  }

  /** Stop the channel for every listener. */
  unsubscribe(channel: string): void {
    if (!this.channels.delete(channel)) return;
    if (this.state === "open") this.send({ op: "unsubscribe", channel });
  }

  // -- connection ----------------------------------------------------------------------------

  private async resolveToken(): Promise<string | null> {
    const source = this.token;
    if (typeof source !== "function") return source;
    try {
      return (await source()) ?? null;
    } catch {
      return null;
    }
  }

  private async open(state: "connecting" | "reconnecting"): Promise<void> {
    this.setState(state);
    const token = await this.resolveToken();
    if (this.state !== state || this.ws) return; // closed (or opened) meanwhile
    if (this.rejectedToken !== null && (token === null || token === this.rejectedToken)) {
      this.setState("signed-out"); // the token function has nothing newer than what was refused
      return;
    }
    let ws: SocketLike;
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
    ws.onerror = () => {}; // onclose follows and decides
  }

  private onClose(ws: SocketLike, code: number): void {
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

  private scheduleRetry(): void {
    // Exponential backoff with jitter: half fixed, half random, capped at maxDelay.
    const ceiling = Math.min(this.maxDelay, this.baseDelay * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.timers.retry = setTimeout(() => void this.open("reconnecting"), delay);
  }

  private stopTimers(): void {
    clearTimeout(this.timers.retry);
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    clearTimeout(this.timers.refresh);
    this.timers = { retry: undefined, ping: undefined, pong: undefined, refresh: undefined };
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }

  private send(frame: Record<string, unknown>): void {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  private sendSubscribe(stream: Channel): void {
    const ref = `s${++this.refs}`;
    this.pending.set(ref, stream.name);
    const frame: Record<string, unknown> = { op: "subscribe", channel: stream.name, ref };
    if (stream.seq !== null) frame.since = stream.seq;
    if (stream.seq !== null && stream.epoch) frame.epoch = stream.epoch;
    this.send(frame);
  }

  // -- token refresh -------------------------------------------------------------------------

  private scheduleRefresh(expiresAt: number | null | undefined): void {
    clearTimeout(this.timers.refresh);
    this.expiresAt = expiresAt ?? null;
    if (!expiresAt || typeof this.token !== "function") return;
    const left = expiresAt - Date.now() / 1000;
    const lead = Math.min(this.refreshLead, left * 0.1);
    const delay = Math.max(0, (left - lead) * 1000);
    this.timers.refresh = setTimeout(() => void this.refresh(), delay);
  }

  /** Send the token function's newest token on the open connection (`op: refresh`). */
  async refresh(): Promise<void> {
    const ws = this.ws;
    const token = await this.resolveToken();
    // Nothing newer than the connection's token: it stands until it expires (then 4401).
    if (!token || token === this.usedToken || ws !== this.ws || this.state !== "open") return;
    this.refreshRef = `r${++this.refs}`;
    this.usedToken = token;
    this.send({ op: "refresh", token, ref: this.refreshRef });
  }

  // -- frames --------------------------------------------------------------------------------

  private onFrame(ws: SocketLike, raw: unknown): void {
    if (ws !== this.ws) return;
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(raw)) as ServerFrame;
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

  private onWelcome(frame: Welcome): void {
    this.user = frame.user;
    this.attempt = 0;
    this.rejectedToken = null;
    this.setState("open");
    this.startPing();
    this.scheduleRefresh(frame.expires_at);
    this.dispatchEvent(new CustomEvent("welcome", { detail: frame }));
    for (const stream of this.channels.values()) this.sendSubscribe(stream);
  }

  private onSubscribed(frame: Subscribed): void {
    if (typeof frame.ref === "string") this.pending.delete(frame.ref);
    const stream = this.channels.get(frame.channel);
    if (!stream) return;
    // Fresh or not recovered: the stream goes on from the server's seq; recovered: from ours.
    if (stream.seq === null || frame.recovered === false) stream.seq = frame.seq;
    stream.epoch = frame.epoch;
    stream.subscribed = frame;
    if (frame.recovered === false) stream.historyLost = true;
    for (const listener of [...stream.listeners]) listener.options.onSubscribed?.(frame);
    if (frame.recovered === false) {
      this.dispatchEvent(new CustomEvent("reset", { detail: frame }));
    }
  }

  private onEvent(frame: EventFrame): void {
    const stream = this.channels.get(frame.channel);
    if (!stream || (stream.seq !== null && frame.seq <= stream.seq)) return; // duplicate, stale
    stream.seq = frame.seq;
    for (const listener of [...stream.listeners]) {
      try {
        listener.handler(frame.event, frame);
      } catch (err) {
        console.error("taskcast handler failed", err);
      }
    }
  }

  private onUnsubscribed(frame: Unsubscribed): void {
    // Our own unsubscribe already dropped the channel; one the server ends (its token no
    // longer allows it) is dropped here, and its listeners are told.
    const stream = this.channels.get(frame.channel);
    if (!stream || !frame.reason) return;
    this.channels.delete(frame.channel);
    for (const listener of stream.listeners) listener.options.onError?.(frame);
  }

  private onRefreshed(frame: Refreshed): void {
    if (frame.ref === this.refreshRef) this.refreshRef = null;
    this.scheduleRefresh(frame.expires_at);
    this.dispatchEvent(new CustomEvent("refreshed", { detail: frame }));
  }

  private onError(frame: ErrorFrame): void {
    const ref = typeof frame.ref === "string" ? frame.ref : undefined;
    if (ref !== undefined && ref === this.refreshRef) {
      this.refreshRef = null; // the old token stands until it expires; then 4401 and a new one
    }
    const name = ref !== undefined ? this.pending.get(ref) : undefined;
    if (ref !== undefined) this.pending.delete(ref);
    const stream = name !== undefined ? this.channels.get(name) : undefined;
    if (stream && !RETRY_CODES.has(frame.code)) {
      this.channels.delete(stream.name);
      for (const listener of stream.listeners) listener.options.onError?.(frame);
    } else if (stream) {
      const retry = () => {
        if (this.channels.get(stream.name) === stream && this.state === "open") {
          this.sendSubscribe(stream);
        }
      };
      setTimeout(retry, 1000);
    }
    this.dispatchEvent(new CustomEvent("error", { detail: frame }));
  }

  private startPing(): void {
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => {
      this.send({ op: "ping" });
      clearTimeout(this.timers.pong);
      // No pong: the connection is dead without a close (a lost network); start again.
      this.timers.pong = setTimeout(() => {
        const ws = this.ws;
        if (!ws) return;
        ws.close(4000, "no pong");
        this.onClose(ws, 4000); // a dead network may not deliver the close for a long while
      }, this.pongTimeout);
    }, this.pingInterval);
  }
}
