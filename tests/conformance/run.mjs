// Plays the client conformance fixtures (tests/conformance/*.json) against the browser client
// realtime/static/realtime/client.js, in Node without a browser: the client gets a scripted fake
// WebSocket class (its `WebSocket` option) and a virtual clock (globalThis.setTimeout /
// clearTimeout, read by the client at call time). The step language is in README.md beside
// this file; tests/unit/client/test_conformance.py plays the same fixtures against the Python
// client, moving its clock the same way (STEP seconds per tick).
//
//   node tests/conformance/run.mjs [--dir=FIXTURE_DIR] [substring of a scenario name ...]
//
// Prints one line per scenario and "N passed, N failed"; exits 1 if any failed.

import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const clientPath = join(here, "..", "..", "realtime", "static", "realtime", "client.js");

const STEP = 0.05; // seconds of virtual time per tick, as in the Python runner
const RECONNECT_LIMIT = 15.0;
const NO_RECONNECT_WAIT = 30.0;
const WELCOME = { session_id: "s", user: { id: 1, username: "alice" }, max_message_bytes: 1048576 };

// The virtual clock ------------------------------------------------------------------------

const clock = {
  now: 0, // ms
  nextId: 1,
  /** @type {Map<number, {at: number, fn: () => void}>} */
  timers: new Map(),
  reset() {
    this.now = 0;
    this.timers.clear();
  },
};
globalThis.setTimeout = /** @type {any} */ (
  (/** @type {() => void} */ fn, /** @type {number} */ ms = 0) => {
    const id = clock.nextId++;
    clock.timers.set(id, { at: clock.now + Math.max(0, Number(ms) || 0), fn });
    return id;
  }
);
globalThis.clearTimeout = /** @type {any} */ ((/** @type {number} */ id) => clock.timers.delete(id));

const realSetImmediate = globalThis.setImmediate;

async function settle() {
  // Each macrotask turn drains every pending promise callback.
  for (let i = 0; i < 5; i++) await new Promise((resolve) => realSetImmediate(resolve));
}

/** Fire every timer that is due, earliest first, letting promises run between them. */
async function fireDue() {
  for (;;) {
    let next = null;
    for (const [id, timer] of clock.timers) {
      if (timer.at <= clock.now + 1e-6 && (next === null || timer.at < next[1].at)) next = [id, timer];
    }
    if (next === null) return;
    clock.timers.delete(next[0]);
    next[1].fn();
    await settle();
  }
}

// The fake WebSocket ---------------------------------------------------------------------------

class ScriptedServer {
  constructor() {
    /** @type {FakeWebSocket[]} welcomed connections */
    this.sockets = [];
    /** @type {(string | null)[]} */
    this.tokens = [];
    /** @type {[number | null, string][]} */
    this.refusals = [];
    this.attempts = 0;
    this.attemptsAtLastEnd = 0;
    /** @type {FakeWebSocket[]} attempts not answered yet */
    this.connecting = [];
  }

  /** Answer each new connection attempt: a welcome, or a scripted refusal. */
  answer() {
    const pending = this.connecting;
    this.connecting = [];
    for (const ws of pending) {
      this.attempts += 1;
      const refusal = this.refusals.shift();
      if (refusal !== undefined) {
        this.attemptsAtLastEnd = this.attempts;
        ws.serverClose(refusal[0], refusal[1]);
        continue;
      }
      ws.readyState = 1;
      this.sockets.push(ws);
      this.tokens.push(new URL(ws.url).searchParams.get("token"));
      ws.deliver({ event: "session.welcome", data: { ...WELCOME } });
    }
  }
}

/** @type {ScriptedServer} */
let server = new ScriptedServer();

class FakeWebSocket {
  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} */
    this.sent = [];
    /** @type {((event: {data: string}) => void) | null} */
    this.onmessage = null;
    /** @type {((event: {code: number, reason: string}) => void) | null} */
    this.onclose = null;
    /** @type {(() => void) | null} */
    this.onerror = null;
    server.connecting.push(this);
  }

  /** @param {string} text */
  send(text) {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(text));
  }

  /** @param {number} [code] @param {string} [reason] */
  close(code = 1000, reason = "") {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    // The browser reports the close later, as a task.
    realSetImmediate(() => this._closed(code, reason));
  }

  /** @param {any} frame */
  deliver(frame) {
    if (this.readyState === 1 && this.onmessage) this.onmessage({ data: JSON.stringify(frame) });
  }

  /** @param {number | null} code @param {string} reason */
  serverClose(code, reason) {
    this._closed(code === null ? 1006 : code, reason);
  }

  /** @param {number} code @param {string} reason */
  _closed(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }
}

// Matching -------------------------------------------------------------------------------------

class ConformanceFailure extends Error {}

