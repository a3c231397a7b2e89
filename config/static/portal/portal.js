// Copy buttons: `<button data-copy="ID" hidden>` copies the value (or text) of element ID.
// The buttons stay hidden without JavaScript; the text is then shown, selectable, to copy by
// hand. A file of its own (not inline) so the Content-Security-Policy allows scripts from this
// origin only.
"use strict";

function copyText(source) {
  return "value" in source ? source.value : source.textContent;
}

function announce(button, text) {
  const status = document.getElementById(button.dataset.copyStatus || "");
  if (status) {
    status.textContent = text;
  }
}

for (const button of document.querySelectorAll("button[data-copy]")) {
  const source = document.getElementById(button.dataset.copy);
  if (!source) {
    continue;
  }
  button.hidden = false;
  button.addEventListener("click", async () => {
    const text = copyText(source).trim();
    try {
      await navigator.clipboard.writeText(text);
      announce(button, "Copied to the clipboard.");
    } catch {
      // No clipboard access (an insecure origin, a refused permission): select the text so
      // that Ctrl+C / Cmd+C copies it.
      if (typeof source.select === "function") {
        source.select();
      } else {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      }
      announce(button, "Selected: press Ctrl+C (or Cmd+C) to copy.");
    }
  });
}

// Confirm before a destructive POST, where the form asks for it (the server also shows a
// confirmation page to those without JavaScript).
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
}

// After a refused submit, take keyboard and screen-reader users to the summary of problems.
const problems = document.querySelector(".form-errors[tabindex='-1']");
if (problems) {
  problems.focus();
}
