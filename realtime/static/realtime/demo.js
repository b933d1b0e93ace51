// @ts-check
/**
 * The /demo/ page: sign in, a room with live messages, who is in the room and who is typing
 * (presence and signals), a shared JSON resource with optimistic concurrency, the connection
 * state and announcements. Plain ES module, no build step.
 * Everything users write is rendered with textContent, never as HTML.
 *
 * Query parameters: `room` (default `lobby`), `backoff_initial` and `backoff_max` (ms).
 */
import { RealtimeClient, RealtimeError } from "./client.js";

/** @param {string} id @returns {any} */
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
/** @param {string} name @param {number} fallback */
function numberParam(name, fallback) {
  const value = Number(params.get(name));
  return Number.isFinite(value) && value > 0 ? value : fallback;
}
const config = {
  room: params.get("room") || "lobby",
  backoffInitial: numberParam("backoff_initial", 500),
  backoffMax: numberParam("backoff_max", 10000),
};
if (config.backoffMax < config.backoffInitial) config.backoffMax = config.backoffInitial;

/** @type {{access: string, refresh: string, username: string} | null} */
let tokens = null;
/** @type {RealtimeClient | null} */
let client = null;
/** @type {import("./client.js").Subscription | null} */
let roomSub = null;
let roomStream = "";
let sending = 0;
/** @type {{id: number, version: number, data: any} | null} */
let resource = null;
/** @type {import("./client.js").Subscription | null} */
let resourceSub = null;
let dirty = false;
/** @type {{version: number, data: any} | null} */
let conflict = null;

// Exposed for debugging from the console (and for the end-to-end tests).
/** @type {any} */ (window).realtimeDemo = {
  get client() {
    return client;
  },
  get resource() {
    return resource;
  },
  config,
};

// HTTP -----------------------------------------------------------------------------------------

/**
 * @param {string} method
 * @param {string} url
 * @param {any} [body]
 * @param {boolean} [auth]
 * @returns {Promise<{status: number, body: any}>}
 */
async function http(method, url, body = undefined, auth = false) {
  /** @type {Record<string, string>} */
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (auth && tokens) headers.Authorization = `Bearer ${tokens.access}`;
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  });
  let parsed = null;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  return { status: response.status, body: parsed };
}

/** The client's tokenProvider: a fresh access token from the refresh token. */
async function refreshAccess() {
  if (!tokens) throw new Error("signed out");
  const { status, body } = await http("POST", "/api/auth/token/refresh/", { refresh: tokens.refresh });
  if (status !== 200 || !body || typeof body.access !== "string") throw new Error(`token refresh failed (${status})`);
  tokens.access = body.access;
  // Refresh tokens rotate: the one just used is refused from now on (docs/protocol.md, "Credentials").
  if (typeof body.refresh === "string") tokens.refresh = body.refresh;
  return body.access;
}

/**
 * An authenticated REST call that refreshes the access token once on 401.
 * @param {string} method
 * @param {string} url
 * @param {any} [body]
 */
async function api(method, url, body) {
  let result = await http(method, url, body, true);
  if (result.status === 401 && tokens) {
    await refreshAccess();
    result = await http(method, url, body, true);
  }
  return result;
}

// Connection state and announcements ---------------------------------------------------------------

/** @param {string} state */
function showState(state) {
  const el = $("state");
  el.dataset.state = state;
  el.textContent = state;
  const error = client && client.closeError;
  el.title = state === "closed" && error ? `stopped: ${error.code}` : "";
}

/** @param {import("./client.js").PushFrame} frame */
function onPush(frame) {
  const data = frame.data || {};
  if (frame.event === "system.announcement") {
    $("announcement-from").textContent = data.from && data.from.username ? `from ${data.from.username}:` : "";
    $("announcement-text").textContent = String(data.text ?? "");
    $("announcement").hidden = false;
  } else if (frame.event === "system.degraded") {
    $("state").title = "the server's broker is degraded; messages are still stored";
  } else if (frame.event === "system.recovered") {
    $("state").title = "";
  } else if (frame.event === "stream.signal" && data.stream === roomStream) {
    showTyping(data.from, data.data);
  }
}

$("announcement-dismiss").addEventListener("click", () => {
  $("announcement").hidden = true;
});

