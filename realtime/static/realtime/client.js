// @ts-check
/**
 * Browser client of the realtime protocol v1 (PROTOCOL.md section 10; docs/browser-client.md).
 *
 * A dependency-free ES module with the same behaviour as the Python package `realtime_client`:
 *
 * - reconnects by itself with exponential backoff and full jitter (0.5 s start, 10 s cap);
 * - re-subscribes every stream from its last offset (with the stream's epoch) after a reconnect;
 * - retries a call that has no reply after `ackTimeout` with the same `id`, on the same
 *   connection or after a reconnect, until it is answered or the client is closed;
 * - delivers each subscription's events in offset order, each once, filling gaps with
 *   `stream.history`;
 * - holds its sends while the server says `flow.pause`;
 * - asks `tokenProvider` for a fresh token on 4401 `token_expired` (and on `auth.expiring`);
 * - stops for good on 1000, 4401 `invalid_token` / `missing_token`, 4403 (and 4408 unless
 *   `reconnectOnIdle`).
 *
 * Browsers cannot set headers on a WebSocket handshake, so the token travels as `?token=`.
 *
 *     import { RealtimeClient } from "/static/realtime/client.js";
 *     const client = new RealtimeClient("/ws/", { token: access, tokenProvider: refresh });
 *     client.onStateChange((old, now) => console.log(old, "->", now));
 *     await client.connect();
 *     const sub = client.subscribe("room:lobby", { onEvent: (frame) => show(frame.data) });
 *     await sub.ready;
 *     await client.call("message.send", { stream: "room:lobby", text: "hi" });
 */

/** @typedef {"connecting" | "open" | "reconnecting" | "closed"} ClientState */

/**
 * A server push: `{"event","stream"?,"offset"?,"data"}`.
 * @typedef {{event: string, stream?: string, offset?: number, data?: any, [key: string]: any}} PushFrame
 */

/**
 * How a connection (or an attempt to open one) ended. `code` null: no close frame (1006),
 * the network dropped, the server died or refused the upgrade.
 * @typedef {{code: number | null, reason: string | null, fatal?: boolean}} CloseInfo
 */

/**
 * @typedef {object} RealtimeClientOptions
 * @property {string | null} [token] access token sent as `?token=`
 * @property {(() => Promise<string> | string) | null} [tokenProvider] returns a fresh access
 *   token; called on 4401 `token_expired` and on `auth.expiring`
 * @property {number} [ackTimeout=5000] ms without a reply before a call is sent again (same id)
 * @property {number} [backoffInitial=500] ms, the first reconnect delay's upper bound
 * @property {number} [backoffMax=10000] ms, the cap of the reconnect delay's upper bound
 * @property {number} [maxInFlight=64] calls sent and not answered yet, at most
 * @property {number} [openTimeout=10000] ms to open a connection and receive its welcome
 * @property {boolean} [reconnectOnIdle=false] reconnect after 4408 `idle_timeout`
 * @property {boolean} [refreshOnExpiring=true] on `auth.expiring`, send `auth.refresh` with a
 *   token from `tokenProvider`
 * @property {string} [idPrefix] prefix of generated call ids (default: `rc-` + 16 random hex digits)
 * @property {{warn: (...args: any[]) => void, info?: (...args: any[]) => void} | null} [logger]
 *   where diagnostics go (default: nowhere)
 * @property {typeof WebSocket} [WebSocket] the WebSocket class (default: the browser's)
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {number | null} [since] replay every event after this offset, then live; omitted:
 *   live from the stream's head
 * @property {string | null} [epoch] with `since`: the stream's epoch of a snapshot's position
 *   (REST `?position=1`); another epoch now ends the subscription with `not_recovered`
 * @property {(frame: PushFrame) => void} [onEvent] each push of the stream, in offset order, once
 * @property {(error: RealtimeError | null) => void} [onEnd] the subscription ended: null after
 *   `unsubscribe()` / `close()`, else why (`not_recovered`: reload the state, `forbidden`, ...)
 * @property {boolean} [presence] ask a presence-enabled stream for its members (`sub.presence`)
 *   and its `stream.signal` pushes; implied by `onPresence`. Without it only events arrive.
 * @property {(presence: Map<number, PresenceUser>, frame: PushFrame) => void} [onPresence] a
 *   presence-enabled stream's members changed (`presence.state`, `presence.join`, `presence.leave`)
 */

/**
 * @typedef {object} PresenceUser
 * @property {number} id
 * @property {string} username
 * @property {number} [sessions] the user's sessions subscribed to the stream, on every server
 * @property {Record<string, any> | null} [meta] what the user set with `stream.presence` `meta`
 */

/** @typedef {(oldState: ClientState, newState: ClientState) => void} StateCallback */
/** @typedef {(frame: PushFrame) => void} PushCallback */

export const PROTOCOL_VERSION = 1;
export const MAX_ID_LENGTH = 64;

export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  SLOW_CONSUMER: 1013,
  UNAUTHORIZED: 4401,
  FORBIDDEN: 4403,
  IDLE_TIMEOUT: 4408,
  RATE_LIMITED: 4429,
});

