// Draws the dashboard's charts with the bundled Chart.js from the data the page carries in
// #dashboard-data; every chart has the same numbers in the table under it.
(function () {
  "use strict";
  var source = document.getElementById("dashboard-data");
  if (!source || typeof Chart === "undefined") { return; }
  var charts = JSON.parse(source.textContent);
  var palette = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
                 "#ea580c", "#475569", "#0d9488", "#a16207"];

  function draw(canvas) {
    var spec = charts[canvas.getAttribute("data-chart")];
    if (!spec || !spec.datasets.length) { return; }
    var datasets = spec.datasets.map(function (series, i) {
      var colour = palette[i % palette.length];
      return {
        label: series.label,
        data: series.data,
        backgroundColor: colour,
        borderColor: colour,
        borderWidth: spec.type === "line" ? 2 : 0,
        tension: 0.2,
        pointRadius: spec.type === "line" ? 2 : 0
      };
    });
    new Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { position: "bottom" } },
        scales: {
          x: { stacked: !!spec.stacked },
          y: { stacked: !!spec.stacked, beginAtZero: true, ticks: { precision: 0 } }
        }
      }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("canvas[data-chart]"), draw);
})();
