// React bindings: one connection per <TaskcastProvider>, hooks for its state, a channel and a
// task. Toasts and other UI are left to the app (docs/browser.md shows one way).

import {
  createContext,
  type ReactNode,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import { type ConnectionState, Taskcast, type TaskcastOptions, type TokenSource } from "./client.js";
import { type TaskFollower, followTask } from "./follow.js";
import type { ErrorFrame, EventFrame, Subscribed, Unsubscribed } from "./generated.js";
import type { TaskView } from "./task.js";

const Context = createContext<Taskcast | null>(null);

export interface TaskcastProviderProps {
  /** The `/ws` endpoint, absolute or relative to the page; default "/ws". */
  url?: string;
  /** A token, or a function returning a fresh one (asked again on reconnects and on 4401). */
  token?: TokenSource;
  /** Other client options (backoff, ping). */
  options?: Omit<TaskcastOptions, "token">;
  /** A client you made yourself, instead of `url`/`token`/`options`. */
  client?: Taskcast;
  children?: ReactNode;
}

/** Holds one connection for everything below it; connects on mount, closes on unmount. */
export function TaskcastProvider({ url = "/ws", token, options, client, children }: TaskcastProviderProps) {
  // The client asks for the latest `token` prop each time, so a new token (or a new function)
  // needs no new connection.
  const latest = useRef(token);
  latest.current = token;
  const [own] = useState(
    () =>
      client ??
      new Taskcast(url, {
        ...options,
        token: () => {
          const source = latest.current;
          return typeof source === "function" ? source() : (source ?? null);
        },
      }),
  );
  useEffect(() => {
    own.connect();
    return () => own.close();
  }, [own]);
  return <Context.Provider value={own}>{children}</Context.Provider>;
}

/** The provider's client. */
export function useTaskcast(): Taskcast {
  const client = useContext(Context);
  if (!client) throw new Error("taskcast hooks need a <TaskcastProvider> above them");
  return client;
}

/** The connection's state: idle, connecting, open, reconnecting, signed-out or closed. */
export function useConnectionState(): ConnectionState {
  const client = useTaskcast();
  return useSyncExternalStore(
    (notify) => {
      client.addEventListener("state", notify);
      return () => client.removeEventListener("state", notify);
    },
    () => client.state,
    () => "idle",
  );
}

export interface ChannelOptions {
  /** Replay from history after this seq (0: everything kept); omit to start from now. */
  since?: number;
  epoch?: string;
  /** Keep at most this many of the latest event frames; default 200. */
  limit?: number;
}

export interface ChannelView {
  /** The channel's event frames, oldest first, each seq once. */
  events: EventFrame[];
  /** The latest `subscribed` frame (with `state` on task channels). */
  subscribed: Subscribed | null;
  /** The server could not replay everything asked for (`recovered: false`). */
  historyLost: boolean;
  /** Why the subscription was refused or ended, if it was. */
  error: ErrorFrame | Unsubscribed | null;
}

const EMPTY: ChannelView = { events: [], subscribed: null, historyLost: false, error: null };

/** Follow a channel: its events since `since` (or from now), across reconnects. */
export function useChannel(channel: string | null, options: ChannelOptions = {}): ChannelView {
  const client = useTaskcast();
  const [view, setView] = useState<ChannelView>(EMPTY);
  const { since, epoch } = options;
  const limit = options.limit ?? 200;
  useEffect(() => {
    setView(EMPTY);
    if (!channel) return;
    const sub = client.subscribe(
      channel,
      (_event, frame) =>
        setView((v) => ({ ...v, events: [...v.events, frame].slice(-limit) })),
      {
        since,
        epoch,
        onSubscribed: (frame) =>
          setView((v) => ({ ...v, subscribed: frame, historyLost: v.historyLost || frame.recovered === false })),
        onError: (frame) => setView((v) => ({ ...v, error: frame })),
      },
    );
    return () => sub.unsubscribe();
  }, [client, channel, since, epoch, limit]);
  return view;
}

export interface TaskHookView extends TaskView {
  /** Why the task's channel was refused (e.g. `forbidden`), if it was. */
  refusal: ErrorFrame | Unsubscribed | null;
}

/**
 * A task's live view: `status`, `percent`, `message`, `result` or `error`, and `historyLost`
 * (the server could not replay every step; the view was reloaded from the task's state).
 * Null until its channel answers; each step is applied once, across reconnects.
 */
export function useTask(taskId: string | null): TaskHookView | null {
  const client = useTaskcast();
  const [view, setView] = useState<TaskHookView | null>(null);
  useEffect(() => {
    setView(null);
    if (!taskId) return;
    let follower: TaskFollower | null = null;
    follower = followTask(client, taskId, (next) => setView({ ...next, refusal: follower?.refusal ?? null }));
    return () => follower?.stop();
  }, [client, taskId]);
  return view;
}
