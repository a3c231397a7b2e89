// The release console keeps a running unlock's progress current without reloading the page
// while bytes move, and reloads once when an unlock changes state (approved, staged, flipped,
// failed), so the page then shows the new state. No library; nothing runs when nothing runs.
(function () {
  "use strict";
  const root = document.querySelector("[data-progress-url]");
  if (!root) {
    return;
  }
  const url = root.dataset.progressUrl;
  const every = 1000 * Number(root.dataset.refreshSeconds || 3);

  function apply(unlock) {
    const bar = document.getElementById("progress-" + unlock.id);
    if (bar) {
      bar.max = Math.max(unlock.bytes_total, 1);
      bar.value = unlock.bytes_done;
    }
    const text = document.getElementById("progress-text-" + unlock.id);
    if (text) {
      text.textContent = unlock.text;
    }
  }

  async function poll() {
    let data;
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      data = await response.json();
    } catch (error) {
      window.setTimeout(poll, every * 3); // the server is busy or restarting: back off
      return;
    }
    const current = new Map(data.unlocks.map((unlock) => [String(unlock.id), unlock]));
    let changed = false;
    for (const row of document.querySelectorAll("tr[data-live]")) {
      const unlock = current.get(row.id.replace("unlock-", ""));
      if (!unlock || unlock.state !== row.dataset.state) {
        changed = true;
      } else {
        apply(unlock);
      }
    }
    if (changed || !data.running) {
      window.location.reload();
      return;
    }
    window.setTimeout(poll, every);
  }

  window.setTimeout(poll, every);
})();
