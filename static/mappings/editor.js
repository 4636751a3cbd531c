/*
 * The mapping editor (templates/mappings/editor.html): a rules table edited inline, a sample payload, and
 * the live output. Every change re-runs the preview on the server (debounced) without saving anything;
 * "Save rules", "Save sample" and "Publish" call their own endpoints. No framework, no CDN.
 */
(function () {
  "use strict";

  const DEBOUNCE_MS = 300;
  const config = JSON.parse(document.getElementById("mapping-editor-config").textContent);
  const root = document.getElementById("mapping-editor");
  const table = document.getElementById("rules-table");
  const payloadBox = document.getElementById("sample-payload");
  const picker = document.getElementById("sample-picker");
  const output = document.getElementById("preview-output");
  const errorsBody = document.querySelector("#preview-errors tbody");
  const noErrors = document.getElementById("no-errors");
  const errorCount = document.getElementById("error-count");
  const previewState = document.getElementById("preview-state");
  const sampleError = document.getElementById("sample-error");
  const csrfToken = root.querySelector("input[name=csrfmiddlewaretoken]").value;

  let dirty = false;
  let timer = null;
  let sequence = 0;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([key, value]) => {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
    });
    (children || []).forEach((child) => node.appendChild(child));
    return node;
  }

  function jsonText(value) {
    return value === null || value === undefined ? "" : JSON.stringify(value);
  }

  // One step per line reads best in the narrow column; the server parses whatever JSON comes back.
  function stepsText(steps) {
    if (!steps.length) return "";
    return "[" + steps.map((step) => JSON.stringify(step)).join(",\n ") + "]";
  }

  function show(value) {
    if (value === null || value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken, Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try {
      data = await response.json();
    } catch (error) {
      data = { detail: `The server answered ${response.status} without JSON.` };
    }
    return { ok: response.ok, status: response.status, data };
  }

  // --- the rules table --------------------------------------------------------------------------------

  function ruleBody(rule) {
    const disabled = !config.canEdit;
    const body = el("tbody", { className: "rule", "data-id": rule.id || "" });
    const cell = (input) => el("td", {}, [input]);
    const row = el("tr", { className: "rule-inputs" }, [
      cell(el("input", { type: "text", name: "target_path", value: rule.target_path || "", disabled, "aria-label": "Target path" })),
      cell(el("input", { type: "text", name: "source_paths", value: (rule.source_paths || []).join(", "), disabled, "aria-label": "Source paths" })),
      cell(el("textarea", { name: "steps", rows: 3, spellcheck: "false", disabled, "aria-label": "Steps (JSON)" })),
      cell(el("input", { type: "checkbox", name: "required", checked: !!rule.required, disabled, "aria-label": "Required" })),
      cell(el("input", { type: "text", name: "default", value: rule.has_default ? jsonText(rule.default_value) : "", disabled, "aria-label": "Default" })),
      cell(el("input", { type: "text", name: "condition", value: jsonText(rule.condition), disabled, "aria-label": "Condition (JSON)" })),
      el("td", {}, config.canEdit ? [el("button", { type: "button", className: "delete-rule", title: "Delete this rule", text: "✕" })] : []),
    ]);
    row.querySelector("[name=steps]").value = stepsText(rule.steps || []);
    body.appendChild(row);
    body.appendChild(el("tr", { className: "rule-errors" }, [el("td", { colspan: "7", className: "row-errors" })]));
    body.dataset.notes = rule.notes || "";
    return body;
  }

  function renderRules(rules) {
    table.querySelectorAll("tbody.rule").forEach((body) => body.remove());
    rules.forEach((rule) => table.appendChild(ruleBody(rule)));
  }

  function collectRules() {
    return Array.from(table.querySelectorAll("tbody.rule")).map((body) => {
      const value = (name) => body.querySelector(`[name=${name}]`);
      return {
        id: body.dataset.id ? Number(body.dataset.id) : null,
        target_path: value("target_path").value,
        source_paths: value("source_paths").value,
        steps: value("steps").value,
        required: value("required").checked,
        default: value("default").value,
        condition: value("condition").value,
        notes: body.dataset.notes || "",
      };
    });
  }

  function showRowErrors(byRow) {
    Array.from(table.querySelectorAll("tbody.rule")).forEach((body, index) => {
      const messages = byRow[index] || [];
      const cell = body.querySelector(".row-errors");
      cell.replaceChildren(...messages.map((message) => el("div", { className: "me-error", text: message })));
      body.classList.toggle("has-errors", messages.length > 0);
    });
  }

  // --- the sample payload ---------------------------------------------------------------------------

  function readPayload() {
    try {
      const payload = JSON.parse(payloadBox.value || "{}");
      if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
        throw new Error("the sample must be a JSON object");
      }
      sampleError.textContent = "";
      return payload;
    } catch (error) {
      sampleError.textContent = `Sample is not valid JSON: ${error.message}`;
      return null;
    }
  }

  function pick() {
    const [kind, index] = picker.value.split(":");
    const list = kind === "sample" ? config.samples : kind === "message" ? config.messages : null;
    if (!list || !list[Number(index)]) return;
    const item = list[Number(index)];
    payloadBox.value = JSON.stringify(item.payload, null, 2);
    const name = document.getElementById("sample-name");
    if (name && kind === "sample") name.value = item.name;
    schedulePreview();
  }

  // --- the live preview -----------------------------------------------------------------------------

  function schedulePreview() {
    clearTimeout(timer);
    previewState.textContent = "…";
    timer = setTimeout(runPreview, DEBOUNCE_MS);
  }

  async function runPreview() {
    const payload = readPayload();
    if (payload === null) {
      previewState.textContent = "waiting for valid JSON";
      return;
    }
    const mine = ++sequence;
    const { ok, data } = await post(config.urls.preview, { payload, rules: collectRules() });
    if (mine !== sequence) return; // a newer edit already asked again; this answer is stale
    if (!ok) {
      previewState.textContent = data.detail || "preview failed";
      return;
    }
    output.textContent = JSON.stringify(data.output, null, 2);
    renderErrors(data.errors || []);
    const byRow = {};
    (data.rule_errors || []).forEach((item) => (byRow[item.row] = item.messages));
    showRowErrors(byRow);
    previewState.textContent = (data.rule_errors || []).length ? "(rows with errors are left out)" : "";
    root.dataset.previewCount = String(mine);
  }

  function renderErrors(errors) {
    errorsBody.replaceChildren(
      ...errors.map((error) =>
        el("tr", { className: "preview-error" }, [
          el("td", { className: "error-target", text: error.target }),
          el("td", { className: "error-source", text: error.source }),
          el("td", { className: "error-value", text: show(error.value) }),
          el("td", { className: "error-message", text: error.message }),
        ])
      )
    );
    noErrors.hidden = errors.length > 0;
    errorCount.textContent = errors.length ? `(${errors.length})` : "";
  }

  // --- saving -----------------------------------------------------------------------------------------

  function setDirty(value) {
    dirty = value;
    const publish = document.getElementById("publish");
    const hint = document.getElementById("publish-hint");
    if (publish) publish.disabled = value;
    if (hint) hint.textContent = value ? "Save the rules before publishing." : "";
    root.classList.toggle("me-dirty", value);
  }

  async function saveRules() {
    const status = document.getElementById("save-status");
    const reason = document.getElementById("change-reason").value.trim();
    status.className = "me-status-line";
    if (!reason) {
      status.textContent = "Give a reason for the change first.";
      status.classList.add("me-error");
      document.getElementById("change-reason").focus();
      return;
    }
    status.textContent = "Saving…";
    const { ok, data } = await post(config.urls.rules, { rules: collectRules(), reason });
    if (!ok) {
      status.textContent = data.detail || "Not saved.";
      status.classList.add("me-error");
      const byRow = {};
      (data.errors || []).forEach((error) => {
        if (error.row === undefined) return;
        (byRow[error.row] = byRow[error.row] || []).push(error.message);
      });
      showRowErrors(byRow);
      return;
    }
    config.rules = data.rules;
    renderRules(data.rules);
    setDirty(false);
    status.textContent = `Saved ${data.saved} rule(s).`;
    status.classList.add("me-ok");
    schedulePreview();
  }

  async function saveSample() {
    const status = document.getElementById("sample-status");
    const name = document.getElementById("sample-name").value.trim();
    const payload = readPayload();
    status.className = "me-status-line";
    if (!name || payload === null) {
      status.textContent = name ? "Fix the JSON first." : "Name the sample first.";
      status.classList.add("me-error");
      return;
    }
    const { ok, data } = await post(config.urls.sample, { name, payload });
    if (!ok) {
      status.textContent = data.detail || "Not saved.";
      status.classList.add("me-error");
      return;
    }
    const existing = config.samples.findIndex((sample) => sample.name === data.name);
    if (existing >= 0) {
      config.samples[existing] = data;
    } else {
      config.samples.push(data);
      document.getElementById("picker-samples").appendChild(
        el("option", { value: `sample:${config.samples.length - 1}`, text: data.name })
      );
    }
    picker.value = `sample:${existing >= 0 ? existing : config.samples.length - 1}`;
    status.textContent = `Saved sample “${data.name}”. Publishing replays it.`;
    status.classList.add("me-ok");
  }

  // --- publishing -------------------------------------------------------------------------------------

  function diffTable(diff) {
    if (!diff.length) return el("p", { className: "me-hint", text: "No change in the output." });
    return el("table", { className: "me-table publish-diff" }, [
      el("thead", {}, [el("tr", {}, ["Field", "Before", "After"].map((text) => el("th", { text })))]),
      el(
        "tbody",
        {},
        diff.map((change) =>
          el("tr", { className: "diff-row", "data-path": change.path }, [
            el("td", { className: "diff-path", text: change.path }),
            el("td", { className: "diff-before", text: show(change.before) }),
            el("td", { className: "diff-after", text: show(change.after) }),
          ])
        )
      ),
    ]);
  }

  function renderReport(data) {
    const report = document.getElementById("publish-report");
    const from = data.previous_version ? `v${data.previous_version}` : "nothing published yet";
    const parts = [el("h3", { text: `Regression report: v${data.version} against ${from}` })];
    if (!data.outcomes.length) {
      parts.push(el("p", { className: "me-hint", text: "No saved samples: save one so publishing can check it." }));
    }
    data.outcomes.forEach((outcome) => {
      parts.push(
        el("div", { className: "publish-sample", "data-sample": outcome.sample }, [
          el("h4", { text: `Sample “${outcome.sample}”` }),
          diffTable(outcome.diff),
        ])
      );
    });
    report.replaceChildren(...parts);
    report.hidden = false;
  }

  function renderBlocked(data) {
    const report = document.getElementById("publish-report");
    report.replaceChildren(
      el("h3", { className: "me-error", text: data.detail || "Publishing is blocked." }),
      el("table", { className: "me-table publish-blockers" }, [
        el("thead", {}, [el("tr", {}, ["Sample / field", "Source", "Value", "Message"].map((text) => el("th", { text })))]),
        el(
          "tbody",
          {},
          (data.errors || []).map((error) =>
            el("tr", { className: "blocker" }, [
              el("td", { text: error.field }),
              el("td", { text: error.source || "" }),
              el("td", { text: show(error.value) }),
              el("td", { text: error.message }),
            ])
          )
        ),
      ])
    );
    report.hidden = false;
  }

  async function publish(confirm) {
    const status = document.getElementById("publish-status");
    const confirmButton = document.getElementById("confirm-publish");
    status.className = "me-status-line";
    status.textContent = confirm ? "Publishing…" : "Replaying the saved samples…";
    const { ok, data } = await post(config.urls.publish, { confirm });
    if (!ok) {
      confirmButton.hidden = true;
      status.textContent = "";
      if (data.errors && data.errors.length) renderBlocked(data);
      else {
        status.textContent = data.detail || "Not published.";
        status.classList.add("me-error");
      }
      return;
    }
    renderReport(data);
    if (data.published) {
      status.textContent = `Published v${data.version}.`;
      status.classList.add("me-ok");
      document.getElementById("mapping-status").textContent = "Published";
      confirmButton.hidden = true;
      if (data.redirect) window.location.assign(data.redirect);
      return;
    }
    status.textContent = "Check the differences, then confirm.";
    confirmButton.hidden = false;
  }

  // --- wiring -----------------------------------------------------------------------------------------

  renderRules(config.rules);
  table.addEventListener("input", () => {
    setDirty(true);
    schedulePreview();
  });
  table.addEventListener("click", (event) => {
    if (!event.target.classList.contains("delete-rule")) return;
    event.target.closest("tbody.rule").remove();
    setDirty(true);
    schedulePreview();
  });
  payloadBox.addEventListener("input", schedulePreview);
  picker.addEventListener("change", pick);
  const add = document.getElementById("add-rule");
  if (add) {
    add.addEventListener("click", () => {
      const body = ruleBody({ target_path: "", source_paths: [], steps: [] });
      table.appendChild(body);
      body.querySelector("[name=target_path]").focus();
      setDirty(true);
    });
  }
  const saveButton = document.getElementById("save-rules");
  if (saveButton) saveButton.addEventListener("click", saveRules);
  const sampleButton = document.getElementById("save-sample");
  if (sampleButton) sampleButton.addEventListener("click", saveSample);
  const publishButton = document.getElementById("publish");
  if (publishButton) publishButton.addEventListener("click", () => publish(false));
  const confirmButton = document.getElementById("confirm-publish");
  if (confirmButton) confirmButton.addEventListener("click", () => publish(true));
  window.addEventListener("beforeunload", (event) => {
    if (dirty) event.preventDefault();
  });
  runPreview();
})();
