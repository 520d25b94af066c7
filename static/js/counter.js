// A long text field (a textarea with maxlength) shows how much of its limit is used once
// nine tenths are, and says so when a paste was cut: the browser drops what goes past
// maxlength without a word, and the shortened text would be sent as if whole.
"use strict";

(function () {
  const cutNote = document.body.dataset.i18nCut || "";
  const number = (n) => n.toLocaleString(document.documentElement.lang || undefined);
  for (const field of document.querySelectorAll("textarea[maxlength]")) {
    const limit = Number(field.getAttribute("maxlength"));
    if (!limit) continue;
    const counter = document.createElement("div");
    counter.className = "field-count small";
    counter.dataset.testid = "field-count";
    counter.setAttribute("aria-live", "polite");
    counter.hidden = true;
    field.after(counter);
    let cut = false; // the last paste did not fit
    const show = () => {
      const used = field.value.length;
      counter.hidden = !cut && used < limit * 0.9;
      counter.classList.toggle("full", cut || used >= limit);
      counter.textContent = number(used) + " / " + number(limit) + (cut ? " · " + cutNote : "");
    };
    field.addEventListener("paste", (event) => {
      const pasted = event.clipboardData ? event.clipboardData.getData("text") : "";
      const replaced = field.selectionEnd - field.selectionStart;
      cut = field.value.length - replaced + pasted.length > limit;
    });
    // Typing, or a script that sets the text and says so (static/js/chat.js), clears the note of a cut paste.
    field.addEventListener("input", (event) => {
      if (event.inputType !== "insertFromPaste") cut = false;
      show();
    });
    show();
  }
})();
