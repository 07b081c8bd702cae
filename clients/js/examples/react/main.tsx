// A React app following a background job with @taskcast/client/react, and adding its own toasts.
//
// The app's backend would hand it the taskcast URL, a token and the task id; this example
// takes them from its own address: ?server=https://taskcast.example.com&token=…&task=…
import { StrictMode, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { TaskcastProvider, useChannel, useConnectionState, useTask } from "@taskcast/client/react";

const params = new URLSearchParams(window.location.search);
const server = params.get("server") ?? window.location.origin;
const token = params.get("token") ?? "";
const taskId = params.get("task");
const user = JSON.parse(atob((token.split(".")[1] ?? "e30").replace(/-/g, "+").replace(/_/g, "/"))).sub as string;

// snippet: react-task
function TaskCard({ id }: { id: string }) {
  const task = useTask(id);
  if (!task) return <p>Loading…</p>;
  return (
    <section className="task" data-status={task.status}>
      <progress max={100} value={task.percent} />
      <span className="percent">{Math.round(task.percent)}%</span>
      <p className="message">{task.message}</p>
      <p className="status">{task.status}</p>
      {task.status === "succeeded" && <pre className="result">{JSON.stringify(task.result)}</pre>}
      {task.error && <p className="error">{task.error.message}</p>}
      {task.historyLost && <p className="lost">Some steps were missed; showing the latest state.</p>}
    </section>
  );
}
// end snippet

function ConnectionBadge() {
  const state = useConnectionState();
  return <span className="connection" data-state={state}>{state === "open" ? "Live" : state}</span>;
}

/** Every step of the task in order: the channel from seq 1, each seq once across reconnects. */
function Steps({ id }: { id: string }) {
  const { events } = useChannel(`task:${id}`, { since: 0, limit: 1000 });
  return (
    <ol className="steps">
      {events
        .filter((frame) => frame.event.type === "task.progress")
        .map((frame) => (
          <li key={frame.seq} data-seq={frame.seq}>
            {frame.event.type === "task.progress" ? frame.event.data.message : ""}
          </li>
        ))}
    </ol>
  );
}

// snippet: react-toasts
interface Toast {
  id: string;
  title: string;
  message: string;
}

/** Toasts are the app's: here, one per notification on the user's channel. */
function Toasts({ user }: { user: string }) {
  const { events } = useChannel(`user:${user}`);
  const [toasts, setToasts] = useState<Toast[]>([]);
  const shown = useRef(new Set<string>());
  useEffect(() => {
    for (const { event } of events) {
      if (event.type !== "notification" || shown.current.has(event.id)) continue;
      shown.current.add(event.id);
      const toast = { id: event.id, title: event.data.title, message: event.data.message ?? "" };
      setToasts((list) => [...list, toast]);
      setTimeout(() => setToasts((list) => list.filter((t) => t.id !== toast.id)), 8000);
    }
  }, [events]);
  return (
    <div className="toasts" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} className="toast" role="status">
          <strong>{t.title}</strong> {t.message}
        </div>
      ))}
    </div>
  );
}
// end snippet

function App() {
  return (
    <TaskcastProvider url={`${server}/ws`} token={token}>
      <header>
        Orders <ConnectionBadge />
      </header>
      <Toasts user={user} />
      {taskId ? (
        <>
          <TaskCard id={taskId} />
          <Steps id={taskId} />
        </>
      ) : (
        <p>No task in the address (?task=…).</p>
      )}
    </TaskcastProvider>
  );
}

createRoot(document.getElementById("root") as HTMLElement).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
