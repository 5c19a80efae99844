// The console's only way to the server: the /v1 API with the bearer token from
// sessionStorage. Server-Sent Events are read with fetch and a stream reader (EventSource
// cannot send headers, and a token must never travel in a URL), parsed here, and resumed
// with Last-Event-ID after a dropped connection.

const TOKEN_KEY = 'orchestrator.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the API, with its problem+json body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(`${problem.title || 'Error'} (${status})${problem.detail ? `: ${problem.detail}` : ''}`);
    this.status = status;
    this.problem = { status, ...problem };
  }
}

function headers(extra) {
  const out = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

async function failure(res) {
  const text = await res.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON: shown as text below */ }
  if (res.status === 401) window.dispatchEvent(new CustomEvent('orchestrator:unauthorized'));
  const problem = body && typeof body === 'object' && !Array.isArray(body)
    ? body : { title: res.statusText || 'Error', detail: text.slice(0, 500) };
  return new ApiError(res.status, problem);
}

/** `method path` with an optional JSON body; resolves to the parsed answer, or throws ApiError. */
export async function api(method, path, body) {
  const init = { method, headers: headers(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { title: 'The server cannot be reached', detail: String(e.message || e) });
  }
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path) => api('GET', path);
export const del = (path) => api('DELETE', path);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);

/** A query string of the non-empty members of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** Splits an event stream into events: `{event, data, id}` per blank-line-terminated block. */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
    this.lastId = null;
  }

  reset() {
    this.event = '';
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === '') {
      if (this.id !== null) this.lastId = this.id;
      if (this.data.length) {
        this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.id ?? this.lastId });
      }
      this.reset();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

/**
 * Follows an SSE endpoint until an event named in `final` arrives or `stop()` is called.
 * After a dropped connection (or a `shutdown` event) it reconnects with Last-Event-ID, so
 * no `id`-carrying event is seen twice or missed. `onState` hears 'live', 'reconnecting',
 * 'ended' and, for an error answer, the ApiError (then it stops).
 */
export function follow(path, { onEvent, onState = () => {}, final = ['end'], lastEventId = null }) {
  const controller = new AbortController();
  let stopped = false;
  let lastId = lastEventId;
  let delay = 500;

  const once = async () => {
    const extra = { Accept: 'text/event-stream' };
    if (lastId !== null) extra['Last-Event-ID'] = String(lastId);
    const res = await fetch(path, { headers: headers(extra), signal: controller.signal, cache: 'no-store' });
    if (!res.ok) throw await failure(res);
    // 204: the server has nothing more to send (a finished run, all of it received).
    if (res.status === 204) return true;
    onState('live');
    delay = 500;
    let finished = false;
    const parser = new SseParser((ev) => {
      if (ev.id !== null && ev.id !== undefined) lastId = ev.id;
      let data = ev.data;
      try { data = JSON.parse(ev.data); } catch { /* plain text data */ }
      onEvent(ev.event, data, ev.id);
      if (final.includes(ev.event)) finished = true;
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    window.__orchestrator.streams.add(reader);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
        if (finished) {
          reader.cancel().catch(() => {});
          break;
        }
      }
    } finally {
      window.__orchestrator.streams.delete(reader);
    }
    return finished;
  };

  (async () => {
    while (!stopped) {
      try {
        if (await once()) {
          onState('ended');
          return;
        }
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
          onState(e);
          return;
        }
      }
      if (stopped) return;
      onState('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  })();

  return () => {
    stopped = true;
    controller.abort();
  };
}

// Open stream readers, so that a test (or a curious operator) can drop every connection
// and watch the console resume: `window.__orchestrator.dropStreams()`.
window.__orchestrator = window.__orchestrator || {
  streams: new Set(),
  dropStreams() {
    for (const reader of this.streams) reader.cancel().catch(() => {});
  },
};
