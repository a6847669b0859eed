// One task in the learner's words, kept current by its envelopes; the raw record and the
// envelopes stay behind a details toggle.

import { call, connect, requireSession, setText } from "../layout.js";
import { taskOutcome, taskTitle } from "../task-words.js";

const session = requireSession();
const taskId = new URLSearchParams(location.search).get("id");
setText("task-id", taskId ?? "");

async function refresh() {
  const task = await call(session, `/api/tasks/${encodeURIComponent(taskId)}`);
  setText("title", taskTitle(task));
  const outcome = taskOutcome(task);
  setText("outcome", outcome.text);
  document.getElementById("outcome").dataset.tone = outcome.tone;
  const checks = document.getElementById("checkpoints");
  checks.replaceChildren(
    ...(task.result?.checkpoints ?? []).map((check) => {
      const item = document.createElement("li");
      item.dataset.passed = String(check.passed);
      item.textContent = `${check.passed ? "✓" : "✗"} ${check.name}`;
      return item;
    }),
  );
  setText("kind", task.kind);
  setText("state", task.state);
  setText("stage", task.stage ?? "");
  document.getElementById("progress").value = task.progress;
  setText("created", new Date(task.created_at).toLocaleString());
  setText("finished", task.finished_at ? new Date(task.finished_at).toLocaleString() : "—");
  setText("result", JSON.stringify(task.result ?? task.error, null, 2) ?? "");
}

try {
  await refresh();
} catch (error) {
  setText("outcome", error.message);
}
const client = connect(session);
client.watch(taskId);
client.subscribe("*", (frame) => {
  if (frame.task_id !== taskId) return;
  const log = document.getElementById("envelopes");
  log.textContent += JSON.stringify(frame) + "\n";
  if (frame.type !== "chat_delta") refresh();
});
client.connect();