// Sign in / out -----------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", async (/** @type {Event} */ event) => {
  event.preventDefault();
  const username = $("username").value.trim();
  const password = $("password").value;
  $("signin-error").textContent = "";
  $("signin").disabled = true;
  try {
    const { status, body } = await http("POST", "/api/auth/token/", { username, password });
    if (status !== 200 || !body || typeof body.access !== "string") {
      $("signin-error").textContent = status === 401 ? "Wrong username or password." : `Sign-in failed (${status}).`;
      return;
    }
    tokens = { access: body.access, refresh: body.refresh, username };
    $("password").value = "";
    startSession();
  } catch (exc) {
    $("signin-error").textContent = `Sign-in failed: ${exc}`;
  } finally {
    $("signin").disabled = false;
  }
});

$("signout").addEventListener("click", () => {
  stopSession();
});

function startSession() {
  if (!tokens) return;
  stopSession(false);
  client = new RealtimeClient("/ws/", {
    token: tokens.access,
    tokenProvider: refreshAccess,
    backoffInitial: config.backoffInitial,
    backoffMax: config.backoffMax,
    reconnectOnIdle: true,
    logger: console,
  });
  const current = client;
  client.onStateChange((_old, now) => {
    if (client === current) showState(now);
  });
  client.onPush(onPush);
  showState(client.state);
  $("whoami").textContent = tokens.username;
  $("signin-panel").hidden = true;
  $("session-panel").hidden = false;
  $("app").hidden = false;
  client.connect().catch((/** @type {RealtimeError} */ error) => {
    if (client !== current) return;
    $("signin-error").textContent = `Disconnected: ${error.code}. Sign in again.`;
    stopSession();
  });
  joinRoom(config.room);
}

/** @param {boolean} [showSignIn] */
function stopSession(showSignIn = true) {
  if (client) {
    const old = client;
    client = null;
    old.close();
  }
  roomSub = null;
  resourceSub = null;
  resource = null;
  sending = 0;
  if (showSignIn) {
    tokens = null;
    showState("signed-out");
    $("signin-panel").hidden = false;
    $("session-panel").hidden = true;
    $("app").hidden = true;
    $("messages").replaceChildren();
    $("members").replaceChildren();
    $("typing").textContent = "";
    closeResourceView();
  }
}

// The room ------------------------------------------------------------------------------------------

const TYPING_SHOWN_MS = 3000; // a typing signal is shown this long unless renewed
const TYPING_EVERY_MS = 1500; // at most one typing signal per this while keys are pressed
/** @type {Map<string, ReturnType<typeof setTimeout>>} who is typing, with the timer that hides them */
const typing = new Map();
let lastTypingSignal = 0;

/** @param {Map<number, import("./client.js").PresenceUser>} presence */
function showMembers(presence) {
  const members = [...presence.values()].sort((a, b) => a.username.localeCompare(b.username));
  $("members").replaceChildren(
    ...members.map((user) => {
      const item = document.createElement("span");
      item.className = "member";
      item.dataset.userId = String(user.id);
      item.textContent = user.sessions && user.sessions > 1 ? `${user.username} (${user.sessions})` : user.username;
      return item;
    }),
  );
}

