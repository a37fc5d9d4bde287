// kiln's own page code: live updates over server-sent events, small helpers for the pages.
const kiln = {};

kiln.esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

kiln.duration = (s) => {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  const parts = [];
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]]) {
    const n = Math.floor(s / size); s -= n * size;
    if (n) parts.push(`${n} ${unit}${n !== 1 ? "s" : ""}`);
  }
  return parts.slice(0, 2).join(", ") || "0 seconds";
};

kiln.listen = (jobId, onJob) => {
  const url = jobId ? `/events?job_id=${encodeURIComponent(jobId)}` : "/events";
  const source = new EventSource(url);
  source.addEventListener("job", (e) => onJob(JSON.parse(e.data)));
  // The stream starts at the newest change when it (re)connects: catch up on what happened since the page was rendered.
  source.addEventListener("hello", async () => onJob(jobId ? {job_id: jobId, update: ["hello", "metrics"], state: await (await fetch(`/jobs/${encodeURIComponent(jobId)}/state.json`)).json()} : {update: ["hello"]}));
  window.addEventListener("beforeunload", () => source.close());
  return source;
};

kiln.throttle = (fn, ms) => {
  let timer = null, pending = false;
  return () => {
    if (timer) { pending = true; return; }
    fn();
    timer = setTimeout(() => { timer = null; if (pending) { pending = false; fn(); } }, ms);
  };
};

// The page's CSRF token (kiln/web/security.py): every request that changes something sends it.
kiln.csrf = () => { const m = document.querySelector("meta[name=csrf-token]"); return m ? m.content : ""; };

kiln.request = async (method, url, data) => {
  const body = data ? new URLSearchParams(data) : undefined;
  const res = await fetch(url, {method, body, headers: {"Accept": "application/json", "X-CSRF-Token": kiln.csrf()}});
  const text = await res.text();
  if (!res.ok) {
    let msg = text;
    try { const j = JSON.parse(text); msg = j.error ? j.error.message : JSON.stringify(j.errors || j); } catch (e) {}
    alert(msg);
    throw new Error(msg);
  }
  return text;
};

kiln.act = async (kind, id, action) => { await kiln.request("POST", `/${kind}/${id}/${action}`); };
kiln.del = async (kind, id) => {
  if (!confirm("Delete this job and its files?")) return;
  await kiln.request("DELETE", `/${kind}/${id}`);
  location.href = "/";
};
kiln.edit = async (id, field, value) => {
  await kiln.request("PUT", `/jobs/${id}`, {[field]: value});
  if (field === "job_name") { const t = document.getElementById("title-name"); if (t) t.textContent = value; }
};

kiln.methodTab = () => {
  const checked = document.querySelector("input[name=method]:checked");
  const method = checked ? checked.value : "folder";
  for (const m of ["folder", "textfile"]) {
    const el = document.getElementById(`method-${m}`);
    if (el) el.hidden = m !== method;
  }
};

// ---- home page -------------------------------------------------------------------------------
kiln.spark = (values) => {
  if (!values || values.length < 2) return "";
  const max = Math.max(...values), min = Math.min(...values), span = (max - min) || 1;
  const pts = values.map((v, i) => `${(i / (values.length - 1) * 100).toFixed(1)},${(20 - (v - min) / span * 18 + 1).toFixed(1)}`);
  return `<svg class="spark" viewBox="0 0 100 22" preserveAspectRatio="none"><polyline fill="none" stroke="#c2410c" stroke-width="1.5" points="${pts.join(" ")}"/></svg>`;
};

kiln.progressCell = (r) => `<div class="progress"><div class="bar" style="width:${r.progress}%"></div></div><small>${r.progress}%${r.eta ? " · " + kiln.duration(r.eta) + " left" : ""}</small>`;
kiln.submitted = (ts) => new Date(ts * 1000).toLocaleString();
kiln.pct = (v) => (v === undefined || v === null) ? "" : `${Number(v).toFixed(2)}%`;
kiln.num = (v) => (v === undefined || v === null) ? "" : Number(v).toFixed(4);

