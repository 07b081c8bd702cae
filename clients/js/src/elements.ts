// Drop-in elements for pages without a build step:
//
//   <script src="https://taskcast.example/static/taskcast-elements.js"></script>
//   <taskcast-progress task="…" token="…"></taskcast-progress>
//   <taskcast-tasks token="…"></taskcast-tasks>
//
// Elements with the same `url` and `token` share one connection. The host element reflects
// `status`, `percent` and `connection` (the socket's state) attributes, e.g. for
// `taskcast-progress[status=failed]`, sets `history-lost` when the server could not replay
// everything (the view was reloaded from the task's state), and fires
// `taskcast-change` with the task's view; inside, `part`s and CSS custom properties style it.

import { Taskcast, type TokenSource } from "./client.js";
import { type FollowOptions, type TaskFollower, followTask } from "./follow.js";
import type { TaskcastEvent } from "./generated.js";
import type { TaskView } from "./task.js";

/** Where `/ws` is when an element has no `url`: set from the script's own origin. */
let defaultUrl = "/ws";

export function setDefaultUrl(url: string): void {
  defaultUrl = url;
}

interface Shared {
  client: Taskcast;
  users: number;
}

const connections = new Map<string, Shared>();

/** One connection per (url, token) for all elements on the page; closed with the last user. */
function acquire(url: string, token: TokenSource | null): Taskcast {
  const key = typeof token === "function" ? null : `${url} ${token ?? ""}`;
  const shared = key ? connections.get(key) : undefined;
  if (shared) {
    shared.users += 1;
    return shared.client;
  }
  const client = new Taskcast(url, { token: token ?? undefined });
  if (key) connections.set(key, { client, users: 1 });
  client.connect();
  return client;
}

function release(client: Taskcast): void {
  for (const [key, shared] of connections) {
    if (shared.client !== client) continue;
    shared.users -= 1;
    if (shared.users === 0) {
      connections.delete(key);
      client.close();
    }
    return;
  }
  client.close();
}

