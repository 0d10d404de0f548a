// The project menu's groups (<details> in templates/base.html): one open at a time; Escape
// or a click elsewhere closes it, and Escape gives the focus back to the group's summary.
(() => {
  const groups = () => document.querySelectorAll("details.nav-group");
  document.addEventListener("toggle", (event) => {
    const opened = event.target;
    if (!opened.matches?.("details.nav-group") || !opened.open) return;
    groups().forEach((group) => { if (group !== opened) group.open = false; });
  }, true);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const open = document.querySelector("details.nav-group[open]");
    if (!open) return;
    open.open = false;
    open.querySelector("summary").focus();
  });
  document.addEventListener("click", (event) => {
    groups().forEach((group) => { if (group.open && !group.contains(event.target)) group.open = false; });
  });
})();