function renderTyping() {
  const names = [...typing.keys()].sort();
  $("typing").textContent =
    names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

/**
 * @param {{username?: string} | undefined} from
 * @param {any} signal
 */
function showTyping(from, signal) {
  const name = from && from.username;
  if (!name || !signal || typeof signal !== "object") return;
  const timer = typing.get(name);
  if (timer !== undefined) clearTimeout(timer);
  if (signal.typing) {
    typing.set(
      name,
      setTimeout(() => {
        typing.delete(name);
        renderTyping();
      }, TYPING_SHOWN_MS),
    );
  } else {
    typing.delete(name);
  }
  renderTyping();
}

/** @param {boolean} active */
function signalTyping(active) {
  if (!client || !roomStream || !roomSub || roomSub.phase !== "live") return;
  const now = Date.now();
  if (active && now - lastTypingSignal < TYPING_EVERY_MS) return;
  lastTypingSignal = active ? now : 0;
  // Ephemeral: a signal that is refused or lost is not sent again.
  client.call("stream.signal", { stream: roomStream, data: { typing: active } }).catch(() => {});
}

/** @param {import("./client.js").PushFrame} frame */
function messageItem(frame) {
  const data = frame.data || {};
  const li = document.createElement("li");
  li.className = "message";
  li.dataset.offset = String(frame.offset);
  const sender = document.createElement("span");
  sender.className = "sender";
  sender.textContent = data.sender && data.sender.username ? data.sender.username : "?";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = String(data.text ?? "");
  const time = document.createElement("time");
  time.className = "muted";
  time.dateTime = String(data.ts ?? "");
  time.textContent = data.ts ? new Date(data.ts).toLocaleTimeString() : "";
  li.append(sender, text, time);
  return li;
}

function scrollMessages() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

/** @param {string} name */
async function joinRoom(name) {
  if (!client) return;
  if (roomSub) roomSub.unsubscribe();
  const stream = `room:${name}`;
  roomStream = stream;
  $("room-name").textContent = stream;
  $("room-input").value = name;
  const list = $("messages");
  list.replaceChildren();
  $("members").replaceChildren();
  for (const timer of typing.values()) clearTimeout(timer);
  typing.clear();
  renderTyping();
  const current = client;
  const sub = client.subscribe(stream, {
    onPresence: (presence) => {
      if (roomSub === sub) showMembers(presence);
    },
    onEvent: (frame) => {
      if (frame.event === "message.new") {
        list.append(messageItem(frame));
        scrollMessages();
      }
    },
    onEnd: (error) => {
      // not_recovered: the log was reset or pruned past our position: reload the room.
      if (error && error.code === "not_recovered" && client === current) void joinRoom(name);
    },
  });
  roomSub = sub;
  let ack;
  try {
    ack = await sub.ready;
  } catch (error) {
    $("send-status").textContent = `cannot join ${stream}: ${error.code || error}`;
    return;
  }
  // The last 50 messages before we joined, above the live ones.
  const head = Number(ack.offset) || 0;
  if (head > 0 && roomSub === sub) {
    try {
      const history = await current.call("stream.history", { stream, since: Math.max(0, head - 50), limit: 50 });
      if (roomSub === sub) {
        list.prepend(...history.events.filter((f) => f.event === "message.new").map(messageItem));
        scrollMessages();
      }
    } catch (error) {
      current._log("history failed", error);
    }
  }
}

$("room-form").addEventListener("submit", (/** @type {Event} */ event) => {
  event.preventDefault();
  const name = $("room-input").value.trim();
  if (name) void joinRoom(name);
});

function showSending() {
  $("send-status").textContent = sending > 0 ? `sending ${sending}…` : "";
}

$("send-form").addEventListener("submit", async (/** @type {Event} */ event) => {
  event.preventDefault();
  if (!client || !roomStream) return;
  const input = $("message-input");
  const text = input.value;
  if (!text.trim()) return;
  input.value = "";
  signalTyping(false);
  sending += 1;
  showSending();
  const current = client;
  try {
    // Retried with the same id until acked, across reconnects: never sent twice.
    await current.call("message.send", { stream: roomStream, text });
    if (client === current) {
      sending -= 1;
      showSending();
    }
  } catch (error) {
    if (client !== current) return;
    sending -= 1;
    $("send-status").textContent = `not sent: ${error.code || error}`;
  }
});

$("message-input").addEventListener("input", () => {
  signalTyping($("message-input").value.length > 0);
});

// The shared resource ------------------------------------------------------------------------------

/** @param {string} text */
function resourceStatus(text) {
  $("resource-status").textContent = text;
}

function showResourceInfo() {
  $("resource-info").textContent = resource
    ? `Resource #${resource.id}, version ${resource.version}${dirty ? " (edited)" : ""}`
    : "No resource open.";
  $("resource-save").disabled = !resource;
}

function closeResourceView() {
  resource = null;
  dirty = false;
  conflict = null;
  $("conflict").hidden = true;
  $("resource-remote").hidden = true;
  $("resource-editor").value = "{}";
  resourceStatus("");
  showResourceInfo();
}

/** @param {{id: number, version: number, data: any}} loaded */
function openResource(loaded) {
  if (!client) return;
  const same = resource && resource.id === loaded.id;
  resource = { id: loaded.id, version: loaded.version, data: loaded.data };
  dirty = false;
  conflict = null;
  $("conflict").hidden = true;
  $("resource-remote").hidden = true;
  $("resource-editor").value = JSON.stringify(loaded.data, null, 2);
  $("resource-id-input").value = String(loaded.id);
  showResourceInfo();
  if (same && resourceSub && !resourceSub.ended) return;
  if (resourceSub) resourceSub.unsubscribe();
  const id = loaded.id;
  resourceSub = client.subscribe(`resource:${id}`, {
    onEvent: (frame) => {
      if (frame.event !== "resource.updated" || !resource || resource.id !== id) return;
      const data = frame.data || {};
      if (typeof data.version !== "number" || data.version <= resource.version) return; // ours, or old
      const by = data.updated_by && data.updated_by.username ? data.updated_by.username : "someone";
      if (!dirty) {
        resource.version = data.version;
        resource.data = data.data;
        $("resource-editor").value = JSON.stringify(data.data, null, 2);
        resourceStatus(`updated live to version ${data.version} by ${by}`);
        showResourceInfo();
      } else {
        $("resource-remote").textContent = `${by} saved version ${data.version}; your edit is based on version ${resource.version}.`;
        $("resource-remote").hidden = false;
      }
    },
  });
}

$("resource-editor").addEventListener("input", () => {
  if (resource && !dirty) {
    dirty = true;
    showResourceInfo();
  }
});

$("resource-open-form").addEventListener("submit", async (/** @type {Event} */ event) => {
  event.preventDefault();
  if (!client) return;
  const id = Number($("resource-id-input").value);
  if (!Number.isInteger(id) || id < 1) {
    resourceStatus("enter a resource id");
    return;
  }
  resourceStatus("opening…");
  try {
    const loaded = await client.call("resource.get", { id });
    openResource(loaded);
    resourceStatus(`opened version ${loaded.version}`);
  } catch (error) {
    resourceStatus(error.code === "not_found" ? `resource ${id} does not exist` : `cannot open: ${error.code || error}`);
  }
});

/** @returns {{ok: true, data: any} | {ok: false}} */
function editorData() {
  try {
    const data = JSON.parse($("resource-editor").value);
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      resourceStatus("the resource must be a JSON object");
      return { ok: false };
    }
    return { ok: true, data };
  } catch (error) {
    resourceStatus(`invalid JSON: ${error.message}`);
    return { ok: false };
  }
}