// The ticked rows, by id, kept across the table's re-renders (every few seconds and on events).
kiln.selected = new Set();
kiln.ACTIVE = ["Initialized", "Waiting", "Running"];
kiln.PAGES = {dataset: "datasets", model: "models", pretrained_model: "pretrained_models"};

kiln.rowHtml = (r) => {
  const status = `<span class="badge ${r.status_css}">${kiln.esc(r.status)}</span>`;
  const name = `<a href="/${kiln.PAGES[r.type]}/${encodeURIComponent(r.id)}">${kiln.esc(r.name)}</a>`;
  const tick = `<td><input type="checkbox" class="select" value="${kiln.esc(r.id)}" data-type="${kiln.esc(r.type)}" data-status="${kiln.esc(r.status)}" aria-label="Select ${kiln.esc(r.name)}"${kiln.selected.has(r.id) ? " checked" : ""}></td>`;
  const tr = `<tr data-id="${kiln.esc(r.id)}" data-status="${kiln.esc(r.status)}">${tick}`;
  const common = [kiln.progressCell(r), kiln.duration(r.elapsed), kiln.submitted(r.submitted), kiln.esc(r.username)];
  if (r.type === "dataset")
    return `${tr}<td>${name}</td><td>${kiln.esc(r.group)}</td><td>${status}</td><td>${common.join("</td><td>")}</td><td>${r.refs}</td></tr>`;
  if (r.type === "pretrained_model")
    return `${tr}<td>${name}</td><td>${kiln.esc(r.framework)}</td><td>${kiln.esc(r.username)}</td><td>${r.has_labels ? "yes" : "no"}</td><td>${status}</td><td>${kiln.duration(r.elapsed)}</td><td>${kiln.submitted(r.submitted)}</td></tr>`;
  const acc = r["accuracy (val) max"];
  return `${tr}<td>${name}</td><td>${kiln.esc(r.group)}</td><td>${kiln.esc(r.network)}</td><td>${status}</td><td>${kiln.progressCell(r)}</td><td>${kiln.spark(r.sparkline)} ${kiln.num(r["loss (train) last"])}</td><td>${kiln.pct(acc)}</td><td>${common.slice(1).join("</td><td>")}</td></tr>`;
};

kiln.renderTable = (tableId, rows, filter) => {
  const body = document.querySelector(`#${tableId} tbody`);
  const shown = rows.filter((r) => !filter || (r.name + " " + (r.group || "") + " " + r.status).toLowerCase().includes(filter));
  const groups = {};
  for (const r of shown) (groups[r.group || ""] ||= []).push(r);
  const names = Object.keys(groups).sort((a, b) => (a === "") - (b === "") || a.localeCompare(b));
  let html = "";
  for (const g of names) {
    if (names.length > 1 || g) html += `<tr class="group-row"><td colspan="12">${g ? kiln.esc(g) : "Ungrouped"}</td></tr>`;
    html += groups[g].map((r) => kiln.rowHtml(r) + (kiln.evaluationsOf[r.id] || []).map(kiln.evaluationRow).join("")).join("");
  }
  body.innerHTML = html || `<tr><td colspan="12" class="hint">Nothing yet.</td></tr>`;
};

// A model's evaluations, as rows under it on the home page.
kiln.evaluationsOf = {};
kiln.evaluationRow = (r) => {
  const status = `<span class="badge ${r.status_css}">${kiln.esc(r.status)}</span>`;
  const acc = r.top1_accuracy === null || r.top1_accuracy === undefined ? "" : kiln.pct(r.top1_accuracy);
  return `<tr class="evaluation-row" data-id="${r.id}"><td></td><td colspan="3">↳ <a href="/evaluations/${r.id}">${kiln.esc(r.name)}</a></td>` +
    `<td>${status}</td><td>${kiln.progressCell(r)}</td><td></td><td>${acc}</td><td colspan="5"></td></tr>`;
};

