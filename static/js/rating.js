// Behaviour of the rating task page: score the highlighted criterion with 1-7 (then the next
// one is highlighted), move between criteria with the arrows or Tab, toggle flags with their
// letters, submit with Enter. The radios and checkboxes are the form's real fields, so the
// page works without this script. Keys also work while a radio or checkbox has the focus
// (they take no text; app.js handles the page's other keys, R and S, there too). Listeners
// sit on document, so they survive htmx swaps.
(() => {
  const TYPING =
    "textarea, select, [contenteditable], input:not([type=radio]):not([type=checkbox])";

  const ratingWidget = () => document.querySelector("#task [data-rating]");
  const rowsOf = (widget) => Array.from(widget.querySelectorAll("[data-criterion]"));

  function currentRow(widget) {
    const focused = document.activeElement?.closest?.("[data-criterion]");
    if (focused && widget.contains(focused)) return focused;
    return widget.querySelector("[data-criterion].is-current") || rowsOf(widget)[0];
  }

  function markCurrent(widget, row) {
    for (const each of rowsOf(widget)) each.classList.toggle("is-current", each === row);
  }

  function choose(widget, row) {
    if (!row) return;
    markCurrent(widget, row);
    const radio = row.querySelector("input:checked") || row.querySelector("input");
    radio?.focus();
  }

  function scoreOf(row) {
    return Number(row.querySelector("input:checked")?.value || 0);
  }

  function setScore(row, score) {
    const radio = row.querySelector(`input[value="${score}"]`);
    if (radio) radio.checked = true;
  }

  function submit(widget) {
    const form = widget.closest("form");
    const button = form?.querySelector("[data-rating-submit]");
    if (!button || button.disabled) return;
    if (window.htmx) window.htmx.process(form);
    button.click();
  }

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const widget = ratingWidget();
    if (!widget || event.target.closest(TYPING)) return;
    const rows = rowsOf(widget);
    const row = currentRow(widget);
    const index = rows.indexOf(row);
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const flag = /^[a-z]$/.test(key) && widget.querySelector(`[data-flag-key="${key}"]`);
    if (/^[1-7]$/.test(key)) {
      setScore(row, Number(key));
      choose(widget, rows[Math.min(rows.length - 1, index + 1)]);
    } else if (key === "ArrowDown" || key === "ArrowUp") {
      const step = key === "ArrowDown" ? 1 : -1;
      choose(widget, rows[Math.max(0, Math.min(rows.length - 1, index + step))]);
    } else if (key === "ArrowRight" || key === "ArrowLeft") {
      const score = scoreOf(row);
      setScore(row, key === "ArrowRight" ? Math.min(7, score + 1) : Math.max(1, score - 1));
      choose(widget, row);
    } else if (flag) {
      flag.click();
    } else if (key === "Enter" && !event.target.closest("button, a, summary")) {
      submit(widget);
    } else {
      return;
    }
    event.preventDefault();
  });

  document.addEventListener("focusin", (event) => {
    const row = event.target.closest?.("#task [data-rating] [data-criterion]");
    if (row) markCurrent(row.closest("[data-rating]"), row);
  });
})();