const HISTORY_PAGE = 1000;
const FILL_RETRY_DELAY = 500; // ms before asking history again when a gap made no progress
const PRESENCE_EVENTS = new Set(["presence.state", "presence.join", "presence.leave"]);
const RATE_LIMITED_PAUSE = 100; // ms, when `rate_limited` arrives with no pause in force
const PAUSE_GRACE = 1000; // ms past retry_after_ms before resuming without flow.resume

/** A call or subscription that cannot complete; `code` is the protocol's word for why. */
export class RealtimeError extends Error {
  /**
   * @param {string} code e.g. `validation_error`, `conflict`, `closed`, `not_recovered`
   * @param {Record<string, any> | null} [data] the error frame's data, or details
   */
  constructor(code, data = null) {
    const details = { ...(data || {}) };
    super(typeof details.message === "string" ? `${code}: ${details.message}` : code);
    this.name = "RealtimeError";
    /** @type {string} */
    this.code = code;
    /** @type {Record<string, any>} */
    this.data = details;
  }
}

/**
 * Reconnect delays: the n-th delay (n from 0) is drawn uniformly from
 * `[0, min(cap, initial * factor**n)]` ("full jitter"); `reset()` after a successful open.
 */
export class Backoff {
  /**
   * @param {number} [initial=500] ms
   * @param {number} [cap=10000] ms
   * @param {number} [factor=2]
   * @param {() => number} [random=Math.random] uniform in [0, 1)
   */
  constructor(initial = 500, cap = 10000, factor = 2, random = Math.random) {
    if (!(initial > 0) || !(cap >= initial) || !(factor >= 1)) {
      throw new RangeError("backoff needs 0 < initial <= cap and factor >= 1");
    }
    this.initial = initial;
    this.cap = cap;
    this.factor = factor;
    this.attempt = 0;
    this._random = random;
  }

  /** @param {number} attempt 0-based @returns {number} the upper bound of that attempt's delay */
  ceiling(attempt) {
    let bound = this.initial;
    for (let i = 0; i < attempt; i++) {
      bound *= this.factor;
      if (bound >= this.cap) return this.cap;
    }
    return Math.min(bound, this.cap);
  }

  /** @returns {number} ms to wait before the next attempt */
  nextDelay() {
    const delay = this._random() * this.ceiling(this.attempt);
    this.attempt += 1;
    return delay;
  }

  reset() {
    this.attempt = 0;
  }
}

/**
 * Offset order, no duplicates, gaps found. Until `start(last)` every frame is held; a frame at
 * or below the position is a duplicate; a frame beyond the next offset waits and `gap` names
 * `[first missing, first held]`.
 */
export class ReorderBuffer {
  constructor() {
    /** @type {number | null} the last offset delivered */
    this.last = null;
    /** @type {Map<number, PushFrame>} */
    this._held = new Map();
    this.duplicates = 0;
  }

  /** @param {number} last @returns {PushFrame[]} frames now deliverable */
  start(last) {
    this.last = last;
    return this._drain();
  }

  /** @param {PushFrame} frame @returns {PushFrame[]} frames now deliverable, in order */
  add(frame) {
    const offset = frame.offset;
    if (typeof offset !== "number" || !Number.isInteger(offset)) return [];
    if ((this.last !== null && offset <= this.last) || this._held.has(offset)) {
      this.duplicates += 1;
      return [];
    }
    this._held.set(offset, frame);
    return this.last === null ? [] : this._drain();
  }

  get held() {
    return this._held.size;
  }

  /** @returns {[number, number] | null} */
  get gap() {
    if (this.last === null || this._held.size === 0) return null;
    return [this.last + 1, Math.min(...this._held.keys())];
  }

  /** @returns {PushFrame[]} */
  _drain() {
    const last = /** @type {number} */ (this.last);
    for (const offset of [...this._held.keys()]) {
      if (offset <= last) {
        this._held.delete(offset);
        this.duplicates += 1;
      }
    }
    /** @type {PushFrame[]} */
    const ready = [];
    let next = last;
    while (this._held.has(next + 1)) {
      next += 1;
      ready.push(/** @type {PushFrame} */ (this._held.get(next)));
      this._held.delete(next);
    }
    this.last = next;
    return ready;
  }
}

/**
 * What follows a close (PROTOCOL.md section 5).
 * @param {number | null} code null: no close frame
 * @param {string | null} reason
 * @param {{hasTokenProvider: boolean, reconnectOnIdle: boolean}} options
 * @returns {"reconnect" | "refresh_token" | "stop"}
 */
export function closeAction(code, reason, { hasTokenProvider, reconnectOnIdle }) {
  if (code === null || code === CloseCode.ABNORMAL) return "reconnect";
  if (code === CloseCode.NORMAL) return "stop";
  if (code === CloseCode.UNAUTHORIZED) {
    return reason === "token_expired" && hasTokenProvider ? "refresh_token" : "stop";
  }
  if (code === CloseCode.FORBIDDEN) return "stop";
  if (code === CloseCode.IDLE_TIMEOUT) return reconnectOnIdle ? "reconnect" : "stop";
  // 1001, 1009, 1011, 1012, 1013, 4429 and anything unknown: the session can resume.
  return "reconnect";
}

/**
 * The RealtimeError code pending calls fail with after a close that stops the client.
 * @param {number | null} code
 * @param {string | null} reason
 */
