// The static report's filters, figures, summary and table (simclr_distill.dashboard.export_report).
// Mirrors simclr_distill/dashboard/figures.py: a point is the mean of its group's runs, its error bar
// their standard deviation; the summary mirrors dashboard.summary_table.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const side = document.getElementById("side");
  const state = { sort: "f1", descending: true };
  document.getElementById("title").textContent = D.title;
  document.title = D.title;
  for (const m of D.messages) {
    const div = document.createElement("div");
    div.className = "message";
    div.textContent = m;
    document.getElementById("messages").appendChild(div);
  }

  function byNumberThenText(a, b) {
    const x = Number(a), y = Number(b);
    if (a !== "" && b !== "" && !isNaN(x) && !isNaN(y)) return x - y;
    return String(a).localeCompare(String(b));
  }

  const safe = column => column.replace(/\./g, "_");  // ids as the Dash app names them

  function addLabel(text, forId) {
    const label = document.createElement("label");
    label.textContent = text;
    label.htmlFor = forId;
    side.appendChild(label);
  }

  addLabel("metric", "metric");
  const metricSelect = document.createElement("select");
  metricSelect.id = "metric";
  for (const m of D.metrics) metricSelect.add(new Option(m, m));
  side.appendChild(metricSelect);

  const filters = {};
  for (const column of D.categorical) {
    const values = [...new Set(D.rows.map(r => r[column] ?? ""))].sort(byNumberThenText);
    addLabel(column + " (none selected = all)", "filter-" + safe(column));
    const select = document.createElement("select");
    select.multiple = true;
    select.id = "filter-" + safe(column);
    select.size = Math.max(2, Math.min(values.length, 5));
    for (const v of values) select.add(new Option(v === "" ? "(none)" : v, v));
    side.appendChild(select);
    filters[column] = select;
  }
  const ranges = {};
  for (const column of D.numeric) {
    const values = D.rows.map(r => r[column]).filter(v => v !== null && v !== undefined);
    const low = Math.min(...values), high = Math.max(...values);
    addLabel(column + " range", "range-" + safe(column) + "-min");
    const box = document.createElement("div");
    const lo = document.createElement("input"), hi = document.createElement("input");
    for (const [input, value, suffix] of [[lo, low, "min"], [hi, high, "max"]]) {
      input.type = "number";
      input.step = "any";
      input.value = value;
      input.id = "range-" + safe(column) + "-" + suffix;
      input.style.width = "45%";
      box.appendChild(input);
    }
    side.appendChild(box);
    ranges[column] = [lo, hi, low, high];
  }

  function filtered() {
    return D.rows.filter(row => {
      for (const [column, select] of Object.entries(filters)) {
        const chosen = [...select.selectedOptions].map(o => o.value);
        if (chosen.length && !chosen.includes(row[column] ?? "")) return false;
      }
      for (const [column, [lo, hi, low, high]] of Object.entries(ranges)) {
        const a = Number(lo.value), b = Number(hi.value), v = row[column];
        if (a === low && b === high) continue;  // a full range does not filter
        if (v !== null && v !== undefined && (v < a || v > b)) return false;
      }
      return true;
    });
  }

  function finished(rows) { return rows.filter(r => (r.status ?? "ok") === "ok" || r.status === undefined); }

  // figures.group_stats: mean, std (0 for one run), count and standard error of metric per group.
  function statsBy(rows, keys, metric) {
    const groups = new Map();
    for (const r of rows) {
      const v = r[metric];
      if (v === null || v === undefined || isNaN(v)) continue;
      const values = keys.map(k => r[k] ?? "");
      const key = JSON.stringify(values);
      if (!groups.has(key)) groups.set(key, { keys: values, values: [] });
      groups.get(key).values.push(v);
    }
    return [...groups.values()].map(g => {
      const n = g.values.length, mean = g.values.reduce((a, b) => a + b, 0) / n;
      const sd = n > 1 ? Math.sqrt(g.values.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
      return { keys: g.keys, mean: mean, std: sd, count: n, se: sd / Math.sqrt(n) };
    });
  }

  function groupStats(rows, color, metric) {
    // Several sources (e.g. the published study and a reproduction): one line each.
    const sources = new Set(rows.map(r => r.source)).size > 1;
    return statsBy(rows, [color, "split_percent", "source"], metric).map(s => ({
      name: (s.keys[0] || "(none)") + (sources ? " [" + s.keys[2] + "]" : ""), split: s.keys[1],
      mean: s.mean, std: s.std, count: s.count }));
  }

  const layout = title => ({ title: { text: title }, template: "plotly_white", height: 360,
    margin: { l: 50, r: 20, t: 50, b: 45 }, legend: { orientation: "h", y: -0.2 } });

  function emptyFigure(title, why) {
    const l = layout(title);
    l.annotations = [{ text: why, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
    l.xaxis = { visible: false };
    l.yaxis = { visible: false };
    return { data: [], layout: l };
  }

  function bySplit(rows, metric, color, title) {
    const stats = groupStats(rows, color, metric);
    if (!stats.length) return emptyFigure(title, "no rows match the filters");
    const splits = [...new Set(stats.map(s => s.split))].sort(byNumberThenText);
    const names = [...new Set(stats.map(s => s.name))].sort(byNumberThenText);
    const data = names.map(name => {
      const points = stats.filter(s => s.name === name).sort((a, b) => byNumberThenText(a.split, b.split));
      return { type: "scatter", mode: "lines+markers", name: name,
        line: name.endsWith("[published]") ? { dash: "dash" } : {},
        x: points.map(p => p.split + "%"), y: points.map(p => p.mean),
        error_y: { type: "data", array: points.map(p => p.std), visible: true },
        customdata: points.map(p => p.count),
        hovertemplate: color + "=" + name + "<br>split %{x}<br>" + metric + " %{y:.3f}<br>%{customdata} runs<extra></extra>" };
    });
    const l = layout(title);
    l.xaxis = { type: "category", categoryorder: "array", categoryarray: splits.map(s => s + "%"), title: { text: "labelled data (split)" } };
    l.yaxis = { title: { text: metric } };
    return { data: data, layout: l };
  }

  // figures.metric_by_method: mean +- std per method, one colour per stage, best method on top.
  function methodFigure(rows, metric) {
    const title = metric + " by method";
    const stats = statsBy(rows.filter(r => r.method), ["stage", "method"], metric);
    if (!stats.length) return emptyFigure(title, "no finished run with a method has a " + metric);
    const lower = D.lowerIsBetter.includes(metric);
    const methods = statsBy(stats.map(s => ({ method: s.keys[1], mean: s.mean })), ["method"], "mean")
      .sort((a, b) => lower ? b.mean - a.mean : a.mean - b.mean).map(s => s.keys[0]);
    const stages = [...new Set(stats.map(s => s.keys[0]))].sort();
    const data = stages.map(stage => {
      const points = stats.filter(s => s.keys[0] === stage);
      return { type: "scatter", mode: "markers", name: stage || "(none)", x: points.map(p => p.mean),
        y: points.map(p => p.keys[1]), error_x: { type: "data", array: points.map(p => p.std), visible: true },
        customdata: points.map(p => p.count),
        hovertemplate: "%{y}<br>" + metric + " %{x:.3f}<br>%{customdata} runs<extra>%{fullData.name}</extra>" };
    });
    const l = layout(title);
    l.height = Math.max(360, 150 + 30 * methods.length);
    l.xaxis = { title: { text: metric } };
    // Best at the top: plotly draws the first category at the bottom.
    l.yaxis = { type: "category", categoryorder: "array", categoryarray: methods, automargin: true };
    return { data: data, layout: l };
  }

  function teacherFigure(rows, metric) {
    const title = "students vs their teacher (" + metric + ")";
    const teacher = new Map();
    for (const r of rows) if (r.stage === "finetune" && r.teacher_id && r[metric] != null) teacher.set(r.teacher_id, r[metric]);
    const students = rows.filter(r => r.stage === "distill");
    const points = students.map(r => ({ arch: r.arch, id: r.teacher_id, y: r[metric],
      x: teacher.has(r.teacher_id) ? teacher.get(r.teacher_id) : (metric === "f1" ? r.teacher_f1 : null) }))
      .filter(p => p.x != null && p.y != null);
    if (!points.length) return emptyFigure(title, "no distilled students with a teacher " + metric);
    const archs = [...new Set(points.map(p => p.arch))].sort();
    const data = archs.map(a => {
      const ps = points.filter(p => p.arch === a);
      return { type: "scatter", mode: "markers", name: a, x: ps.map(p => p.x), y: ps.map(p => p.y), text: ps.map(p => p.id) };
    });
    const low = Math.min(...points.map(p => Math.min(p.x, p.y)));
    data.push({ type: "scatter", mode: "lines", name: "student = teacher", x: [low, 1], y: [low, 1], line: { dash: "dot", color: "grey" } });
    const l = layout(title);
    l.xaxis = { title: { text: "teacher " + metric } };
    l.yaxis = { title: { text: "student " + metric } };
    return { data: data, layout: l };
  }

  function runFigures(rows, metric) {
    const sign = D.lowerIsBetter.includes(metric) ? -1 : 1;  // best five first
    const ranked = rows.filter(r => D.runs[r.run_id]).sort((a, b) => sign * ((b[metric] ?? -sign * Infinity) - (a[metric] ?? -sign * Infinity))).slice(0, 5);
    const pr = ranked.filter(r => D.runs[r.run_id].pr).map(r => ({ type: "scatter", mode: "lines", line: { shape: "hv" },
      name: r.run_id, x: D.runs[r.run_id].pr[0], y: D.runs[r.run_id].pr[1] }));
    const curves = [];
    for (const r of ranked) {
      const c = D.runs[r.run_id].curves || {};
      for (const [column, dash] of [["label_loss", "solid"], ["val_label_loss", "dot"]]) {
        if (c[column]) curves.push({ type: "scatter", mode: "lines", name: r.run_id + " " + column,
          x: c[column].map((_, i) => i + 1), y: c[column], line: { dash: dash } });
      }
    }
    const prLayout = layout("precision-recall on the test list");
    prLayout.xaxis = { title: { text: "recall" }, range: [0, 1.02] };
    prLayout.yaxis = { title: { text: "precision" }, range: [0, 1.02] };
    const curveLayout = layout("training curves (label_loss)");
    curveLayout.xaxis = { title: { text: "epoch" } };
    return {
      pr: pr.length ? { data: pr, layout: prLayout } : emptyFigure("precision-recall on the test list", "no saved predictions for these runs"),
      curves: curves.length ? { data: curves, layout: curveLayout } : emptyFigure("training curves (label_loss)", "no training logs for these runs"),
    };
  }

  const figureBox = document.getElementById("figures");
  const figureIds = [...D.comparisons.map(c => c[0]), ...(D.methods ? ["by_method"] : []), "teacher", "pr", "curves"];
  for (const id of figureIds) {
    const div = document.createElement("div");
    div.id = "fig-" + id;
    figureBox.appendChild(div);
  }

  function cell(value) {
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
    return value ?? "";
  }

  const groupBy = document.getElementById("group-by");
  groupBy.size = Math.max(2, Math.min(D.categorical.length, 6));
  for (const column of D.categorical) groupBy.add(new Option(column, column, false, D.groupBy.includes(column)));

  // dashboard.summary_table: per group, mean, std, count and standard error over runs.
  function renderSummary(rows, metric) {
    const chosen = [...groupBy.selectedOptions].map(o => o.value);
    const keys = chosen.length ? chosen : ["group"];
    const grouped = chosen.length ? rows : rows.map(r => ({ ...r, group: "all runs" }));
    const groups = new Map();
    const metrics = [...new Set([metric, ...D.summaryMetrics])];
    for (const m of metrics) {
      for (const s of statsBy(grouped, keys, m)) {
        const id = JSON.stringify(s.keys);
        if (!groups.has(id)) groups.set(id, { keys: s.keys });
        groups.get(id)[m] = s;
      }
    }
    const sorted = [...groups.values()].sort((a, b) => {
      for (let i = 0; i < keys.length; i++) {
        const order = String(a.keys[i]).localeCompare(String(b.keys[i]));
        if (order) return order;
      }
      return 0;
    });
    const table = document.createElement("table");
    table.id = "summary-table";
    const head = table.createTHead().insertRow();
    const stats = ["mean", "std", "count", "se"];
    for (const c of [...keys, ...metrics.flatMap(m => stats.map(s => m + "_" + s))]) {
      const th = document.createElement("th"); th.textContent = c; head.appendChild(th);
    }
    const body = table.createTBody();
    for (const g of sorted) {
      const tr = body.insertRow();
      tr.dataset.keys = JSON.stringify(g.keys);
      for (const k of g.keys) tr.insertCell().textContent = k;
      for (const m of metrics) for (const s of stats) tr.insertCell().textContent = g[m] ? cell(g[m][s]) : "";
    }
    document.getElementById("summary").replaceChildren(table);
  }

  function renderTable(rows) {
    const sorted = rows.slice().sort((a, b) => {
      const x = a[state.sort], y = b[state.sort];
      const order = byNumberThenText(x ?? "", y ?? "");
      return state.descending ? -order : order;
    });
    const shown = sorted.slice(0, 500);
    const table = document.createElement("table");
    table.id = "runs";
    const head = table.createTHead().insertRow();
    for (const column of D.table) {
      const th = document.createElement("th");
      th.textContent = column + (state.sort === column ? (state.descending ? " \u25BC" : " \u25B2") : "");
      th.onclick = () => { state.descending = state.sort === column ? !state.descending : true; state.sort = column; update(); };
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const row of shown) {
      const tr = body.insertRow();
      for (const column of D.table) tr.insertCell().textContent = cell(row[column]);
    }
    const box = document.getElementById("table");
    box.replaceChildren(table);
    if (sorted.length > shown.length) {
      const note = document.createElement("div");
      note.textContent = "first " + shown.length + " of " + sorted.length + " rows shown (sorted by " + state.sort + ")";
      box.appendChild(note);
    }
  }

  // Published vs reproduced: means per (stage, encoder, labelling, split, architecture).
  const KEYS = ["stage", "model", "labeling", "split_percent", "arch"];
  function comparison(rows, metric) {
    const sides = new Map();
    for (const r of rows) {
      const v = r[metric];
      if (v === null || v === undefined || isNaN(v)) continue;
      const key = KEYS.map(k => r[k] ?? "").join(" | ");
      if (!sides.has(key)) sides.set(key, { key: key, published: [], reproduced: [] });
      sides.get(key)[r.source === "published" ? "published" : "reproduced"].push(v);
    }
    const mean = a => a.length ? a.reduce((x, y) => x + y, 0) / a.length : null;
    return [...sides.values()].filter(s => s.published.length && s.reproduced.length).map(s => ({
      key: s.key, published: mean(s.published), reproduced: mean(s.reproduced),
      runs: s.reproduced.length, difference: mean(s.reproduced) - mean(s.published) }));
  }

  function renderComparison(rows, metric) {
    const box = document.getElementById("comparison");
    const hasPublished = rows.some(r => r.source === "published");
    const hasOwn = rows.some(r => r.source !== "published");
    if (!hasPublished || !hasOwn) { box.replaceChildren(); return; }
    const pairs = comparison(rows, metric);
    const heading = document.createElement("h3");
    heading.textContent = "Published vs reproduced " + metric + " (" + pairs.length + " groups in both)";
    const table = document.createElement("table");
    table.id = "comparison-table";
    const head = table.createTHead().insertRow();
    for (const c of ["stage | encoder | labelling | split | arch", "published", "reproduced", "runs", "difference"]) {
      const th = document.createElement("th"); th.textContent = c; head.appendChild(th);
    }
    const body = table.createTBody();
    for (const p of pairs) {
      const tr = body.insertRow();
      for (const v of [p.key, cell(p.published), cell(p.reproduced), p.runs, cell(p.difference)]) tr.insertCell().textContent = v;
    }
    box.replaceChildren(heading, table);
  }

  function update() {
    const metric = metricSelect.value;
    const rows = filtered();
    const ok = finished(rows);
    document.getElementById("row-count").textContent = rows.length + " of " + D.rows.length + " runs";
    for (const [key, label, color] of D.comparisons) {
      const fig = bySplit(ok, metric, color, metric + ": " + label);
      Plotly.react("fig-" + key, fig.data, fig.layout);
    }
    if (D.methods) {
      const methods = methodFigure(ok, metric);
      Plotly.react("fig-by_method", methods.data, methods.layout);
    }
    const teacher = teacherFigure(ok, metric);
    Plotly.react("fig-teacher", teacher.data, teacher.layout);
    const runs = runFigures(ok, metric);
    Plotly.react("fig-pr", runs.pr.data, runs.pr.layout);
    Plotly.react("fig-curves", runs.curves.data, runs.curves.layout);
    renderComparison(ok, metric);
    renderSummary(ok, metric);
    renderTable(rows);
  }

  metricSelect.addEventListener("change", update);
  groupBy.addEventListener("change", update);
  for (const select of Object.values(filters)) select.addEventListener("change", update);
  for (const [lo, hi] of Object.values(ranges)) { lo.addEventListener("change", update); hi.addEventListener("change", update); }
  update();
})();
