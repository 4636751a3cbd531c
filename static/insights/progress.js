// Batch progress: polls live.json every second and redraws the table (done/total, rate, time left).
(function () {
  "use strict";

  function text(value, fallback) { return value === null || value === undefined ? fallback : String(value); }

  function eta(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function cell(row, content, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    row.appendChild(td);
  }

  function render(tbody, batches) {
    tbody.textContent = "";
    if (!batches.length) {
      const row = document.createElement("tr");
      row.className = "batch-empty";
      cell(row, "No batch sync has run yet.");
      row.firstChild.colSpan = 11;
      tbody.appendChild(row);
      return;
    }
    batches.forEach(function (b) {
      const row = document.createElement("tr");
      row.dataset.batchId = b.id;
      row.dataset.status = b.status;
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = b.percent === null ? 0 : b.percent;
      cell(row, String(b.id));
      cell(row, b.kind_label);
      cell(row, b.system);
      cell(row, b.entity);
      cell(row, b.label);
      cell(row, b.status_label, "batch-status");
      cell(row, b.done + " / " + text(b.total, "?"), "batch-done");
      cell(row, bar);
      cell(row, text(b.rate_per_second === null ? null : b.rate_per_second.toFixed(1), "–") + "/s", "batch-rate");
      cell(row, eta(b.eta_seconds), "batch-eta");
      cell(row, b.started_at.replace("T", " ").slice(0, 19));
      tbody.appendChild(row);
    });
  }

  function init() {
    const root = document.querySelector(".batch-progress");
    if (!root) return;
    const tbody = document.querySelector("#batch-progress-table tbody");
    const stamp = document.getElementById("batch-progress-updated");
    let busy = false;
    function poll() {
      if (busy) return;
      busy = true;
      fetch(root.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { if (!response.ok) throw new Error(response.status); return response.json(); })
        .then(function (data) {
          render(tbody, data.batches);
          stamp.textContent = "Updated " + data.now.replace("T", " ").slice(0, 19) + " UTC.";
          root.dataset.polls = String(Number(root.dataset.polls || 0) + 1);
        })
        .catch(function (error) { stamp.textContent = "Refresh failed (" + error.message + "); retrying."; })
        .finally(function () { busy = false; });
    }
    poll();
    setInterval(poll, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