export function stopCode(code, reason) {
  if (reason) return reason;
  if (code === CloseCode.NORMAL) return "connection_closed";
  return `closed_${code}`;
}

/**
 * An absolute `ws:`/`wss:` URL for `url`, which may be relative to the page (`"/ws/"`).
 * @param {string} url
 * @returns {URL}
 */
export function websocketUrl(url) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved;
}

/** @param {number} bytes */
function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {unknown} value */
function checkId(value) {
  if (typeof value !== "string" || value.length < 1 || value.length > MAX_ID_LENGTH) {
    throw new TypeError(`a call id is a string of 1 to ${MAX_ID_LENGTH} characters`);
  }
  return value;
}

const encoder = new TextEncoder();

/**
 * @typedef {object} PendingCall
 * @property {string} id
 * @property {string} event
 * @property {string} frame the rendered frame, identical on every attempt
 * @property {number} size bytes
 * @property {boolean} resend sent again after a reconnect (false: internal calls a reconnect supersedes)
 * @property {number} attempts
 * @property {number | null} connection the connection it was last sent on
 * @property {ReturnType<typeof setTimeout> | null} timer
 * @property {boolean} done
 * @property {(data: any, error: RealtimeError | null) => void} onDone
 */

/**
 * One stream subscription: `onEvent` gets its pushes in offset order, each once, across
 * reconnects. `ready` settles with the first `stream.subscribe` ack.
 */
export class Subscription {
  /**
   * @param {RealtimeClient} client
   * @param {string} stream
   * @param {number | null} since
   * @param {SubscribeOptions} options
   */
  constructor(client, stream, since, options) {
    this._client = client;
    this.stream = stream;
    this.since = since;
    /** @type {string | null} a snapshot's epoch on the first subscribe, then the server's */
    this.epoch = options.epoch ?? null;
    /** @type {"subscribing" | "live" | "resuming" | "ended"} */
    this.phase = "subscribing";
    /** @type {RealtimeError | null} why it ended, when it ended with an error */
    this.error = null;
    this.fills = 0;
    this.resumes = 0;
    this._onEvent = options.onEvent || null;
    this._onEnd = options.onEnd || null;
    this._onPresence = options.onPresence || null;
    /** asks for presence pushes and signals on every (re)subscribe: `presence: true` or an `onPresence` */
    this.wantsPresence = options.presence === true || this._onPresence !== null;
    /** @type {Map<number, PresenceUser>} the members present (presence-enabled streams), by user id */
    this.presence = new Map();
    /** true while the server's broker is away: other servers' members may be stale */
    this.presenceDegraded = false;
    this._buffer = new ReorderBuffer();
    this._filling = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._fillTimer = null;
    /** @type {Promise<any>} the first ack's data (`{stream, offset, epoch, recovered}`) */
    this.ready = Promise.resolve(null);
  }

  /** @returns {number | null} the offset of the last event delivered (or the starting position) */
  get lastOffset() {
    return this._buffer.last;
  }

  get duplicatesDropped() {
    return this._buffer.duplicates;
  }

  get ended() {
    return this.phase === "ended";
  }

  /** Stop following the stream; `onEnd(null)` is called. */
  unsubscribe() {
    if (this.phase !== "ended") {
      this._end(null);
      this._client._forget(this, true);
    }
  }

  // Called by the client ----------------------------------------------------------------

  /** @returns {Record<string, any>} the first subscribe, or a resume from the last offset */
  _subscribeData() {
    /** @type {Record<string, any>} */
    const data = { stream: this.stream };
    if (this.phase === "subscribing") {
      if (this.since !== null) {
        data.since = this.since;
        if (this.epoch !== null) data.epoch = this.epoch; // a snapshot's position: no replay of another epoch
      }
    } else {
      data.since = this.lastOffset;
      if (this.epoch !== null) data.epoch = this.epoch;
    }
    if (this.wantsPresence) data.presence = true;
    return data;
  }

  /** @param {any} ack the ack of the first subscribe or of a resume */
  _subscribed(ack) {
    if (this.phase === "ended") return;
    const resuming = this.phase === "resuming";
    if ((resuming || this.since !== null) && ack && ack.recovered === false) {
      this._end(new RealtimeError("not_recovered", { stream: this.stream, since: this.lastOffset ?? this.since }));
      this._client._forget(this, true);
      return;
    }
    if (ack && typeof ack.epoch === "string") this.epoch = ack.epoch;
    this.phase = "live";
    if (!resuming) {
      const start = this.since !== null ? this.since : Number(ack.offset);
      this._deliver(this._buffer.start(start));
    }
    this._checkGap();
  }

  /**
   * `stream.reset`: like a resume answered `recovered: false`; the application reloads.
   * @param {Record<string, any>} data
   */
  _reset(data) {
    if (this.phase === "ended") return;
    this._end(new RealtimeError("not_recovered", { stream: this.stream, since: this.lastOffset, reset_at: data.offset }));
    this._client._forget(this, true);
  }

