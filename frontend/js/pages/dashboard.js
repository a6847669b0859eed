// Exercises with the learner's best result, and recent tasks whose states update live.

import { call, connect, requireSession } from "../layout.js";
import { taskOutcome, taskTitle } from "../task-words.js";

const session = requireSession();
const client = connect(session);
const rows = new Map();

function taskRow(task) {
  let row = rows.get(task.task_id);
  if (!row) {
    row = document.createElement("tr");
    const link = document.createElement("a");
    link.href = `/task.html?id=${task.task_id}`;
    row.append(document.createElement("td"), document.createElement("td"), document.createElement("td"));
    row.cells[0].append(link);
    rows.set(task.task_id, row);
  }
  row.cells[0].firstChild.textContent = taskTitle(task);
  const outcome = taskOutcome(task);
  row.cells[1].textContent = outcome.text;
  row.cells[1].dataset.tone = outcome.tone;
  row.cells[2].textContent = new Date(task.created_at).toLocaleString();
  return row;
}

async function loadTasks() {
  const tasks = await call(session, "/api/tasks?limit=10");
  document.querySelector("#tasks tbody").replaceChildren(...tasks.map(taskRow));
}

async function loadExercises() {
  const [exercises, progress] = await Promise.all([
    call(session, "/api/exercises"),
    call(session, "/api/submissions/progress"),
  ]);
  const best = new Map(progress.map((p) => [p.exercise_id, p]));
  document.getElementById("exercises").replaceChildren(
    ...exercises.map((exercise) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = `/exercise.html?id=${encodeURIComponent(exercise.id)}`;
      link.textContent = exercise.title;
      const status = document.createElement("span");
      const record = best.get(exercise.id);
      status.className = "status";
      status.textContent = record ? (record.passed ? "✓ passed" : `tried ${record.attempts}×`) : "not started";
      status.dataset.passed = String(Boolean(record?.passed));
      const topic = document.createElement("span");
      topic.className = "topic";
      topic.textContent = exercise.topic;
      item.append(link, topic, status);
      return item;
    }),
  );
}

// Live states: any envelope for a listed task refreshes its row from the database.
client.subscribe("*", async (frame) => {
  if (!frame.task_id) return;
  if (frame.type === "task_status" || frame.type.endsWith("_result")) {
    const task = await call(session, `/api/tasks/${frame.task_id}`);
    const row = taskRow(task);
    if (!row.isConnected) document.querySelector("#tasks tbody").prepend(row);
  }
});
client.subscribe("hello", (frame) => {
  if (!frame.data.recovered) loadTasks();
});

await Promise.all([loadTasks(), loadExercises()]);
client.connect();
