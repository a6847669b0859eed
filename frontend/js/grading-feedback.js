// What the grader saw of the learner's page, in words a beginner can act on: the page's
// JavaScript errors (with the likely cause) and what it tried to load from the internet.

const ERROR_HINTS = [
  [/Cannot read propert(y|ies) of (null|undefined)/i,
    "Something your code looked for was not there. Often document.querySelector or getElementById found nothing: check the selector matches your HTML."],
  [/is not defined/i, "A name is used that was never defined. Check its spelling (upper and lower case count)."],
  [/is not a function/i, "Something was called like a function but is not one. Check the name, and the brackets after it."],
  [/Unexpected token|Unexpected end of input|missing \)|Invalid or unexpected token|SyntaxError/i,
    "The browser could not read your JavaScript. Look for a missing bracket, quote or comma."],
  [/Maximum call stack size exceeded/i, "A function keeps calling itself without end."],
];

function hintFor(message) {
  for (const [pattern, hint] of ERROR_HINTS) if (pattern.test(message)) return hint;
  return "";
}

/** Notes about the page (errors, blocked loads, dialogs) as list items; empty when there is nothing to say. */
export function pageNotes(details) {
  const notes = [];
  for (const error of (details?.page_errors ?? []).slice(0, 3)) {
    const item = document.createElement("li");
    item.className = "page-note error";
    const what = document.createElement("strong");
    what.textContent = "Your JavaScript stopped with an error: ";
    const text = document.createElement("code");
    text.textContent = error;
    item.append(what, text);
    const hint = hintFor(error);
    if (hint) {
      const why = document.createElement("p");
      why.textContent = hint;
      item.append(why);
    }
    notes.push(item);
  }
  const blocked = details?.blocked_request_count ?? details?.blocked_requests?.length ?? 0;
  if (blocked > 0) {
    const item = document.createElement("li");
    item.className = "page-note blocked";
    const first = details.blocked_requests?.[0] ?? "";
    item.textContent =
      `Your page tried to load ${blocked === 1 ? "something" : `${blocked}${details.blocked_request_count_capped ? " or more" : ""} things`} from the internet` +
      (first ? ` (like ${first})` : "") +
      ". Grading runs offline, so it was blocked: put your styles and scripts in the editors instead.";
    notes.push(item);
  }
  if ((details?.dialogs ?? 0) > 0) {
    const item = document.createElement("li");
    item.className = "page-note";
    item.textContent = `Your page opened ${details.dialogs} alert or confirm dialog${details.dialogs === 1 ? "" : "s"}; the grader closed them.`;
    notes.push(item);
  }
  return notes;
}
