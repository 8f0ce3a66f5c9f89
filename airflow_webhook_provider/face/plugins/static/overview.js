// The Webhooks overview (templates/overview.html): Recover the deliveries the filters match,
// and enable or disable an endpoint. Uses window.flowWebhooks (static/pages.js). Each action
// asks the server, which checks access again, and tells its answer in the page's notice.
// Recover and Disable ask first, in the button itself (confirmed, static/pages.js).
(function () {
  "use strict";
  const {tell, post, confirmed} = window.flowWebhooks;

  async function act(button, url, busy) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = busy;
    try {
      const answer = await post(url);
      tell(answer.message, false);
      button.textContent = "Done";
    } catch (error) {
      button.disabled = false;
      button.textContent = label;
      tell(label + " failed: " + error.message, true);
    }
  }

  document.addEventListener("click", function (event) {
    const target = event.target.closest("button");
    if (!target || target.disabled) return;
    if (target.dataset.recover) {
      if (confirmed(target, "Click again to send " + target.dataset.count + " message(s) again")) {
        act(target, target.dataset.recover, "Recovering…");
      }
    } else if (target.dataset.enable) {
      act(target, target.dataset.enable, "Enabling…");
    } else if (target.dataset.disable) {
      if (confirmed(target, "Click again to hold its messages")) {
        act(target, target.dataset.disable, "Disabling…");
      }
    }
  });
})();
