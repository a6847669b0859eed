// The conversation: history from the server, answers streamed in and rendered as safe Markdown.
// An answer shows "thinking…" until its first piece, can be stopped while it streams (what
// came stays, marked stopped) and asked again once it ends. A question asked in another tab
// appears here too, before its answer. Only finished answers are read out to screen readers.

import { call, connect, requireSession } from "../layout.js";
import { addCopyButtons, renderMarkdown } from "../markdown.js";
import { compareIds, idBefore } from "../ws-client.js";

const session = requireSession();
const list = document.getElementById("messages");
const answers = new Map(); // task_id → {item, body, tools, text, question, done}
const finished = new Set(); // tasks whose answer came with the history

function addMessage(role, text, { before = null } = {}) {
  const item = document.createElement("li");
  item.className = role;
  if (role === "assistant") {
    const body = document.createElement("div");
    body.className = "body";
    body.innerHTML = renderMarkdown(text);
    addCopyButtons(body, text);
    const tools = document.createElement("div");
    tools.className = "answer-tools";
    item.append(body, tools);
  } else {
    item.textContent = text;
  }
  list.insertBefore(item, before);
  if (!before) item.scrollIntoView({ block: "nearest" });
  return item;
}

function answerFor(taskId, question = null) {
  if (!answers.has(taskId)) {
    const item = addMessage("assistant", "");
    const answer = { item, body: item.querySelector(".body"), tools: item.querySelector(".answer-tools") };
    Object.assign(answer, { text: "", question, done: false, taskId });
    answers.set(taskId, answer);
    if (question === null) showQuestionFromElsewhere(answer);
    thinking(answer);
  }
  return answers.get(taskId);
}

// A task this tab did not start (another tab, or before a reload): its question is in the
// stored conversation, under the same task id.
async function showQuestionFromElsewhere(answer) {
  const page = await call(session, "/api/chat/history?limit=20").catch(() => ({ messages: [] }));
  const asked = page.messages.find((m) => m.role === "user" && m.task_id === answer.taskId);
  if (!asked || answer.question !== null) return;
  answer.question = asked.content;
  // This tab's own question, whose answer began before the 202 came back, is already shown.
  const shown = answer.item.previousElementSibling;
  if (shown?.className === "user" && shown.textContent === asked.content) return;
  addMessage("user", asked.content, { before: answer.item });
}

function thinking(answer) {
  answer.item.dataset.status = "thinking…";
  const stop = document.createElement("button");
  stop.type = "button";
  stop.className = "stop";
  stop.textContent = "Stop";
  stop.addEventListener("click", async () => {
    stop.disabled = true;
    try {
      await call(session, `/api/tasks/${answer.taskId}`, { method: "DELETE" });
      end(answer, { stopped: true });
    } catch (error) {
      stop.disabled = false;
      if (error.code === "task_finished") return; // it ended first: its result is on its way
      document.getElementById("chat-error").textContent = error.message;
    }
  });
  answer.tools.replaceChildren(stop);
}

function end(answer, { stopped = false, error = null } = {}) {
  if (answer.done) return;
  answer.done = true;
  finished.add(answer.taskId);
  client.unwatch(answer.taskId);
  delete answer.item.dataset.status;
  if (stopped) answer.item.dataset.status = "stopped";
  if (error) {
    answer.item.classList.add("failed");
    answer.body.textContent = error.message;
  }
  answer.tools.replaceChildren();
  if (answer.question !== null) {
    const again = document.createElement("button");
    again.type = "button";
    again.className = "regenerate";
    again.textContent = "Ask again";
    again.addEventListener("click", () => ask(answer.question));
    answer.tools.append(again);
  }
  announce(stopped ? "The answer was stopped." : error ? error.message : answer.body.textContent);
}

function announce(text) {
  document.getElementById("announce").textContent = text.slice(0, 2000);
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
  for (const task of running) {
    const asked = page.messages.findLast((m) => m.role === "user" && m.task_id === task.task_id);
    answerFor(task.task_id, asked ? asked.content : null);
  }
  return starts.length ? idBefore(starts[0]) : undefined;
}

const resumeFrom = await loadConversation();
const client = connect(session, { resumeFrom });

client.subscribe("chat_delta", (frame) => {
  if (finished.has(frame.task_id)) return;
  const answer = answerFor(frame.task_id);
  if (answer.item.dataset.status === "thinking…") delete answer.item.dataset.status;
  answer.text = frame.data.reset ? "" : answer.text + frame.data.delta;
  answer.body.innerHTML = renderMarkdown(answer.text);
  addCopyButtons(answer.body, answer.text);
});
client.subscribe("chat_result", (frame) => {
  if (finished.has(frame.task_id)) return;
  const answer = answerFor(frame.task_id);
  if (!frame.error) {
    answer.body.innerHTML = renderMarkdown(frame.data.message);
    addCopyButtons(answer.body, frame.data.message);
  }
  end(answer, { error: frame.error });
});
client.subscribe("task_status", (frame) => {
  if (finished.has(frame.task_id)) return;
  if (frame.data.state === "RETRYING") answerFor(frame.task_id).item.dataset.status = "retrying…";
  if (frame.data.state === "STARTED") answerFor(frame.task_id);
  if (frame.data.state === "CANCELLED") end(answerFor(frame.task_id), { stopped: true });
});
client.subscribe("task_polled", ({ task_id: taskId, data: task }) => {
  if (task.state === "SUCCESS" || task.state === "FAILURE") {
    client.dispatch({ type: "chat_result", task_id: taskId, data: task.result ?? {}, error: task.error });
  }
});
client.connect();

async function ask(message) {
  document.getElementById("chat-error").textContent = "";
  const mine = addMessage("user", message);
  try {
    const accepted = await call(session, "/ai/chat2", { method: "POST", body: { message } });
    answerFor(accepted.task_id, message).question ??= message;
    client.watch(accepted.task_id);
    return true;
  } catch (error) {
    mine.remove();
    document.getElementById("chat-error").textContent = error.message;
    return false;
  }
}

const form = document.getElementById("chat-form");
const input = document.getElementById("chat-input");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = input.value.trim();
  if (message && (await ask(message))) input.value = "";
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});
// Sending stays disabled until the handler exists: a click earlier would submit the form natively.
document.getElementById("send").disabled = false;
input.focus();
