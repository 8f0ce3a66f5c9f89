// The DAG's Webhooks tab (templates/dag.html): create, edit, delete, test and import webhooks
// through the HTTP API, which checks access and validates again. A refused definition's
// problems show beside their fields. Uses window.flowWebhooks (static/pages.js).
(function () {
  "use strict";
  const {tell, send, confirmed} = window.flowWebhooks;
  const api = document.getElementById("page").dataset.api;
  const form = document.getElementById("webhook-form");
  let editing = null; // {url, version} while the form edits a webhook; null while it creates one

  // -- the form ------------------------------------------------------------------------------

  function lines(text, separator) {
    const result = {};
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      const at = line.indexOf(separator);
      if (at < 0) { result[line.trim()] = ""; continue; }
      result[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return result;
  }

  function unlines(mapping, separator) {
    return Object.entries(mapping || {}).map(function ([key, value]) { return key + separator + value; }).join("\n");
  }

  function clearErrors() {
    for (const element of form.querySelectorAll(".field-error")) element.textContent = "";
    for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
  }

  // A problem's field is "body", "headers", "outputs", "webhooks[3].body" (import) or "definition".
  function showProblems(problems) {
    for (const problem of problems) {
      const field = problem.field.replace(/^webhooks\[\d+\]\./, "").split(/[.[]/)[0];
      const slot = form.querySelector('[data-error-for="' + field + '"]') || form.querySelector('[data-error-for="definition"]');
      slot.textContent = (slot.textContent ? slot.textContent + " " : "") + problem.message;
      const input = form.elements[field];
      if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
    }
  }

  function definition() {
    const fields = form.elements;
    const data = {name: fields.name.value.trim(), conn_id: fields.conn_id.value.trim(), on: fields.on.value};
    data.method = fields.method.value || null;
    data.outputs = fields.scope.value === "outputs"
      ? Array.from(form.querySelectorAll("input[name=outputs]:checked"), function (box) { return box.value; })
      : null;
    data.headers = lines(fields.headers.value, ":");
    data.query = lines(fields.query.value, "=");
    data.body = fields.body.value.trim() ? fields.body.value : null;
    return data;
  }

  function open(title, values, target) {
    clearErrors();
    editing = target;
    document.getElementById("form-title").textContent = title;
    const fields = form.elements;
    fields.name.value = values.name || "";
    fields.name.readOnly = Boolean(target);
    fields.conn_id.value = values.conn_id || "";
    fields.on.value = values.on || "any";
    fields.method.value = values.method || "";
    fields.headers.value = unlines(values.headers, ": ");
    fields.query.value = unlines(values.query, "=");
    fields.body.value = values.body || "";
    const outputs = values.outputs || [];
    fields.scope.value = outputs.length ? "outputs" : "run";
    for (const box of form.querySelectorAll("input[name=outputs]")) box.checked = outputs.includes(box.value);
    form.hidden = false;
    fields[target ? "conn_id" : "name"].focus();
  }

  async function save(event) {
    event.preventDefault();
    clearErrors();
    const button = document.getElementById("save");
    button.disabled = true;
    try {
      const data = definition();
      if (editing) {
        delete data.name;
        data.version = editing.version;
        await send("PATCH", editing.url, data);
      } else {
        await send("POST", api + "/webhooks", data);
      }
      location.reload();
    } catch (error) {
      button.disabled = false;
      if (error.detail && error.detail.problems) {
        showProblems(error.detail.problems);
        tell("Not saved: fix the fields marked below.", true);
      } else {
        form.querySelector('[data-error-for="definition"]').textContent = error.message;
        tell("Not saved: " + error.message, true);
      }
    }
  }

  // -- buttons ------------------------------------------------------------------------------

  async function test(button) {
    const name = button.closest("tr").dataset.webhook;
    button.disabled = true;
    button.textContent = "Sending…";
    try {
      const answer = await send("POST", button.dataset.test);
      const excerpt = answer.excerpt ? " — " + answer.excerpt : "";
      tell(name + ": " + answer.summary + excerpt, !answer.delivered);
    } catch (error) {
      tell("Test of " + name + " failed: " + error.message, true);
    } finally {
      button.disabled = false;
      button.textContent = "Test";
    }
  }

  async function remove(button) {
    const name = button.closest("tr").dataset.webhook;
    button.disabled = true;
    try {
      await send("DELETE", button.dataset.delete);
      location.reload();
    } catch (error) {
      button.disabled = false;
      tell("Delete of " + name + " failed: " + error.message, true);
    }
  }

  async function importFile(input) {
    const file = input.files[0];
    if (!file) return;
    const type = /\.json$/i.test(file.name) ? "application/json" : "application/yaml";
    try {
      const answer = await send("POST", input.dataset.import, await file.text(), type);
      tell(file.name + ": " + answer.summary, false);
      setTimeout(function () { location.reload(); }, 1500);
    } catch (error) {
      const problems = error.detail && error.detail.problems;
      const listed = problems
        ? problems.map(function (p) { return (p.webhook ? p.webhook + " " : "") + p.field + ": " + p.message; }).join("; ")
        : error.message;
      tell(file.name + " was not imported, nothing changed: " + listed, true);
    } finally {
      input.value = "";
    }
  }

  if (form) {
    form.addEventListener("submit", save);
    document.getElementById("cancel").addEventListener("click", function () { form.hidden = true; });
    document.getElementById("create").addEventListener("click", function () { open("Create webhook", {}, null); });
    document.getElementById("import-file").addEventListener("change", function (event) { importFile(event.target); });
    form.addEventListener("change", function (event) {
      if (event.target.name === "outputs" && event.target.checked) form.elements.scope.value = "outputs";
    });
  }

  document.addEventListener("click", function (event) {
    const target = event.target.closest("button");
    if (!target || target.disabled) return;
    if (target.dataset.test) test(target);
    else if (target.dataset.edit) {
      const values = JSON.parse(target.dataset.definition);
      open("Edit " + values.name, values, {url: target.dataset.edit, version: Number(target.dataset.version)});
    } else if (target.dataset.delete && confirmed(target, "Click again to delete")) remove(target);
  });
})();
