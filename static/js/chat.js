// Behaviour of the chat page (templates/annotation/chat/chat.html). Loaded on every page, so
// everything is delegated from document and does nothing outside #task[data-chat].
(() => {
  const chatTask = () => document.querySelector("#task[data-chat]");

  document.addEventListener("keydown", (event) => {
    const task = chatTask();
    if (!task || event.key !== "Enter" || event.isComposing) return;
    // Ctrl+Enter (Cmd+Enter on a Mac) finishes the chat from anywhere, the input included.
    if (event.ctrlKey || event.metaKey) {
      const finish = task.querySelector("[data-chat-finish]");
      if (finish) {
        event.preventDefault();
        if (window.htmx) window.htmx.process(finish);
        finish.click();
      }
      return;
    }
    // Enter in the message box sends it; Shift+Enter starts a new line.
    const input = event.target.closest?.("[data-chat-input]");
    if (!input || event.shiftKey || event.altKey) return;
    event.preventDefault();
    if (!input.value.trim()) return;
    const form = input.closest("form");
    if (window.htmx) window.htmx.process(form);
    form.requestSubmit();
  });

  // A refusal (400/409) or a broker outage (503) comes back as the chat fragment with the
  // message in it: show it instead of htmx's default of dropping error responses.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    if (!target || target.id !== "task" || !target.hasAttribute("data-chat")) return;
    const status = event.detail.xhr.status;
    if (status >= 400 && status < 600 && event.detail.xhr.responseText.includes('id="task"')) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // After a swap, put the cursor back in the message box so the next message can be typed.
  document.addEventListener("htmx:afterSettle", () => {
    const input = chatTask()?.querySelector("[data-chat-input]");
    if (input && document.activeElement !== input) input.focus();
  });
})();
