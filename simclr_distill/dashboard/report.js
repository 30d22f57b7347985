// The static report's filters, figures, summary and tables (simclr_distill.dashboard.export_report).
// Mirrors simclr_distill/dashboard: every figure is computed from the same rows and the same saved
// predictions (`figures.prediction_summary`, carried in D.runs) as the app's, function for function
// (figures.metric_by_split, optimizer_by_split, metric_by_method, teacher_vs_students,
// published_vs_reproduced, precision_recall, roc_curves, calibration, confusion_matrices,
// training_curves; published.overlay and compare; dashboard.choose_runs and summary_table).
// tests/test_dashboard.py holds every figure's numbers here against the app's.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const S = D.style;
  const side = document.getElementById("side");
  const state = { sort: "f1", descending: true, selected: [] };
  document.getElementById("title").textContent = D.title;
  document.title = D.title;
  for (const m of D.messages) {
    const div = document.createElement("div");
    div.className = "message";
    div.textContent = m;
    document.getElementById("messages").appendChild(div);
  }

  // ---- Helpers as in Python ----------------------------------------------------------------------

  const text = v => (v === null || v === undefined) ? "" : String(v);
  const isNumber = v => v !== null && v !== undefined && v !== "" && !isNaN(v);
  // Python's sorted() on text: by code point (not the locale).
  const codepoint = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  function byKeys(a, b) {
    for (let i = 0; i < a.length; i++) {
      const order = codepoint(text(a[i]), text(b[i]));
      if (order) return order;
    }
    return 0;
  }
  function byNumberThenText(a, b) {
    const x = Number(a), y = Number(b);
    if (a !== "" && b !== "" && !isNaN(x) && !isNaN(y)) return x - y;
    return codepoint(String(a), String(b));
  }
  const unique = values => [...new Set(values)].sort(codepoint);
  const fixed = (v, d = 3) => Number(v).toFixed(d);  // figures.fixed writes numbers this way

  // figures.wrap, legend_rows and layout: the title below the modebar, the legend under the axes.
  function wrap(value, width) {
    const lines = [];
    for (const word of String(value).split(" ")) {
      if (lines.length && lines[lines.length - 1].length + 1 + word.length <= width) lines[lines.length - 1] += " " + word;
      else lines.push(word);
    }
    return lines.length ? lines : [""];
  }
  function legendRows(names, width = 430) {
    let rows = 1, used = 0;
    for (const name of names) {
      const entry = 40 + 6.5 * String(name).length;
      if (used && used + entry > width) { rows += 1; used = 0; }
      used += entry;
    }
    return rows;
  }
  function layout(title, height = 300, legend = []) {
    const lines = wrap(title, S.titleChars);
    const top = S.modebar + 20 * lines.length + 12;
    const rows = typeof legend === "number" ? legend : (legend.length ? legendRows(legend) : 0);
    const bottom = 50 + 20 * rows + 8;
    return { template: S.template, height: height + top + bottom, margin: { l: 50, r: 20, t: top, b: bottom },
      legend: { orientation: "h", x: 0.01, xanchor: "left", xref: "container", y: 0, yanchor: "bottom", yref: "container" },
      title: { text: lines.join("<br>"), x: 0.01, xanchor: "left", xref: "container", y: 1, yanchor: "top",
        yref: "container", pad: { t: S.modebar }, font: { size: 15 } } };
  }
  const names = data => data.filter(t => t.showlegend !== false).map(t => t.name);

  function emptyFigure(title, why) {
    const l = layout(title);
    l.annotations = [{ text: wrap(why, 70).join("<br>"), showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
    l.xaxis = { visible: false };
    l.yaxis = { visible: false };
    return { data: [], layout: l };
  }

  // ---- Filters ------------------------------------------------------------------------------------

  const safe = column => column.replace(/\./g, "_");  // ids as the Dash app names them

  function addLabel(label, forId) {
    const element = document.createElement("label");
    element.textContent = label;
    element.htmlFor = forId;
    side.appendChild(element);
  }

  addLabel("metric", "metric");
  const metricSelect = document.createElement("select");
  metricSelect.id = "metric";
  for (const m of D.metrics) metricSelect.add(new Option(m, m));
  side.appendChild(metricSelect);

  const filters = {};
  for (const column of D.categorical) {
    const values = [...new Set(D.rows.map(r => text(r[column])))].sort(byNumberThenText);
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
    const values = D.rows.map(r => r[column]).filter(isNumber);
    // dashboard.numeric_bounds: the extent rounded out to two decimals.
    const low = Math.floor(Math.min(...values) * 100) / 100, high = Math.ceil(Math.max(...values) * 100) / 100;
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
        if (chosen.length && !chosen.includes(text(row[column]))) return false;
      }
      for (const [column, [lo, hi, low, high]] of Object.entries(ranges)) {
        const a = Number(lo.value), b = Number(hi.value), v = row[column];
        if (a === low && b === high) continue;  // a full range does not filter
        if (isNumber(v) && (v < a || v > b)) return false;
      }
      return true;
    });
  }

  // ---- Group statistics (figures.group_stats) -----------------------------------------------------

  const finished = rows => rows.filter(r => (r.status ?? "ok") === "ok");

  // Mean, std (0 for one run), count and standard error of a metric per group of the finished
  // rows, groups in key order (pandas' groupby sorts them).
  function statsBy(rows, keys, metric) {
    const groups = new Map();
    for (const r of finished(rows)) {
      const v = r[metric];
      if (!isNumber(v)) continue;
      const values = keys.map(k => text(r[k]));
      const key = JSON.stringify(values);
      if (!groups.has(key)) groups.set(key, { keys: values, values: [] });
      groups.get(key).values.push(Number(v));
    }
    return [...groups.values()].sort((a, b) => byKeys(a.keys, b.keys)).map(g => {
      const n = g.values.length, mean = g.values.reduce((a, b) => a + b, 0) / n;
      const sd = n > 1 ? Math.sqrt(g.values.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
      return { keys: g.keys, mean: mean, std: sd, count: n, se: sd / Math.sqrt(n) };
    });
  }

  // ---- Comparison figures -------------------------------------------------------------------------

  // figures.metric_by_split: metric against label split, one line per colour value (and source).
  function bySplit(rows, metric, color, title, column) {
    const value = column || (r => r[color]);
    if (!rows.length) return emptyFigure(title, "no rows match the filters");
    const sources = new Set(rows.map(r => text(r.source))).size > 1;
    const keyed = rows.map(r => ({ ...r, _color: text(value(r)) }));
    const keys = ["_color", "split_percent"].concat(sources ? ["source"] : []);
    const stats = statsBy(keyed, keys, metric).filter(s => s.keys[1] !== "" && !isNaN(Number(s.keys[1])))
      .map(s => ({ ...s, split: Math.trunc(Number(s.keys[1])) }));
    if (!stats.length) return emptyFigure(title, "no finished run has a " + metric);
    const splits = [...new Set(stats.map(s => s.split))].sort((a, b) => a - b);
    const lines = new Map();
    for (const s of stats) {
      const id = JSON.stringify(sources ? [s.keys[0], s.keys[2]] : [s.keys[0]]);
      if (!lines.has(id)) lines.set(id, { keys: sources ? [s.keys[0], s.keys[2]] : [s.keys[0]], points: [] });
      lines.get(id).points.push(s);
    }
    const data = [...lines.values()].sort((a, b) => byKeys(a.keys, b.keys)).map(line => {
      const points = line.points.slice().sort((a, b) => a.split - b.split);
      let name = line.keys[0] || "(none)";
      if (sources) name += " [" + line.keys[1] + "]";
      const trace = { type: "scatter", mode: "lines+markers", name: name,
        x: points.map(p => p.split + "%"), y: points.map(p => p.mean),
        error_y: { type: "data", array: points.map(p => p.std), visible: true },
        customdata: points.map(p => p.count),
        hovertemplate: color + "=" + name + "<br>split %{x}<br>" + metric + " %{y:.3f} +- %{error_y.array:.3f}<br>%{customdata} runs<extra></extra>" };
      if (sources && line.keys[1] === D.publishedSource) trace.line = { dash: "dash" };
      return trace;
    });
    const l = layout(title, 300, names(data));
    l.xaxis = { type: "category", categoryorder: "array", categoryarray: splits.map(s => s + "%"), title: { text: "labelled data (split)" } };
    l.yaxis = { title: { text: metric } };
    return { data: data, layout: l };
  }

  // figures.optimizer_column: which optimizer columns differ between the scored rows.
  function optimizerColumn(rows, metric) {
    const scored = finished(rows).filter(r => isNumber(r[metric]));
    const present = D.optimizers.filter(([c]) => scored.some(r => text(r[c]) !== ""));
    const varying = present.filter(([c]) => new Set(scored.map(r => text(r[c])).filter(v => v !== "")).size > 1);
    const shown = varying.length ? varying : present;
    if (!shown.length) return { label: null, columns: [], note: "no row names its optimizer" };
    const label = r => shown.every(([c]) => text(r[c]) === "") ? "" :
      shown.map(([c, who]) => who + " " + (text(r[c]) || "(none)")).join(" / ");
    if (varying.length) return { label: label, columns: varying.map(v => v[0]), note: "" };
    const used = unique(present.flatMap(([c, who]) => scored.map(r => text(r[c])).filter(v => v).map(v => who + " " + v)));
    const only = unique(present.flatMap(([c]) => scored.map(r => text(r[c])).filter(v => v)));
    return { label: label, columns: shown.map(v => v[0]),
      note: "only " + only.join(" and ") + " in these rows (" + used.join(", ") + "): no other optimizer to compare" };
  }

  // figures.optimizer_by_split: Adam vs SGD, saying so when the rows hold one optimizer only.
  function optimizerFigure(rows, metric, title) {
    if (!rows.length) return emptyFigure(title, "no rows match the filters");
    const o = optimizerColumn(rows, metric);
    if (!o.columns.length) return emptyFigure(title, o.note);
    const kept = rows.filter(r => o.label(r) !== "");
    const which = o.columns.map(c => c.split("_")[0]).join(" and ");
    const fig = bySplit(kept, metric, "optimizer", o.note ? title + ": one optimizer only" : title + " (" + which + " optimizer)", o.label);
    if (o.note && fig.data.length) {  // above the plotting area, which grows down to make room
      const lines = wrap(o.note, 70);
      fig.layout.annotations = [{ text: lines.join("<br>"), showarrow: false, xref: "paper", yref: "paper",
        x: 0, xanchor: "left", y: 1.0, yanchor: "bottom", yshift: 4, align: "left",
        bgcolor: "rgba(255, 243, 205, 0.9)", bordercolor: "#a15c00" }];
      fig.layout.margin.t += 20 * lines.length + 8;
      fig.layout.height += 20 * lines.length + 8;
    }
    return fig;
  }

  // figures.metric_by_method: mean +- std per method, one colour per stage, best method on top.
  function methodFigure(rows, metric) {
    const title = metric + " by method";
    if (!rows.length) return emptyFigure(title, "no rows match the filters");
    const stats = statsBy(rows.filter(r => text(r.method) !== ""), ["stage", "method"], metric);
    if (!stats.length) return emptyFigure(title, "no finished run with a method has a " + metric);
    const lower = D.lowerIsBetter.includes(metric);
    const means = new Map();
    for (const s of stats) {
      if (!means.has(s.keys[1])) means.set(s.keys[1], []);
      means.get(s.keys[1]).push(s.mean);
    }
    const methods = [...means.entries()].sort((a, b) => codepoint(a[0], b[0]))
      .map(([method, values]) => [method, values.reduce((a, b) => a + b, 0) / values.length])
      .sort((a, b) => lower ? a[1] - b[1] : b[1] - a[1]).map(m => m[0]);  // stable: ties by name
    const stages = unique(stats.map(s => s.keys[0]));
    const data = stages.map(stage => {
      const points = stats.filter(s => s.keys[0] === stage);
      return { type: "scatter", mode: "markers", name: stage || "(none)", x: points.map(p => p.mean),
        y: points.map(p => p.keys[1]), error_x: { type: "data", array: points.map(p => p.std), visible: true },
        customdata: points.map(p => p.count),
        hovertemplate: "%{y}<br>" + metric + " %{x:.3f} +- %{error_x.array:.3f}<br>%{customdata} runs<extra>%{fullData.name}</extra>" };
    });
    const l = layout(title, Math.max(240, 40 + 30 * methods.length), names(data));
    l.xaxis = { title: { text: metric } };
    // Best at the top: plotly draws the first category at the bottom.
    l.yaxis = { type: "category", categoryorder: "array", categoryarray: methods.slice().reverse(), automargin: true };
    return { data: data, layout: l };
  }

  // figures.teacher_vs_students: each student against its teacher, the MEAN of the teacher's
  // finetune rows (several seeds share a teacher id), else its teacher_f1 for F1.
  function teacherFigure(rows, metric) {
    const title = "students vs their teacher (" + metric + ")";
    const ok = finished(rows);
    const students = ok.filter(r => r.stage === "distill");
    if (!students.length) return emptyFigure(title, "no distilled students among the filtered rows");
    const sums = new Map();
    for (const r of ok) {
      if (r.stage !== "finetune" || text(r.teacher_id) === "" || !isNumber(r[metric])) continue;
      const s = sums.get(r.teacher_id) || [0, 0];
      sums.set(r.teacher_id, [s[0] + Number(r[metric]), s[1] + 1]);
    }
    const points = students.map(r => {
      let x = sums.has(r.teacher_id) ? sums.get(r.teacher_id)[0] / sums.get(r.teacher_id)[1] : null;
      if (x === null && metric === "f1" && isNumber(r.teacher_f1)) x = Number(r.teacher_f1);
      return { arch: text(r.arch), id: r.teacher_id, x: x, y: isNumber(r[metric]) ? Number(r[metric]) : null };
    }).filter(p => p.x !== null && p.y !== null);
    if (!points.length) return emptyFigure(title, "no student has a teacher " + metric + " (filter in the finetune rows)");
    const data = unique(points.map(p => p.arch)).map(a => {
      const ps = points.filter(p => p.arch === a);
      return { type: "scatter", mode: "markers", name: a, x: ps.map(p => p.x), y: ps.map(p => p.y), text: ps.map(p => p.id),
        hovertemplate: "teacher %{text}<br>teacher " + metric + " %{x:.3f}<br>student " + metric + " %{y:.3f}<extra>%{fullData.name}</extra>" };
    });
    const low = Math.min(...points.map(p => Math.min(p.x, p.y)));
    data.push({ type: "scatter", mode: "lines", name: "student = teacher", x: [low, 1], y: [low, 1], line: { dash: "dot", color: "grey" } });
    const l = layout(title, 300, names(data));
    l.xaxis = { title: { text: "teacher " + metric } };
    l.yaxis = { title: { text: "student " + metric } };
    return { data: data, layout: l };
  }

  function comparisonFigures(rows, metric, ids, prefix) {
    const out = {};
    for (const [key, label, color] of D.comparisons) {
      const title = metric + ": " + label;
      out[prefix + key] = color === "optimizer" ? optimizerFigure(rows, metric, title) : bySplit(rows, metric, color, title);
    }
    if (ids.includes(prefix + "by_method")) out[prefix + "by_method"] = methodFigure(rows, metric);
    out[prefix + "teacher"] = teacherFigure(rows, metric);
    return out;
  }

  // ---- The published study (published.keys, overlay, compare) -------------------------------------

  const rowKey = r => D.keys.map(k => text(r[k])).join(" | ");
  const isPublished = r => r.source === D.publishedSource;

  function overlay(rows) {
    const mine = rows.filter(r => !isPublished(r)), theirs = rows.filter(isPublished);
    if (!mine.length || !theirs.length) return { shared: rows, own: [], note: "" };
    const mineKeys = new Set(mine.map(rowKey));
    const matched = theirs.filter(r => mineKeys.has(rowKey(r)));
    const groups = new Set(theirs.map(rowKey)).size, sharedGroups = new Set(matched.map(rowKey)).size;
    const encoders = rs => unique(rs.map(r => text(r.encoder)).filter(v => v)).join(", ") || "none";
    const note = !sharedGroups
      ? "The published study (" + theirs.length + " rows) is not drawn on these axes: none of its " + groups +
        " (stage, encoder, labelling, split, arch) groups occurs among the " + mine.length + " reproduced rows (encoders " +
        encoders(mine) + "; the study's " + encoders(theirs) + "), so a line of it beside them would compare different " +
        "experiments. It has its own figures below."
      : sharedGroups + " of the published study's " + groups + " (stage, encoder, labelling, split, arch) groups occur " +
        "among the reproduced rows: their " + matched.length + " rows are drawn dashed beside the reproduction " +
        "([published]) and compared in 'Published vs reproduced'; the whole study has its own figures below.";
    const keep = new Set([...mine, ...matched]);
    return { shared: rows.filter(r => keep.has(r)), own: theirs, note: note };
  }

  // published.compare, keeping the groups in both: means per key, the reproduced spread.
  function compare(own, mine, metric) {
    const side = rows => {
      const groups = new Map();
      for (const s of statsBy(rows, D.keys, metric)) groups.set(JSON.stringify(s.keys), s);
      return groups;
    };
    const theirs = side(own), ours = side(mine);
    return [...theirs.entries()].filter(([id]) => ours.has(id)).map(([id, p]) => {
      const r = ours.get(id);
      const row = { published_mean: p.mean, published_std: p.count > 1 ? p.std : null, published_count: p.count,
        reproduced_mean: r.mean, reproduced_std: r.count > 1 ? r.std : null, reproduced_count: r.count,
        difference: r.mean - p.mean };
      D.keys.forEach((k, i) => { row[k] = p.keys[i]; });
      return row;
    }).sort((a, b) => byKeys(D.keys.map(k => a[k]), D.keys.map(k => b[k])));
  }

  // figures.published_vs_reproduced
  function publishedFigure(table, metric) {
    const title = "published vs reproduced " + metric;
    if (!table.length) return emptyFigure(title, "no (stage, encoder, labelling, split, architecture) is in both");
    const data = [{ type: "scatter", mode: "markers", name: "groups", x: table.map(t => t.published_mean),
      y: table.map(t => t.reproduced_mean), error_y: { type: "data", array: table.map(t => t.reproduced_std ?? 0), visible: true },
      text: table.map(t => t.stage + " " + t.encoder + " " + t.labeling + " " + t.split_percent + "% " + t.arch),
      hovertemplate: "%{text}<br>published %{x:.3f}<br>reproduced %{y:.3f}<extra></extra>" },
    { type: "scatter", mode: "lines", name: "equal", x: [0, 1], y: [0, 1], line: { dash: "dot", color: "grey" } }];
    const l = layout(title, 300, names(data));
    l.xaxis = { title: { text: "published " + metric } };
    l.yaxis = { title: { text: "reproduced " + metric } };
    return { data: data, layout: l };
  }

  // ---- The drawn runs' predictions (dashboard.choose_runs, figures.precision_recall ...) ----------

  function describeRun(r) {
    const parts = [r.stage, r.arch, r.model !== r.arch ? r.model : null, r.labeling,
      text(r.split_percent) !== "" ? r.split_percent + "%" : null, text(r.seed) !== "" ? "s" + r.seed : null];
    return parts.filter(p => p !== null && p !== undefined && p !== "").join(" ");
  }

  function rankRuns(rows, metric) {
    const sign = D.lowerIsBetter.includes(metric) ? 1 : -1;
    return finished(rows).filter(r => D.runs[r.run_id] && isNumber(r[metric]))
      .sort((a, b) => sign * (a[metric] - b[metric]) || codepoint(a.run_id, b.run_id));
  }

  function chooseRuns(rows, metric, limit = 5) {
    let chosen;
    if (state.selected.length) {
      const byId = new Map(rows.filter(r => D.runs[r.run_id]).map(r => [r.run_id, r]));
      chosen = state.selected.filter(id => byId.has(id)).slice(0, limit).map(id => ["selected", byId.get(id)]);
    } else {
      const ranked = rankRuns(rows, metric), n = ranked.length;
      const picks = n > 2 ? [[0, "best"], [Math.floor((n - 1) / 2), "median"], [n - 1, "worst"]]
        : n === 2 ? [[0, "best"], [1, "worst"]] : n === 1 ? [[0, "only"]] : [];
      chosen = picks.map(([i, role]) => [role, ranked[i]]);
    }
    const seen = new Set();
    return chosen.map(([role, r]) => {
      let name = isNumber(r[metric]) ? role + " (" + metric + " " + fixed(r[metric]) + "): " + describeRun(r) : role + ": " + describeRun(r);
      while (seen.has(name)) name += " \u2032";
      seen.add(name);
      return [name, r];
    });
  }

  function axes(l, x, y, xRange, yRange) {
    l.xaxis = { title: { text: x }, range: xRange };
    l.yaxis = { title: { text: y }, range: yRange };
    return l;
  }

  function prFigure(runs) {
    const title = "precision-recall on the test list";
    const perfect = [];
    const data = runs.map(([name, run]) => {
      if (run.ap !== null && run.ap >= 1 - 1e-12) perfect.push(name);
      return { type: "scatter", mode: "lines", line: { shape: "hv" }, name: run.ap !== null ? name + " (AP " + fixed(run.ap) + ")" : name,
        x: run.pr[0], y: run.pr[1], hovertext: run.run_id,
        hovertemplate: "%{hovertext}<br>recall %{x:.3f}<br>precision %{y:.3f}<extra></extra>" };
    });
    if (!data.length) return emptyFigure(title, "no saved predictions for these runs");
    const micro = runs.some(([, run]) => run.task === "multiclass");
    const l = axes(layout(title, 300, names(data)), "recall" + (micro ? " (micro-average)" : ""), "precision", [-0.02, 1.02], [-0.02, 1.06]);
    if (perfect.length) {
      l.annotations = [{ text: perfect.length + " of " + runs.length + " runs perfect: precision 1 at every recall (the line along the top)",
        showarrow: false, xref: "paper", yref: "paper", x: 0.02, y: 0.04, xanchor: "left", yanchor: "bottom", bgcolor: "rgba(255, 255, 255, 0.85)" }];
    }
    return { data: data, layout: l };
  }

  function rocFigure(runs) {
    const title = "ROC on the test list";
    const data = runs.filter(([, run]) => run.roc).map(([name, run]) => ({ type: "scatter", mode: "lines",
      name: name + " (AUC " + fixed(run.auc) + ")", x: run.roc[0], y: run.roc[1], hovertext: run.run_id,
      hovertemplate: "%{hovertext}<br>false positive rate %{x:.3f}<br>true positive rate %{y:.3f}<extra></extra>" }));
    if (!data.length) return emptyFigure(title, "no saved predictions with both classes for these runs");
    data.push({ type: "scatter", mode: "lines", name: "chance", x: [0, 1], y: [0, 1], line: { dash: "dot", color: "grey" } });
    return { data: data, layout: axes(layout(title, 300, names(data)), "false positive rate", "true positive rate", [-0.02, 1.02], [-0.02, 1.02]) };
  }

  function calibrationFigure(runs) {
    const title = "calibration on the test list (" + S.calibrationBins + " bins)";
    const data = runs.map(([name, run]) => ({ type: "scatter", mode: "lines+markers", name: name + " (ECE " + fixed(run.ece) + ")",
      x: run.calibration[0], y: run.calibration[1], customdata: run.calibration[2], hovertext: run.calibration[0].map(() => run.run_id),
      hovertemplate: "%{hovertext}<br>predicted %{x:.3f}<br>observed %{y:.3f}<br>%{customdata} examples<extra></extra>" }));
    if (!data.length) return emptyFigure(title, "no saved predictions for these runs");
    data.push({ type: "scatter", mode: "lines", name: "calibrated", x: [0, 1], y: [0, 1], line: { dash: "dot", color: "grey" } });
    const multiclass = runs.some(([, run]) => run.task === "multiclass");
    return { data: data, layout: axes(layout(title, 300, names(data)), multiclass ? "top-class confidence" : "predicted probability of class 1",
      multiclass ? "accuracy" : "observed fraction of class 1", [-0.02, 1.02], [-0.02, 1.02]) };
  }

  function confusionFigure(runs, limit = 4) {
    const title = "confusion matrices on the test list (colour: share of the true class)";
    runs = runs.slice(0, limit);
    if (!runs.length) return emptyFigure(title, "no saved predictions for these runs");
    const n = runs.length, gap = n > 1 ? 0.06 : 0;
    const l = layout(title, 300, 0);
    l.annotations = [];
    const data = runs.map(([name, run], i) => {
      const suffix = i === 0 ? "" : String(i + 1);
      const share = run.confusion.map(row => { const total = Math.max(row.reduce((a, b) => a + b, 0), 1); return row.map(v => v / total); });
      const domain = [i / n + gap / 2, (i + 1) / n - gap / 2];
      l["xaxis" + suffix] = { domain: domain, type: "category", title: { text: "predicted" }, anchor: "y" + suffix };
      l["yaxis" + suffix] = { type: "category", autorange: "reversed", anchor: "x" + suffix, title: { text: i === 0 ? "true" : "" } };
      l.annotations.push({ text: wrap(name, Math.max(14, Math.floor(60 / n))).join("<br>"), showarrow: false, xref: "paper", yref: "paper",
        x: (domain[0] + domain[1]) / 2, y: 1.0, yanchor: "bottom", font: { size: 11 } });
      return { type: "heatmap", z: share, x: run.classes, y: run.classes, text: run.confusion, texttemplate: "%{text}", zmin: 0, zmax: 1,
        colorscale: S.shareColors, showscale: i === n - 1, colorbar: { title: { text: "share" }, len: 0.8 }, name: name,
        xaxis: "x" + suffix, yaxis: "y" + suffix,
        hovertemplate: run.run_id + "<br>true %{y}, predicted %{x}<br>%{text} examples (%{z:.1%} of the true class)<extra></extra>" };
    });
    // Room for the panels' names (11 px lines) between the title and the matrices.
    const room = 14 * Math.max(...runs.map(([name]) => wrap(name, Math.max(14, Math.floor(60 / n))).length)) + 8;
    l.margin.t += room;
    l.height += room;
    return { data: data, layout: l };
  }

  function curvesFigure(runs) {
    const title = "training curves (label_loss; dotted: validation)";
    const data = [];
    runs.filter(([, run]) => run.curves).forEach(([name, run], i) => {
      const color = S.colorway[i % S.colorway.length];
      for (const [column, dash] of [["label_loss", "solid"], ["val_label_loss", "dot"]]) {
        if (!run.curves[column]) continue;
        data.push({ type: "scatter", mode: "lines", name: name, legendgroup: name, showlegend: !data.some(t => t.legendgroup === name),
          x: run.curves.epoch.map(e => e + 1), y: run.curves[column], line: { dash: dash, color: color }, hovertext: column,
          hovertemplate: name + "<br>%{hovertext} epoch %{x}: %{y:.4f}<extra></extra>" });
      }
    });
    if (!data.length) return emptyFigure(title, "no training log with label_loss for these runs");
    const l = layout(title, 300, names(data));
    l.xaxis = { title: { text: "epoch" } };
    l.yaxis = { title: { text: "label_loss" } };
    return { data: data, layout: l };
  }

  function runFigures(rows, metric) {
    const chosen = chooseRuns(rows, metric);
    const runs = chosen.map(([name, r]) => [name, D.runs[r.run_id]]);
    let note;
    if (state.selected.length) {
      const ids = new Set(rows.map(r => r.run_id));
      const saved = state.selected.filter(id => ids.has(id) && D.runs[id]).length;
      note = saved + " of the " + state.selected.length + " runs selected in the table have saved predictions" +
        (saved > chosen.length ? "; the first " + chosen.length + " are drawn" : "");
    } else if (chosen.length) {
      const roles = chosen.map(([name]) => name.split(" ")[0]);
      const said = roles.length > 1 ? roles.slice(0, -1).join(", ") + " and " + roles[roles.length - 1] : roles[0];
      note = "the " + said + " of " + rankRuns(rows, metric).length +
        " finished runs with saved predictions by " + metric + " (select rows in the runs table to draw those)";
    } else {
      note = "no run among the filtered rows has saved predictions (predictions.parquet)";
    }
    return { pr: prFigure(runs), roc: rocFigure(runs), calibration: calibrationFigure(runs),
      confusion: confusionFigure(runs), curves: curvesFigure(runs), note: note };
  }

  // ---- The page -----------------------------------------------------------------------------------

  function boxes(parent, ids) {
    for (const id of ids) {
      const div = document.createElement("div");
      div.id = "fig-" + id;
      parent.appendChild(div);
    }
  }
  boxes(document.getElementById("figures"), D.figures);
  if (D.ownFigures.length) boxes(document.getElementById("own-figures"), D.ownFigures);
  boxes(document.getElementById("run-figures"), D.runFigures);
  const config = { displaylogo: false, responsive: true };
  const draw = (id, fig) => Plotly.react("fig-" + id, fig.data, fig.layout, config);

  function cell(value) {
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
    return value ?? "";
  }

  function tableOf(id, columns, rows) {
    const table = document.createElement("table");
    table.id = id;
    const head = table.createTHead().insertRow();
    for (const c of columns) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
    const body = table.createTBody();
    for (const r of rows) { const tr = body.insertRow(); for (const c of columns) tr.insertCell().textContent = cell(r[c]); }
    return table;
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
    const sorted = [...groups.values()].sort((a, b) => byKeys(a.keys, b.keys));
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

  const PAGE = 25;  // rows a page of the runs table shows
  function renderTable(rows) {
    const sorted = rows.slice().sort((a, b) => {
      const order = byNumberThenText(a[state.sort] ?? "", b[state.sort] ?? "");
      return state.descending ? -order : order;
    });
    const pages = Math.max(1, Math.ceil(sorted.length / PAGE));
    state.page = Math.min(state.page || 0, pages - 1);
    const shown = sorted.slice(state.page * PAGE, (state.page + 1) * PAGE);
    const table = document.createElement("table");
    table.id = "runs";
    const head = table.createTHead().insertRow();
    head.appendChild(document.createElement("th"));  // the selection boxes
    for (const column of D.table) {
      const th = document.createElement("th");
      th.textContent = column + (state.sort === column ? (state.descending ? " \u25BC" : " \u25B2") : "");
      th.onclick = () => { state.descending = state.sort === column ? !state.descending : true; state.sort = column; update(); };
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const row of shown) {
      const tr = body.insertRow();
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = state.selected.includes(row.run_id);
      box.title = "draw this run's predictions";
      box.onchange = () => {
        state.selected = box.checked ? [...state.selected, row.run_id] : state.selected.filter(id => id !== row.run_id);
        update();
      };
      tr.insertCell().appendChild(box);
      if (box.checked) tr.className = "selected";
      for (const column of D.table) {
        const td = tr.insertCell();
        td.textContent = cell(row[column]);
        td.dataset.column = column;
      }
    }
    const pager = document.createElement("div");
    pager.id = "runs-pages";
    const turn = (label, page) => {
      const button = document.createElement("button");
      button.textContent = label;
      button.disabled = page < 0 || page >= pages || page === state.page;
      button.onclick = () => { state.page = page; renderTable(rows); };
      pager.appendChild(button);
    };
    turn("\u25C0 previous", state.page - 1);
    pager.appendChild(document.createTextNode(" rows " + (sorted.length ? state.page * PAGE + 1 : 0) + "\u2013" +
      (state.page * PAGE + shown.length) + " of " + sorted.length + " (sorted by " + state.sort + ") "));
    turn("next \u25B6", state.page + 1);
    document.getElementById("table").replaceChildren(table, pager);
  }

  const COMPARISON_COLUMNS = [...D.keys, "published_mean", "published_std", "published_count", "reproduced_mean",
    "reproduced_std", "reproduced_count", "difference"];

  // Every figure of the page for these rows, by id (as the app's callbacks return them).
  function pageFigures(rows, metric) {
    const views = overlay(rows);
    const out = comparisonFigures(views.shared, metric, D.figures, "");
    let table = [];
    if (D.ownFigures.length) {
      Object.assign(out, comparisonFigures(views.own, metric, D.ownFigures, "pub-"));
      table = compare(views.own, views.shared.filter(r => !isPublished(r)), metric);
      out.published = publishedFigure(table, metric);
    }
    return { figures: out, note: views.note, table: table };
  }

  function update() {
    const metric = metricSelect.value;
    const rows = filtered();
    document.getElementById("row-count").textContent = rows.length + " of " + D.rows.length + " runs";
    const page = pageFigures(rows, metric);
    document.getElementById("published-note").textContent = page.note;
    for (const id of [...D.figures, ...D.ownFigures]) draw(id, page.figures[id]);
    if (D.ownFigures.length) {
      draw("published", page.figures.published);
      document.getElementById("comparison").replaceChildren(tableOf("comparison-table", COMPARISON_COLUMNS, page.table));
    }
    const runs = runFigures(rows, metric);
    for (const id of D.runFigures) draw(id, runs[id]);
    document.getElementById("runs-note").textContent = runs.note;
    renderSummary(rows, metric);
    renderTable(rows);
  }

  metricSelect.addEventListener("change", update);
  groupBy.addEventListener("change", update);
  for (const select of Object.values(filters)) select.addEventListener("change", update);
  for (const [lo, hi] of Object.values(ranges)) { lo.addEventListener("change", update); hi.addEventListener("change", update); }
  update();
})();