// The row actions (DIGITS' multi-select): they act on the ticked rows of the open tab.
kiln.ticked = () => [...document.querySelectorAll(".tabpane.active input.select:checked")];

kiln.updateActions = () => {
  const boxes = kiln.ticked();
  const models = boxes.filter((b) => b.dataset.type === "model");
  const n = boxes.length;
  document.getElementById("n-selected").textContent = n ? `${n} selected` : "Tick rows to act on them.";
  document.getElementById("compare-selected").disabled = models.length < 2 || models.length > 10;
  document.getElementById("group-selected").disabled = !n;
  document.getElementById("delete-selected").disabled = !n;
  document.getElementById("abort-selected").disabled = !boxes.some((b) => kiln.ACTIVE.includes(b.dataset.status));
  for (const all of document.querySelectorAll(".select-all")) {  // all, some or none of its table's rows
    const rows = [...all.closest("table").querySelectorAll("input.select")];
    const on = rows.filter((b) => b.checked).length;
    all.checked = rows.length > 0 && on === rows.length;
    all.indeterminate = on > 0 && on < rows.length;
  }
};

kiln.rowAction = async (action, reload) => {
  const boxes = kiln.ticked();
  const ids = boxes.map((b) => b.value);
  const form = ids.map((id) => ["job_ids[]", id]);
  const what = `${ids.length} job${ids.length === 1 ? "" : "s"}`;
  try {
    if (action === "compare") {
      location.href = `/models/compare?ids=${ids.map(encodeURIComponent).join(",")}`;
      return;
    } else if (action === "delete") {
      if (!confirm(`Delete ${what} and their files?`)) return;
      const pretrained = boxes.filter((b) => b.dataset.type === "pretrained_model").map((b) => b.value);
      const jobs = ids.filter((id) => !pretrained.includes(id));
      for (const id of pretrained) await kiln.request("DELETE", `/pretrained_models/${encodeURIComponent(id)}`);
      if (jobs.length) await kiln.request("DELETE", "/jobs", jobs.map((id) => ["job_ids[]", id]));
      ids.forEach((id) => kiln.selected.delete(id));
    } else if (action === "group") {
      const name = prompt(`Group name for ${what} (blank takes them out of their group):`);
      if (name === null) return;
      await kiln.request("POST", "/group", [...form, ["group_name", name]]);
    } else if (action === "abort") {
      const active = boxes.filter((b) => kiln.ACTIVE.includes(b.dataset.status)).map((b) => ["job_ids[]", b.value]);
      if (!confirm(`Abort ${active.length} running job${active.length === 1 ? "" : "s"}?`)) return;
      await kiln.request("POST", "/abort_jobs", active);
    }
  } catch (e) {  // kiln.request has said why; what was done is shown below
  } finally {
    await reload();
  }
};

