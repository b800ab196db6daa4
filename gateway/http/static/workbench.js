// The workbench's one small script (no build step): loads the exam's report
// images from /api/exams/{id}/images and says so when an image is missing.
// Everything else on the pages works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("images");
  if (box && box.dataset.src) {
    fetch(box.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : []; })
      .catch(function () { return []; })
      .then(function (list) {
        box.textContent = "";
        if (!Array.isArray(list) || list.length === 0) {
          var p = document.createElement("p");
          p.className = "muted";
          p.id = "no-images";
          p.textContent = "No report images from the scanner for this exam.";
          box.appendChild(p);
          return;
        }
        list.forEach(function (item, i) {
          var img = document.createElement("img");
          img.src = item.url;
          img.alt = "Scanner report image " + (i + 1);
          img.className = "report-image";
          img.loading = "lazy";
          var link = document.createElement("a");
          link.href = item.url;  // the full-size image
          link.appendChild(img);
          box.appendChild(link);
        });
      });
  }
  var trend = document.getElementById("trend");
  function noTrend() {
    var p = document.createElement("p");
    p.className = "muted";
    p.id = "no-trend";
    p.textContent = "No trend plot available.";
    trend.replaceWith(p);
  }
  if (trend) {
    if (trend.complete && trend.naturalWidth === 0) { noTrend(); } else { trend.addEventListener("error", noTrend); }
  }
});
