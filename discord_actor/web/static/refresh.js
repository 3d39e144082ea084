// Reloads the page's content every few seconds (no framework, no build step), and at once when
// the tab is shown again: its times ("in 4 s", "3 min ago") are relative to when the server
// made it. Skipped while the tab is hidden or a form field has the focus, and on pages with a
// text field (log in).
(function () {
  "use strict";
  var seconds = Number(document.body.dataset.refresh || "0");
  if (!seconds || document.querySelector("input[type=password], input[type=text]")) return;
  async function reload() {
    if (document.hidden || document.activeElement.closest("form input")) return;
    try {
      var answer = await fetch(location.href, { credentials: "same-origin" });
      if (!answer.ok) return;
      var page = new DOMParser().parseFromString(await answer.text(), "text/html");
      var fresh = page.getElementById("content");
      if (fresh) document.getElementById("content").replaceChildren(...fresh.childNodes);
    } catch (e) {
      // the server is restarting: try again at the next turn
    }
  }
  setInterval(reload, seconds * 1000);
  document.addEventListener("visibilitychange", reload);
})();
