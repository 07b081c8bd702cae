// A task's view (status, progress, result or error) from its channel's `subscribed` state and
// events: the one place the React hook, the element and the dashboard turn frames into a view.

import type { Subscribed, TaskcastEvent, TaskState } from "./generated.js";

export type TaskStatus = TaskState["status"];

export interface TaskView {
  taskId: string;
  status: TaskStatus;
  /** 0-100. */
  percent: number;
  current: number;
  total: number;
  /** The latest step message. */
  message: string | null;
  result: unknown;
  /** `{type, message}` of a failed task (or the reason of a cancelled one). */
  error: { type?: string; message: string } | null;
  /** The last seq applied. */
  seq: number;
  /** The server could not replay everything (`recovered: false`): the view was reloaded. */
  historyLost: boolean;
}

export const TERMINAL: ReadonlySet<TaskStatus> = new Set(["succeeded", "failed", "cancelled"]);

export function emptyTask(taskId: string): TaskView {
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
    historyLost: false,
  };
}

/** The view a `subscribed` frame gives: its `state` when it carries one. */
export function applySubscribed(view: TaskView, frame: Subscribed): TaskView {
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
    historyLost,
  };
}

/**
 * The view after one event of the task's channel; a terminal status never changes again.
 * A workflow's first task's channel also carries the lifecycle of the tasks it started
 * (their own `task_id`, its `root_id`): those move `seq` on, never this task's view.
 */
export function applyEvent(view: TaskView, event: TaskcastEvent, seq: number): TaskView {
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