/** The `sub` claim of a JWT, read without checking it (the server does that). */
export function tokenSubject(token: string): string | null {
  try {
    const part = (token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/");
    const padded = part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=");
    const claims = JSON.parse(atob(padded)) as { sub?: unknown };
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}

const PROGRESS_STYLE = `
:host { display: block; font: var(--taskcast-font, inherit); color: var(--taskcast-color, inherit); }
:host([hidden]) { display: none; }
.label { font-weight: 600; margin-bottom: 0.25rem; }
.label:empty { display: none; }
.bar { height: var(--taskcast-bar-height, 0.6rem); background: var(--taskcast-track-color, #e5e7eb);
  border-radius: var(--taskcast-radius, 999px); overflow: hidden; }
.fill { height: 100%; width: 0; background: var(--taskcast-bar-color, #2563eb);
  transition: width var(--taskcast-transition, 0.2s) ease; }
:host([status=succeeded]) .fill { background: var(--taskcast-success-color, #16a34a); }
:host([status=failed]) .fill { background: var(--taskcast-failure-color, #dc2626); }
:host([status=cancelled]) .fill { background: var(--taskcast-cancelled-color, #9ca3af); }
.row { display: flex; justify-content: space-between; gap: 0.5rem; margin-top: 0.25rem;
  font-size: var(--taskcast-small-size, 0.875em); }
.status { text-transform: capitalize; }
.result, .error { margin: 0.25rem 0 0; font-size: var(--taskcast-small-size, 0.875em); }
.error { color: var(--taskcast-failure-color, #dc2626); }
.result:empty, .error:empty { display: none; }
`;

const PROGRESS_HTML = `
<div part="label" class="label"></div>
<div part="bar" class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0">
  <div part="fill" class="fill"></div>
</div>
<div class="row">
  <span part="message" class="message"></span>
  <span><span part="status" class="status"></span> <span part="percent" class="percent">0%</span></span>
</div>
<p part="result" class="result"></p>
<p part="error" class="error" role="alert"></p>
`;

function describeResult(result: unknown): string {
  if (result === null || result === undefined) return "";
  if (typeof result !== "object") return String(result);
  return Object.entries(result as Record<string, unknown>)
    .map(([key, value]) => `${key.replace(/_/g, " ")}: ${typeof value === "object" ? JSON.stringify(value) : String(value)}`)
    .join(" · ");
}

/** `<taskcast-progress task="…" token="…" [url] [label] [since]>`: one task, live. */
export class TaskcastProgress extends HTMLElement {
  static observedAttributes = ["task", "token", "url"];

  /** A token function instead of the `token` attribute (set before the element connects). */
  tokenSource: TokenSource | null = null;
  /** Seqs applied, in order: each step of the task exactly once. */
  readonly seqs: number[] = [];
  view: TaskView | null = null;

  private client: Taskcast | null = null;
  private follower: TaskFollower | null = null;
  private watchState: (() => void) | null = null;
  private readonly root: ShadowRoot;

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    this.root.innerHTML = `<style>${PROGRESS_STYLE}</style>${PROGRESS_HTML}`;
  }

  connectedCallback(): void {
    this.start();
  }

  disconnectedCallback(): void {
    this.stop();
  }

  attributeChangedCallback(_name: string, old: string | null, value: string | null): void {
    // Only a running element restarts: an upgrade reports every attribute before it connects.
    if (old !== value && this.client) {
      this.stop();
      this.start();
    }
  }

  private el(name: string): HTMLElement {
    return this.root.querySelector(`[part=${name}]`) as HTMLElement;
  }

  private start(): void {
    if (this.client) return;
    const task = this.getAttribute("task");
    const token = this.tokenSource ?? this.getAttribute("token");
    this.el("label").textContent = this.getAttribute("label") ?? "";
    if (!task) return;
    this.client = acquire(this.getAttribute("url") ?? defaultUrl, token);
    const client = this.client;
    this.watchState = () => this.setAttribute("connection", client.state);
    client.addEventListener("state", this.watchState);
    this.watchState();
    const options: FollowOptions = {
      since: Number(this.getAttribute("since") ?? 0),
      onEvent: (frame) => this.seqs.push(frame.seq),
    };
    this.follower = followTask(this.client, task, (view) => this.render(view), options);
  }

  private stop(): void {
    this.follower?.stop();
    this.follower = null;
    if (this.watchState) this.client?.removeEventListener("state", this.watchState);
    if (this.client) release(this.client);
    this.client = null;
  }

  private render(view: TaskView): void {
    this.view = view;
    const percent = Math.max(0, Math.min(100, Math.round(view.percent)));
    this.el("fill").style.width = `${percent}%`;
    this.el("bar").setAttribute("aria-valuenow", String(percent));
    this.el("percent").textContent = `${percent}%`;
    this.el("status").textContent = view.status;
    this.el("message").textContent = view.message ?? "";
    this.el("result").textContent = view.status === "succeeded" ? describeResult(view.result) : "";
    this.el("error").textContent = view.error?.message ?? "";
    this.setAttribute("status", view.status);
    this.setAttribute("percent", String(percent));
    if (view.historyLost) this.setAttribute("history-lost", "");
    this.dispatchEvent(new CustomEvent("taskcast-change", { detail: view, bubbles: true }));
  }
}

const TASKS_STYLE = `
:host { display: block; }
ol { list-style: none; margin: 0; padding: 0; display: grid; gap: var(--taskcast-gap, 0.75rem); }
.empty { color: var(--taskcast-muted-color, #6b7280); }
`;

/**
 * `<taskcast-tasks token="…" [user] [tasks="id id"] [limit]>`: every task of the signed-in
 * user that starts while the page is open (from the `user:` channel), plus `tasks`, newest
 * first, each a `<taskcast-progress>`.
 */
export class TaskcastTasks extends HTMLElement {
  tokenSource: TokenSource | null = null;
  private client: Taskcast | null = null;
  private unsubscribe: (() => void) | null = null;
  private readonly list: HTMLOListElement;
  private readonly empty: HTMLParagraphElement;
  private readonly shown = new Set<string>();

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${TASKS_STYLE}</style><p part="empty" class="empty">No tasks yet.</p><ol part="list"></ol>`;
    this.list = root.querySelector("ol") as HTMLOListElement;
    this.empty = root.querySelector("p") as HTMLParagraphElement;
  }

  connectedCallback(): void {
    if (this.client) return;
    const token = this.tokenSource ?? this.getAttribute("token");
    const user = this.getAttribute("user") ?? (typeof token === "string" ? tokenSubject(token) : null);
    this.client = acquire(this.getAttribute("url") ?? defaultUrl, token);
    for (const id of (this.getAttribute("tasks") ?? "").split(/\s+/).filter(Boolean)) this.add(id, "");
    if (user) {
      const onEvent = (event: TaskcastEvent) => {
        if (event.task_id && !this.shown.has(event.task_id)) {
          const name = event.type === "task.queued" ? (event.data.name ?? "") : "";
          this.add(event.task_id, name);
        }
      };
      // `ready` once the user channel is subscribed: every task started from then on shows
      const sub = this.client.subscribe(`user:${user}`, onEvent, {
        onSubscribed: () => this.setAttribute("ready", ""),
      });
      this.unsubscribe = () => sub.unsubscribe();
    }
  }

  disconnectedCallback(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.client) release(this.client);
    this.client = null;
  }

  private add(taskId: string, name: string): void {
    this.shown.add(taskId);
    const item = document.createElement("li");
    item.setAttribute("part", "item");
    const progress = document.createElement("taskcast-progress") as TaskcastProgress;
    progress.tokenSource = this.tokenSource;
    for (const attr of ["token", "url"]) {
      const value = this.getAttribute(attr);
      if (value !== null) progress.setAttribute(attr, value);
    }
    progress.setAttribute("label", name || `Task ${taskId.slice(0, 8)}`);
    progress.setAttribute("task", taskId);
    item.append(progress);
    this.list.prepend(item);
    this.empty.hidden = true;
    const limit = Number(this.getAttribute("limit") ?? 20);
    while (this.list.children.length > limit) this.list.lastElementChild?.remove();
  }
}

/** Define both elements (once; later calls do nothing). */
export function defineElements(): void {
  if (!customElements.get("taskcast-progress")) customElements.define("taskcast-progress", TaskcastProgress);
  if (!customElements.get("taskcast-tasks")) customElements.define("taskcast-tasks", TaskcastTasks);
}
