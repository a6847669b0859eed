// An exercise: description, three code editors with a sandboxed preview that runs on a pause in
// typing, drafts kept in IndexedDB, grading with a live progress bar and per-checkpoint feedback.

import { clearDraft, loadDraft, saveDraft } from "../drafts.js";
import { pageNotes } from "../grading-feedback.js";
import { call, connect, requireSession, setText } from "../layout.js";
import { guardScript, newGuardName, protectHtmlScripts, protectLoops } from "../loop-guard.js";
import { renderMarkdown } from "../markdown.js";
import { createEditor } from "../../vendor/code-editor.js";

const session = requireSession();
const exerciseId = new URLSearchParams(location.search).get("id");
const LABELS = { html: "HTML", css: "CSS", js: "JavaScript" };
const PREVIEW_PAUSE_MS = 500;
// Read-only until the draft is in them: earlier typing would be overwritten.
const editors = Object.fromEntries(
  Object.entries(LABELS).map(([name, label]) => {
    const editor = createEditor({
      parent: document.getElementById(`code-${name}`),
      language: name,
      label,
      onChange: scheduleSave,
    });
    editor.setEditable(false);
    return [name, editor];
  }),
);
let exercise;
let pendingTask = null;
let lastResult = null;

function currentCode() {
  return Object.fromEntries(Object.entries(editors).map(([name, editor]) => [name, editor.getValue()]));
}

function setCode(code) {
  for (const [name, editor] of Object.entries(editors)) editor.setValue(code[name] ?? "");
  updatePreview();
}

function updatePreview() {
  const { html, css, js } = currentCode();
  // The iframe is sandboxed without same-origin: the learner's script runs in its own origin.
  // End tags are matched in any case, as the HTML parser does ("</SCRIPT>" ends a script too).
  // Every loop gets a guard first, so `while (true) {}` stops after a second instead of hanging.
  // The guard's name is new each time: code cannot be written to reach it.
  const guard = newGuardName();
  const safeCss = css.replace(/<\/(style)/gi, "<\\/$1");
  const safeJs = protectLoops(js, guard).replace(/<\/(script)/gi, "<\\/$1");
  setText("preview-note", "");
  document.getElementById("preview").srcdoc =
    `${guardScript(guard)}<style>${safeCss}</style>${protectHtmlScripts(html, guard)}<script>${safeJs}<\/script>`;
}

// The preview reports a loop it stopped; only messages from its own frame count.
window.addEventListener("message", (event) => {
  if (event.source !== document.getElementById("preview").contentWindow) return;
  if (event.data?.taskwire === "loop-stopped") {
    setText(
      "preview-note",
      `The preview stopped a loop (line ${Number(event.data.line)}) that ran for over a second. Does it ever end?`,
    );
  }
});

let saveTimer;
let previewTimer;
function scheduleSave() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(async () => {
    await saveDraft(session.participant_id, exerciseId, currentCode());
    setText("draft-state", "Draft saved on this device.");
  }, 300);
  // The preview runs once typing pauses, not on every key: half-typed code is rarely worth running.
  clearTimeout(previewTimer);
  previewTimer = setTimeout(updatePreview, PREVIEW_PAUSE_MS);
}

function showResult(result, error, { earlier = null } = {}) {
  document.getElementById("grading").hidden = false;
  document.getElementById("progress").value = 1;
  setText("progress-message", earlier ? `Your last attempt, ${new Date(earlier).toLocaleString()}:` : "");
  const message = document.getElementById("result-message");
  const list = document.getElementById("checkpoints");
  list.replaceChildren();
  if (error) {
    message.textContent = `Could not grade: ${error.message}`;
    message.dataset.passed = "false";
  } else {
    lastResult = result;
    message.textContent = result.message;
    message.dataset.passed = String(result.passed);
    for (const checkpoint of result.checkpoints) {
      const item = document.createElement("li");
      item.dataset.passed = String(checkpoint.passed);
      const name = document.createElement("strong");
      name.textContent = `${checkpoint.passed ? "✓" : "✗"} ${checkpoint.name}`;
      item.append(name);
      if (!checkpoint.passed) {
        const hint = document.createElement("p");
        hint.textContent = checkpoint.feedback;
        item.append(hint);
      }
      list.append(item);
    }
    list.append(...pageNotes(result.details));
    document.getElementById("ask").hidden = false;
  }
  if (!earlier) {
    // The grade is what the learner waited for: bring it into view and move focus to it, so a
    // screen reader reads it too (the progress messages before it are polite updates).
    document.getElementById("grading").scrollIntoView({ block: "start", behavior: "smooth" });
    message.focus({ preventScroll: true });
  }
}