  /**
   * `presence.state` replaces the map (after every (re)subscribe); `presence.join` adds or
   * updates, `presence.leave` removes; both may repeat what the map says (harmless).
   * @param {string} event
   * @param {Record<string, any>} data
   * @param {PushFrame} frame
   */
  _presence(event, data, frame) {
    if (this.phase === "ended") return;
    /** @type {PresenceUser[]} */
    const users = Array.isArray(data.users) ? data.users.filter((u) => u && typeof u.id === "number") : [];
    if (event === "presence.state") {
      this.presence = new Map(users.map((u) => [u.id, u]));
      this.presenceDegraded = data.degraded === true;
    } else if (event === "presence.join") {
      for (const user of users) this.presence.set(user.id, user);
    } else {
      for (const user of users) this.presence.delete(user.id);
    }
    if (this._onPresence) {
      try {
        this._onPresence(this.presence, frame);
      } catch (exc) {
        this._client._log("onPresence callback failed", exc);
      }
    }
  }

  _resuming() {
    if (this.phase === "live") {
      this.phase = "resuming";
      this.resumes += 1;
    }
    this._filling = false;
    this._cancelFillTimer();
  }

  /** @param {PushFrame} frame */
  _push(frame) {
    if (this.phase === "ended") return;
    this._deliver(this._buffer.add(frame));
    this._checkGap();
  }

  /** @param {RealtimeError | null} error */
  _end(error) {
    if (this.phase === "ended") return;
    this.phase = "ended";
    this.error = error;
    this._cancelFillTimer();
    if (this._onEnd) {
      try {
        this._onEnd(error);
      } catch (exc) {
        this._client._log("onEnd callback failed", exc);
      }
    }
  }

  /** @param {PushFrame[]} frames */
  _deliver(frames) {
    for (const frame of frames) {
      if (this.phase === "ended") return;
      if (!this._onEvent) continue;
      try {
        this._onEvent(frame);
      } catch (exc) {
        this._client._log("onEvent callback failed", exc);
      }
    }
  }

  _checkGap() {
    const gap = this._buffer.gap;
    if (gap === null || this._filling || this.phase !== "live" || this._fillTimer !== null) return;
    this._filling = true;
    this.fills += 1;
    const since = this._buffer.last;
    this._client._sendInternal(
      "stream.history",
      { stream: this.stream, since, limit: HISTORY_PAGE },
      (ack, error) => this._filled(since, ack, error),
    );
  }

  /**
   * @param {number | null} since
   * @param {any} ack
   * @param {RealtimeError | null} error
   */
  _filled(since, ack, error) {
    this._filling = false;
    if (this.phase !== "live") return; // a reconnect's resume replays what is missing
    if (error === null && ack && Array.isArray(ack.events)) {
      for (const frame of ack.events) this._deliver(this._buffer.add(frame));
    }
    if (this._buffer.gap !== null && this._buffer.last === since) {
      // No progress (history not readable yet, or the call failed): try again shortly.
      this._fillTimer = setTimeout(() => {
        this._fillTimer = null;
        this._checkGap();
      }, FILL_RETRY_DELAY);
      return;
    }
    this._checkGap();
  }

  _cancelFillTimer() {
    if (this._fillTimer !== null) {
      clearTimeout(this._fillTimer);
      this._fillTimer = null;
    }
  }
}

/** A client of the realtime protocol v1 for browsers. */
export class RealtimeClient {
  /**
   * @param {string} url `ws://host/ws/`, or relative to the page (`"/ws/"`)
   * @param {RealtimeClientOptions} [options]
   */
  constructor(url, options = {}) {
    const ackTimeout = options.ackTimeout ?? 5000;
    const maxInFlight = options.maxInFlight ?? 64;
    if (!(ackTimeout > 0) || !(maxInFlight >= 1)) {
      throw new RangeError("ackTimeout must be > 0 and maxInFlight >= 1");
    }
    this.url = url;
    this.ackTimeout = ackTimeout;
    this.maxInFlight = maxInFlight;
    this.openTimeout = options.openTimeout ?? 10000;
    this.reconnectOnIdle = options.reconnectOnIdle ?? false;
    this.refreshOnExpiring = options.refreshOnExpiring ?? true;
    this.backoff = new Backoff(options.backoffInitial ?? 500, options.backoffMax ?? 10000);
    /** @type {string | null} */
    this._token = options.token ?? null;
    this._tokenProvider = options.tokenProvider ?? null;
    this._logger = options.logger ?? null;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._idPrefix = options.idPrefix ?? `rc-${randomHex(8)}`;
    this._idCounter = 0;

    /** @type {ClientState} */
    this._state = "connecting";
    this._started = false;
    /** @type {WebSocket | null} the socket being opened or open */
    this._ws = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._reconnectTimer = null;
    this._connection = 0; // increases with each opened connection

    /** @type {Map<string, PendingCall>} pending calls, in call order */
    this._calls = new Map();
    /** @type {Set<string>} ids sent on the current connection and not answered yet */
    this._inFlight = new Set();
    /** @type {string[]} ids waiting to be sent, in order */
    this._outbox = [];

    this.paused = false;
    this.pauses = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._pauseTimer = null;

    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    /** @type {Set<StateCallback>} */
    this._stateCallbacks = new Set();
    /** @type {Set<PushCallback>} */
    this._pushCallbacks = new Set();
    /** @type {{resolve: () => void, reject: (e: RealtimeError) => void}[]} */
    this._openWaiters = [];

    /** @type {Record<string, any> | null} the last `session.welcome` data */
    this.welcome = null;
    /** @type {number | null} */
    this.maxMessageBytes = null;
    /** @type {RealtimeError | null} why the client stopped */
    this.closeError = null;
    /** @type {CloseInfo | null} how the last connection ended */
    this.lastClose = null;
    this.connections = 0; // successful opens, the first one included
  }