kiln.home = () => {
  const filterBox = document.getElementById("filter");
  const load = async () => {
    const data = await (await fetch("/completed_jobs.json")).json();
    const all = [...data.running, ...data.datasets, ...data.models];
    const seen = new Set(all.map((r) => r.id));
    const pretrained = [...all.filter((r) => r.type === "pretrained_model"), ...(data.pretrained_models || []).filter((r) => !seen.has(r.id))]
      .sort((a, b) => b.submitted - a.submitted);
    kiln.evaluationsOf = {};
    for (const e of [...all, ...(data.evaluations || [])].filter((r) => r.type === "evaluation"))
      (kiln.evaluationsOf[e.model_id] ||= []).push(e);
    const datasets = all.filter((r) => r.type === "dataset").sort((a, b) => b.submitted - a.submitted);
    const models = all.filter((r) => r.type === "model").sort((a, b) => b.submitted - a.submitted);
    const present = new Set([...datasets, ...models, ...pretrained].map((r) => r.id));
    for (const id of [...kiln.selected]) if (!present.has(id)) kiln.selected.delete(id);  // deleted meanwhile
    const filter = filterBox.value.trim().toLowerCase();
    kiln.renderTable("datasets-table", datasets, filter);
    kiln.renderTable("models-table", models, filter);
    kiln.renderTable("pretrained-table", pretrained, filter);
    document.getElementById("n-datasets").textContent = datasets.length;
    document.getElementById("n-models").textContent = models.length;
    document.getElementById("n-pretrained").textContent = pretrained.length;
    const next = document.getElementById("next-step");  // the first-run pointer goes once a model exists
    if (next && models.length) next.hidden = true;
    kiln.updateActions();
  };
  const refresh = kiln.throttle(load, 700);
  filterBox.addEventListener("input", load);
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll(".tab, .tabpane").forEach((e) => e.classList.remove("active"));
    b.classList.add("active");
    document.getElementById(`tab-${b.dataset.tab}`).classList.add("active");
    kiln.updateActions();
  }));
  document.addEventListener("change", (e) => {
    const box = e.target;
    if (box.matches("input.select-all"))
      for (const b of box.closest("table").querySelectorAll("input.select")) {
        b.checked = box.checked;
        b.checked ? kiln.selected.add(b.value) : kiln.selected.delete(b.value);
      }
    else if (box.matches("input.select")) box.checked ? kiln.selected.add(box.value) : kiln.selected.delete(box.value);
    else return;
    kiln.updateActions();
  });
  for (const action of ["compare", "group", "abort", "delete"])
    document.getElementById(`${action}-selected`).addEventListener("click", () => kiln.rowAction(action, load));
  load();
  kiln.listen(null, refresh);
  setInterval(load, 5000);  // elapsed times keep moving even without events
};

// ---- job pages -------------------------------------------------------------------------------
kiln.renderState = (s) => {
  const el = (id) => document.getElementById(id);
  const badge = el("job-status");
  badge.textContent = s.status;
  badge.className = "badge " + ({Running: "info", Done: "success", Error: "danger"}[s.status] || "warning");
  el("job-progress").style.width = `${Math.round(s.progress * 100)}%`;
  el("job-progress-text").textContent = `${Math.round(s.progress * 100)}%`;
  el("job-message").textContent = s.message || "";
  el("job-eta").textContent = s.eta_text ? `Estimated time remaining: ${s.eta_text}` : "";
  el("job-error").hidden = !s.error;
  el("job-error").textContent = s.error || "";
  el("job-history").innerHTML = s.history.map((h) =>
    `<tr><td>${kiln.esc(h.status)}</td><td>${new Date(h.ts * 1000).toLocaleString()}</td><td>${h.seconds != null ? kiln.duration(h.seconds) : ""}</td><td class="hint">${kiln.esc(h.note)}</td></tr>`).join("");
  const active = ["Initialized", "Waiting", "Running"].includes(s.status);
  const abort = el("abort-job"), resume = el("resume-job");
  if (abort) abort.hidden = !active;
  if (resume) resume.hidden = !["Aborted", "Interrupted", "Error"].includes(s.status);
};

// Swap in the server-rendered body (no page reload) when the job's status changes.
kiln.refreshBody = async () => {
  const html = await (await fetch(location.href, {headers: {"Accept": "text/html"}})).text();
  const doc = new DOMParser().parseFromString(html, "text/html");
  const fresh = doc.getElementById("live-body"), current = document.getElementById("live-body");
  if (!fresh || !current) return;
  current.replaceWith(fresh);
  for (const old of fresh.querySelectorAll("script")) {  // scripts inserted this way do not run by themselves
    const s = document.createElement("script");
    s.textContent = old.textContent;
    old.replaceWith(s);
  }
};

kiln.refreshLog = async (jobId) => {
  const pre = document.getElementById("job-log");
  if (!pre) return;
  const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = (await (await fetch(`/jobs/${jobId}/log.json`)).json()).lines.join("\n");
  if (stick) pre.scrollTop = pre.scrollHeight;
};

