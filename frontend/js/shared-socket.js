// One WebSocket for all tabs of a browser (docs/protocol.md, "One socket per browser").
//
// The tab holding the Web Lock `taskwire.socket.<participant>` is the leader: it keeps the only
// socket and posts every frame it receives on the BroadcastChannel of the same name. The other
// tabs are followers: they take frames from the channel, with the same de-duplication by id. When
// the leader's tab closes, the browser gives the lock to the next tab waiting for it, which
// connects and resumes from the last id it has seen, so nothing is lost and nothing shown twice.
// A tab delivers only envelopes newer than its floor (the id it started from): another tab's
// replay is not news to it. Where Web Locks or BroadcastChannel are missing, every tab keeps its
// own socket, as before.

import { WebSocketClient, compareIds } from "./ws-client.js";

const RESUME_RETRY_MS = 2000; // the server takes one resume per 2 s after three in a row
const oldest = (a, b) => (compareIds(a, b) <= 0 ? a : b);

export function tabsCanShare() {
  return typeof navigator !== "undefined" && "locks" in navigator && typeof BroadcastChannel === "function";
}

export class SharedSocketClient extends WebSocketClient {
  constructor(options) {
    super(options);
    this.role = "alone"; // "leader" or "follower" once connect() has run where tabs can share
    this.name = `taskwire.socket.${options.participantId}`;
    // What the leader's socket tells its own page, it tells the other tabs too.
    const { onGiveUp, onUnauthorized } = this;
    this.onGiveUp = () => {
      if (this.role === "leader") this.post({ kind: "gave_up" });
      onGiveUp();
    };
    this.onUnauthorized = () => {
      if (this.role === "leader") this.post({ kind: "unauthorized" });
      onUnauthorized();
    };
  }

  connect() {
    if (!tabsCanShare()) {
      super.connect();
      return;
    }
    // The oldest id this page wants envelopes after: older ones were for another tab.
    this.floor = this.resumeFrom ?? this.lastId;
    this.channel = new BroadcastChannel(this.name);
    this.channel.onmessage = (event) => this.heard(event.data);
    this.role = "follower";
    this.setState("CONNECTING");
    this.post({ kind: "join" });
    if (this.resumeFrom) {
      this.askedReplay = this.resumeFrom;
      this.post({ kind: "replay", from: this.resumeFrom });
    }
    navigator.locks.request(this.name, () => this.lead());
  }

  // Now the leader, until the page goes: the lock is held while the returned promise is pending.
  lead() {
    if (this.stopped) return undefined;
    this.role = "leader";
    // Resume where this tab stands; from its own replay's start if it may not have had it.
    const seen = this.lastSeen ?? this.floor;
    this.resumeFrom = this.askedReplay && seen ? oldest(this.askedReplay, seen) : seen;
    this.askedReplay = undefined;
    this.open();
    return new Promise((resolve) => {
      this.release = resolve;
    });
  }

  close() {
    super.close();
    this.release?.();
    this.channel?.close();
  }

  reconnectNow() {
    if (this.role === "follower") this.post({ kind: "reconnect" });
    else super.reconnectNow();
  }

  // Leader: a frame from the server, passed to every tab, then delivered here.
  receive(frame) {
    if (this.role !== "leader" || frame.type === "ping") {
      super.receive(frame);
      return;
    }
    if (frame.type === "hello") {
      this.opened(frame);
    } else if (frame.type === "error" && ["rate_limited", "resume_in_progress"].includes(frame.data?.code)) {
      this.retryReplay();
    } else if (frame.id) {
      this.remember(frame.id);
    }
    this.post({ kind: "frame", frame });
    this.deliver(frame);
  }

  // Follower: what the leader (or a tab joining) says on the channel.
  heard(message) {
    if (this.role === "leader") {
      if (message.kind === "join") this.post({ kind: "state", state: this.state });
      if (message.kind === "replay") this.replayFor(message.from);
      if (message.kind === "reconnect") super.reconnectNow();
      return;
    }
    if (message.kind === "frame") this.deliver(message.frame);
    if (message.kind === "state") this.followState(message.state);
    if (message.kind === "gave_up") {
      this.onGiveUp();
      this.startPolling();
    }
    if (message.kind === "unauthorized") this.onUnauthorized();
  }

  deliver(frame) {
    if (frame.id) {
      if (this.seen.has(frame.id)) return;
      if (this.floor && compareIds(frame.id, this.floor) <= 0) return;
      this.seen.add(frame.id);
      if (!this.lastSeen || compareIds(frame.id, this.lastSeen) > 0) this.lastSeen = frame.id;
    }
    if (frame.type === "hello" && this.role === "follower") this.followState("OPEN");
    this.dispatch(frame);
  }

  followState(state) {
    if (state === "OPEN") this.stopPolling();
    if (state !== this.state) this.setState(state);
  }

  // Leader: replay older envelopes a follower asked for, on the one socket; one at a time.
  replayFor(from) {
    this.pendingReplay = this.pendingReplay ? oldest(this.pendingReplay, from) : from;
    if (this.state === "OPEN") this.sendReplay();
  }

  sendReplay() {
    if (!this.pendingReplay || this.socket?.readyState !== WebSocket.OPEN) return;
    this.socket.send(JSON.stringify({ type: "resume", last_id: this.pendingReplay }));
    this.sentReplay = this.pendingReplay;
    this.pendingReplay = undefined;
  }

  retryReplay() {
    if (!this.sentReplay) return;
    this.replayFor(this.sentReplay);
    clearTimeout(this.replayTimer);
    this.replayTimer = setTimeout(() => this.sendReplay(), RESUME_RETRY_MS);
  }

  setState(state) {
    super.setState(state);
    // A leader closing with its page says nothing: the next leader speaks for the socket.
    if (this.role === "leader" && !this.stopped) {
      this.post({ kind: "state", state });
      if (state === "OPEN") this.sendReplay(); // asked for while the socket was down
    }
  }

  post(message) {
    this.channel?.postMessage(message);
  }
}
