// Behaviour of the ranking task page: reorder the responses with keys or by dragging.
// The place selects (rank_<id>) are the form's real fields, so the page works without this
// script; the script moves the responses and keeps every select equal to its visual place.
// Listeners sit on document, so they keep working across htmx swaps of #task.
(() => {
  const TYPING = "input, textarea, select, [contenteditable]";
  let dragged = null;

  const rankList = () => document.querySelector("#task [data-ranking] [data-rank-list]");
  const itemsOf = (list) => Array.from(list.querySelectorAll(":scope > [data-rank-item]"));

  function currentItem(list) {
    const focused = document.activeElement?.closest?.("[data-rank-item]");
    if (focused && focused.parentElement === list) return focused;
    return list.querySelector(":scope > .is-current") || itemsOf(list)[0];
  }

  function markCurrent(list, item) {
    for (const each of itemsOf(list)) each.classList.toggle("is-current", each === item);
  }

  function choose(list, item) {
    markCurrent(list, item);
    item.focus();
  }

  function renumber(list, moved) {
    itemsOf(list).forEach((item, index) => {
      item.querySelector("[data-rank-place]").textContent = String(index + 1);
      const select = item.querySelector("[data-rank-select]");
      if (select) select.value = String(index + 1);
    });
    const status = list.closest("[data-ranking]").querySelector("[data-rank-status]");
    if (moved && status) {
      const place = itemsOf(list).indexOf(moved) + 1;
      const text = moved.querySelector(".markdown")?.textContent.trim() ?? "";
      const short = text.length > 40 ? `${text.slice(0, 40)}…` : text;
      status.textContent = `Moved “${short}” to place ${place}.`;
    }
  }

  function moveTo(list, item, place) {
    const others = itemsOf(list).filter((each) => each !== item);
    const index = Math.max(0, Math.min(place, others.length));
    list.insertBefore(item, others[index] || null);
    renumber(list, item);
    choose(list, item);
  }

  function submit(list) {
    const form = list.closest("form");
    const button = form?.querySelector("[data-rank-submit]");
    if (!button || button.disabled) return;
    if (window.htmx) window.htmx.process(form);
    button.click();
  }

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const list = rankList();
    if (!list || event.target.closest(TYPING)) return;
    const items = itemsOf(list);
    const item = currentItem(list);
    const index = items.indexOf(item);
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if ((key === "ArrowUp" && event.shiftKey) || key === "u") {
      moveTo(list, item, index - 1);
    } else if ((key === "ArrowDown" && event.shiftKey) || key === "d") {
      moveTo(list, item, index + 1);
    } else if (key === "ArrowUp" || key === "k") {
      choose(list, items[Math.max(0, index - 1)]);
    } else if (key === "ArrowDown" || key === "j") {
      choose(list, items[Math.min(items.length - 1, index + 1)]);
    } else if (/^[1-9]$/.test(key) && Number(key) <= items.length) {
      moveTo(list, item, Number(key) - 1);
    } else if (key === "Enter" && !event.target.closest("button, a, summary")) {
      submit(list);
    } else {
      return;
    }
    event.preventDefault();
  });

  // Picking a place in a select moves the response there (the others shift).
  document.addEventListener("change", (event) => {
    const select = event.target.closest?.("#task [data-rank-select]");
    if (!select) return;
    const item = select.closest("[data-rank-item]");
    moveTo(item.parentElement, item, Number(select.value) - 1);
  });

  document.addEventListener("focusin", (event) => {
    const item = event.target.closest?.("#task [data-rank-item]");
    if (item) markCurrent(item.parentElement, item);
  });

  document.addEventListener("dragstart", (event) => {
    const item = event.target.closest?.("#task [data-rank-item]");
    if (!item) return;
    dragged = item;
    item.classList.add("is-dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", item.dataset.responseId);
  });

  document.addEventListener("dragover", (event) => {
    if (!dragged) return;
    const over = event.target.closest?.("[data-rank-item]");
    if (!over || over.parentElement !== dragged.parentElement) return;
    event.preventDefault();
    if (over === dragged) return;
    const box = over.getBoundingClientRect();
    const after = event.clientY > box.top + box.height / 2;
    over.parentElement.insertBefore(dragged, after ? over.nextSibling : over);
  });

  document.addEventListener("drop", (event) => {
    if (dragged) event.preventDefault();
  });

  document.addEventListener("dragend", () => {
    if (!dragged) return;
    const item = dragged;
    dragged = null;
    item.classList.remove("is-dragging");
    if (!item.isConnected) return;
    renumber(item.parentElement, item);
    choose(item.parentElement, item);
  });
})();