  // Lifecycle ------------------------------------------------------------------------------

  /** @returns {ClientState} */
  get state() {
    return this._state;
  }

  get closed() {
    return this._state === "closed";
  }

  /** The access token the next connection uses. */
  get token() {
    return this._token;
  }

  set token(value) {
    this._token = value;
  }

  /**
   * Start connecting; resolves once open, rejects with the reason if the client stops first.
   * @returns {Promise<void>}
   */
  connect() {
    this._start();
    return this.waitForState("open").then(() => undefined);
  }

  /**
   * Resolves with the state once it is one of `states`; rejects with `closeError` if the client
   * stops first (unless "closed" is one of them).
   * @param {...ClientState} states
   * @returns {Promise<ClientState>}
   */
  waitForState(...states) {
    if (states.includes(this._state)) return Promise.resolve(this._state);
    if (this._state === "closed") return Promise.reject(this.closeError || new RealtimeError("closed"));
    return new Promise((resolve, reject) => {
      /** @type {StateCallback} */
      const listener = (_old, now) => {
        if (states.includes(now)) {
          this._stateCallbacks.delete(listener);
          resolve(now);
        } else if (now === "closed") {
          this._stateCallbacks.delete(listener);
          reject(this.closeError || new RealtimeError("closed"));
        }
      };
      this._stateCallbacks.add(listener);
    });
  }

  /** Close normally (1000): pending calls reject with `closed`, subscriptions end (`onEnd(null)`). */
  close() {
    if (this._state !== "closed") this._stop(null);
    const ws = this._ws;
    this._ws = null;
    if (ws !== null) {
      try {
        ws.close(CloseCode.NORMAL);
      } catch {
        // already closing
      }
    }
  }

  /**
   * `callback(oldState, newState)` on every state change.
   * @param {StateCallback} callback
   * @returns {() => void} removes the callback
   */
  onStateChange(callback) {
    this._stateCallbacks.add(callback);
    return () => this._stateCallbacks.delete(callback);
  }

  /**
   * `callback(frame)` for pushes of no subscription: `system.*`, `flow.*`, `auth.expiring`,
   * `system.announcement`.
   * @param {PushCallback} callback
   * @returns {() => void} removes the callback
   */
  onPush(callback) {
    this._pushCallbacks.add(callback);
    return () => this._pushCallbacks.delete(callback);
  }

  // Calls and subscriptions ------------------------------------------------------------------

  /**
   * Send `event` and resolve with its ack data; rejects with a RealtimeError on an error reply
   * (`code` and `data` from the frame) or when the client stops first. Retried with the same id
   * after `ackTimeout` and across reconnects.
   * @param {string} event
   * @param {Record<string, any> | null} [data]
   * @param {{id?: string, signal?: AbortSignal}} [options] `id`: the idempotency key (generated
   *   when omitted); `signal`: give up (reject with `aborted`) and stop retrying
   * @returns {Promise<any>}
   */
  call(event, data = null, options = {}) {
    return new Promise((resolve, reject) => {
      /** @type {PendingCall} */
      let call;
      try {
        const id = options.id !== undefined ? checkId(options.id) : null;
        call = this._newCall(event, data || {}, id, (ack, error) => (error ? reject(error) : resolve(ack)), true);
      } catch (exc) {
        reject(exc);
        return;
      }
      const signal = options.signal;
      if (signal) {
        const abort = () => {
          if (this._calls.get(call.id) === call) this._forgetCall(call);
          call.onDone = () => {};
          reject(new RealtimeError("aborted"));
        };
        if (signal.aborted) abort();
        else signal.addEventListener("abort", abort, { once: true });
      }
    });
  }

  /**
   * Follow `stream` (from `since`, or live from the head). Events go to `onEvent` in offset order,
   * each once, across reconnects; `ready` settles with the first ack.
   * @param {string} stream
   * @param {SubscribeOptions} [options]
   * @returns {Subscription}
   */
  subscribe(stream, options = {}) {
    if (this.subscriptions.has(stream)) throw new Error(`already subscribed to ${stream}`);
    const since = options.since ?? null;
    if ((options.epoch ?? null) !== null && since === null) {
      throw new Error("epoch: only meaningful with since (a position is an offset and an epoch)");
    }
    const sub = new Subscription(this, stream, since, options);
    this.subscriptions.set(stream, sub);
    sub.ready = new Promise((resolve, reject) => {
      try {
        this._newCall(
          "stream.subscribe",
          sub._subscribeData(),
          null,
          (ack, error) => {
            if (error === null) {
              sub._subscribed(ack);
              if (sub.error) reject(sub.error);
              else resolve(ack);
            } else {
              this._forget(sub, false);
              sub._end(error);
              reject(error);
            }
          },
          true,
        );
      } catch (exc) {
        this._forget(sub, false);
        sub._end(exc instanceof RealtimeError ? exc : null);
        reject(exc);
      }
    });
    sub.ready.catch(() => {}); // onEnd reports it; an unawaited `ready` is not an unhandled rejection
    return sub;
  }

