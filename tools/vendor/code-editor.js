// Entry of frontend/vendor/code-editor.js: CodeMirror 6 set up for a beginner's HTML, CSS and
// JavaScript, behind four functions, and acorn for the preview's loop guard. Built by `make vendor`.
import { indentWithTab } from "@codemirror/commands";
import { css } from "@codemirror/lang-css";
import { html } from "@codemirror/lang-html";
import { javascript } from "@codemirror/lang-javascript";
import { Annotation, Compartment, EditorState } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { basicSetup } from "codemirror";

export { parse as parseJavaScript } from "acorn";

const LANGUAGES = { html, css, js: javascript };
// Marks the page's own replacements (a restored draft, Reset), which are not the learner typing.
const fromSetValue = Annotation.define();

// Editable or not, and saying so to assistive technology (and to tests) with aria-readonly.
function editing(on) {
  return on ? EditorView.editable.of(true) : [EditorView.editable.of(false), EditorView.contentAttributes.of({ "aria-readonly": "true" })];
}

/**
 * A code editor in `parent` for `language` ("html", "css" or "js"), labelled for screen readers.
 * Tab indents; Escape then Tab leaves the editor (CodeMirror's rule, so the keyboard never traps).
 */
export function createEditor({ parent, language, doc = "", label, onChange = () => {} }) {
  const editable = new Compartment();
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        basicSetup,
        keymap.of([indentWithTab]),
        LANGUAGES[language](),
        editable.of(editing(true)),
        EditorView.contentAttributes.of({ "aria-label": label }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged && !update.transactions.every((t) => t.annotation(fromSetValue))) onChange();
        }),
      ],
    }),
  });
  return {
    view,
    getValue: () => view.state.doc.toString(),
    setValue(text) {
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: text },
        annotations: fromSetValue.of(true),
      });
    },
    setEditable(on) {
      view.dispatch({ effects: editable.reconfigure(editing(on)) });
    },
    focus: () => view.focus(),
  };
}
