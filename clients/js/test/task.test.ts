import { describe, expect, it } from "vitest";
import { Taskcast, followTask, type TaskView } from "../src/index.js";
import { FakeSocket, lifecycle, progress } from "./fake-socket.js";

const CH = "task:t1";

describe("followTask", () => {
  it("builds the view from state and events, each step once, and keeps the terminal status", async () => {
    FakeSocket.all = [];
    const tc = new Taskcast("ws://x/ws", { token: "t", WebSocket: FakeSocket });
    const views: TaskView[] = [];
    const follower = followTask(tc, "t1", (v) => views.push(v));
    tc.connect();
    await new Promise((r) => setTimeout(r, 0));
    const ws = FakeSocket.all[0]!;
    ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n" });
    expect(ws.last("subscribe")).toMatchObject({ channel: CH, since: 0 });
    ws.deliver({ type: "subscribed", channel: CH, seq: 3, epoch: "E", recovered: true });
    ws.deliver(lifecycle(CH, 1, "task.queued", { name: "orders.process" }));
    ws.deliver(lifecycle(CH, 2, "task.started", { name: "orders.process", attempt: 1 }));
    ws.deliver(progress(CH, 3, 50, "Charging payment"));
    ws.deliver(progress(CH, 3, 50, "Charging payment"));
    expect(follower.view).toMatchObject({ status: "running", percent: 50, message: "Charging payment", seq: 3 });
    ws.deliver(lifecycle(CH, 4, "task.succeeded", { result: { order_id: "o1" } }));
    ws.deliver(lifecycle(CH, 5, "task.cancelled", { reason: "late" }));
    expect(follower.view).toMatchObject({ status: "succeeded", percent: 100, result: { order_id: "o1" }, historyLost: false });
    expect(views.map((v) => v.seq)).toEqual([0, 1, 2, 3, 4, 5]);
    tc.close();
  });

  it("on a workflow's channel, follows its own task, not the tasks it started", async () => {
    FakeSocket.all = [];
    const tc = new Taskcast("ws://x/ws", { token: "t", WebSocket: FakeSocket });
    const follower = followTask(tc, "t1", () => {});
    tc.connect();
    await new Promise((r) => setTimeout(r, 0));
    const ws = FakeSocket.all[0]!;
    ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n" });
    ws.deliver({ type: "subscribed", channel: CH, seq: 0, epoch: "E", recovered: true });
    const child = (seq: number, type: string, data: Record<string, unknown>) => {
      const frame = lifecycle(CH, seq, type, data);
      return { ...frame, event: { ...frame.event, task_id: "child", root_id: "t1" } };
    };
    ws.deliver(lifecycle(CH, 1, "task.started", { name: "flow", attempt: 1 }));
    ws.deliver(child(2, "task.started", { name: "step", attempt: 1 }));
    ws.deliver(progress(CH, 3, 40, "Planning"));
    ws.deliver(child(4, "task.succeeded", { result: "done" }));
    expect(follower.view).toMatchObject({ status: "running", percent: 40, message: "Planning", seq: 4 });
    ws.deliver(lifecycle(CH, 5, "task.succeeded", { result: "all" }));
    expect(follower.view).toMatchObject({ status: "succeeded", result: "all", seq: 5 });
    tc.close();
  });

  it("reloads from the state when history is lost, and says so", async () => {
    FakeSocket.all = [];
    const tc = new Taskcast("ws://x/ws", { token: "t", WebSocket: FakeSocket });
    const follower = followTask(tc, "t1", () => {});
    tc.connect();
    await new Promise((r) => setTimeout(r, 0));
    const ws = FakeSocket.all[0]!;
    ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n" });
    const state = {
      task_id: "t1", status: "failed", progress: { current: 1, total: 4, percent: 25, message: "Reserving stock" },
      result: null, error: { type: "PaymentDeclined", message: "card declined" }, seq: 7, updated_at: null,
    };
    ws.deliver({ type: "subscribed", channel: CH, seq: 7, epoch: "E2", recovered: false, state });
    expect(follower.view).toMatchObject({
      status: "failed", percent: 25, message: "Reserving stock", historyLost: true,
      error: { type: "PaymentDeclined", message: "card declined" },
    });
    tc.close();
  });

  it("shows a refusal as the task's error", async () => {
    FakeSocket.all = [];
    const tc = new Taskcast("ws://x/ws", { token: "t", WebSocket: FakeSocket });
    const follower = followTask(tc, "t1", () => {});
    tc.connect();
    await new Promise((r) => setTimeout(r, 0));
    const ws = FakeSocket.all[0]!;
    ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n" });
    ws.deliver({ type: "error", code: "forbidden", message: "not allowed", ref: ws.last("subscribe").ref });
    expect(follower.view.error).toEqual({ type: "forbidden", message: "not allowed" });
    expect(follower.refusal).toMatchObject({ code: "forbidden" });
    tc.close();
  });
});