  // Internals used by subscriptions -------------------------------------------------------------

  /**
   * A call the client makes for itself; a reconnect supersedes it.
   * @param {string} event
   * @param {Record<string, any>} data
   * @param {(data: any, error: RealtimeError | null) => void} onDone
   */
  _sendInternal(event, data, onDone) {
    try {
      this._newCall(event, data, null, onDone, false);
    } catch (exc) {
      onDone(null, exc instanceof RealtimeError ? exc : new RealtimeError("internal_error"));
    }
  }

  /**
   * @param {Subscription} sub
   * @param {boolean} unsubscribe send `stream.unsubscribe` when open
   */
  _forget(sub, unsubscribe) {
    if (this.subscriptions.get(sub.stream) === sub) this.subscriptions.delete(sub.stream);
    if (unsubscribe && this._state === "open") {
      this._sendInternal("stream.unsubscribe", { stream: sub.stream }, () => {});
    }
  }

  /** @param {...any} args */
  _log(...args) {
    if (this._logger) this._logger.warn("realtime:", ...args);
  }

  // Calls -------------------------------------------------------------------------------------

  _newId() {
    this._idCounter += 1;
    return `${this._idPrefix}-${this._idCounter}`;
  }

  /**
   * @param {string} event
   * @param {Record<string, any>} data
   * @param {string | null} id
   * @param {(data: any, error: RealtimeError | null) => void} onDone
   * @param {boolean} resend
   * @returns {PendingCall}
   */
  _newCall(event, data, id, onDone, resend) {
    if (this._state === "closed") throw this.closeError || new RealtimeError("closed");
    let callId = id;
    if (callId === null) {
      // An id the application chose may equal a generated one (same prefix): skip it, or the
      // resume's internal stream.subscribe would fail and end its subscription.
      do {
        callId = this._newId();
      } while (this._calls.has(callId));
    } else if (this._calls.has(callId)) {
      throw new Error(`a call with id ${callId} is already pending`);
    }
    const frame = JSON.stringify({ event, id: callId, data });
    const size = encoder.encode(frame).length;
    if (this.maxMessageBytes !== null && size > this.maxMessageBytes) {
      throw new RealtimeError("message_too_large", { size, limit: this.maxMessageBytes });
    }
    /** @type {PendingCall} */
    const call = {
      id: callId,
      event,
      frame,
      size,
      resend,
      attempts: 0,
      connection: null,
      timer: null,
      done: false,
      onDone,
    };
    this._calls.set(callId, call);
    this._outbox.push(callId);
    this._start();
    this._pump();
    return call;
  }

  /**
   * @param {PendingCall} call
   * @param {any} data
   * @param {RealtimeError | null} error
   */
  _finish(call, data, error) {
    if (call.done) return;
    call.done = true;
    try {
      call.onDone(data, error);
    } catch (exc) {
      this._log("call callback failed", exc);
    }
  }

  /** @param {PendingCall} call */
  _forgetCall(call) {
    this._calls.delete(call.id);
    this._inFlight.delete(call.id);
    if (call.timer !== null) {
      clearTimeout(call.timer);
      call.timer = null;
    }
  }

  /** Send queued calls while open, not paused and under the in-flight window. */
  _pump() {
    const ws = this._ws;
    if (ws === null || this._state !== "open" || ws.readyState !== 1) return;
    while (!this.paused && this._outbox.length > 0) {
      const id = /** @type {string} */ (this._outbox[0]);
      const call = this._calls.get(id);
      if (call === undefined) {
        this._outbox.shift();
        continue;
      }
      if (!this._inFlight.has(id) && this._inFlight.size >= this.maxInFlight) return;
      this._outbox.shift();
      call.attempts += 1;
      call.connection = this._connection;
      this._inFlight.add(id);
      if (call.timer !== null) clearTimeout(call.timer);
      const attempt = call.attempts;
      const connection = this._connection;
      call.timer = setTimeout(() => this._ackTimedOut(call, attempt, connection), this.ackTimeout);
      ws.send(call.frame);
    }
  }

  /**
   * @param {PendingCall} call
   * @param {number} attempt
   * @param {number} connection
   */
  _ackTimedOut(call, attempt, connection) {
    call.timer = null;
    if (
      this._calls.get(call.id) !== call ||
      call.attempts !== attempt ||
      call.connection !== connection ||
      connection !== this._connection ||
      this._state !== "open"
    ) {
      return; // answered, already retried, or a reconnect resends it
    }
    this._log(`no reply to ${call.event} ${call.id} after ${this.ackTimeout} ms: sending it again`);
    this._outbox.push(call.id);
    this._pump();
  }

  // Flow control --------------------------------------------------------------------------------

  /** @param {number} ms how long to hold the sends at most, unless `flow.resume` comes first */
  _pause(ms) {
    this.pauses += 1;
    this.paused = true;
    if (this._pauseTimer !== null) clearTimeout(this._pauseTimer);
    this._pauseTimer = setTimeout(() => this._resumeFlow(), Math.max(0, ms));
  }

