// The leaders' KPI dashboard: formats the durations and draws the charts from the figures the page embeds
// (a JSON script element written by the server), with the vendored Chart.js. No request leaves the page.
(function () {
  "use strict";

  const COLORS = ["#417690", "#79aec8", "#e0a800", "#ba2121", "#5b8c5a", "#8e6c8a", "#c47f2c", "#666666"];

  // The server writes the headline figures in the unit their size calls for (insights/formatting.py) and picks
  // the activation axis' unit the same way; the charts only scale by it. Rates arrive as fractions: drawn in %.
  function percent(fraction) {
    return fraction === null || fraction === undefined ? null : Math.round(fraction * 1000) / 10;
  }

  function percentTick(value) { return value + "%"; }

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
    const data = JSON.parse(document.getElementById("kpi-data").textContent);
    const unit = data.range.bucket;

    const trend = data.project_activation.trend;
    const activation = document.getElementById("chart-activation");
    const durationUnit = activation ? activation.dataset.unit : "h";
    const unitSeconds = activation ? Number(activation.dataset.unitSeconds) || 3600 : 3600;
    draw("chart-activation", {
      type: "line",
      data: {
        labels: trend.map(function (p) { return label(p.bucket, unit); }),
        datasets: [{
          label: "median activation (" + durationUnit + ")",
          data: trend.map(function (p) {
            return p.median_seconds === null ? null : Math.round((p.median_seconds / unitSeconds) * 10) / 10;
          }),
          borderColor: COLORS[0], backgroundColor: COLORS[0], spanGaps: true,
        }],
      },
      options: {
        scales: {
          y: {
            beginAtZero: true,
            title: { display: true, text: activation ? activation.dataset.unitName : "hours" },
            ticks: { callback: function (value) { return value + " " + durationUnit; } },
          },
        },
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
          label: "exception items (% of the flow's messages and runs)",
          data: byFlow.map(function (f) { return f.rate === null ? null : percent(f.rate); }),
          backgroundColor: COLORS[3],
        }],
      },
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, ticks: { callback: percentTick } } },
        plugins: { tooltip: { callbacks: { label: function (c) { return c.parsed.x + "%"; } } } },
      },
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
        labels: delivery.map(function (d) {
          return d.system_role_label ? d.system + " (" + d.system_role_label + ")" : d.system;
        }),
        datasets: [{
          label: "success rate (%)",
          data: delivery.map(function (d) { return percent(d.success_rate); }),
          backgroundColor: COLORS[4],
        }],
      },
      // Horizontal bars: a system's name and role stay readable however many systems there are.
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, max: 100, ticks: { callback: percentTick } } },
        plugins: { tooltip: { callbacks: { label: function (c) { return c.parsed.x + "%"; } } } },
      },
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
