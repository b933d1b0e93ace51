// The task board page: sign in, load the board, follow board:ID live, add tasks with task.create.
import { RealtimeClient, RealtimeError } from "/static/realtime/client.js";

const boardId = Number(document.body.dataset.board);
const $ = (id) => document.getElementById(id);
const shown = new Set(); // task ids on the page: the snapshot and the stream may both carry one

function showTask(task) {
  if (shown.has(task.id)) return;
  shown.add(task.id);
  const item = document.createElement("li");
  item.dataset.taskId = String(task.id);
  item.textContent = task.title; // user text as text, never as HTML
  $("tasks").append(item);
}

function showError(error) {
  const code = error instanceof RealtimeError ? error.code : "error";
  $("error").dataset.code = code;
  $("error").textContent = `${code}: ${error.message}`;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

async function start(username, password) {
  let tokens = await post("/api/auth/token/", { username, password });
  const refresh = async () => {
    tokens = await post("/api/auth/token/refresh/", { refresh: tokens.refresh });
    return tokens.access;
  };
  // The snapshot first, with the stream's position read before it ...
  const response = await fetch(`/boards/${boardId}/tasks/`, { headers: { Authorization: `Bearer ${tokens.access}` } });
  if (!response.ok) throw new Error(`board ${boardId}: ${response.status}`);
  const board = await response.json();
  $("title").textContent = board.board;
  board.tasks.forEach(showTask);

  const client = new RealtimeClient("/ws/", { token: tokens.access, tokenProvider: refresh });
  client.onStateChange((_, now) => {
    $("state").dataset.state = now;
    $("state").textContent = now;
  });
  await client.connect();
  // ... then subscribe from that position: whatever was saved since is replayed, in order.
  const subscription = client.subscribe(`board:${boardId}`, {
    since: board.position.offset,
    epoch: board.position.epoch,
    onEvent: (frame) => {
      if (frame.event === "task.created") showTask(frame.data);
    },
    onEnd: (error) => {
      if (error) showError(error);
    },
  });
  await subscription.ready;
  $("tasks").dataset.live = "true";
  $("new-task").hidden = false;
  window.taskboard = { client, subscription };
  return client;
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const client = await start($("username").value, $("password").value);
    $("login").hidden = true;
    $("new-task").addEventListener("submit", async (submitted) => {
      submitted.preventDefault();
      $("error").textContent = "";
      delete $("error").dataset.code;
      try {
        // The ack is the task; it is shown when its task.created arrives on the stream.
        await client.call("task.create", { board: boardId, title: $("task-title").value });
        $("task-title").value = "";
      } catch (error) {
        showError(error);
      }
    });
  } catch (error) {
    showError(error);
  }
});
