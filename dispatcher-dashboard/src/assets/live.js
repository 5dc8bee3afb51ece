// Keeps a dashboard page live: the server sends the sections that changed after each round of
// the collector, as {"section id": "html"}, and they replace the elements marked data-live.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="live"]');
  if (!meta || !window.EventSource) return;
  var source = new EventSource(meta.content);
  source.onmessage = function (event) {
    var parts;
    try { parts = JSON.parse(event.data); } catch (e) { return; }
    Object.keys(parts).forEach(function (id) {
      var el = document.querySelector('[data-live="' + id + '"]');
      if (el) el.innerHTML = parts[id];
    });
    document.body.setAttribute("data-updates",
      String(Number(document.body.getAttribute("data-updates") || "0") + 1));
    document.body.classList.remove("offline");
  };
  source.onerror = function () { document.body.classList.add("offline"); };
})();
