// A scripted stand-in for the browser's WebSocket: the test plays the server.
import type { SocketLike } from "../src/client.js";

export class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  readyState = 1;
  sent: Record<string, unknown>[] = [];
  onmessage: ((message: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  closedWith: number | null = null;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }

  get token(): string | null {
    return new URL(this.url).searchParams.get("token");
  }

  send(text: string): void {
    this.sent.push(JSON.parse(text) as Record<string, unknown>);
  }

  /** The client closes: the close event follows, as in a browser. */
  close(code = 1000): void {
    this.closedWith = code;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code }));
  }

  /** The server sends a frame. */
  deliver(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The server closes the connection. */
  drop(code: number): void {
    this.readyState = 3;
    this.onclose?.({ code });
  }

  last(op: string): Record<string, unknown> {
    const found = this.sent.filter((f) => f.op === op).at(-1);
    if (!found) throw new Error(`no ${op} sent; sent: ${JSON.stringify(this.sent)}`);
    return found;
  }
}

export function progress(channel: string, seq: number, percent: number, message = `step ${seq}`) {
  return {
    type: "event",
    channel,
    seq,
    event: {
      id: `e${seq}`,
      type: "task.progress",
      ts: "2026-01-01T00:00:00+00:00",
      task_id: channel.slice(5),
      user_id: "u",
      source: "test",
      data: { current: percent, total: 100, percent, message },
    },
  };
}

export function lifecycle(channel: string, seq: number, type: string, data: Record<string, unknown>) {
  return {
    type: "event",
    channel,
    seq,
    event: { id: `e${seq}`, type, ts: "2026-01-01T00:00:00+00:00", task_id: channel.slice(5), user_id: "u", source: "test", data },
  };
}
