"""The dashboard pages' script: it follows `/_dashboard/events` (live.py; an app's page follows
the feed its body's `data-feed` names, with that app's lines only) and redraws the overview's
live sections from each `state` event, and appends each `log` event to the log view, so the
page stays current without a reload. Plain JavaScript, no library, nothing fetched from elsewhere
(the dashboard works offline). Every value is set as text (`textContent`), never as HTML.
The EventSource reconnects by itself when the server restarts; `#live-status` says whether
the page is live.
"""

from __future__ import annotations

# the live sections of the overview: (element id, heading)
SECTIONS = (("apps", "Apps"), ("functions", "Functions"), ("containers", "Containers"),
            ("calls-in-flight", "Calls in flight"), ("calls-recent", "Recent calls"), ("logs", "Logs"),
            ("images", "Image builds"), ("gpus", "GPUs"))
MAX_LOG_LINES = 1000  # lines the page keeps (older ones scroll away)

SCRIPT = """
(function () {
  "use strict";
  var MAX_LOG_LINES = %(max_lines)d;
  function when(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "-"; }
  function seconds(s) {
    if (s === null || s === undefined) { return "-"; }
    return s < 1 ? (s * 1000).toFixed(0) + " ms" : s < 120 ? s.toFixed(2) + " s" : (s / 60).toFixed(1) + " min";
  }
  function age(s) {
    s = Math.floor(s);
    if (s >= 86400) { return Math.floor(s / 86400) + "d " + Math.floor(s %% 86400 / 3600) + "h"; }
    if (s >= 3600) { return Math.floor(s / 3600) + "h " + Math.floor(s %% 3600 / 60) + "m"; }
    return s >= 60 ? Math.floor(s / 60) + "m " + (s %% 60) + "s" : s + "s";
  }
  function cell(value, cls) {
    var td = document.createElement("td");
    if (value instanceof Node) { td.appendChild(value); }
    else { td.textContent = (value === null || value === undefined || value === "") ? "-" : String(value); }
    if (cls) { td.className = cls; }
    return td;
  }
  function appLink(name, id) {
    var a = document.createElement("a");
    a.href = "/apps/" + encodeURIComponent(id);
    a.textContent = name;
    return a;
  }
  function state(value) {
    var span = document.createElement("span");
    span.className = "state-" + value;
    span.textContent = value;
    return span;
  }
  // rows: a list of objects; columns: [heading, function(row) -> value or Node, optional class function]
  function table(id, rows, columns, empty) {
    var holder = document.getElementById(id);
    if (!holder) { return; }
    if (!rows.length) {
      var p = document.createElement("p");
      p.className = "muted";
      p.textContent = empty;
      holder.replaceChildren(p);
      return;
    }
    var t = document.createElement("table"), head = document.createElement("tr");
    columns.forEach(function (c) { var th = document.createElement("th"); th.textContent = c[0]; head.appendChild(th); });
    t.appendChild(head);
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.dataset.id = row.id || row.function_id || row.key || row.index || "";
      columns.forEach(function (c) { tr.appendChild(cell(c[1](row), c[2] ? c[2](row) : "")); });
      t.appendChild(tr);
    });
    holder.replaceChildren(t);
  }
  function calls(id, rows, empty) {
    table(id, rows, [
      ["call", function (c) { return c.id; }], ["app", function (c) { return appLink(c.app, c.app_id); }],
      ["function", function (c) { return c.function; }], ["kind", function (c) { return c.kind; }],
      ["state", function (c) { return state(c.state); }],
      ["inputs", function (c) { return c.done + " / " + c.inputs; }],
      ["failed", function (c) { return c.failures; }],
      ["started", function (c) { return when(c.started); }],
      ["duration", function (c) { return seconds(c.duration); }],
      ["error", function (c) { return c.error; }, function (c) { return c.error ? "err" : ""; }]], empty);
  }
  function render(s) {
    var gpuSummary = document.getElementById("gpu-summary");
    if (gpuSummary) { gpuSummary.textContent = s.server.gpus; }
    var counts = document.getElementById("live-counts");
    if (counts) {
      var liveApps = s.apps.filter(function (a) { return a.state === "running" || a.state === "deployed"; });
      counts.textContent = liveApps.length + " / " + s.containers.length;
    }
    table("apps", s.apps, [
      ["name", function (a) { return appLink(a.name, a.id); }], ["id", function (a) { return a.id; }],
      ["state", function (a) { return state(a.state); }], ["functions", function (a) { return a.functions; }],
      ["containers", function (a) { return a.containers; }], ["created", function (a) { return when(a.created); }]],
      "No apps yet: ferry run or ferry deploy one.");
    table("functions", s.functions, [
      ["app", function (f) { return appLink(f.app, f.app_id); }], ["function", function (f) { return f.function; }],
      ["queued", function (f) { return f.queued; }], ["containers", function (f) { return f.containers; }],
      ["running", function (f) { return f.running; }], ["calls", function (f) { return f.calls; }],
      ["mean", function (f) { return seconds(f.mean_seconds); }],
      ["init error", function (f) { return f.init_error; }, function (f) { return f.init_error ? "err" : ""; }]],
      "No functions of running or deployed apps.");
    table("containers", s.containers, [
      ["id", function (c) { return c.id; }], ["app", function (c) { return appLink(c.app, c.app_id); }],
      ["function", function (c) { return c.function; }], ["node", function (c) { return c.node; }],
      ["state", function (c) { return state(c.state); }], ["age", function (c) { return age(c.age_seconds); }],
      ["running", function (c) { return c.inflight; }], ["inputs served", function (c) { return c.served; }]],
      "No containers.");
    calls("calls-in-flight", s.calls.in_flight, "No calls in flight.");
    calls("calls-recent", s.calls.recent, "No calls yet.");
    table("images", s.images, [
      ["image", function (i) { return i.key ? i.key.slice(0, 12) : "-"; }], ["label", function (i) { return i.label; }],
      ["state", function (i) { return state(i.state || "-"); }], ["python", function (i) { return i.python_version; }],
      ["size", function (i) { return i.size ? (i.size / 1048576).toFixed(1) + " MiB" : "-"; }],
      ["step", function (i) { return i.step || i.last_step; }],
      ["when", function (i) { return when(i.created); }]], "No images built yet.");
    table("gpus", s.gpus, [
      ["index", function (g) { return g.index; }], ["type", function (g) { return g.type; }],
      ["name", function (g) { return g.name; }], ["memory", function (g) { return g.memory_mb + " MiB"; }],
      ["state", function (g) { return state(g.free ? "free" : "in-use"); }]], "No GPUs.");
  }
  function appendLog(line) {
    var pre = document.getElementById("logs");
    if (!pre) { return; }
    if (pre.dataset.empty !== "no") { pre.replaceChildren(); pre.dataset.empty = "no"; }
    var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    var span = document.createElement("span");
    span.className = "log-line" + (line.stream === "stderr" ? " err" : "");
    var text = line.text.replace(/\\n$/, "");
    span.textContent = new Date(line.ts * 1000).toLocaleTimeString() + " " + line.app + " " +
      line.function + " " + line.container + "  " + text + "\\n";
    pre.appendChild(span);
    while (pre.childNodes.length > MAX_LOG_LINES) { pre.removeChild(pre.firstChild); }
    if (stick) { pre.scrollTop = pre.scrollHeight; }
  }
  var status = document.getElementById("live-status");
  function live(on, text) { if (status) { status.textContent = text; status.className = on ? "live" : "offline"; } }
  if (!window.EventSource) { live(false, "static (this browser has no EventSource)"); return; }
  var source = new EventSource(document.body.dataset.feed || "/_dashboard/events");
  source.addEventListener("open", function () {
    var pre = document.getElementById("logs");
    if (pre) { pre.replaceChildren(); pre.dataset.empty = "yes"; }  // the stream sends the history again
    live(true, "live");
  });
  source.addEventListener("state", function (e) { render(JSON.parse(e.data)); live(true, "live"); });
  source.addEventListener("log", function (e) { appendLog(JSON.parse(e.data)); });
  source.addEventListener("error", function () { live(false, "reconnecting..."); });
})();
""" % {"max_lines": MAX_LOG_LINES}
