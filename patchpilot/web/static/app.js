// patchpilot dashboard: live refresh only (every page works without JavaScript).
// An element <div id="X" data-refresh="5"> is replaced every 5 seconds by the element with
// the same id in a fresh copy of the page (same URL, same cookies). Refreshing stops when
// the fresh element has no data-refresh (e.g. a run that ended), when the tab is hidden it
// waits, and on an error (e.g. the session expired) it stops quietly.
(function () {
  "use strict";
  function schedule(el) {
    var seconds = parseFloat(el.getAttribute("data-refresh"));
    if (!(seconds > 0)) { return; }
    window.setTimeout(function () { refresh(el.id); }, Math.max(1, seconds) * 1000);
  }
  function refresh(id) {
    var current = document.getElementById(id);
    if (!current) { return; }
    if (document.hidden) { schedule(current); return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "patchpilot-refresh" } })
      .then(function (response) {
        if (!response.ok || response.redirected) { throw new Error("refresh stopped: " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById(id);
        if (!fresh) { return; }
        var focused = document.activeElement && current.contains(document.activeElement);
        current.replaceWith(document.importNode(fresh, true));
        var placed = document.getElementById(id);
        if (placed && !focused) { schedule(placed); }
        else if (placed) { schedule(placed); }
      })
      .catch(function () { /* stop refreshing; the page still works when reloaded */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-refresh][id]");
    for (var i = 0; i < live.length; i++) { schedule(live[i]); }
  });
})();

// W2: the run page's live part. An element <div id="X" data-live-url="/runs/ID/live"> is
// replaced every 2 seconds by the element with the same id in the fragment that URL answers
// (a same-origin path only); it stops once the fresh element has no data-live-url (the run
// is no longer queued, running or pending), and quietly on an error.
(function () {
  "use strict";
  var EVERY_MS = 2000;
  function sameOrigin(url) {
    return typeof url === "string" && url.charAt(0) === "/" && url.charAt(1) !== "/" && url.indexOf("\\") < 0;
  }
  function schedule(el) {
    var url = el.getAttribute("data-live-url");
    if (!el.id || !sameOrigin(url)) { return; }
    window.setTimeout(function () { poll(el.id, url); }, EVERY_MS);
  }
  function poll(id, url) {
    var current = document.getElementById(id);
    if (!current) { return; }
    if (document.hidden) { schedule(current); return; }
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "patchpilot-live" } })
      .then(function (response) {
        if (!response.ok || response.redirected) { throw new Error("live refresh stopped: " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById(id);
        if (!fresh) { return; }
        current.replaceWith(document.importNode(fresh, true));
        var placed = document.getElementById(id);
        if (placed && placed.hasAttribute("data-live-url")) { schedule(placed); }
      })
      .catch(function () { /* stop; the page's Refresh link still works */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-live-url][id]");
    for (var i = 0; i < live.length; i++) { schedule(live[i]); }
  });
})();