kiln.jobPage = (jobId, extra) => {
  let lastStatus = document.getElementById("job-status").textContent.trim();
  const log = kiln.throttle(() => kiln.refreshLog(jobId), 1500);
  kiln.listen(jobId, async (msg) => {
    log();
    if (msg.update === "deleted") { location.href = "/"; return; }
    kiln.renderState(msg.state);
    if (msg.state.status !== lastStatus) {
      lastStatus = msg.state.status;
      await kiln.refreshBody();
    }
    if (extra) extra(msg);
  });
};

kiln.distribution = (divId, labels, splits) => {
  const traces = [];
  for (const [name, s] of Object.entries(splits)) {
    traces.push({type: "bar", name: `${name}`, x: labels, y: s.per_class});
    if (s.errors_per_class && s.errors_per_class.some((v) => v > 0))
      traces.push({type: "bar", name: `${name} load errors`, x: labels, y: s.errors_per_class, marker: {color: "#b91c1c"}});
  }
  Plotly.newPlot(divId, traces, {barmode: "group", margin: {t: 10, r: 10, b: 60, l: 50}, yaxis: {title: {text: "images"}}}, {responsive: true, displaylogo: false});
};

// ---- model pages -----------------------------------------------------------------------------
kiln.datasetSummary = async (id) => {
  const el = document.getElementById("dataset-summary");
  if (!el) return;
  el.innerHTML = id ? await (await fetch(`/datasets/summary?job_id=${encodeURIComponent(id)}`)).text() : "";
};

kiln.lrPreview = async () => {
  const form = document.getElementById("model-form");
  const data = new FormData(form);
  const res = await fetch("/models/visualize-lr", {method: "POST", body: data, headers: {"Accept": "application/json", "X-CSRF-Token": kiln.csrf()}});
  const div = document.getElementById("lr-preview");
  if (!res.ok) {
    const j = await res.json();
    div.innerHTML = `<p class="field-error">${kiln.esc(j.errors ? Object.values(j.errors).flat().join(" ") : j.error.message)}</p>`;
    return;
  }
  const cols = (await res.json()).data.columns;
  div.innerHTML = "";
  const x = [...Array(101).keys()];
  Plotly.react(div, cols.map((c) => ({x, y: c.slice(1), name: c[0], mode: "lines"})),
    {margin: {t: 10, r: 10, b: 35, l: 60}, xaxis: {title: {text: "% of training"}}, yaxis: {title: {text: "learning rate"}}},
    {displaylogo: false, responsive: true});
};

kiln.modelForm = () => {
  const form = document.getElementById("model-form");
  const ds = document.getElementById("dataset");
  kiln.datasetSummary(ds.value);
  const update = kiln.throttle(kiln.lrPreview, 300);
  form.querySelectorAll("[name^=lr_], [name=learning_rate]").forEach((el) => el.addEventListener("input", update));
  form.querySelectorAll("select[name=lr_policy]").forEach((el) => el.addEventListener("change", update));
  kiln.lrPreview();
};

// The accuracy axis spans the data with a little padding (a run between 97 and 99.5 % is not flat), within 0-100.
kiln.accuracyRange = (traces) => {
  const ys = traces.filter((t) => t.yaxis === "y2").flatMap((t) => t.y).filter((v) => v !== null && Number.isFinite(Number(v))).map(Number);
  if (!ys.length) return [0, 100];
  const lo = Math.min(...ys), hi = Math.max(...ys), pad = Math.max(1, (hi - lo) * 0.1);
  return [Math.max(0, lo - pad), Math.min(100, hi + pad)];
};

