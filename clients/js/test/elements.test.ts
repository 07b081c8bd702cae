// @vitest-environment jsdom
import { afterEach, describe, expect, it } from "vitest";
import { defineElements, type TaskcastProgress } from "../src/elements.js";
import { FakeSocket, lifecycle, progress } from "./fake-socket.js";

(globalThis as { WebSocket?: unknown }).WebSocket = FakeSocket;
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

afterEach(() => {
  document.body.replaceChildren();
});

describe("<taskcast-progress>", () => {
  it("upgraded after the page has it, opens one connection and follows the task once", async () => {
    FakeSocket.all = [];
    document.body.innerHTML =
      '<taskcast-progress task="t1" token="tok" url="ws://x/ws" label="Import"></taskcast-progress>' +
      '<taskcast-progress task="t2" token="tok" url="ws://x/ws"></taskcast-progress>';
    defineElements();
    await tick();
    expect(FakeSocket.all).toHaveLength(1); // one shared connection for the same url and token
    const ws = FakeSocket.all[0]!;
    ws.deliver({ type: "welcome", connection_id: "c", user: "u", node: "n" });
    expect(ws.sent.map((f) => [f.channel, f.since])).toEqual([["task:t1", 0], ["task:t2", 0]]);
    ws.deliver(lifecycle("task:t1", 1, "task.started", { attempt: 1 }));
    ws.deliver(progress("task:t1", 2, 50, "Half way"));
    const el = document.querySelector('taskcast-progress[task="t1"]') as TaskcastProgress;
    expect(el.seqs).toEqual([1, 2]);
    expect(el.getAttribute("status")).toBe("running");
    expect(el.getAttribute("percent")).toBe("50");
    expect(el.getAttribute("connection")).toBe("open");
    const root = el.shadowRoot!;
    expect(root.querySelector("[part=message]")!.textContent).toBe("Half way");
    expect(root.querySelector("[part=label]")!.textContent).toBe("Import");
    expect((root.querySelector("[part=fill]") as HTMLElement).style.width).toBe("50%");
    ws.deliver(lifecycle("task:t1", 3, "task.failed", { error: { type: "Declined", message: "card declined" } }));
    expect(el.getAttribute("status")).toBe("failed");
    expect(root.querySelector("[part=error]")!.textContent).toBe("card declined");
    // a new task id follows the new task on the same connection
    el.setAttribute("task", "t3");
    expect(ws.sent.slice(-2)).toEqual([
      { op: "unsubscribe", channel: "task:t1" },
      { op: "subscribe", channel: "task:t3", since: 0, ref: expect.any(String) },
    ]);
    document.body.replaceChildren();
    expect(ws.closedWith).toBe(1000); // the last element gone: the connection closes
  });
});
