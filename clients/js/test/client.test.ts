import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Taskcast, type TaskcastEvent } from "../src/index.js";
import { FakeSocket, progress } from "./fake-socket.js";

const URL_ = "ws://taskcast.test/ws";
const CH = "task:t1";

function client(options: ConstructorParameters<typeof Taskcast>[1] = {}) {
  const tc = new Taskcast(URL_, { token: "tok", WebSocket: FakeSocket, baseDelay: 100, maxDelay: 800, ...options });
  const states: string[] = [];
  tc.addEventListener("state", () => states.push(tc.state));
  return { tc, states };
}

async function opened(index: number, user = "u", extra: Record<string, unknown> = {}) {
  await vi.waitFor(() => expect(FakeSocket.all.length).toBeGreaterThan(index));
  const ws = FakeSocket.all[index]!;
  ws.deliver({ type: "welcome", connection_id: `c${index}`, user, node: "n1", ...extra });
  return ws;
}

beforeEach(() => {
  FakeSocket.all = [];
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("Taskcast", () => {
  it("connects with the token and subscribes from now when no since is given", async () => {
    const { tc, states } = client();
    tc.subscribe(CH, () => {});
    tc.connect();
    const ws = await opened(0);
    expect(ws.token).toBe("tok");
    const sub = ws.last("subscribe");
    expect(sub.channel).toBe(CH);
    expect(sub).not.toHaveProperty("since");
    expect(states).toEqual(["connecting", "open"]);
    expect(tc.user).toBe("u");
    tc.close();
  });

  it("resumes with since and epoch after a drop and delivers each seq once", async () => {
    const { tc, states } = client();
    const got: number[] = [];
    tc.subscribe(CH, (_event, frame) => got.push(frame.seq), { since: 0 });
    tc.connect();
    const first = await opened(0);
    expect(first.last("subscribe")).toMatchObject({ since: 0 });
    first.deliver({ type: "subscribed", channel: CH, seq: 2, epoch: "E1", recovered: true, ref: first.last("subscribe").ref });
    for (const seq of [1, 2, 2, 1, 3]) first.deliver(progress(CH, seq, seq * 10));
    first.drop(1012);
    const second = await opened(1);
    expect(second.last("subscribe")).toMatchObject({ channel: CH, since: 3, epoch: "E1" });
    second.deliver({ type: "subscribed", channel: CH, seq: 5, epoch: "E1", recovered: true });
    for (const seq of [3, 4, 5]) second.deliver(progress(CH, seq, seq * 10));
    expect(got).toEqual([1, 2, 3, 4, 5]);
    expect(states).toEqual(["connecting", "open", "reconnecting", "open"]);
    tc.close();
  });

  it("on recovered:false restarts the channel at the frame's seq, marks history lost and fires reset", async () => {
    const { tc } = client();
    const got: number[] = [];
    const resets: unknown[] = [];
    const subscribed: unknown[] = [];
    tc.addEventListener("reset", (e) => resets.push((e as CustomEvent).detail.seq));
    const sub = tc.subscribe(CH, (_e, f) => got.push(f.seq), { since: 4, epoch: "OLD", onSubscribed: (f) => subscribed.push(f.state) });
    tc.connect();
    const ws = await opened(0);
    expect(ws.last("subscribe")).toMatchObject({ since: 4, epoch: "OLD" });
    const state = { task_id: "t1", status: "running", progress: { current: 9, total: 10, percent: 90, message: "Nine" }, result: null, error: null, seq: 9, updated_at: null };
    ws.deliver({ type: "subscribed", channel: CH, seq: 9, epoch: "NEW", recovered: false, state });
    for (const seq of [5, 9, 10]) ws.deliver(progress(CH, seq, 95));
    expect(got).toEqual([10]);
    expect(resets).toEqual([9]);
    expect(subscribed).toEqual([state]);
    expect(sub.channel.historyLost).toBe(true);
    expect(sub.channel.epoch).toBe("NEW");
    // mid-stream, unsolicited: Redis came back empty, a new epoch starts at seq 0
    ws.deliver({ type: "subscribed", channel: CH, seq: 0, epoch: "NEWER", recovered: false });
    ws.deliver(progress(CH, 1, 5));
    expect(got).toEqual([10, 1]);
    expect(resets).toEqual([9, 0]);
    tc.close();
  });

  it("stops as signed-out on 4401 when the token is a fixed string", async () => {
    vi.useFakeTimers();
    const { tc, states } = client();
    tc.connect();
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.all[0]!.deliver({ type: "error", code: "unauthorized", message: "invalid token" });
    FakeSocket.all[0]!.drop(4401);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(states).toEqual(["connecting", "signed-out"]);
    expect(FakeSocket.all).toHaveLength(1);
  });

  it("on 4401 asks the token function again and reconnects with the new token", async () => {
    const tokens = ["old", "new", "new"];
    const fetchToken = vi.fn(async () => tokens.shift() ?? null);
    const { tc, states } = client({ token: fetchToken });
    tc.connect();
    const first = await opened(0);
    expect(first.token).toBe("old");
    first.deliver({ type: "error", code: "token_expired", message: "token expired" });
    first.drop(4401);
    const second = await opened(1);
    expect(second.token).toBe("new");
    expect(states).toEqual(["connecting", "open", "reconnecting", "open"]);
    // the function has nothing newer than what the server refused: signed out, no loop
    second.drop(4401);
    await vi.waitFor(() => expect(tc.state).toBe("signed-out"));
    expect(FakeSocket.all).toHaveLength(2);
    expect(fetchToken).toHaveBeenCalledTimes(3);
  });

  it("reconnects forever with capped, jittered exponential backoff", async () => {
    vi.useFakeTimers();
    const random = vi.spyOn(Math, "random");
    const { tc } = client();
    tc.connect();
    await vi.advanceTimersByTimeAsync(0);
    const delays: number[] = [];
    for (let i = 0; i < 7; i++) {
      random.mockReturnValue(i % 2 ? 1 : 0);
      const count = FakeSocket.all.length;
      FakeSocket.all.at(-1)!.drop(1006);
      let waited = 0;
      while (FakeSocket.all.length === count) {
        await vi.advanceTimersByTimeAsync(10);
        waited += 10;
      }
      delays.push(waited);
    }
    // ceilings 100, 200, 400, 800, 800…: half fixed plus up to half random
    expect(delays).toEqual([50, 200, 200, 800, 400, 800, 400]);
    expect(tc.state).toBe("reconnecting");
    tc.close();
  });

  it("refreshes the token before it expires and drops channels the new token forbids", async () => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date("2026-01-01T00:00:00Z"));
    const now = Date.now() / 1000;
    let n = 0;
    const { tc } = client({ token: () => `tok${++n}`, pingInterval: 36_000_000 });
    const errors: unknown[] = [];
    tc.subscribe("topic:orders", () => {}, { onError: (f) => errors.push(f) });
    tc.subscribe(CH, () => {});
    tc.connect();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.all[0]!;
    ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n", expires_at: now + 100 });
    // 10% of a 100 s life is sooner than 30 s: refresh at 90 s
    await vi.advanceTimersByTimeAsync(89_000);
    expect(ws.sent.some((f) => f.op === "refresh")).toBe(false);
    await vi.advanceTimersByTimeAsync(1_000);
    const refresh = ws.last("refresh");
    expect(refresh.token).toBe("tok2");
    ws.deliver({ type: "unsubscribed", channel: "topic:orders", reason: "forbidden" });
    ws.deliver({ type: "refreshed", expires_at: now + 90 + 3600, ref: refresh.ref });
    expect(errors).toEqual([{ type: "unsubscribed", channel: "topic:orders", reason: "forbidden" }]);
    expect([...tc.channels.keys()]).toEqual([CH]);
    expect(tc.expiresAt).toBe(now + 90 + 3600);
    // an hour's life: refresh 30 s before its end
    await vi.advanceTimersByTimeAsync(3569_000);
    expect(ws.sent.filter((f) => f.op === "refresh")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1_000);
    const again = ws.last("refresh");
    expect(again.token).toBe("tok3");
    // a refused refresh leaves the connection and its channels as they are
    ws.deliver({ type: "error", code: "unauthorized", message: "invalid token", ref: again.ref });
    expect(tc.state).toBe("open");
    expect([...tc.channels.keys()]).toEqual([CH]);
    tc.close();
  });

  it("does not refresh with a fixed token, and says the token is revoked by closing 4401", async () => {
    vi.useFakeTimers();
    const { tc } = client({ pingInterval: 36_000_000 });
    tc.connect();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.all[0]!;
    ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n", expires_at: Date.now() / 1000 + 60 });
    await vi.advanceTimersByTimeAsync(120_000);
    expect(ws.sent.some((f) => f.op === "refresh")).toBe(false);
    ws.deliver({ type: "error", code: "token_revoked", message: "revoked" });
    ws.drop(4401);
    expect(tc.state).toBe("signed-out");
  });

  it("drops a refused subscription and retries one refused for a passing reason", async () => {
    vi.useFakeTimers();
    const { tc } = client();
    const refused: string[] = [];
    tc.subscribe("task:nope", () => {}, { onError: (f) => refused.push(f.type === "error" ? f.code : "") });
    tc.subscribe(CH, () => {});
    tc.connect();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.all[0]!;
    ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n" });
    const [nope, task] = ws.sent;
    ws.deliver({ type: "error", code: "forbidden", message: "not allowed", ref: nope!.ref });
    ws.deliver({ type: "error", code: "unavailable", message: "redis down", ref: task!.ref });
    expect(refused).toEqual(["forbidden"]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ws.sent.at(-1)).toMatchObject({ op: "subscribe", channel: CH });
    expect([...tc.channels.keys()]).toEqual([CH]);
    tc.close();
  });

  it("closes and reconnects when a ping gets no pong", async () => {
    vi.useFakeTimers();
    const { tc, states } = client({ pingInterval: 1000, pongTimeout: 500 });
    tc.connect();
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.all[0]!.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n" });
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeSocket.all[0]!.last("ping")).toEqual({ op: "ping" });
    await vi.advanceTimersByTimeAsync(500);
    expect(FakeSocket.all[0]!.closedWith).toBe(4000);
    expect(states).toContain("reconnecting");
    tc.close();
  });

  it("shares one channel between listeners and unsubscribes when the last one leaves", async () => {
    const { tc } = client();
    const a: string[] = [];
    const b: string[] = [];
    const first = tc.subscribe(CH, (e: TaskcastEvent) => a.push(e.type));
    tc.connect();
    const ws = await opened(0);
    ws.deliver({ type: "subscribed", channel: CH, seq: 0, epoch: "E" });
    const late: number[] = [];
    const second = tc.subscribe(CH, (e) => b.push(e.type), { onSubscribed: (f) => late.push(f.seq) });
    await vi.waitFor(() => expect(late).toEqual([0]));
    ws.deliver(progress(CH, 1, 10));
    first.unsubscribe();
    ws.deliver(progress(CH, 2, 20));
    expect(a).toEqual(["task.progress"]);
    expect(b).toEqual(["task.progress", "task.progress"]);
    expect(ws.sent.filter((f) => f.op === "subscribe")).toHaveLength(1);
    second.unsubscribe();
    expect(ws.last("unsubscribe")).toEqual({ op: "unsubscribe", channel: CH });
    tc.close();
  });
});