function showGrading(text) {
  document.getElementById("grading").hidden = false;
  document.getElementById("progress").value = 0;
  setText("progress-message", text);
  setText("result-message", "");
  document.getElementById("checkpoints").replaceChildren();
}

try {
  exercise = await call(session, `/api/exercises/${encodeURIComponent(exerciseId)}`);
} catch (error) {
  setText("title", error.message);
  throw error;
}
document.title = `${exercise.title} · Taskwire tutor`;
setText("title", exercise.title);
document.getElementById("description").innerHTML = renderMarkdown(exercise.description_md);
setText("checkpoint-names", `Checks: ${exercise.checkpoints.join(" · ")}`);
const draft = await loadDraft(session.participant_id, exerciseId).catch(() => undefined);
setCode(draft ?? exercise.start_code);
if (draft) setText("draft-state", "Restored your draft.");
for (const editor of Object.values(editors)) editor.setEditable(true);
document.getElementById("submit").disabled = false;
document.getElementById("reset").disabled = false;

const client = connect(session);
client.subscribe("submission_progress", (frame) => {
  if (frame.task_id !== pendingTask) return;
  document.getElementById("progress").value = frame.data.progress;
  setText("progress-message", frame.data.message);
});
client.subscribe("submission_result", (frame) => {
  if (frame.task_id !== pendingTask) return;
  client.unwatch(pendingTask);
  pendingTask = null;
  document.getElementById("submit").disabled = false;
  showResult(frame.data, frame.error);
});
client.subscribe("task_polled", ({ task_id: taskId, data: task }) => {
  if (taskId === pendingTask && (task.state === "SUCCESS" || task.state === "FAILURE")) {
    client.dispatch({ type: "submission_result", task_id: taskId, data: task.result, error: task.error });
  }
});
client.connect();

// The last attempt, graded or still running, is shown again after a reload.
call(session, `/api/submissions/latest?exercise_id=${encodeURIComponent(exerciseId)}`)
  .then(({ task }) => {
    if (!task || pendingTask) return;
    if (task.state === "SUCCESS" || task.state === "FAILURE") {
      showResult(task.result, task.error, { earlier: task.finished_at ?? task.created_at });
    } else if (task.state !== "CANCELLED") {
      pendingTask = task.task_id;
      document.getElementById("submit").disabled = true;
      showGrading("Still grading your last submission…");
      document.getElementById("progress").value = task.progress ?? 0;
      client.watch(pendingTask);
    }
  })
  .catch(() => {}); // only a convenience: the page works without it

document.getElementById("submit").addEventListener("click", async () => {
  const button = document.getElementById("submit");
  button.disabled = true;
  showGrading("Submitted…");
  document.getElementById("grading").scrollIntoView({ block: "nearest", behavior: "smooth" });
  try {
    const accepted = await call(session, "/submit-test2", {
      method: "POST",
      body: { exercise_id: exerciseId, code: currentCode() },
    });
    pendingTask = accepted.task_id;
    client.watch(pendingTask);
  } catch (error) {
    button.disabled = false;
    setText("progress-message", error.message);
  }
});

document.getElementById("reset").addEventListener("click", async () => {
  if (!confirm("Put the start code back? Your changes to this exercise will be lost.")) return;
  await clearDraft(session.participant_id, exerciseId);
  setCode(exercise.start_code);
  setText("draft-state", "Back to the start code.");
});

document.getElementById("ask").addEventListener("click", async () => {
  await call(session, "/ai/chat2", {
    method: "POST",
    body: {
      message: `I'm working on "${exercise.title}". Can you give me a hint?`,
      mode: "test",
      content_id: exerciseId,
      code_context: currentCode(),
      test_results: lastResult,
    },
  });
  location.href = "/chat.html";
});