kiln.drawCharts = async (jobId) => {
  const data = await (await fetch(`/models/${jobId}/metrics.json`)).json();
  const traces = [];
  for (const [name, s] of Object.entries(data.series)) {
    if (name === "lr") continue;
    const isAcc = name.includes("accuracy");
    traces.push({x: s.x, y: s.y, name, mode: s.x.length > 60 ? "lines" : "lines+markers", yaxis: isAcc ? "y2" : "y"});
  }
  Plotly.react("combined-chart", traces, {
    margin: {t: 20, r: 60, b: 40, l: 60}, xaxis: {title: {text: "epoch"}, range: [0, data.train_epochs]},
    yaxis: {title: {text: "loss"}}, yaxis2: {title: {text: "accuracy (%)"}, overlaying: "y", side: "right", range: kiln.accuracyRange(traces), tickmode: "auto", showgrid: false},
    legend: {orientation: "h", y: -0.2}}, {displaylogo: false, responsive: true});
  const lr = data.series.lr;
  Plotly.react("lr-chart", lr ? [{x: lr.x, y: lr.y, name: "learning rate", mode: "lines"}] : [], {
    margin: {t: 10, r: 60, b: 40, l: 60}, xaxis: {title: {text: "epoch"}, range: [0, data.train_epochs]}, yaxis: {title: {text: "learning rate"}}},
    {displaylogo: false, responsive: true});
  const best = document.getElementById("best-epoch");
  if (best && data.best) best.textContent = `best: epoch ${data.best.epoch}, val accuracy ${data.best.accuracy.toFixed(2)}%`;
  const points = traces.reduce((n, t) => n + t.x.length, 0);
  document.getElementById("combined-chart").dataset.points = points;
  kiln.updateSnapshots(data.snapshots);
};

kiln.updateSnapshots = async (epochs) => {
  const select = document.getElementById("snapshot_epoch");
  if (!select) { if (epochs.length) await kiln.refreshBody(); return; }
  const chosen = select.dataset.chosen ? select.value : null;
  const best = select.querySelector("option[value=best]");  // the kept best snapshot stays offered
  select.innerHTML = (best ? best.outerHTML : "") + [...epochs].reverse().map((e) => `<option value="${e}">Epoch #${e}</option>`).join("");
  if (best) select.value = String([...epochs].pop() ?? "best");
  if (chosen) select.value = chosen;
  select.onchange = () => { select.dataset.chosen = "1"; };
};

kiln.hardware = async (jobId) => {
  const h = await (await fetch(`/models/${jobId}/hardware.json`)).json();
  const el = document.getElementById("hardware-body");
  if (!h.running) { el.textContent = "Not running."; return false; }
  if (!h.processes.length) { el.textContent = "Waiting for the worker's first reading."; return true; }
  // what the job's worker sampled (NVML for its GPUs, psutil for its processes): DIGITS' panel
  let html = "";
  for (const g of h.gpus) {
    html += `<p class="gpu">${kiln.esc(g.name)} (#${g.index}): memory ${(g.memory_used / 2 ** 30).toFixed(1)} / ${(g.memory_total / 2 ** 30).toFixed(1)} GB (${Math.round(100 * g.memory_used / g.memory_total)}%)` +
      `${g.utilization !== undefined ? `, utilization ${g.utilization}%` : ""}${g.temperature !== undefined ? `, ${g.temperature} °C` : ""}</p>`;
  }
  html += `<p>CPU ${h.cpu_percent.toFixed(0)}%, memory ${(h.rss / 2 ** 20).toFixed(0)} MB (${h.memory_percent}%)</p>`;
  html += `<table class="history" id="hardware-processes">${h.processes.map((p) =>
    `<tr><td>${kiln.esc(p.name)} #${p.pid}</td><td>CPU ${p.cpu_percent.toFixed(0)}%</td><td>${(p.rss / 2 ** 20).toFixed(0)} MB</td></tr>`).join("")}</table>`;
  el.innerHTML = html;
  return true;
};

kiln.modelEvaluations = async (jobId) => {
  const el = document.getElementById("evaluations");
  if (!el) return;
  const rows = (await (await fetch(`/models/${jobId}/evaluations.json`)).json()).evaluations;
  el.innerHTML = rows.length ? `<h4>Evaluations</h4><table class="jobs" id="evaluations-table">${rows.map((r) =>
    `<tr><td><a href="/evaluations/${r.id}">${kiln.esc(r.name)}</a></td><td>${kiln.esc(r.status)}</td>` +
    `<td>${r.top1_accuracy === null || r.top1_accuracy === undefined ? "" : kiln.pct(r.top1_accuracy) + " top-1"}</td></tr>`).join("")}</table>` : "";
};