/** @param {any} value @param {Record<string, string>} names */
function substitute(value, names) {
  if (typeof value === "string" && value.startsWith("$")) {
    if (!(value.slice(1) in names)) throw new ConformanceFailure(`${value} is not bound by an earlier step`);
    return names[value.slice(1)];
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, names));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, names)]));
  }
  return value;
}

/** Objects match when every key of the pattern matches (extra keys are fine); the rest exactly. */
function matches(/** @type {any} */ pattern, /** @type {any} */ actual) {
  if (Array.isArray(pattern)) {
    return Array.isArray(actual) && actual.length === pattern.length && pattern.every((p, i) => matches(p, actual[i]));
  }
  if (pattern !== null && typeof pattern === "object") {
    return (
      actual !== null &&
      typeof actual === "object" &&
      !Array.isArray(actual) &&
      Object.entries(pattern).every(([k, v]) => k in actual && matches(v, actual[k]))
    );
  }
  return pattern === actual;
}

const show = (/** @type {any} */ v) => JSON.stringify(v);

// The player -------------------------------------------------------------------------------------

/** @param {any} module @param {Record<string, any>} options */
async function play(module, options, steps) {
  clock.reset();
  server = new ScriptedServer();
  /** @type {Record<string, string>} */
  const names = {};
  /** @type {Record<string, {done: boolean, result?: any, error?: string | null}>} */
  const calls = {};
  /** @type {Record<string, {done: boolean, error?: string | null, offsets: number[]}>} */
  const subs = {};
  /** @type {Record<string, any>} */
  const subscriptions = {};
  const tokens = [...(options.token_provider ?? [])];
  const client = new module.RealtimeClient("ws://fake/ws/", {
    token: options.token ?? "t0",
    tokenProvider: options.token_provider
      ? async () => {
          const token = tokens.shift();
          if (token === undefined) throw new Error("no fresh token");
          return token;
        }
      : null,
    ackTimeout: (options.ack_timeout ?? 5.0) * 1000,
    reconnectOnIdle: options.reconnect_on_idle ?? false,
    maxInFlight: options.max_in_flight ?? 64,
    idPrefix: options.id_prefix ?? "js",
    WebSocket: FakeWebSocket,
  });
  let current = 0;
  let read = 0;
  const socket = () => server.sockets[current];
  const unread = () => socket().sent.slice(read);

  const tick = async () => {
    await settle();
    server.answer();
    await settle();
  };
  const advance = async (/** @type {number} */ seconds) => {
    const ticks = Math.round(seconds / STEP);
    for (let i = 0; i < ticks; i++) {
      clock.now += STEP * 1000;
      await fireDue();
      await tick();
    }
  };

  const connected = client.connect();
  connected.catch(() => {});
  await tick();
  if (client.state !== "open") throw new ConformanceFailure(`the client did not open: ${client.state}`);

  try {
    for (const [number, step] of steps.entries()) {
      try {
        await runStep(step);
      } catch (exc) {
        if (exc instanceof ConformanceFailure) {
          throw new ConformanceFailure(`step ${number + 1} ${show(step)}: ${exc.message}`);
        }
        throw exc;
      }
    }
  } finally {
    client.close();
    await settle();
  }

  /** @param {Record<string, any>} step */
  async function runStep(step) {
    const kind = Object.keys(step).find((k) => k !== "as" && k !== "within");
    const arg = step[kind];
    switch (kind) {
      case "feed":
        socket().deliver(substitute(arg, names));
        break;
      case "close":
        socket().serverClose(arg[0], arg[1]);
        server.attemptsAtLastEnd = server.attempts;
        break;
      case "refuse_next":
        server.refusals.push([arg[0], arg[1]]);
        break;
      case "call": {
        const outcome = (calls[step.as] = { done: false });
        const callOptions = arg.id !== undefined ? { id: arg.id } : {};
        client.call(arg.event, arg.data ?? null, callOptions).then(
          (/** @type {any} */ result) => Object.assign(outcome, { done: true, result, error: null }),
          (/** @type {any} */ exc) => Object.assign(outcome, { done: true, error: exc.code }),
        );
        break;
      }
      case "subscribe": {
        const outcome = (subs[arg.stream] = { done: false, offsets: [] });
        subscriptions[arg.stream] = client.subscribe(arg.stream, {
          since: arg.since ?? null,
          epoch: arg.epoch ?? null,
          onEvent: (/** @type {any} */ frame) => outcome.offsets.push(frame.offset),
          onEnd: (/** @type {any} */ error) => Object.assign(outcome, { done: true, error: error ? error.code : null }),
        });
        break;
      }
      case "unsubscribe":
        subscriptions[arg].unsubscribe();
        break;
      case "close_client":
        client.close();
        server.attemptsAtLastEnd = server.attempts;
        break;
      case "advance":
        await advance(arg);
        break;
      case "expect_reconnect":
        await tick();
        if (arg) {
          const within = step.within ?? RECONNECT_LIMIT;
          let waited = 0;
          while (server.sockets.length <= current + 1 && waited < within - 1e-9) {
            await advance(STEP);
            waited += STEP;
          }
          if (server.sockets.length <= current + 1) {
            throw new ConformanceFailure(`no new connection within ${within} s (state ${client.state})`);
          }
          current = server.sockets.length - 1;
          read = 0;
        } else {
          await advance(NO_RECONNECT_WAIT);
          if (server.attempts !== server.attemptsAtLastEnd) {
            throw new ConformanceFailure(`the client tried to reconnect (state ${client.state})`);
          }
        }
        return;
      default:
        await tick();
        check(kind, arg, step);
        return;
    }
    await tick();
  }

  /** @param {string | undefined} kind @param {any} arg @param {Record<string, any>} step */
  function check(kind, arg, step) {
    switch (kind) {
      case "expect_sent":
      case "expect_resume": {
        const pattern = kind === "expect_resume" ? { event: "stream.subscribe", data: arg } : substitute(arg, names);
        const pending = unread();
        if (pending.length === 0) throw new ConformanceFailure("nothing was sent");
        const frame = pending[0];
        const exact = kind !== "expect_resume" || show(sortKeys(frame.data)) === show(sortKeys(arg));
        if (!matches(pattern, frame) || !exact) throw new ConformanceFailure(`sent ${show(frame)}`);
        read += 1;
        if (step.as) names[step.as] = frame.id;
        return;
      }
      case "expect_nothing_sent":
        if (unread().length > 0) throw new ConformanceFailure(`sent ${show(unread())}`);
        return;
      case "expect_state":
        if (client.state !== arg) throw new ConformanceFailure(`state is ${client.state}`);
        return;
      case "expect_token":
        if (server.tokens[current] !== arg) throw new ConformanceFailure(`connected with token ${server.tokens[current]}`);
        return;
      case "expect_pending": {
        const outcome = calls[arg];
        if (outcome.done) throw new ConformanceFailure(`the call finished: ${show(outcome)}`);
        return;
      }
      case "expect_error": {
        const outcome = calls[arg.call];
        if (!outcome.done || outcome.error !== arg.code) throw new ConformanceFailure(`call ${show(outcome)}`);
        return;
      }
      case "expect_call_result": {
        const outcome = calls[arg.call];
        if (!outcome.done || outcome.error !== null || !matches(arg.data, outcome.result)) {
          throw new ConformanceFailure(`call ${show(outcome)}`);
        }
        return;
      }
      case "expect_events": {
        const offsets = subs[arg.stream].offsets;
        if (show(offsets) !== show(arg.offsets)) throw new ConformanceFailure(`events delivered: ${show(offsets)}`);
        return;
      }
      case "expect_presence": {
        const sub = subscriptions[arg.stream];
        const ids = [...sub.presence.keys()].sort((x, y) => x - y);
        if (show(ids) !== show(arg.users)) throw new ConformanceFailure(`presence: ${show(ids)}`);
        if (arg.degraded !== undefined && sub.presenceDegraded !== arg.degraded) {
          throw new ConformanceFailure(`presence degraded: ${sub.presenceDegraded}`);
        }
        return;
      }
      case "expect_sub_end": {
        const outcome = subs[arg.stream];
        if (!outcome.done || outcome.error !== arg.error) throw new ConformanceFailure(`subscription ${show(outcome)}`);
        return;
      }
      default:
        throw new ConformanceFailure(`unknown step ${kind}`);
    }
  }
}

/** @param {any} value */
function sortKeys(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
}

// Main -------------------------------------------------------------------------------------------

const module = await import(pathToFileURL(clientPath).href);
const dirArg = process.argv.slice(2).find((a) => a.startsWith("--dir="));
const fixtureDir = dirArg ? dirArg.slice("--dir=".length) : here;
const filters = process.argv.slice(2).filter((a) => !a.startsWith("--dir="));
let passed = 0;
let failed = 0;
for (const file of readdirSync(fixtureDir).filter((f) => f.endsWith(".json")).sort()) {
  const doc = JSON.parse(readFileSync(join(fixtureDir, file), "utf8"));
  for (const scenario of doc.scenarios) {
    const id = `${file.replace(/\.json$/, "")}: ${scenario.name}`;
    if (filters.length > 0 && !filters.some((f) => id.includes(f))) continue;
    try {
      await play(module, scenario.options ?? {}, scenario.steps);
      passed += 1;
      console.log(`PASS ${id}`);
    } catch (exc) {
      failed += 1;
      console.log(`FAIL ${id}\n     ${exc instanceof ConformanceFailure ? exc.message : exc.stack}`);
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
