// The conversation: history from the server, answers streamed in and rendered as safe Markdown.

import { call, connect, requireSession } from "../layout.js";
import { renderMarkdown } from "../markdown.js";
import { compareIds, idBefore } from "../ws-client.js";

const session = requireSession();
const list = document.getElementById("messages");
const answers = new Map(); // task_id → {item, text, done}
const finished = new Set(); // tasks whose answer came with the history

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.innerHTML = role === "assistant" ? renderMarkdown(text) : "";
  if (role !== "assistant") item.textContent = text;
  list.append(item);
  item.scrollIntoView({ block: "nearest" });
  return item;
}

function answerFor(taskId) {
  if (!answers.has(taskId)) answers.set(taskId, { item: addMessage("assistant", ""), text: "", done: false });
  return answers.get(taskId);
}

async function loadConversation() {
  const page = await call(session, "/api/chat/history?limit=50");
  for (const turn of page.messages) {
    addMessage(turn.role, turn.content);
    if (turn.role === "assistant" && turn.task_id) finished.add(turn.task_id);
  }
  // Answers still being written: replay them from their start, wherever this page's
  // predecessor left the shared last_id.
  const running = await call(session, "/api/tasks?kind=chat&state=STARTED&limit=20");
  const starts = running.map((task) => task.last_event_id).filter(Boolean).sort(compareIds);
  for (const task of running) answerFor(task.task_id);
  return starts.length ? idBefore(starts[0]) : undefined;
}

const resumeFrom = await loadConversation();
const client = connect(session, { resumeFrom });

client.subscribe("chat_delta", (frame) => {
  if (finished.has(frame.task_id)) return;
  const answer = answerFor(frame.task_id);
  answer.text = frame.data.reset ? "" : answer.text + frame.data.delta;
  answer.item.innerHTML = renderMarkdown(answer.text);
});
client.subscribe("chat_result", (frame) => {
  if (finished.has(frame.task_id)) return;
  finished.add(frame.task_id);
  client.unwatch(frame.task_id);
  const answer = answerFor(frame.task_id);
  if (frame.error) {
    answer.item.classList.add("failed");
    answer.item.textContent = frame.error.message;
  } else {
    answer.item.innerHTML = renderMarkdown(frame.data.message);
  }
});
client.subscribe("task_status", (frame) => {
  if (frame.data.state === "RETRYING") answerFor(frame.task_id).item.dataset.status = "retrying…";
});
client.subscribe("task_polled", ({ task_id: taskId, data: task }) => {
  if (task.state === "SUCCESS" || task.state === "FAILURE") {
    client.dispatch({ type: "chat_result", task_id: taskId, data: task.result ?? {}, error: task.error });
  }
});
client.connect();

const form = document.getElementById("chat-form");
const input = document.getElementById("chat-input");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = input.value.trim();
  if (!message) return;
  document.getElementById("chat-error").textContent = "";
  const mine = addMessage("user", message);
  try {
    const accepted = await call(session, "/ai/chat2", { method: "POST", body: { message } });
    answerFor(accepted.task_id);
    client.watch(accepted.task_id);
    input.value = "";
  } catch (error) {
    mine.remove();
    document.getElementById("chat-error").textContent = error.message;
  }
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});
// Sending stays disabled until the handler exists: a click earlier would submit the form natively.
document.getElementById("send").disabled = false;
input.focus();
