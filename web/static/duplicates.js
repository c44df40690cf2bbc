// Duplicates page: keyboard shortcuts and "select all". Every action is a plain form button, so
// the page works without JavaScript; the keys only focus groups and press their buttons.
(function () {
  "use strict";
  const groups = Array.from(document.querySelectorAll(".dup-group"));
  const selectAll = document.getElementById("select-all");
  if (selectAll) {
    selectAll.addEventListener("click", () => {
      const boxes = document.querySelectorAll('.dup-group input[name="group"]');
      const check = Array.from(boxes).some((box) => !box.checked);
      boxes.forEach((box) => { box.checked = check; });
    });
  }
  if (!groups.length) return;

  function current() {
    return groups.find((group) => group.contains(document.activeElement)) || null;
  }

  function focus(index) {
    const group = groups[Math.max(0, Math.min(groups.length - 1, index))];
    group.focus();
    group.scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" && event.target.type !== "checkbox") return;
    if (tag === "select" || tag === "textarea") return;
    const group = current();
    const index = group ? groups.indexOf(group) : -1;
    if (event.key === "j") { focus(index + 1); event.preventDefault(); return; }
    if (event.key === "k") { focus(index < 0 ? 0 : index - 1); event.preventDefault(); return; }
    if (!group) return;
    if (event.key === "x") {
      const box = group.querySelector('input[name="group"]');
      box.checked = !box.checked;
      event.preventDefault();
      return;
    }
    const button = group.querySelector('button[data-key="' + event.key + '"]');
    if (button) {
      event.preventDefault();
      button.form.requestSubmit(button);
    }
  });
})();
