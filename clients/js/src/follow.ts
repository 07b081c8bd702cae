// Follow one task: subscribe to its channel and keep its view current, each step applied once.

import type { Taskcast } from "./client.js";
import type { ErrorFrame, EventFrame, Unsubscribed } from "./generated.js";
import { type TaskView, applyEvent, applySubscribed, emptyTask } from "./task.js";

export interface TaskFollower {
  readonly taskId: string;
  /** The task's view now. */
  readonly view: TaskView;
  /** Why the channel was refused or ended (e.g. `forbidden`), if it was. */
  readonly refusal: ErrorFrame | Unsubscribed | null;
  stop(): void;
}

export interface FollowOptions {
  /** Replay from after this seq; default 0 (the whole task, each step once). */
  since?: number;
  /** Called with every event frame after it is applied (e.g. to log or toast). */
  onEvent?: (frame: EventFrame, view: TaskView) => void;
}

export function followTask(
  client: Taskcast,
  taskId: string,
  onChange: (view: TaskView) => void,
  options: FollowOptions = {},
): TaskFollower {
  let view = emptyTask(taskId);
  let refusal: ErrorFrame | Unsubscribed | null = null;
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
        const message =
          frame.type === "error" ? (frame.message ?? frame.code) : `unsubscribed: ${frame.reason ?? ""}`;
        view = { ...view, error: { type: frame.type === "error" ? frame.code : "unsubscribed", message } };
        onChange(view);
      },
    },
  );
  return {
    taskId,
    get view() {
      return view;
    },
    get refusal() {
      return refusal;
    },
    stop: () => sub.unsubscribe(),
  };
}
