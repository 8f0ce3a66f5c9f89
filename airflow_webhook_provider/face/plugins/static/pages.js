// What the provider's pages share (templates/base.html loads it before a page's own script):
// follow the Airflow UI's colour mode, and window.flowWebhooks with
//   tell(text, bad)          show a message in the page's #notice;
//   fetchText(url, options)  fetch from the app with the session cookie, throwing "status: detail";
//   post(url)                POST with the header every state-changing request must carry, read as JSON;
//   send(method, url, body, type)  a change with a body (JSON unless type says otherwise), read as
//                            JSON (null when empty); a refusal throws an Error with .status and .detail;
//   confirmed(button, question)  false on a first click, which arms the button with the question as
//                            its text; true on a second click within 8 s. (The Airflow UI frames the
//                            pages in a sandbox without allow-modals: window.confirm() shows nothing.)
// The <script> tag carries that header (data-csrf-header, data-csrf-value).
(function () {
  "use strict";
  const script = document.currentScript;
  const csrf = {[script.dataset.csrfHeader]: script.dataset.csrfValue};
  const root = document.documentElement;

  // Inside the Airflow UI (a same-origin iframe) follow its light/dark mode, unless ?theme= fixed one.
  if (!root.hasAttribute("data-theme")) {
    const follow = function () {
      try {
        const outer = window.parent.document.documentElement;
        if (outer === root) return;
        const mode = outer.classList.contains("dark") ? "dark" : outer.classList.contains("light") ? "light" : "";
        if (mode) root.setAttribute("data-theme", mode); else root.removeAttribute("data-theme");
      } catch (error) { /* not framed by the Airflow UI: prefers-color-scheme decides */ }
    };
    follow();
    try {
      new MutationObserver(follow).observe(window.parent.document.documentElement,
        {attributes: true, attributeFilter: ["class", "style"]});
    } catch (error) { /* see above */ }
  }

  function tell(text, bad) {
    const notice = document.getElementById("notice");
    notice.textContent = text;
    notice.classList.toggle("bad", Boolean(bad));
    notice.hidden = false;
  }

  async function fetchText(url, options) {
    const response = await fetch(url, Object.assign({credentials: "same-origin"}, options));
    const text = await response.text();
    if (!response.ok) {
      let detail = text;
      try { detail = JSON.parse(text).detail || text; } catch (error) { /* not JSON */ }
      throw new Error(response.status + ": " + detail);
    }
    return text;
  }

  async function post(url) {
    return JSON.parse(await fetchText(url, {method: "POST", headers: csrf}));
  }

  async function send(method, url, body, type) {
    const headers = Object.assign({"Content-Type": type || "application/json"}, csrf);
    const payload = type || body === undefined ? body : JSON.stringify(body);
    const response = await fetch(url, {method: method, headers: headers, body: payload, credentials: "same-origin"});
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (error) { data = text; }
    if (!response.ok) {
      const detail = data && data.detail !== undefined ? data.detail : data;
      const error = new Error(response.status + ": " + (typeof detail === "string" ? detail : (detail && detail.message) || text));
      error.status = response.status;
      error.detail = detail;
      throw error;
    }
    return data;
  }

  const CONFIRM_SECONDS = 8;

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

  window.flowWebhooks = Object.freeze({tell: tell, fetchText: fetchText, post: post, send: send, confirmed: confirmed});
})();