kiln.modelPage = (jobId, datasetId) => {
  if (datasetId) kiln.datasetSummary(datasetId);
  kiln.drawCharts(jobId);
  const charts = kiln.throttle(() => kiln.drawCharts(jobId), 1000);
  kiln.jobPage(jobId, (msg) => { if (msg.update && (msg.update.includes("metrics") || msg.update.includes("snapshots"))) charts(); });
  const poll = async () => { if (await kiln.hardware(jobId)) setTimeout(poll, 2000); else setTimeout(poll, 5000); };
  poll();
};

kiln.copySnapshot = (form) => {
  const select = document.getElementById("snapshot_epoch");
  form.querySelector("[name=snapshot_epoch]").value = select ? select.value : "";
};

kiln.classifyOne = async (event, jobId) => {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  data.append("job_id", jobId);
  const select = document.getElementById("snapshot_epoch");
  if (select) data.append("snapshot_epoch", select.value);
  const out = document.getElementById("classify-one-result");
  out.textContent = "Classifying…";
  const res = await fetch("/models/images/classification/classify_one.json", {method: "POST", body: data, headers: {"X-CSRF-Token": kiln.csrf()}});
  const body = await res.json();
  if (!res.ok) { out.innerHTML = `<p class="alert danger">${kiln.esc(body.error ? body.error.message : JSON.stringify(body))}</p>`; return false; }
  let img = "";
  const file = form.querySelector("[name=image_file]").files[0];
  if (file) img = `<img src="${URL.createObjectURL(file)}" class="mean-image" alt="input">`;
  out.innerHTML = img + `<ul class="predictions" id="predictions">${body.predictions.map(([l, p]) =>
    `<li><span class="conf">${p.toFixed(2)}%</span> ${kiln.esc(l)}</li>`).join("")}</ul>`;
  if (body.visualizations && kiln.renderVisualizations) kiln.renderVisualizations(body, out);  // static/visualize.js
  return false;
};

kiln.useRecipe = (recipes) => {
  const net = document.querySelector("input[name=standard_networks]:checked");
  const recipe = net && recipes[net.value];
  const note = document.getElementById("recipe-note");
  const choice = document.getElementById("recipe");  // recorded with the model
  if (!recipe) {
    note.textContent = "No recipe for this network yet: DIGITS' defaults stay.";
    if (choice) choice.value = "none";
    return;
  }
  for (const [name, value] of Object.entries(recipe)) {
    const el = document.querySelector(`[name=${name}]`);
    if (el) el.value = value;
  }
  if (choice) choice.value = "kiln";
  note.textContent = `Filled in: ${Object.entries(recipe).map(([k, v]) => `${k}=${v}`).join(", ")}`;
  kiln.lrPreview();
};
// picking "Kiln's recipe" in the Recipe select fills the fields in, as the button does
document.addEventListener("change", (e) => {
  if (e.target.id === "recipe" && e.target.value === "kiln") document.getElementById("use-recipe")?.click();
});

