// Classify one's "Show visualizations and statistics": the input as the network saw it, Grad-CAM,
// and one row per layer (activations and weights: shape, statistics, histogram, picture).
// Renders classify_one.json's answer (see kiln/inference/visualize.py); the markup matches the
// server-rendered classify_one.html, and both share visualize.css. Click a picture to zoom it.
window.kiln = window.kiln || {};

kiln.visNumber = (v) => (v === null || v === undefined ? "–" : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : Number(v.toPrecision(4)).toString());

kiln.visShape = (shape) => (shape && shape.length ? shape.join("×") : "scalar");

// A 20-bin histogram as bars in an inline SVG, with its range below.
kiln.visHistogram = (h) => {
  if (!h || !h.counts || !h.counts.length) return "";
  const most = Math.max(...h.counts, 1);
  const w = 4, height = 36;
  const bars = h.counts.map((c, i) => {
    const bh = c ? Math.max(1, Math.round((height * c) / most)) : 0;
    return `<rect x="${i * w}" y="${height - bh}" width="${w - 1}" height="${bh}"><title>${kiln.visNumber(h.edges[i])} … ${kiln.visNumber(h.edges[i + 1])}: ${c}</title></rect>`;
  }).join("");
  return `<svg class="vis-hist" viewBox="0 0 ${h.counts.length * w} ${height}" preserveAspectRatio="none">${bars}</svg>`;
};

// Statistics, histogram and picture of one tensor (a panel of the JSON).
kiln.visPanel = (p, alt) => {
  if (!p) return '<span class="hint">no weights</span>';
  const bad = p.nonfinite ? `<div class="alert warning">${p.nonfinite} NaN/inf values left out</div>` : "";
  const img = p.image ? `<img class="vis-img" src="${p.image}" alt="${kiln.esc(alt)}" title="click to zoom">` : "";
  return `<div class="vis-panel">${img}<div class="vis-stats"><div>Data shape <b>${kiln.visShape(p.shape)}</b></div>` +
    `<div>Mean <b>${kiln.visNumber(p.mean)}</b> · Std deviation <b>${kiln.visNumber(p.std)}</b></div>` +
    `<div class="hint">min ${kiln.visNumber(p.min)} · max ${kiln.visNumber(p.max)}</div>` +
    `${kiln.visHistogram(p.histogram)}${p.shown ? `<div class="hint">${kiln.esc(p.shown)}</div>` : ""}${bad}</div></div>`;
};

kiln.visLayerRow = (layer) => `<tr class="vis-layer" data-layer="${kiln.esc(layer.name)}">` +
  `<td><b>${kiln.esc(layer.name)}</b><div class="hint">${kiln.esc(layer.type)}</div><div>${kiln.visShape(layer.shape)}</div>` +
  `<div class="hint">${layer.params.toLocaleString("en")} learned parameters</div></td>` +
  `<td>${kiln.visPanel(layer.activations, `${layer.name} activations`)}</td>` +
  `<td>${layer.weights ? kiln.visPanel(layer.weights, `${layer.name} weights`) : '<span class="hint">–</span>'}</td></tr>`;

kiln.visGradcam = (body) => body.gradcam
  ? `<figure class="vis-figure" id="gradcam"><img class="vis-img vis-big" src="${body.gradcam}" alt="Grad-CAM" title="click to zoom">` +
    `<figcaption>Grad-CAM for <b>${kiln.esc(body.gradcam_label)}</b> (layer ${kiln.esc(body.gradcam_layer)})</figcaption></figure>`
  : `<p class="hint" id="gradcam">No Grad-CAM: ${kiln.esc(body.gradcam_reason || "not available")}</p>`;

kiln.renderVisualizations = (body, out) => {
  const section = document.createElement("section");
  section.className = "vis";
  section.id = "visualizations";
  const input = body.input || {};
  section.innerHTML = `<h4>Visualizations and statistics <small class="hint">epoch ${kiln.esc(body.snapshot_epoch ?? "")}</small></h4>` +
    `<div class="vis-top"><figure class="vis-figure" id="vis-input"><img class="vis-img vis-big" src="${input.image || ""}" alt="input as the network saw it" title="click to zoom">` +
    `<figcaption>The input as the network saw it (${kiln.visShape(input.shape)}, mean ${kiln.visNumber(input.mean)}, std ${kiln.visNumber(input.std)})</figcaption></figure>` +
    `${kiln.visGradcam(body)}</div>` +
    `<div class="scroll-x"><table class="vis-layers"><thead><tr><th>Layer</th><th>Activations</th><th>Weights</th></tr></thead>` +
    `<tbody>${body.visualizations.map(kiln.visLayerRow).join("")}</tbody>` +
    `<tfoot><tr class="total"><td colspan="3">Total learned parameters: <b id="vis-total">${body.total_params.toLocaleString("en")}</b></td></tr></tfoot></table></div>`;
  out.appendChild(section);
  return section;
};

// Click a picture to zoom it (DIGITS zoomed on hover); once for the whole page.
document.addEventListener("click", (event) => {
  const img = event.target.closest && event.target.closest("img.vis-img");
  if (img) img.classList.toggle("zoom");
});
