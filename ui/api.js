// The ledger's HTTP API as the dashboard uses it: JSON requests carrying the
// token, API problems (RFC 9457) thrown as `Problem`, and Server-Sent Events
// read with fetch, because EventSource cannot send an Authorization header.

/** An answer that was not 2xx, or no answer at all (status 0). */
export class Problem extends Error {
  constructor(status, body) {
    const problem = body && typeof body === 'object' ? body : {};
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.body = problem;
    this.title = problem.title || (status ? `HTTP ${status}` : 'No answer');
    this.detail = problem.detail || '';
    this.code = problem.code || '';
  }
}

/** A fresh Idempotency-Key: one per attempt, never per click handler. */
export function newKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') {
    return crypto.randomUUID();
  }
  // crypto.randomUUID exists only in secure contexts (https, localhost):
  // a version 4 UUID from getRandomValues, which exists everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function problemOf(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  return new Problem(response.status, body || { title: response.statusText, detail: text.slice(0, 300) });
}

export class Api {
  constructor({ token, tenant }) {
    this.token = token;
    this.tenant = tenant;
  }

  url(path) {
    return `/v1/${encodeURIComponent(this.tenant)}${path}`;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  async request(method, path, { body, key, signal } = {}) {
    const headers = this.headers(body === undefined ? {} : { 'Content-Type': 'application/json' });
    if (key) headers['Idempotency-Key'] = key;
    let response;
    try {
      response = await fetch(this.url(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
      });
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new Problem(0, { title: 'No answer', detail: `the ledger could not be reached (${error.message})` });
    }
    if (!response.ok) throw await problemOf(response);
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  get(path, options) {
    return this.request('GET', path, options);
  }

  post(path, body, key) {
    return this.request('POST', path, { body, key });
  }

  /**
   * Reads a Server-Sent Events stream until it ends or `signal` aborts:
   * `onOpen()` once it is accepted, `onMessage({id, event, data})` for each
   * message. A refusal throws its Problem.
   */
  async stream(path, { lastEventId, signal, onOpen, onMessage }) {
    const headers = this.headers({ Accept: 'text/event-stream' });
    if (lastEventId != null) headers['Last-Event-ID'] = String(lastEventId);
    let response;
    try {
      response = await fetch(this.url(path), { headers, signal, cache: 'no-store' });
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new Problem(0, { title: 'No answer', detail: `the live stream could not be opened (${error.message})` });
    }
    if (!response.ok) throw await problemOf(response);
    onOpen();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const message = { id: null, event: 'message', data: [] };
        for (const line of block.split('\n')) {
          if (line === '' || line.startsWith(':')) continue; // keep-alive comments
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'id') message.id = value;
          else if (field === 'event') message.event = value;
          else if (field === 'data') message.data.push(value);
        }
        if (message.data.length) onMessage({ ...message, data: message.data.join('\n') });
      }
    }
  }
}
