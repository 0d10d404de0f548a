// Keyboard-first labeling: a key clicks the element that names it in data-key.
// Escape leaves a text field so the keys work again.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (event.key === "Escape" && target.closest("input, textarea, select")) {
    target.blur();
    return;
  }
  if (target.closest("input, textarea, select, [contenteditable]")) return;
  const task = document.querySelector("#task");
  if (!task) return;
  const key = event.key.toLowerCase();
  for (const element of task.querySelectorAll("[data-key]")) {
    if (element.dataset.key.split(" ").includes(key) && !element.disabled) {
      event.preventDefault();
      // A key can arrive right after a swap, before htmx has wired the new form; wiring it
      // here keeps the answer an in-place request instead of a full page submit.
      const form = element.closest("form");
      if (form && window.htmx) window.htmx.process(form);
      element.click();
      return;
    }
  }
});
