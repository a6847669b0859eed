// One WebSocket per page (SPEC §7): first-frame auth, resume from the last id seen (kept per
// user in localStorage), de-duplication by id, dispatch by type, answers to ping, reconnection
// with backoff 1, 2, 4, 8, 16 s plus jitter. After 5 failed tries it gives up, says so, and
// polls GET /api/tasks/{id} for the tasks the page waits on, so results still appear.
// Pages use it through SharedSocketClient (shared-socket.js), which lets one tab's socket serve
// every tab of the browser.

const BACKOFF_S = [1, 2, 4, 8, 16];
const POLL_MS = 3000;

export class WebSocketClient {
  constructor({ participantId, token, onState = () => {}, onGiveUp = () => {}, onUnauthorized = () => {}, poll, resumeFrom }) {
    this.participantId = participantId;
    this.token = token;
    this.onState = onState;
    this.onGiveUp = onGiveUp;
    this.onUnauthorized = onUnauthorized;
    this.poll = poll;
    this.resumeFrom = resumeFrom; // a page may ask for an older point than the stored one, once
    this.handlers = new Map();
    this.seen = new Set();
    this.watched = new Set();
    this.failures = 0;
    this.storageKey = `taskwire.last_id.${participantId}`;
    this.setState("CLOSED");
  }

  get lastId() {
    return localStorage.getItem(this.storageKey);
  }

  subscribe(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.unsubscribe(type, handler);
  }

  unsubscribe(type, handler) {
    this.handlers.get(type)?.delete(handler);
  }

  // Tasks the page waits on: polled over HTTP while the socket is given up on.
  watch(taskId) {
    this.watched.add(taskId);
  }

  unwatch(taskId) {
    this.watched.delete(taskId);
  }

  // Start receiving. (A page calls this once; the client reconnects by itself.)
  connect() {
    this.open();
  }

  // Open the socket: at first, and again on every reconnect.
  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.setState("CONNECTING");
    const socket = new WebSocket(`${scheme}://${location.host}/ws/user/${this.participantId}`);
    this.socket = socket;
    socket.onopen = () => {
      const auth = { type: "auth", token: this.token };
      const from = this.resumeFrom ?? this.lastId;
      this.resumeFrom = undefined;
      if (from) auth.last_id = from;
      socket.send(JSON.stringify(auth));
    };
    socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    socket.onclose = (event) => this.closed(event);
  }

  reconnectNow() {
    this.failures = 0;
    this.stopPolling();
    if (this.state === "CLOSED") this.open();
  }

  close() {
    this.stopped = true;
    this.stopPolling();
    this.setState("CLOSING");
    this.socket?.close(1000);
  }

  receive(frame) {
    if (frame.type === "ping") {
      this.socket.send(JSON.stringify({ type: "pong" }));
      return;
    }
    if (frame.type === "hello") {
      this.opened(frame);
      this.dispatch(frame); // pages re-read their tasks over HTTP when data.recovered is false
      return;
    }
    if (frame.id) {
      if (this.seen.has(frame.id)) return;
      this.seen.add(frame.id);
      this.remember(frame.id);
    }
    this.dispatch(frame);
  }

  // The server said hello: the link is up again, and there is a point to resume from.
  opened(hello) {
    this.failures = 0;
    this.stopPolling();
    this.setState("OPEN");
    // No last_id yet: start from the newest message so the next connection resumes from here.
    if (!this.lastId && hello.data.head_id) localStorage.setItem(this.storageKey, hello.data.head_id);
  }

  // Keep `id` as the point the next connection resumes from, if it is the newest yet.
  remember(id) {
    if (!this.lastId || compareIds(id, this.lastId) > 0) localStorage.setItem(this.storageKey, id);
  }

  dispatch(frame) {
    for (const handler of this.handlers.get(frame.type) ?? []) handler(frame);
    for (const handler of this.handlers.get("*") ?? []) handler(frame);
  }

  closed(event) {
    this.setState("CLOSED");
    if (event.code === 4401) {
      this.onUnauthorized();
      return;
    }
    if (this.stopped) return;
    if (event.code === 4429) {
      // Too many tabs: the newest ones keep the live connection; this one stays quiet.
      this.onGiveUp();
      this.startPolling();
      return;
    }
    if (event.code === 1012) {
      // The replica is restarting: another one can take us right away.
      setTimeout(() => this.open(), Math.random() * 500);
      return;
    }
    if (this.failures >= BACKOFF_S.length) {
      this.onGiveUp();
      this.startPolling();
      return;
    }
    const base = BACKOFF_S[this.failures];
    this.failures += 1;
    setTimeout(() => this.open(), (base + Math.random()) * 1000);
  }

  startPolling() {
    if (this.pollTimer || !this.poll) return;
    this.pollTimer = setInterval(async () => {
      for (const taskId of this.watched) {
        try {
          const status = await this.poll(taskId);
          this.dispatch({ type: "task_polled", task_id: taskId, data: status });
        } catch {
          // the next round tries again
        }
      }
    }, POLL_MS);
  }

  stopPolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }
}

// Redis stream ids "<ms>-<seq>": compare numerically, part by part.
export function compareIds(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
}

// An id just below `id`, to replay from it inclusive.
export function idBefore(id) {
  const [ms, seq] = id.split("-").map(Number);
  return seq > 0 ? `${ms}-${seq - 1}` : `${ms - 1}-0`;
}
