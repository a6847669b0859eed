// The ops page: what the system is doing now, for operators (ADMIN_USERNAMES). It reads the
// overview once over HTTP, then takes each update from its own WebSocket (`ops_overview`
// envelopes), like any other Taskwire page; ages tick here, from the timestamps it was sent.

import { call, connect, requireSession } from "../layout.js";

const session = requireSession();
let latest = null;

function cell(text, tone) {
  const td = document.createElement("td");
  td.textContent = text;
  if (tone) td.dataset.tone = tone;
  return td;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells.map((c) => (c instanceof Node ? c : cell(c))));
  return tr;
}

function fill(id, rows, empty) {
  const body = document.querySelector(`#${id} tbody`);
  if (rows.length) body.replaceChildren(...rows);
  else {
    const columns = document.querySelectorAll(`#${id} thead th`).length;
    body.replaceChildren(row(Object.assign(cell(empty), { colSpan: columns })));
  }
}

function age(epochSeconds) {
  if (epochSeconds == null) return "–";
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function ms(seconds) {
  if (seconds == null) return "–";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`;
}

function cancelButton(task) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Cancel";
  button.setAttribute("aria-label", `Cancel ${task.kind} task of ${task.username}`);
  button.addEventListener("click", async () => {
    if (!confirm(`Cancel this ${task.kind} task of ${task.username}? They will see it cancelled.`)) return;
    button.disabled = true;
    try {
      await call(session, `/api/ops/tasks/${task.task_id}`, { method: "DELETE" });
      button.textContent = "Cancelled";
    } catch (error) {
      button.disabled = false;
      button.textContent = error.code === "task_finished" ? "Already ended" : "Retry cancel";
    }
  });
  const td = document.createElement("td");
  td.append(button);
  return td;
}

function render(o) {
  latest = o;
  const queues = new Map(o.queues.map((q) => [q.queue, q]));
  fill(
    "kinds",
    Object.entries(o.kinds).map(([name, k]) => {
      const queue = queues.get(k.queue);
      const counts = Object.entries(o.tasks_last_hour[name] ?? {}).map(([s, n]) => `${s} ${n}`).join(", ") || "none";
      const lat = o.latency[name] ?? {};
      const tr = row(
        name,
        cell(k.available ? "yes" : `no — ${k.reason}`, k.available ? "good" : "bad"),
        String(k.workers),
        `${k.running} / ${k.slots}`,
        queue ? `${queue.queue}: ${queue.backlog} waiting` : "–",
        queue ? age(queue.oldest_enqueued_at) : "–",
        counts,
        `${ms(lat.first?.p50)} / ${ms(lat.first?.p95)}`,
        `${ms(lat.result?.p50)} / ${ms(lat.result?.p95)}`,
      );
      tr.dataset.kind = name;
      return tr;
    }),
    "No task kinds.",
  );
  fill(
    "workers",
    o.workers.map((w) =>
      row(
        w.id,
        w.queues.join(", "),
        Object.entries(w.kinds).map(([k, v]) => `${k} ${v.running}/${v.slots}${v.unavailable ? " (cannot run)" : ""}`).join(", "),
        age(w.started_at),
        `${age(w.last_seen)} ago`,
      ),
    ),
    "No worker is alive: nothing queued will run.",
  );
  fill(
    "replicas",
    o.replicas.map((r) =>
      row(
        r.id,
        String(r.sockets),
        String(r.users),
        cell(r.bus_connected ? `listening (${r.bus_reconnects} reconnects)` : "NOT LISTENING", r.bus_connected ? "good" : "bad"),
        `${r.delivered} / ${r.dropped}`,
        `${age(r.last_seen)} ago`,
      ),
    ),
    "No replica has reported.",
  );
  fill(
    "unfinished",
    o.unfinished.map((t) => {
      const tr = row(t.task_id.slice(0, 8), t.kind, t.state, t.username, age(Date.parse(t.created_at) / 1000), cancelButton(t));
      tr.dataset.taskId = t.task_id;
      return tr;
    }),
    "Nothing queued or running.",
  );
  fill(
    "failures",
    o.failures.map((t) =>
      row(
        new Date(t.finished_at ?? t.created_at).toLocaleTimeString(),
        t.kind,
        t.error?.code ?? "?",
        t.error?.message ?? "",
        t.username,
        t.task_id.slice(0, 8),
      ),
    ),
    "No failures.",
  );
  document.getElementById("ops-updated").textContent =
    `Figures from ${new Date(o.generated_at * 1000).toLocaleTimeString()}; they update as the system changes.`;
}

async function load() {
  try {
    render(await call(session, "/api/ops/overview"));
    return true;
  } catch (error) {
    const denied = document.getElementById("ops-denied");
    denied.textContent = error.status === 403
      ? "This page is for Taskwire's operators. Ask one to add your username to ADMIN_USERNAMES."
      : `Could not read the figures: ${error.message}`;
    denied.hidden = false;
    return false;
  }
}

if (await load()) {
  const client = connect(session);
  // A resumed socket replays older figures first: never show ones older than those on screen.
  client.subscribe("ops_overview", (frame) => {
    if (!latest || frame.data.generated_at >= latest.generated_at) render(frame.data);
  });
  // A reconnect that could not replay what it missed reads the figures again.
  let first = true;
  client.subscribe("hello", (frame) => {
    if (!first && !frame.data.recovered) load();
    first = false;
  });
  client.connect();
  setInterval(() => latest && render(latest), 5000); // ages move on between pushes
}
