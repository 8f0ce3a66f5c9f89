// The Webhooks tab of one DAG run (templates/run.html): expand a delivery to load its attempts,
// load older attempts, and redeliver. Uses window.flowWebhooks (static/pages.js).
(function () {
  "use strict";
  const {tell, fetchText, post} = window.flowWebhooks;

  async function toggle(button) {
    const row = document.getElementById(button.getAttribute("aria-controls"));
    const open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    row.hidden = !open;
    const cell = row.querySelector(".attempts-cell");
    if (open && !cell.dataset.loaded) {
      cell.textContent = "Loading attempts…";
      try {
        cell.innerHTML = await fetchText(button.dataset.attempts);
        cell.dataset.loaded = "1";
      } catch (error) {
        cell.textContent = "Could not load the attempts: " + error.message;
      }
    }
  }

  async function more(button) {
    button.disabled = true;
    try {
      button.parentElement.insertAdjacentHTML("afterend", await fetchText(button.dataset.more));
      button.remove();
    } catch (error) {
      button.disabled = false;
      tell("Could not load older attempts: " + error.message, true);
    }
  }

  async function redeliver(button) {
    const body = button.closest("tbody.delivery");
    button.disabled = true;
    button.textContent = "Sending…";
    try {
      const answer = await post(button.dataset.redeliver);
      body.insertAdjacentHTML("afterend", answer.html);
      body.remove();
      document.querySelector(".summary-line").innerHTML = answer.summary_html;
      tell(answer.webhook + ": " + answer.summary, !answer.delivered);
    } catch (error) {
      button.disabled = false;
      button.textContent = "Redeliver";
      tell("Redeliver failed: " + error.message, true);
    }
  }

  document.addEventListener("click", function (event) {
    const target = event.target.closest("button");
    if (!target || target.disabled) return;
    if (target.dataset.attempts) toggle(target);
    else if (target.dataset.more) more(target);
    else if (target.dataset.redeliver) redeliver(target);
  });
})();
