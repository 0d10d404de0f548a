// Behaviour of the arena pages (templates/annotation/arena/*.html), which load this file.
(() => {
  // A refusal (400/409) or a broker outage (503) comes back as the battle fragment with
  // the message in it: show it instead of htmx's default of dropping error responses.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    if (!target || target.id !== "task" || !target.hasAttribute("data-arena")) return;
    const status = event.detail.xhr.status;
    if (status >= 400 && status < 600 && event.detail.xhr.responseText.includes('id="task"')) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // Ctrl+Enter (Cmd+Enter on a Mac) in the prompt box starts the battle.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.isComposing) return;
    const input = event.target.closest?.("[data-arena-prompt]");
    if (!input || !input.value.trim()) return;
    event.preventDefault();
    input.closest("form").requestSubmit();
  });
})();
