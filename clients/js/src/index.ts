// @taskcast/client: the browser side of taskcast.
export {
  CLOSE_UNAUTHORIZED,
  Channel,
  Taskcast,
  type ConnectionState,
  type EventHandler,
  type SocketFactory,
  type SocketLike,
  type SubscribeOptions,
  type Subscription,
  type TaskcastOptions,
  type TokenSource,
} from "./client.js";
export { TERMINAL, applyEvent, applySubscribed, emptyTask, type TaskStatus, type TaskView } from "./task.js";
export { followTask, type FollowOptions, type TaskFollower } from "./follow.js";
export type * from "./generated.js";
