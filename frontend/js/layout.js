// What every signed-in page shares: the session guard, the header, the connection badge.

import { api, clearSession, loadSession } from "./api.js";
import { SharedSocketClient } from "./shared-socket.js";

export function requireSession() {
  const session = loadSession();
  if (!session?.access_token) {
    location.replace(`/login.html?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new Error("not signed in");
  }
  return session;
}

export function signOut() {
  clearSession();
  location.replace("/login.html");
}

// Authenticated JSON call; a 401 means the session is over.
export async function call(session, path, options = {}) {
  try {
    return await api(path, { ...options, token: session.access_token });
  } catch (error) {
    if (error.status === 401) signOut();
    throw error;
  }
}

// The badge in words; `data-state` keeps the socket's own state for styles and tests.
function badgeWords(state, { wasLive }) {
  if (state === "OPEN") return "Live";
  if (state === "CONNECTING") return wasLive ? "Reconnecting…" : "Connecting…";
  return "Offline — your work is saved";
}

export function connect(session, options = {}) {
  const badge = document.getElementById("ws-state");
  const notice = document.getElementById("ws-notice");
  let constructed = false;
  let wasLive = false;
  const client = new SharedSocketClient({
    participantId: session.participant_id,
    token: session.access_token,
    onState: (state) => {
      // The client reports CLOSED as it is made, before its first connect: not news for the learner.
      if (!constructed) return;
      badge.textContent = badgeWords(state, { wasLive });
      badge.dataset.state = state;
      wasLive ||= state === "OPEN";
    },
    onGiveUp: () => {
      notice.hidden = false;
    },
    onUnauthorized: signOut,
    poll: (taskId) => call(session, `/api/tasks/${taskId}`),
    ...options,
  });
  constructed = true;
  window.taskwireClient = client; // for the console and the browser tests: what this tab receives
  document.getElementById("ws-reconnect")?.addEventListener("click", () => {
    notice.hidden = true;
    client.reconnectNow();
  });
  document.getElementById("sign-out")?.addEventListener("click", () => {
    client.close();
    signOut();
  });
  return client;
}

export function setText(id, text) {
  document.getElementById(id).textContent = text;
}
