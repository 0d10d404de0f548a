// Demonstration tasks (templates/annotation/labeling/kinds/_demonstration.html): focus the
// text box whenever a task appears (first load, htmx swaps, and app.js showing the prefetched task),
// Ctrl+Enter / Cmd+Enter submits, a live character count, a word-level diff preview for
// edits, and a draft kept per assignment in sessionStorage so a refused or reloaded task
// does not lose what was typed. Everything hangs off document, so it survives swaps.
(() => {
  const MAX_PREVIEW_CELLS = 4_000_000; // beyond this the diff preview is skipped (too slow)
  const DRAFT_PREFIX = "demonstration-draft:";
  const MAX_DRAFTS = 20;

  const textBox = (root) => root?.querySelector?.("textarea[data-demo-text]") ?? null;
  const formOf = (element) => element.closest("form");
  const assignmentOf = (element) =>
    formOf(element)?.querySelector("input[name=assignment_id]")?.value ?? "";

  // --- drafts ----------------------------------------------------------------------------
  function saveDraft(box) {
    const key = DRAFT_PREFIX + assignmentOf(box);
    try {
      if (box.value === box.defaultValue) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, JSON.stringify({ text: box.value, at: Date.now() }));
      const drafts = Object.keys(sessionStorage).filter((name) => name.startsWith(DRAFT_PREFIX));
      if (drafts.length > MAX_DRAFTS) {
        const age = (name) => JSON.parse(sessionStorage.getItem(name) || "{}").at || 0;
        drafts.sort((a, b) => age(a) - age(b));
        drafts.slice(0, drafts.length - MAX_DRAFTS).forEach((name) => sessionStorage.removeItem(name));
      }
    } catch (error) {
      // Storage full or disabled: drafts are a convenience, the form still works.
    }
  }

  function restoreDraft(box) {
    try {
      const draft = JSON.parse(sessionStorage.getItem(DRAFT_PREFIX + assignmentOf(box)) || "null");
      if (draft && typeof draft.text === "string") {
        box.value = draft.text;
        return true;
      }
    } catch (error) {
      // Ignore a broken or unavailable store.
    }
    return false;
  }

  // --- count, validity, diff preview -----------------------------------------------------
  function update(box) {
    const container = box.closest("[data-demonstration]");
    const count = container?.querySelector("[data-demo-count]");
    if (count) count.textContent = String(box.value.length);
    box.setCustomValidity(box.value.trim() ? "" : "Write the reply first.");
    if (box.dataset.demoMode === "edit") schedulePreview(box);
  }

  const timers = new WeakMap();
  function schedulePreview(box) {
    clearTimeout(timers.get(box));
    timers.set(box, setTimeout(() => renderPreview(box), 150));
  }

  const tokens = (text) => text.match(/\s+|[^\s]+/g) || [];

  // Longest common subsequence on the part between the common prefix and suffix (edits are
  // usually local, so that part is small). Returns [op, token] with op "=", "-" or "+".
  function diffTokens(before, after) {
    let start = 0;
    while (start < before.length && start < after.length && before[start] === after[start]) start++;
    let endBefore = before.length;
    let endAfter = after.length;
    while (endBefore > start && endAfter > start && before[endBefore - 1] === after[endAfter - 1]) {
      endBefore--;
      endAfter--;
    }
    const a = before.slice(start, endBefore);
    const b = after.slice(start, endAfter);
    const head = before.slice(0, start).map((t) => ["=", t]);
    const tail = before.slice(endBefore).map((t) => ["=", t]);
    if ((a.length + 1) * (b.length + 1) > MAX_PREVIEW_CELLS) {
      return [...head, ...a.map((t) => ["-", t]), ...b.map((t) => ["+", t]), ...tail];
    }
    const width = b.length + 1;
    const table = new Uint32Array((a.length + 1) * width);
    for (let i = a.length - 1; i >= 0; i--) {
      for (let j = b.length - 1; j >= 0; j--) {
        table[i * width + j] =
          a[i] === b[j]
            ? table[(i + 1) * width + j + 1] + 1
            : Math.max(table[(i + 1) * width + j], table[i * width + j + 1]);
      }
    }
    const middle = [];
    let i = 0;
    let j = 0;
    while (i < a.length && j < b.length) {
      if (a[i] === b[j]) {
        middle.push(["=", a[i]]);
        i++;
        j++;
      } else if (table[(i + 1) * width + j] >= table[i * width + j + 1]) {
        middle.push(["-", a[i++]]);
      } else {
        middle.push(["+", b[j++]]);
      }
    }
    while (i < a.length) middle.push(["-", a[i++]]);
    while (j < b.length) middle.push(["+", b[j++]]);
    return [...head, ...middle, ...tail];
  }

  function renderPreview(box) {
    const container = box.closest("[data-demonstration]");
    const panel = container?.querySelector("[data-demo-diff]");
    const body = panel?.querySelector("[data-demo-diff-body]");
    if (!panel || !body) return;
    if (box.value === box.defaultValue) {
      panel.hidden = true;
      body.replaceChildren();
      return;
    }
    // Built from text nodes only: the texts are user and model content, never markup.
    const parts = diffTokens(tokens(box.defaultValue), tokens(box.value)).map(([op, text]) => {
      if (op === "=") return document.createTextNode(text);
      const mark = document.createElement(op === "+" ? "ins" : "del");
      mark.textContent = text;
      return mark;
    });
    body.replaceChildren(...parts);
    panel.hidden = false;
  }

  // --- a task appears ----------------------------------------------------------------------
  function prepare(root) {
    const box = textBox(root);
    if (!box || box.dataset.demoReady) return;
    box.dataset.demoReady = "yes";
    const restored = restoreDraft(box);
    update(box);
    if (box.closest("template")) return;
    box.focus({ preventScroll: false });
    const caret = restored ? box.value.length : 0;
    box.setSelectionRange(caret, caret);
    box.scrollTop = restored ? box.scrollHeight : 0;
  }

  const prepareTask = () => prepare(document.getElementById("task"));

  document.addEventListener("DOMContentLoaded", () => {
    prepareTask();
    // app.js shows a prefetched task by replacing #task itself (no htmx swap event), so
    // watch the page for a new text box whoever puts it there.
    new MutationObserver((changes) => {
      for (const change of changes) {
        for (const node of change.addedNodes) {
          if (node.nodeType === Node.ELEMENT_NODE && (node.matches("textarea[data-demo-text]") || textBox(node))) {
            prepareTask();
            return;
          }
        }
      }
    }).observe(document.body, { childList: true, subtree: true });
  });
  document.addEventListener("htmx:load", prepareTask);
  document.addEventListener("htmx:afterSwap", prepareTask);

  document.addEventListener("input", (event) => {
    const box = event.target.closest?.("textarea[data-demo-text]");
    if (!box) return;
    update(box);
    saveDraft(box);
  });

  // static/app.js ignores keys with Ctrl or Meta and keys typed in fields, so Ctrl+Enter
  // is handled here. requestSubmit runs the form's checks and fires the submit event that
  // app.js turns into an instant answer (a plain form post without it).
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.altKey) return;
    const box = textBox(document.getElementById("task"));
    if (!box) return;
    event.preventDefault();
    if (event.repeat) return;
    update(box);
    const form = formOf(box);
    const button = form.querySelector("[data-demo-submit]");
    if (button?.disabled) return;
    form.requestSubmit(button ?? undefined);
  });
})();