$("resource-create").addEventListener("click", async () => {
  if (!client) return;
  const parsed = editorData();
  if (!parsed.ok) return;
  resourceStatus("creating…");
  try {
    const { status, body } = await api("POST", "/api/resources/", { data: parsed.data });
    if (status !== 201) {
      resourceStatus(`create failed (${status})`);
      return;
    }
    openResource(body);
    resourceStatus(`created resource ${body.id}`);
  } catch (error) {
    resourceStatus(`create failed: ${error}`);
  }
});

$("resource-save").addEventListener("click", async () => {
  if (!client || !resource) return;
  const parsed = editorData();
  if (!parsed.ok) return;
  const target = resource;
  const version = target.version;
  resourceStatus("saving…");
  $("resource-save").disabled = true;
  try {
    const ack = await client.call("resource.update", { id: target.id, version, data: parsed.data });
    if (resource !== target) return;
    target.version = ack.version;
    target.data = parsed.data;
    dirty = false;
    conflict = null;
    $("conflict").hidden = true;
    $("resource-remote").hidden = true;
    resourceStatus(`saved version ${ack.version}`);
  } catch (error) {
    if (resource !== target) return;
    if (error instanceof RealtimeError && error.code === "conflict") {
      conflict = { version: error.data.current_version, data: error.data.current_data };
      $("conflict-version").textContent = String(conflict.version);
      $("conflict-keep-version").textContent = String(conflict.version);
      $("conflict-data").textContent = JSON.stringify(conflict.data, null, 2);
      $("conflict").hidden = false;
      resourceStatus(`conflict: your save was based on version ${version}`);
    } else {
      resourceStatus(`not saved: ${error.code || error}`);
    }
  } finally {
    showResourceInfo();
  }
});

$("conflict-reload").addEventListener("click", () => {
  if (!resource || !conflict) return;
  const theirs = conflict;
  openResource({ id: resource.id, version: theirs.version, data: theirs.data });
  resourceStatus(`loaded version ${theirs.version}`);
});

$("conflict-keep").addEventListener("click", () => {
  if (!resource || !conflict) return;
  // Merge by hand: the editor keeps the user's text; the next save is based on their version.
  resource.version = conflict.version;
  resource.data = conflict.data;
  conflict = null;
  $("conflict").hidden = true;
  $("resource-remote").hidden = true;
  resourceStatus(`edit and save to overwrite version ${resource.version}`);
  showResourceInfo();
});

showState("signed-out");
