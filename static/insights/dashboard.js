// The leaders' KPI dashboard: formats the durations and draws the charts from the figures the page embeds
// (a JSON script element written by the server), with the vendored Chart.js. No request leaves the page.
(function () {
  "use strict";

  const COLORS = ["#417690", "#79aec8", "#e0a800", "#ba2121", "#5b8c5a", "#8e6c8a", "#c47f2c", "#666666"];

  function humanDuration(seconds) {
    if (seconds === null || seconds === undefined || seconds === "" || isNaN(Number(seconds))) return "–";
    let s = Number(seconds);
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function label(bucket, unit) {
    const d = new Date(bucket);
    const iso = d.toISOString();
    return unit === "hour" ? iso.slice(5, 13).replace("T", " ") + ":00" : iso.slice(0, 10);
  }

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas || typeof Chart === "undefined") return null;
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
    const chart = new Chart(canvas, config);
    canvas.dataset.rendered = "true";
    return chart;
  }

  function init() {
    document.querySelectorAll("[data-seconds] .kpi-duration").forEach(function (el) {
      el.textContent = humanDuration(el.parentElement.dataset.seconds);
    });
    const data = JSON.parse(document.getElementById("kpi-data").textContent);
    const unit = data.range.bucket;

    const trend = data.project_activation.trend;
    draw("chart-activation", {
      type: "line",
      data: {
        labels: trend.map(function (p) { return label(p.bucket, unit); }),
        datasets: [{
          label: "median activation (h)",
          data: trend.map(function (p) { return p.median_seconds === null ? null : p.median_seconds / 3600; }),
          borderColor: COLORS[0], backgroundColor: COLORS[0], spanGaps: true,
        }],
      },
    });

    const tp = data.throughput;
    draw("chart-throughput", {
      type: "bar",
      data: {
        labels: tp.buckets.map(function (b) { return label(b, unit); }),
        datasets: tp.flows.map(function (f, i) {
          return { label: f.label, data: f.series, backgroundColor: COLORS[i % COLORS.length], stack: "flows" };
        }),
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    });

    const byFlow = data.exception_rate.by_flow;
    draw("chart-exceptions-flow", {
      type: "bar",
      data: {
        labels: byFlow.map(function (f) { return f.label; }),
        datasets: [{
          label: "exception items per 1,000 messages",
          data: byFlow.map(function (f) { return f.rate === null ? 0 : f.rate * 1000; }),
          backgroundColor: COLORS[3],
        }],
      },
      options: { indexAxis: "y", scales: { x: { beginAtZero: true } } },
    });

    const byCategory = data.exception_rate.by_category;
    draw("chart-exceptions-category", {
      type: "doughnut",
      data: {
        labels: byCategory.map(function (c) { return c.label; }),
        datasets: [{ data: byCategory.map(function (c) { return c.items; }), backgroundColor: COLORS }],
      },
    });

    const delivery = data.delivery_success;
    draw("chart-delivery", {
      type: "bar",
      data: {
        labels: delivery.map(function (d) { return d.system; }),
        datasets: [{
          label: "success rate (%)",
          data: delivery.map(function (d) { return d.success_rate === null ? 0 : d.success_rate * 100; }),
          backgroundColor: COLORS[4],
        }],
      },
      options: { scales: { y: { beginAtZero: true, max: 100 } } },
    });

    const range = document.getElementById("id_range");
    const custom = document.querySelector(".kpi-custom");
    function toggle() { if (custom) custom.hidden = range.value !== "custom"; }
    if (range) { range.addEventListener("change", toggle); toggle(); }
    document.body.dataset.kpiChartsReady = "true";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
