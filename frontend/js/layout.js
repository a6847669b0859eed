// What every signed-in page shares: the session guard, the header, the connection badge.

import { api, clearSession, loadSession } from "./api.js";
import { WebSocketClient } from "./ws-client.js";

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

export function connect(session, options = {}) {
  const badge = document.getElementById("ws-state");
  const notice = document.getElementById("ws-notice");
  const client = new WebSocketClient({
    participantId: session.participant_id,
    token: session.access_token,
    onState: (state) => {
      badge.textContent = state;
      badge.dataset.state = state;
    },
    onGiveUp: () => {
      notice.hidden = false;
    },
    onUnauthorized: signOut,
    poll: (taskId) => call(session, `/api/tasks/${taskId}`),
    ...options,
  });
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
