/*
 * The mapping editor (templates/mappings/editor.html): rule cards built from forms (a target picked from the
 * canonical schema, sources clicked in the sample tree, steps from the transform registry with a form per
 * parameter schema), an advanced JSON view of the same rules, a sample payload, and the live output. Every change re-runs the preview on the server (debounced) without saving anything;
 * "Save rules", "Save sample" and "Publish" call their own endpoints. No framework, no CDN.
 */
(function () {
  "use strict";

  const DEBOUNCE_MS = 300;
  const config = JSON.parse(document.getElementById("mapping-editor-config").textContent);
  const root = document.getElementById("mapping-editor");
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
  let renderedTreeFor = null;
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

  // --- the rules: cards built from forms, never typed as JSON -----------------------------------------

  const list = document.getElementById("rules-list");
  const transforms = {};
  (config.transforms || []).forEach((item) => (transforms[item.name] = item));
  const targets = config.targets || [];
  let rules = (config.rules || []).map(normalise);
  let active = null; // index of the rule a click in the sample tree fills
  let lastErrors = { byRow: {}, fieldErrors: [] };

  function normalise(rule) {
    return {
      id: rule.id === undefined ? null : rule.id,
      target_path: rule.target_path || "",
      source_paths: Array.isArray(rule.source_paths) ? rule.source_paths.slice() : [],
      steps: Array.isArray(rule.steps) ? JSON.parse(JSON.stringify(rule.steps)) : [],
      required: !!rule.required,
      has_default: !!rule.has_default,
      default_value: rule.default_value === undefined ? null : rule.default_value,
      condition: rule.condition === undefined ? null : rule.condition,
      notes: rule.notes || "",
    };
  }

  // A typed value: JSON when it parses (12, true, "x"), else the text itself, so `GBP` works as well as `"GBP"`.
  function typedValue(text) {
    if (text === "") return "";
    try {
      return JSON.parse(text);
    } catch (error) {
      return text;
    }
  }

  function valueText(value) {
    if (value === undefined || value === null) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function changed() {
    setDirty(true);
    syncAdvanced();
    schedulePreview();
  }

  function move(array, index, delta) {
    const to = index + delta;
    if (to < 0 || to >= array.length) return false;
    const [item] = array.splice(index, 1);
    array.splice(to, 0, item);
    return true;
  }

  function button(text, className, title, onClick) {
    const node = el("button", { type: "button", className: `me-btn ${className}`, title, "aria-label": title, text });
    node.disabled = !config.canEdit;
    node.addEventListener("click", (event) => {
      event.stopPropagation();
      onClick();
    });
    return node;
  }

  function targetPicker(rule) {
    const select = el("select", { name: "target_path", "aria-label": "Target field" });
    select.disabled = !config.canEdit;
    select.appendChild(el("option", { value: "", text: "— pick the target field —" }));
    const known = new Set();
    targets.forEach((field) => {
      known.add(field.path);
      const label = `${field.path}${field.required ? " *" : ""} (${field.type}${field.format ? ", " + field.format : ""})`;
      select.appendChild(el("option", { value: field.path, text: label, selected: field.path === rule.target_path }));
    });
    if (rule.target_path && !known.has(rule.target_path)) {
      select.appendChild(el("option", { value: rule.target_path, text: rule.target_path, selected: true }));
    }
    select.appendChild(el("option", { value: "__other__", text: "Another path…" }));
    select.addEventListener("change", () => {
      if (select.value === "__other__") {
        const typed = window.prompt("Target path (for example project.client.id):", rule.target_path || "");
        if (typed) rule.target_path = typed.trim();
        render();
      } else {
        rule.target_path = select.value;
        renderUnmapped();
      }
      changed();
    });
    return select;
  }

  // One input per parameter, from the transform's parameter schema.
  function paramInput(step, name, schema, required) {
    // Read without creating: a step without parameters keeps no "params" key, so the JSON round-trips exactly.
    const params = step.params || {};
    const id = `p-${Math.random().toString(36).slice(2)}`;
    const label = el("label", { for: id, className: "me-param-label", text: `${name}${required ? " *" : ""}` });
    let input;
    const setValue = (value) => {
      const current = (step.params = step.params || {});
      if (value === undefined || value === "" || (Array.isArray(value) && !value.length)) delete current[name];
      else current[name] = value;
      if (!Object.keys(current).length) delete step.params;
      changed();
    };
    if (name === "value_map") {
      input = el("select", { id, name: `param-${name}` });
      input.appendChild(el("option", { value: "", text: "— pick a value map —" }));
      (config.valueMaps || []).forEach((map) =>
        input.appendChild(el("option", { value: map, text: map, selected: params[name] === map }))
      );
      input.addEventListener("change", () => setValue(input.value || undefined));
    } else if (Array.isArray(schema.enum)) {
      input = el("select", { id, name: `param-${name}` });
      input.appendChild(el("option", { value: "", text: "—" }));
      schema.enum.forEach((option) =>
        input.appendChild(el("option", { value: option, text: option, selected: params[name] === option }))
      );
      input.addEventListener("change", () => setValue(input.value || undefined));
    } else if (schema.type === "boolean") {
      input = el("input", { id, type: "checkbox", name: `param-${name}`, checked: params[name] === true });
      input.addEventListener("change", () => setValue(input.checked ? true : undefined));
    } else if (schema.type === "integer" || schema.type === "number") {
      input = el("input", { id, type: "number", name: `param-${name}`, value: valueText(params[name]) });
      if (schema.type === "integer") input.step = "1";
      else input.step = "any";
      input.addEventListener("input", () => setValue(input.value === "" ? undefined : Number(input.value)));
    } else if (schema.type === "array" && schema.items && schema.items.type === "object") {
      return el("div", { className: "me-param me-param-table" }, [label, pairTable(step, name, schema.items)]);
    } else if (schema.type === "array") {
      input = el("input", { id, type: "text", name: `param-${name}`, value: (params[name] || []).join(", "), placeholder: "comma-separated" });
      input.addEventListener("input", () =>
        setValue(input.value.split(",").map((part) => part.trim()).filter((part) => part))
      );
    } else if (schema.type === "string") {
      input = el("input", { id, type: "text", name: `param-${name}`, value: valueText(params[name]) });
      input.addEventListener("input", () => setValue(input.value === "" ? undefined : input.value));
    } else {
      input = el("input", { id, type: "text", name: `param-${name}`, value: valueText(params[name]), placeholder: "a value" });
      input.addEventListener("input", () => setValue(input.value === "" ? undefined : typedValue(input.value)));
    }
    input.disabled = !config.canEdit;
    return el("div", { className: "me-param" }, [label, input]);
  }

  // A list of objects (the cases of `case`, the rates of `currency_convert`): a row per item, a column per field.
  function pairTable(step, name, itemSchema) {
    const columns = Object.keys(itemSchema.properties || {});
    const existing = step.params && Array.isArray(step.params[name]) ? step.params[name] : null;
    const items = existing || [];
    // The list joins the step's parameters with its first item, and leaves them with its last.
    const attach = () => {
      step.params = step.params || {};
      if (items.length) step.params[name] = items;
      else delete step.params[name];
      if (!Object.keys(step.params).length) delete step.params;
    };
    const body = el("tbody");
    const draw = () => {
      body.replaceChildren(
        ...items.map((item, index) =>
          el("tr", { className: "me-param-row" }, [
            ...columns.map((column) => {
              const input = el("input", {
                type: "text",
                name: `param-${name}-${column}`,
                value: valueText(item[column]),
                "aria-label": `${name} ${index + 1} ${column}`,
              });
              input.disabled = !config.canEdit;
              input.addEventListener("input", () => {
                if (input.value === "") delete item[column];
                else item[column] = typedValue(input.value);
                changed();
              });
              return el("td", {}, [input]);
            }),
            el("td", {}, [
              button("✕", "remove-item", `Remove ${name} ${index + 1}`, () => {
                items.splice(index, 1);
                attach();
                draw();
                changed();
              }),
            ]),
          ])
        )
      );
    };
    draw();
    const add = button(`+ ${name.replace(/s$/, "")}`, "add-item", `Add to ${name}`, () => {
      items.push({});
      attach();
      draw();
      changed();
    });
    return el("div", {}, [
      el("table", { className: "me-table me-pairs" }, [
        el("thead", {}, [el("tr", {}, [...columns.map((column) => el("th", { text: column })), el("th")])]),
        body,
      ]),
      add,
    ]);
  }

  function stepBox(rule, step, index) {
    const spec = transforms[step.transform];
    const schema = (spec && spec.params_schema) || { properties: {} };
    const needed = new Set(schema.required || []);
    const header = el("div", { className: "me-step-head" }, [
      el("strong", { className: "step-name", text: `${index + 1}. ${step.transform}` }),
      el("span", { className: "me-hint", text: spec ? ` ${spec.summary}` : " unknown transform" }),
      button("↑", "step-up", "Move this step up", () => move(rule.steps, index, -1) && (render(), changed())),
      button("↓", "step-down", "Move this step down", () => move(rule.steps, index, 1) && (render(), changed())),
      button("✕", "step-remove", "Remove this step", () => {
        rule.steps.splice(index, 1);
        render();
        changed();
      }),
    ]);
    const form = Object.entries(schema.properties || {}).map(([name, paramSchema]) =>
      paramInput(step, name, paramSchema || {}, needed.has(name))
    );
    return el("div", { className: "me-step", "data-transform": step.transform }, [header, ...form]);
  }

  function addStepPicker(rule) {
    const select = el("select", { className: "add-step", "aria-label": "Add step" });
    select.disabled = !config.canEdit;
    select.appendChild(el("option", { value: "", text: "+ Add step…" }));
    (config.transforms || []).forEach((item) =>
      select.appendChild(el("option", { value: item.name, text: `${item.name} (${item.category})`, title: item.summary }))
    );
    select.addEventListener("change", () => {
      if (!select.value) return;
      rule.steps.push({ transform: select.value });
      render();
      changed();
    });
    return select;
  }

  function sourceChips(rule, index) {
    const chips = rule.source_paths.map((path, position) =>
      el("span", { className: "me-chip source-path", "data-path": path }, [
        el("code", { text: path }),
        button("✕", "source-remove", `Remove source ${path}`, () => {
          rule.source_paths.splice(position, 1);
          render();
          changed();
        }),
      ])
    );
    const hint = el("span", {
      className: "me-hint",
      text: index === active ? " ← click a field in the sample" : rule.source_paths.length ? "" : " (none: click the rule, then a sample field)",
    });
    return el("div", { className: "me-sources" }, [el("span", { className: "me-label", text: "From " }), ...chips, hint]);
  }

  function ruleCard(rule, index) {
    const card = el("div", {
      className: `rule me-rule${index === active ? " me-active" : ""}`,
      "data-index": String(index),
      "data-target": rule.target_path,
      tabindex: "0",
    });
    card.addEventListener("click", () => {
      if (active === index) return;
      active = index;
      render();
    });
    const required = el("input", { type: "checkbox", name: "required", checked: rule.required, "aria-label": "Required" });
    required.disabled = !config.canEdit;
    required.addEventListener("change", () => {
      rule.required = required.checked;
      changed();
    });
    const fallback = el("input", {
      type: "text",
      name: "default",
      value: rule.has_default ? valueText(rule.default_value) : "",
      placeholder: "none",
      "aria-label": "Default value",
    });
    fallback.disabled = !config.canEdit;
    fallback.addEventListener("input", () => {
      rule.has_default = fallback.value !== "";
      rule.default_value = rule.has_default ? typedValue(fallback.value) : null;
      changed();
    });
    const head = el("div", { className: "me-rule-head" }, [
      el("span", { className: "me-label", text: "Target " }),
      targetPicker(rule),
      button("↑", "rule-up", "Move this rule up", () => move(rules, index, -1) && (active = null, render(), changed())),
      button("↓", "rule-down", "Move this rule down", () => move(rules, index, 1) && (active = null, render(), changed())),
      button("✕", "delete-rule", "Delete this rule", () => {
        rules.splice(index, 1);
        active = null;
        render();
        changed();
      }),
    ]);
    const options = el("div", { className: "me-rule-options" }, [
      el("label", {}, [required, document.createTextNode(" required")]),
      el("label", {}, [document.createTextNode(" default "), fallback]),
      rule.condition
        ? el("span", { className: "me-hint", text: ` only when ${rule.condition.path} ${rule.condition.op} ${valueText(rule.condition.value)} (edit in Advanced)` })
        : el("span"),
    ]);
    const steps = el("div", { className: "me-steps" }, [
      ...rule.steps.map((step, position) => stepBox(rule, step, position)),
      config.canEdit ? addStepPicker(rule) : el("span"),
    ]);
    card.append(head, sourceChips(rule, index), steps, options, el("div", { className: "row-errors" }));
    return card;
  }

  function render() {
    list.replaceChildren(...rules.map(ruleCard));
    renderUnmapped();
    showRowErrors(lastErrors.byRow);
  }

  function renderUnmapped() {
    const box = document.getElementById("unmapped-required");
    const mapped = new Set(rules.map((rule) => rule.target_path));
    (config.inherited || []).forEach((target) => mapped.add(target));
    const missing = targets.filter((field) => field.required && !field.path.includes(".") && !mapped.has(field.path));
    box.hidden = !missing.length;
    box.replaceChildren(
      el("strong", { text: "Required fields not mapped yet: " }),
      ...missing.map((field) => el("code", { className: "unmapped-field", text: field.path + " " }))
    );
  }

  function collectRules() {
    return rules.map((rule) => JSON.parse(JSON.stringify(rule)));
  }

  // Errors land on the rule they belong to: a rule's own problems by row, a field error by its target path.
  function showRowErrors(byRow) {
    lastErrors.byRow = byRow;
    Array.from(list.querySelectorAll(".rule")).forEach((card, index) => {
      const target = rules[index] ? rules[index].target_path : "";
      const fieldMessages = lastErrors.fieldErrors
        .filter((error) => target && (error.target === target || error.target.startsWith(target + ".") || error.target.startsWith(target + "[")))
        .map((error) => `${error.target}: ${error.message}${error.value !== null && error.value !== undefined ? ` (value ${show(error.value)})` : ""}`);
      const messages = (byRow[index] || []).concat(fieldMessages);
      const cell = card.querySelector(".row-errors");
      cell.replaceChildren(...messages.map((message) => el("div", { className: "me-error rule-error", text: message })));
      card.classList.toggle("has-errors", messages.length > 0);
    });
  }

  // --- the advanced JSON view: the same rules, exactly ----------------------------------------------

  const advancedBox = document.getElementById("advanced-json");
  function syncAdvanced() {
    advancedBox.value = JSON.stringify(collectRules(), null, 2);
  }
  function applyAdvanced() {
    const status = document.getElementById("advanced-status");
    status.className = "me-status-line";
    try {
      const parsed = JSON.parse(advancedBox.value);
      if (!Array.isArray(parsed)) throw new Error("the rules must be a JSON list");
      rules = parsed.map(normalise);
      active = null;
      render();
      changed();
      status.textContent = `Applied ${rules.length} rule(s).`;
      status.classList.add("me-ok");
    } catch (error) {
      status.textContent = `Not applied: ${error.message}`;
      status.classList.add("me-error");
    }
  }

  // --- the sample tree: click a field to map it ----------------------------------------------------

  const tree = document.getElementById("sample-tree");
  function typeName(value) {
    if (value === null) return "null";
    if (Array.isArray(value)) return "list";
    return typeof value === "object" ? "object" : typeof value;
  }
  function treeNodes(value, path) {
    const entries = Array.isArray(value)
      ? value.length ? [["[*]", value[0]]] : []
      : Object.entries(value);
    return el(
      "ul",
      { role: "group" },
      entries.map(([key, child]) => {
        const childPath = key === "[*]" ? `${path}[*]` : path ? `${path}.${key}` : key;
        const kind = typeName(child);
        const leaf = kind !== "object" && kind !== "list";
        const label = el("button", {
          type: "button",
          className: "me-field",
          "data-path": childPath,
          role: "treeitem",
          title: `Map ${childPath}`,
        }, [
          el("span", { className: "me-field-name", text: key }),
          el("span", { className: "me-field-type", text: ` ${kind}` }),
          leaf ? el("span", { className: "me-field-example", text: ` ${show(child)}` }) : el("span"),
        ]);
        label.addEventListener("click", () => pickSource(childPath));
        return el("li", {}, leaf ? [label] : [label, treeNodes(child, childPath)]);
      })
    );
  }
  function renderTree(payload) {
    tree.replaceChildren(payload ? treeNodes(payload, "") : el("p", { className: "me-hint", text: "No sample yet." }));
  }
  function pickSource(path) {
    if (!config.canEdit) return;
    if (active === null || !rules[active]) {
      const guess = targets.find((field) => field.path.toLowerCase() === path.split(/[.[]/).pop().toLowerCase());
      rules.push(normalise({ target_path: guess && !rules.some((rule) => rule.target_path === guess.path) ? guess.path : "", source_paths: [path] }));
      active = rules.length - 1;
    } else if (!rules[active].source_paths.includes(path)) {
      rules[active].source_paths.push(path);
    }
    render();
    changed();
  }

  // --- the sample payload ---------------------------------------------------------------------------

  function readPayload() {
    try {
      const payload = JSON.parse(payloadBox.value || "{}");
      if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
        throw new Error("the sample must be a JSON object");
      }
      sampleError.textContent = "";
      if (payloadBox.value !== renderedTreeFor) {
        renderedTreeFor = payloadBox.value;
        renderTree(payload);
      }
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
    lastErrors.fieldErrors = data.errors || [];
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
    rules = data.rules.map(normalise);
    render();
    syncAdvanced();
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
    const reasonBox = document.getElementById("no-sample-reason-box");
    if (reasonBox) reasonBox.hidden = data.outcomes.length > 0 || data.published;
    if (!data.outcomes.length) {
      parts.push(
        el("p", {
          className: "me-error",
          text: "No sample to replay: save one (or wait for real messages, which the hub keeps), or write why publishing unchecked is safe.",
        })
      );
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
    const reasonBox = document.getElementById("no-sample-reason");
    const body = { confirm, no_sample_reason: reasonBox ? reasonBox.value : "" };
    const { ok, data } = await post(config.urls.publish, body);
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

  render();
  syncAdvanced();
  payloadBox.addEventListener("input", schedulePreview);
  picker.addEventListener("change", pick);
  const add = document.getElementById("add-rule");
  if (add) {
    add.addEventListener("click", () => {
      rules.push(normalise({}));
      active = rules.length - 1;
      render();
      changed();
    });
  }
  const applyButton = document.getElementById("apply-json");
  if (applyButton) applyButton.addEventListener("click", applyAdvanced);
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