  _resumeFlow() {
    if (this._pauseTimer !== null) {
      clearTimeout(this._pauseTimer);
      this._pauseTimer = null;
    }
    this.paused = false;
    this._pump();
  }

  // The connection ------------------------------------------------------------------------------

  _start() {
    if (!this._started && this._state !== "closed") {
      this._started = true;
      this._open();
    }
  }

  _open() {
    if (this._state === "closed") return;
    /** @type {WebSocket} */
    let ws;
    try {
      const url = websocketUrl(this.url);
      if (this._token) url.searchParams.set("token", this._token);
      ws = new this._WebSocket(url.toString());
    } catch (exc) {
      this._log("cannot open", exc);
      this._closed({ code: null, reason: "invalid_url", fatal: true }, false);
      return;
    }
    this._ws = ws;
    let opened = false;
    let ended = false;
    /** @param {CloseInfo} info */
    const end = (info) => {
      clearTimeout(openTimer);
      if (ended) return;
      ended = true;
      if (this._ws === ws) this._ws = null;
      else if (this._state === "closed") return; // close() already took it
      this._closed(info, opened);
    };
    const openTimer = setTimeout(() => {
      if (opened) return;
      try {
        ws.close();
      } catch {
        // ignore
      }
      end({ code: null, reason: "welcome_timeout" });
    }, this.openTimeout);
    ws.onmessage = (event) => {
      if (ended) return;
      if (!opened) {
        let frame = null;
        try {
          frame = JSON.parse(event.data);
        } catch {
          // not a welcome
        }
        if (!frame || typeof frame !== "object" || frame.event !== "session.welcome") {
          try {
            ws.close(CloseCode.NORMAL);
          } catch {
            // ignore
          }
          end({ code: null, reason: "no_welcome" });
          return;
        }
        opened = true;
        clearTimeout(openTimer);
        this._welcomed(frame.data && typeof frame.data === "object" ? frame.data : {});
        return;
      }
      this._onFrame(event.data);
    };
    ws.onclose = (event) => {
      const code = event.code && event.code !== CloseCode.ABNORMAL ? event.code : null;
      end({ code, reason: code === null ? null : event.reason || null });
    };
    ws.onerror = () => {
      // A close event follows, with the code (1006 when there is none).
    };
  }

  /** @param {Record<string, any>} welcome the `session.welcome` data */
  _welcomed(welcome) {
    this.welcome = welcome;
    this.maxMessageBytes = typeof welcome.max_message_bytes === "number" ? welcome.max_message_bytes : null;
    this.connections += 1;
    this.backoff.reset();
    this._resumeFlowQuietly();
    this._connection += 1;
    this._inFlight.clear();
    for (const call of [...this._calls.values()]) {
      if (call.timer !== null) {
        clearTimeout(call.timer);
        call.timer = null;
      }
      if (!call.resend) {
        this._calls.delete(call.id);
        this._finish(call, null, new RealtimeError("superseded"));
      }
    }
    const resend = [...this._calls.keys()];
    this._outbox = [];
    // Re-subscribe first, then the calls still waiting for their reply, in call order.
    for (const sub of this.subscriptions.values()) {
      if (sub.phase === "live" || sub.phase === "resuming") {
        sub._resuming();
        this._sendInternal("stream.subscribe", sub._subscribeData(), (ack, error) => {
          if (error === null) sub._subscribed(ack);
          else if (error.code !== "superseded") {
            sub._end(error);
            this._forget(sub, false);
          }
        });
      }
    }
    this._outbox.push(...resend);
    this._setState("open");
    this._pump();
  }

  _resumeFlowQuietly() {
    if (this._pauseTimer !== null) {
      clearTimeout(this._pauseTimer);
      this._pauseTimer = null;
    }
    this.paused = false;
  }

  /**
   * Decide what follows a close.
   * @param {CloseInfo} info
   * @param {boolean} opened whether the connection had been welcomed
   */
  _closed(info, opened) {
    this.lastClose = info;
    if (opened && info.code === CloseCode.MESSAGE_TOO_BIG) this._failOversize();
    if (this._state === "closed") return;
    let action = closeAction(info.code, info.reason, {
      hasTokenProvider: this._tokenProvider !== null,
      reconnectOnIdle: this.reconnectOnIdle,
    });
    if (info.fatal) action = "stop";
    if (action === "stop") {
      this._stop(new RealtimeError(stopCode(info.code, info.reason), { close_code: info.code }));
      return;
    }
    this._setState(this.connections > 0 ? "reconnecting" : "connecting");
    if (action === "refresh_token") {
      const provider = /** @type {() => Promise<string> | string} */ (this._tokenProvider);
      Promise.resolve()
        .then(() => provider())
        .then(
          (token) => {
            if (this._state === "closed") return;
            this._token = token;
            if (opened) this._open(); // a session that worked expired: reconnect at once
            else this._scheduleReconnect();
          },
          (exc) => {
            this._log("tokenProvider failed", exc);
            if (this._state !== "closed") {
              this._stop(new RealtimeError("token_expired", { message: `tokenProvider failed: ${exc}` }));
            }
          },
        );
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const delay = this.backoff.nextDelay();
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, delay);
  }

