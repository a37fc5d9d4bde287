// The Compare page (/models/compare): every model's loss and accuracy curves overlaid, by epoch or by
// the time each model ran, and the "Only differences" switch of its configuration table.
const kilnCompare = {};

kilnCompare.COLORS = ["#c2410c", "#2563eb", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#4b5563", "#dc2626", "#65a30d"];

// One trace per model and curve whose name contains `metric` ("loss" or "accuracy"): val solid, train dotted.
kilnCompare.traces = (models, metric, x) => {
  const traces = [];
  models.forEach((m, i) => {
    for (const [key, s] of Object.entries(m.curves)) {
      if (!key.startsWith(metric)) continue;
      const val = key.includes("(val)");
      traces.push({
        x: s[x], y: s.value, name: `${m.name} · ${key}`, legendgroup: m.id,
        mode: s.value.length > 60 ? "lines" : "lines+markers",
        line: {color: kilnCompare.COLORS[i % kilnCompare.COLORS.length], dash: val ? "solid" : "dot"},
        marker: {size: 4},
      });
    }
  });
  return traces;
};

// Accuracy spans its data with a little padding, never past 0 or 100 %.
kilnCompare.percentRange = (traces) => {
  const ys = traces.flatMap((t) => t.y).filter((v) => v !== null && Number.isFinite(Number(v))).map(Number);
  if (!ys.length) return [0, 100];
  const lo = Math.min(...ys), hi = Math.max(...ys), pad = Math.max(1, (hi - lo) * 0.1);
  return [Math.max(0, lo - pad), Math.min(100, hi + pad)];
};

kilnCompare.draw = (models, x) => {
  const xTitle = x === "epoch" ? "epoch" : "seconds running";
  for (const [metric, div, yTitle] of [["loss", "loss-chart", "loss"], ["accuracy", "accuracy-chart", "accuracy (%)"]]) {
    const traces = kilnCompare.traces(models, metric, x);
    const yaxis = {title: {text: yTitle}};
    if (metric === "accuracy") yaxis.range = kilnCompare.percentRange(traces);
    Plotly.react(div, traces, {
      margin: {t: 20, r: 20, b: 40, l: 60}, xaxis: {title: {text: xTitle}}, yaxis,
      legend: {orientation: "h", y: -0.2},
    }, {displaylogo: false, responsive: true});
    const el = document.getElementById(div);
    el.dataset.traces = traces.length;
    el.dataset.x = x;
  }
};

kilnCompare.page = () => {
  const models = JSON.parse(document.getElementById("compare-data").textContent).models;
  const buttons = document.querySelectorAll(".curve-axis button");
  for (const b of buttons) b.addEventListener("click", () => {
    buttons.forEach((o) => o.classList.toggle("active", o === b));
    kilnCompare.draw(models, b.dataset.x);
  });
  kilnCompare.draw(models, "epoch");
  const only = document.getElementById("only-differences");
  only.addEventListener("change", () => document.getElementById("config-table").classList.toggle("only-differences", only.checked));
};
