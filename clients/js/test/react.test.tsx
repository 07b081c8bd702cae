// @vitest-environment jsdom
import { act } from "react";
import { createRoot } from "react-dom/client";
import { afterEach, describe, expect, it, vi } from "vitest";
import { TaskcastProvider, useChannel, useConnectionState, useTask } from "../src/react.js";
import { FakeSocket, lifecycle, progress } from "./fake-socket.js";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

function Task({ id }: { id: string }) {
  const state = useConnectionState();
  const task = useTask(id);
  const log = useChannel(`task:${id}`, { since: 0 });
  return (
    <div>
      <span id="conn">{state}</span>
      <span id="status">{task?.status ?? "-"}</span>
      <span id="percent">{task ? Math.round(task.percent) : "-"}</span>
      <span id="lost">{String(task?.historyLost ?? false)}</span>
      <span id="steps">{log.events.map((f) => f.seq).join(",")}</span>
    </div>
  );
}

const text = (id: string) => document.getElementById(id)?.textContent;
let unmount: (() => void) | null = null;
afterEach(() => {
  act(() => unmount?.());
  unmount = null;
});

describe("React bindings", () => {
  it("show the connection state and a task's live view, each step once", async () => {
    FakeSocket.all = [];
    const host = document.createElement("div");
    document.body.append(host);
    const root = createRoot(host);
    unmount = () => root.unmount();
    await act(async () => {
      root.render(
        <TaskcastProvider url="ws://x/ws" token="tok" options={{ WebSocket: FakeSocket }}>
          <Task id="t1" />
        </TaskcastProvider>,
      );
    });
    expect(text("conn")).toBe("connecting");
    const ws = FakeSocket.all.at(-1)!;
    expect(ws.token).toBe("tok");
    await act(async () => ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n" }));
    expect(text("conn")).toBe("open");
    // one channel for both hooks, replayed from the start
    expect(ws.sent.filter((f) => f.op === "subscribe")).toEqual([{ op: "subscribe", channel: "task:t1", since: 0, ref: expect.any(String) }]);
    await act(async () => {
      ws.deliver({ type: "subscribed", channel: "task:t1", seq: 2, epoch: "E", recovered: true });
      ws.deliver(lifecycle("task:t1", 1, "task.started", { attempt: 1 }));
      ws.deliver(progress("task:t1", 2, 40));
      ws.deliver(progress("task:t1", 2, 40));
    });
    expect(text("status")).toBe("running");
    expect(text("percent")).toBe("40");
    expect(text("steps")).toBe("1,2");
    await act(async () => {
      ws.drop(1012);
    });
    expect(text("conn")).toBe("reconnecting");
    await act(async () => {
      await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(2));
    });
    const again = FakeSocket.all.at(-1)!;
    expect(again).not.toBe(ws);
    await act(async () => {
      again.deliver({ type: "welcome", connection_id: "c2", user: "u", node: "n" });
    });
    expect(again.last("subscribe")).toMatchObject({ since: 2, epoch: "E" });
    const state = { task_id: "t1", status: "succeeded", progress: { current: 4, total: 4, percent: 100, message: "Done" }, result: { ok: true }, error: null, seq: 9, updated_at: null };
    await act(async () => {
      again.deliver({ type: "subscribed", channel: "task:t1", seq: 9, epoch: "E2", recovered: false, state });
    });
    expect(text("status")).toBe("succeeded");
    expect(text("lost")).toBe("true");
    expect(text("steps")).toBe("1,2");
  });
});
