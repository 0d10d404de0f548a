// Keyboard-first labeling: a key clicks the element that names it in data-key.
// No key acts while the focus is in a field that takes text (the key is typed there);
// Escape leaves the field so the keys work again. <html> has the class "typing" while the
// focus is in such a field, so app.css can hide the one-key hints then.
const TEXT_INPUT_TYPES = new Set([
  "text", "search", "email", "url", "tel", "password", "number",
  "date", "datetime-local", "month", "time", "week",
]);

// Radios, checkboxes and buttons take no text: the keys still work from them.
function takesText(element) {
  if (!(element instanceof Element)) return false;
  if (element.isContentEditable || element.matches("textarea, select")) return true;
  return element.matches("input") && TEXT_INPUT_TYPES.has(element.type);
}

function markTyping(focused = document.activeElement) {
  document.documentElement.classList.toggle("typing", takesText(focused));
}

document.addEventListener("focusin", (event) => markTyping(event.target));
document.addEventListener("focusout", (event) => markTyping(event.relatedTarget));
// A focused field that a swap removes may leave without a focusout.
document.addEventListener("htmx:afterSettle", () => markTyping());
markTyping();

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (takesText(target)) {
    if (event.key === "Escape") target.blur();
    return;
  }
  const task = document.querySelector("#task");
  if (!task) return;
  const key = event.key.toLowerCase();
  // Keys act in the task and in page parts marked data-keys (the "Recently judged" strip).
  for (const element of document.querySelectorAll("#task [data-key], [data-keys] [data-key]")) {
    if (element.dataset.key.split(" ").includes(key) && !element.disabled) {
      event.preventDefault();
      // A key that opens a text field (data-focus names it) puts the cursor in it, so what
      // is typed next lands there and never reaches the other keys. When the field is
      // already open the key only goes back to it.
      const field = element.dataset.focus ? task.querySelector(element.dataset.focus) : null;
      if (field?.checkVisibility()) {
        field.focus();
        return;
      }
      // A key can arrive right after a swap, before htmx has wired the new form; wiring it
      // here keeps the answer an in-place request instead of a full page submit.
      if (window.htmx) window.htmx.process(element.closest("form") ?? element);
      element.click();
      field?.focus();
      return;
    }
  }
});

// Answers never wait on the server: the page holds the next task in <template
// id="upcoming-task">. Submitting shows it at once and posts the answer in the background;
// the reply is the task to hold next. A failed post is retried with the same client_id,
// which the server stores once.
(() => {
  let shownAt = performance.now();
  let judged = Number(document.querySelector("[data-judged]")?.textContent ?? 0);
  const csrf = () => document.cookie.match(/csrftoken=([^;]+)/)?.[1] ?? "";
  const status = (text) => {
    const element = document.getElementById("answer-status");
    if (element) element.textContent = text;
  };

  function currentTask() {
    return document.getElementById("task");
  }

  const assignmentOf = (root) =>
    root?.querySelector("form[data-keyboard-form]")?.dataset.assignment ?? null;

  function show(html) {
    currentTask().outerHTML = html;
    shownAt = performance.now();
    if (window.htmx) window.htmx.process(currentTask());
    // The held task may be the one the server just handed out as current.
    const slot = document.getElementById("upcoming-task");
    const shown = assignmentOf(currentTask());
    if (slot && shown && assignmentOf(slot.content) === shown) slot.innerHTML = "";
    markTyping();
  }

  function takeUpcoming() {
    const slot = document.getElementById("upcoming-task");
    const next = slot?.content.querySelector("#task");
    const nextId = assignmentOf(next);
    if (!nextId || nextId === assignmentOf(currentTask())) return null;
    slot.innerHTML = "";
    show(next.outerHTML);
    return nextId;
  }

  function hold(html) {
    const slot = document.getElementById("upcoming-task");
    if (slot) slot.innerHTML = html;
  }

  async function post(url, data, attempt = 0) {
    try {
      const reply = await fetch(url, {
        method: "POST",
        body: data,
        headers: { "HX-Request": "true", "X-CSRFToken": csrf() },
        credentials: "same-origin",
      });
      return { ok: reply.ok, status: reply.status, html: await reply.text() };
    } catch (error) {
      status(`Saving… (retry ${attempt + 1})`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(8000, 500 * 2 ** attempt)));
      return post(url, data, attempt + 1);
    }
  }

  async function refillUpcoming(url) {
    const form = currentTask()?.querySelector("form[data-keyboard-form]");
    if (!form) return;
    const reply = await fetch(`${url}?after=${form.dataset.assignment}`, {
      headers: { "HX-Request": "true" },
      credentials: "same-origin",
    });
    if (reply.ok) hold(await reply.text());
  }

  let queue = Promise.resolve();

  document.addEventListener(
    "submit",
    (event) => {
      const form = event.target.closest("form[data-answer-form]");
      if (!form || !form.closest("#task")) return;
      event.preventDefault();
      event.stopPropagation();
      const data = new FormData(form, event.submitter);
      data.set("time_spent_ms", String(Math.round(performance.now() - shownAt)));
      const url = form.action;
      const shownNext = takeUpcoming();
      if (shownNext) data.set("after", shownNext);
      status("Saving…");
      queue = queue.then(async () => {
        const reply = await post(url, data);
        if (reply.ok) {
          status("Saved.");
          // The "Recently judged" strip (htmx) fetches itself again.
          document.body.dispatchEvent(new CustomEvent("judged"));
          judged += 1;
          for (const counter of document.querySelectorAll("[data-judged]")) {
            counter.textContent = String(judged);
          }
          if (shownNext) hold(reply.html);
          else {
            show(reply.html);
            refillUpcoming(url);
          }
          return;
        }
        // Refused (bad input, expired task): say so and show what the server holds now.
        const holder = document.createElement("div");
        holder.innerHTML = reply.html;
        status(holder.textContent.trim() || `Not saved (HTTP ${reply.status}).`);
        const fresh = await fetch(url, { headers: { "HX-Request": "true" } });
        show(await fresh.text());
        refillUpcoming(url);
      });
    },
    true,
  );

  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target?.id === "task" || event.target?.id === "task") {
      shownAt = performance.now();
      const slot = document.getElementById("upcoming-task");
      if (slot && !slot.content.querySelector("#task")) {
        refillUpcoming(currentTask().querySelector("form")?.action ?? location.pathname);
      }
    }
  });
})();
