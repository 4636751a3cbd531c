// Exception item page: the payload editor checks its JSON as you type and keeps "Show the changes"
// disabled while it does not parse. The server checks again and shows the diff before anything is replayed.
(function () {
  "use strict";
  function check(editor) {
    const form = editor.closest("form");
    const error = form.querySelector(".hub-json-error");
    const submit = form.querySelector("button[type=submit]");
    let message = "";
    try {
      const value = JSON.parse(editor.value);
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        message = "The payload must be a JSON object.";
      }
    } catch (e) {
      message = "Not valid JSON: " + e.message;
    }
    error.textContent = message;
    editor.classList.toggle("invalid", message !== "");
    submit.disabled = message !== "";
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea.hub-json-editor").forEach(function (editor) {
      editor.addEventListener("input", function () { check(editor); });
      check(editor);
    });
  });
})();