  _failOversize() {
    /** @type {PendingCall | null} */
    let largest = null;
    for (const id of this._inFlight) {
      const call = this._calls.get(id);
      if (call && (largest === null || call.size > largest.size)) largest = call;
    }
    if (largest !== null) {
      this._forgetCall(largest);
      this._finish(largest, null, new RealtimeError("message_too_large", { size: largest.size }));
    }
  }

  /** @param {ClientState} state */
  _setState(state) {
    const old = this._state;
    if (old === state) return;
    this._state = state;
    for (const callback of [...this._stateCallbacks]) {
      try {
        callback(old, state);
      } catch (exc) {
        this._log("onStateChange callback failed", exc);
      }
    }
  }

  /**
   * Stop for good: every pending call rejects, every subscription ends.
   * @param {RealtimeError | null} error null: the application closed the client
   */
  _stop(error) {
    this.closeError = error || new RealtimeError("closed");
    if (this._reconnectTimer !== null) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    this._resumeFlowQuietly();
    this._setState("closed");
    const subs = [...this.subscriptions.values()];
    this.subscriptions.clear();
    for (const sub of subs) sub._end(error);
    const calls = [...this._calls.values()];
    this._calls.clear();
    this._inFlight.clear();
    this._outbox = [];
    for (const call of calls) {
      if (call.timer !== null) clearTimeout(call.timer);
      this._finish(call, null, this.closeError);
    }
  }

  // Frames ----------------------------------------------------------------------------------------

  /** @param {any} raw */
  _onFrame(raw) {
    if (typeof raw !== "string") return; // the server sends text frames only
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      this._log("ignoring a frame that is not JSON");
      return;
    }
    if (!frame || typeof frame !== "object" || Array.isArray(frame)) return;
    const event = frame.event;
    if (event === "ack" || event === "error") {
      this._onReply(frame);
    } else if (typeof frame.stream === "string" && "offset" in frame) {
      const sub = this.subscriptions.get(frame.stream);
      if (sub !== undefined) sub._push(frame);
    } else if (event !== "session.welcome") {
      this._onControl(frame);
    }
  }

  /** @param {Record<string, any>} frame */
  _onReply(frame) {
    const ref = typeof frame.ref === "string" ? frame.ref : null;
    const call = ref === null ? undefined : this._calls.get(ref);
    if (call === undefined) {
      if (frame.event === "error") this._log("error reply to no pending call", frame.data);
      return; // a late duplicate reply to a retried call
    }
    const data = frame.data;
    if (frame.event === "error") {
      const errorData = data && typeof data === "object" ? data : {};
      const code = String(errorData.code ?? "error");
      if (code === "rate_limited" && this._inFlight.has(call.id)) {
        // Refused, not processed: send it again once the pause is over.
        this._inFlight.delete(call.id);
        if (call.timer !== null) {
          clearTimeout(call.timer);
          call.timer = null;
        }
        if (!this.paused) this._pause(RATE_LIMITED_PAUSE);
        this._outbox.push(call.id);
        this._pump();
        return;
      }
      this._forgetCall(call);
      this._finish(call, null, new RealtimeError(code, errorData));
    } else {
      this._forgetCall(call);
      this._finish(call, data, null);
    }
    this._pump();
  }

  /** @param {Record<string, any>} frame */
  _onControl(frame) {
    const event = frame.event;
    const data = frame.data && typeof frame.data === "object" ? frame.data : {};
    if (event === "flow.pause") {
      const retryAfter = typeof data.retry_after_ms === "number" && data.retry_after_ms >= 0 ? data.retry_after_ms : 1000;
      // Wait for flow.resume. retry_after_ms was estimated before the calls already on the wire
      // drained the bucket further, so resuming by our own clock after it would flood the server:
      // the timer only covers a lost flow.resume. The Python client waits the same way
      // (realtime_client/flow.py; tests/conformance/flow.json checks both).
      this._pause(retryAfter + Math.max(PAUSE_GRACE, retryAfter));
    } else if (event === "flow.resume") {
      this._resumeFlow();
    } else if (event === "auth.expiring" && this.refreshOnExpiring && this._tokenProvider !== null) {
      void this._refreshSession();
    } else if (event === "stream.reset" && typeof data.stream === "string") {
      // A hole in the server's log: what was not delivered before data.offset is gone.
      const sub = this.subscriptions.get(data.stream);
      if (sub !== undefined) sub._reset(data);
    } else if (PRESENCE_EVENTS.has(event) && typeof data.stream === "string") {
      const sub = this.subscriptions.get(data.stream);
      if (sub !== undefined) sub._presence(event, data, /** @type {PushFrame} */ (frame));
    }
    for (const callback of [...this._pushCallbacks]) {
      try {
        callback(/** @type {PushFrame} */ (frame));
      } catch (exc) {
        this._log("onPush callback failed", exc);
      }
    }
  }

  /** Extend the session with a fresh token before it expires (`auth.refresh`). */
  async _refreshSession() {
    const provider = /** @type {() => Promise<string> | string} */ (this._tokenProvider);
    try {
      const token = await provider();
      this._token = token;
      await this.call("auth.refresh", { token });
    } catch (exc) {
      this._log("session refresh failed (the client reconnects on token_expired)", exc);
    }
  }
}
