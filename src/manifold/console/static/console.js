// The console's copy buttons: <button data-copy="ID" hidden> copies the value of the field #ID. Without this
// script the button stays hidden and the field (readonly, selectable) is copied by hand.
"use strict";
document.querySelectorAll("button[data-copy]").forEach((button) => {
  const field = document.getElementById(button.dataset.copy);
  const said = document.querySelector(`[data-copied="${button.dataset.copy}"]`);
  if (!field) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    field.select();
    let copied = false;
    try {
      await navigator.clipboard.writeText(field.value);
      copied = true;
    } catch {
      copied = document.execCommand("copy");
    }
    if (said) said.textContent = copied ? "Copied." : "Could not copy: select the secret and copy it.";
  });
});
