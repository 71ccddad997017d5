// The dashboard's live parts: the consolidation feed (server-sent events) and the plots.
"use strict";

const SETTLED = new Set(["promoted", "rejected", "failed"]);
const STATES = new Set(["queued", "running", "passed", ...SETTLED]);

function text(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value;
}

function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  return "ETA " + (s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`);
}

// One consolidation event: {run, step, at, detail}. The same feed `memoryd consolidations follow` reads.
function onEvent(event) {
  const live = document.getElementById("live");
  if (!live) return;
  live.dataset.run = event.run;
  text("live-run", `run ${event.run}`);
  const state = document.getElementById("live-state");
  if (STATES.has(event.step)) {
    state.textContent = event.step;
    state.className = `badge ${event.step}`;
    if (SETTLED.has(event.step)) {
      text("live-phase", "");
      text("live-eta", "");
      if (event.step === "promoted") document.getElementById("live-bar").style.width = "100%";
      htmx.trigger(document.body, "run-settled");
    }
  } else if (event.step === "progress") {
    const { phase, completed, total, eta_s } = event.detail;
    text("live-phase", phase);
    text("live-steps", `step ${completed} of ${total}`);
    text("live-eta", eta(eta_s));
    document.getElementById("live-bar").style.width = `${(100 * completed) / total}%`;
  } else if (event.detail.state === "started") {
    text("live-phase", event.step);
    text("live-steps", "");
    text("live-eta", "");
    document.getElementById("live-bar").style.width = "0%";
  }
}

function follow() {
  if (!document.getElementById("live")) return;
  const feed = new EventSource("/admin/events/stream");
  feed.addEventListener("consolidation", (e) => onEvent(JSON.parse(e.data)));
}

function data(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

function plot(id, series, xs, ys, bars) {
  const el = document.getElementById(id);
  if (!el || !xs.length) {
    if (el) el.innerHTML = `<p class="empty">${bars ? "No passage yet." : "No finished run yet."}</p>`;
    return;
  }
  const colours = ["#3b5bdb", "#adb5bd"];
  const opts = {
    width: el.clientWidth || 400,
    height: 180,
    legend: { show: series.length > 1 },
    scales: { x: { time: false } },
    axes: [{ label: bars ? "conversations" : "run", incrs: [1, 2, 5, 10, 20, 50, 100] }, {}],
    series: [{ label: bars ? "conversations" : "run" }, ...series.map((label, i) => ({
      label, stroke: colours[i], width: 2,
      fill: bars ? "rgba(59,91,219,.35)" : undefined,
      paths: bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
      points: { show: !bars },
    }))],
  };
  new uPlot(opts, [xs, ...ys], el);
}

function plots() {
  const t = data("trends");
  if (t) {
    plot("plot-heldout", ["adapter", "base"], t.run, [t.held_out, t.held_out_base]);
    plot("plot-retention", ["retention"], t.run, [t.retention]);
    plot("plot-seconds", ["seconds"], t.run, [t.seconds]);
    plot("plot-facts", ["facts"], t.run, [t.facts]);
  }
  const h = data("histogram");
  if (h) plot("plot-recurrence", ["passages"], h.map((p) => p[0]), [h.map((p) => p[1])], true);
}

follow();
plots();
