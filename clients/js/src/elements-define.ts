// The entry of the served `taskcast-elements.js` (a classic script): the elements talk to the
// server the script came from, so a page elsewhere (Django, Flask) needs only the <script> tag.
import { defineElements, setDefaultUrl } from "./elements.js";

const script = document.currentScript as HTMLScriptElement | null;
if (script?.src) setDefaultUrl(new URL("/ws", script.src).toString());
defineElements();

export { Taskcast } from "./client.js";
export { TaskcastProgress, TaskcastTasks } from "./elements.js";
