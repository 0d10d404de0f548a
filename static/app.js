// Keyboard-first labeling: a key clicks the button that names it in data-key.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target.closest("input, textarea, select, [contenteditable]")) return;
  const form = document.querySelector("[data-keyboard-form]");
  if (!form) return;
  const key = event.key.toLowerCase();
  for (const button of form.querySelectorAll("button[data-key]")) {
    if (button.dataset.key.split(" ").includes(key) && !button.disabled) {
      event.preventDefault();
      // A key can arrive right after a swap, before htmx has wired the new form; wiring it
      // here keeps the vote an in-place request instead of a full page submit.
      if (window.htmx) window.htmx.process(form);
      button.click();
      return;
    }
  }
});
