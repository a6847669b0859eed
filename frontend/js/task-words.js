// A task in the learner's words: what it was ("Your first page", "Asked: why is my list…")
// and how it went ("1 of 3 checks", "Answered", "Stopped"), rather than ids and states.

const WORKING = { submission: "Being graded…", chat: "The tutor is answering…" };

/** What the task was: its summary from the server, or its kind. */
export function taskTitle(task) {
  return task.summary || task.kind;
}

/** How it went, as `{ text, tone }`; tone is "good", "bad", "busy" or "" for the page's colours. */
export function taskOutcome(task) {
  switch (task.state) {
    case "QUEUED":
      return { text: "Waiting for its turn", tone: "busy" };
    case "STARTED":
    case "PROGRESS":
      return { text: WORKING[task.kind] ?? "Working…", tone: "busy" };
    case "CANCELLED":
      return { text: "Stopped", tone: "" };
    case "FAILURE":
      return { text: `Didn't finish: ${task.error?.message ?? "something went wrong"}`, tone: "bad" };
    case "SUCCESS": {
      const checks = task.result?.checkpoints;
      if (Array.isArray(checks)) {
        const passed = checks.filter((check) => check.passed).length;
        return passed === checks.length
          ? { text: `Passed: all ${checks.length} checks`, tone: "good" }
          : { text: `${passed} of ${checks.length} checks passed`, tone: "bad" };
      }
      return { text: task.kind === "chat" ? "Answered" : "Done", tone: "good" };
    }
    default:
      return { text: task.state, tone: "" };
  }
}
