// The Webhooks overview (templates/overview.html): Recover the deliveries the filters match,
// and enable or disable an endpoint. Uses window.flowWebhooks (static/pages.js). Each action
// asks the server, which checks access again, and tells its answer in the page's notice.
// Recover and Disable ask first, in the button itself: the Airflow UI frames the page in a
// sandbox without allow-modals, where window.confirm() returns false without showing anything.
(function () {
  "use strict";
  const {tell, post} = window.flowWebhooks;

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

  const CONFIRM_SECONDS = 8;

  // The first click arms the button (its text says what a second click does); the second acts.
  function confirmed(button, question) {
    if (button.dataset.armed) return true;
    const label = button.textContent;
    button.dataset.armed = "1";
    button.classList.add("armed");
    button.textContent = question;
    setTimeout(function () {
      if (button.dataset.armed && !button.disabled) {
        delete button.dataset.armed;
        button.classList.remove("armed");
        button.textContent = label;
      }
    }, CONFIRM_SECONDS * 1000);
    return false;
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