// ---- network tabs, the Custom network editor, Customize and Visualize (New Model page) ------------
kiln.networkForm = () => {
  const method = document.getElementById("method");
  const show = (m) => {
    method.value = m;
    document.querySelectorAll("#network-tabs .tab").forEach((t) => t.classList.toggle("active", t.dataset.method === m));
    document.querySelectorAll("#network-card .tabpane").forEach((p) => p.classList.toggle("active", p.id === `pane-${m}`));
  };
  kiln.showNetworkTab = show;
  document.querySelectorAll("#network-tabs .tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.method)));
  document.querySelectorAll("#network-card button.customize").forEach((b) => b.addEventListener("click", () => {
    const select = b.dataset.snapshot ? document.getElementById(b.dataset.snapshot) : null;
    kiln.customize(b.dataset.network, select ? select.value : "");
  }));
  show(method.value || "standard");
  const text = document.getElementById("custom_network");
  const gutter = document.getElementById("custom-gutter");
  text.addEventListener("input", () => kiln.gutter());
  text.addEventListener("scroll", () => { gutter.scrollTop = text.scrollTop; });
  const error = document.querySelector("#pane-custom .field-error[data-field=custom_network]");
  kiln.markLine(error ? kiln.lineOf(error.textContent) : 0);
};

kiln.lineOf = (message) => { const m = /^line (\d+)/.exec(message || ""); return m ? Number(m[1]) : 0; };

// Line numbers beside the text; `bad` (1-based) is the line an error names.
kiln.gutter = (bad) => {
  const text = document.getElementById("custom_network");
  const gutter = document.getElementById("custom-gutter");
  const n = text.value.split("\n").length;
  gutter.innerHTML = Array.from({length: n}, (_, i) => `<span${i + 1 === bad ? ' class="bad" id="bad-line"' : ""}>${i + 1}</span>`).join("\n") + "\n";
  gutter.scrollTop = text.scrollTop;
};

kiln.markLine = (line) => {
  kiln.gutter(line);
  if (!line) return;
  const text = document.getElementById("custom_network");
  const lines = text.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, l) => sum + l.length + 1, 0);
  const height = parseFloat(getComputedStyle(text).lineHeight) || 18;
  text.scrollTop = Math.max(0, (line - 4) * height);
  text.setSelectionRange(start, start + (lines[line - 1] || "").length);
  document.getElementById("custom-gutter").scrollTop = text.scrollTop;
};

kiln.customize = async (network, epoch) => {
  if (epoch === "0") epoch = "";
  const url = `/models/customize?network=${encodeURIComponent(network)}` + (epoch ? `&snapshot_epoch=${encodeURIComponent(epoch)}` : "");
  const j = JSON.parse(await kiln.request("POST", url));
  document.getElementById("custom_network").value = j.network;
  document.getElementById("network_language").value = j.network_language || "prototxt";
  document.getElementById("custom_network_snapshot").value = epoch && j.snapshot ? j.snapshot : "";
  document.getElementById("network-visual").innerHTML = "";
  kiln.showNetworkTab("custom");
  kiln.markLine(0);
};

kiln.visualizeNetwork = async () => {
  const get = (id) => (document.getElementById(id) || {}).value || "";
  const data = {custom_network: get("custom_network"), network_language: get("network_language"), dataset_id: get("dataset"), crop_size: get("crop_size")};
  const res = await fetch("/models/visualize-network", {method: "POST", body: new URLSearchParams(data), headers: {"Accept": "text/html", "X-CSRF-Token": kiln.csrf()}});
  const out = document.getElementById("network-visual");
  out.innerHTML = await res.text();
  const error = document.getElementById("network-error");
  kiln.markLine(error ? Number(error.dataset.line) || kiln.lineOf(error.textContent) : 0);
};

// ---- evaluation page: a confusion-matrix cell lists its images ----------------------------------
kiln.evaluationPage = (jobId) => {
  document.querySelectorAll("#confusion-matrix button.cell").forEach((b) => b.addEventListener("click", async () => {
    const out = document.getElementById("cell-images");
    const res = await fetch(`/evaluations/${jobId}/cell.json?truth=${b.dataset.truth}&predicted=${b.dataset.predicted}`);
    const cell = await res.json();
    const head = document.querySelectorAll("#confusion-matrix tr:first-child th");
    const name = (i) => head[Number(i) + 1].textContent;
    out.innerHTML = `<h4 id="cell-title">${cell.count} × true ${kiln.esc(name(cell.truth))}, predicted ${kiln.esc(name(cell.predicted))}</h4>` +
      `<div class="gallery">${cell.images.map((im) => `<figure class="thumb"><a href="${im.url}"><img src="${im.url}" alt="${kiln.esc(im.image)}"></a>` +
      `<figcaption>${kiln.esc(im.image)} · ${im.confidence.toFixed(1)}%</figcaption></figure>`).join("")}</div>`;
  }));
};
