// HydroNet usage page: draw the daily API calls and tokens with Chart.js
// (vendored in static/vendor/chartjs, see `make vendor-js`). The numbers come
// from the page's json_script tag; the same numbers are in the "by day" table.
"use strict";

(function () {
  const source = document.getElementById("usage-series");
  if (!source || typeof window.Chart === "undefined") return;
  const series = JSON.parse(source.textContent);
  const css = getComputedStyle(document.documentElement);
  const colour = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const locale = document.documentElement.lang || undefined;
  const days = series.days.map((day) => day.slice(5)); // MM-DD: the month is in the page's heading

  function draw(id, type, label, values, fill) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    new window.Chart(canvas, {
      type: type,
      data: {
        labels: days,
        datasets: [{
          label: label,
          data: values,
          backgroundColor: fill,
          borderColor: fill,
          borderWidth: type === "line" ? 2 : 0,
          pointRadius: type === "line" ? 2 : 0,
          tension: 0, // straight: daily totals have no values between days
        }],
      },
      options: {
        locale: locale,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: {
          x: { grid: { display: false } },
          y: { beginAtZero: true, ticks: { precision: 0 } },
        },
      },
    });
  }

  draw("chart-calls", "bar", series.labels.api_calls, series.api_calls, colour("--brand", "#0b6aa2"));
  draw("chart-tokens", "line", series.labels.tokens, series.tokens, colour("--accent", "#17a589"));
})();
