// A form with data-confirm asks before it is sent (deleting a member, revoking a key, ...): the question is
// the attribute's text. Here, not in an onsubmit attribute, which the Content-Security-Policy does not run.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
