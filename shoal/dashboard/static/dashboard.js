// The shoal dashboard: each page polls the scheduler's JSON API every PERIOD ms and
// redraws its plotly charts with Plotly.react (which only touches what changed).
"use strict";

const shoal = (() => {
  const PERIOD = 500;
  const STREAM_SECONDS = 60;
  const STREAM_MAX = 5000;
  const STATES = ["memory", "erred", "processing", "queued", "no-worker", "waiting", "released"];
  const STATE_COLORS = {
    released: "#c7c7c7",
    waiting: "#b9a3dc",
    queued: "#9ecae1",
    "no-worker": "#fd8d3c",
    processing: "#41ab5d",
    memory: "#2171b5",
    erred: "#222222",
  };
  const PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
    "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79",
  ];
  const CONFIG = { displaylogo: false, responsive: true };

  // ------------------------------------------------------------------ helpers

  function prefixColor(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }

  function bytes(n) {
    const units = ["B", "kiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store" });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  // A chart's box (made on first use, resized to ``height`` after). Pages make all of
  // their boxes before drawing any, so charts sharing a row are sized side by side.
  function panel(id, height, row) {
    let el = document.getElementById(id);
    if (!el) {
      el = document.createElement("div");
      el.id = id;
      el.className = "chart";
      (row || document.getElementById("charts")).appendChild(el);
    }
    el.style.height = height + "px";
    return el;
  }

  function row(id) {
    let el = document.getElementById(id);
    if (el) return el;
    el = document.createElement("div");
    el.id = id;
    el.className = "row";
    document.getElementById("charts").appendChild(el);
    return el;
  }

  function draw(el, traces, layout) {
    const base = {
      width: el.clientWidth,
      height: el.clientHeight,
      margin: { l: 140, r: 20, t: 36, b: 40 },
      font: { size: 11 },
      uirevision: el.id,
      paper_bgcolor: "white",
      plot_bgcolor: "white",
    };
    if (layout.title) {  // left, clear of the mode bar on the right
      layout.title = Object.assign({ x: 0.01, xanchor: "left" }, layout.title);
    }
    return Plotly.react(el, traces, Object.assign(base, layout), CONFIG);
  }

  function notice(text) {
    const el = document.getElementById("notice");
    el.hidden = !text;
    el.textContent = text || "";
  }

  function workerLabel(w) {
    return String(w.name) === w.address ? w.address : w.name + " (" + w.address + ")";
  }

  // ------------------------------------------------------------------ charts

  async function summary() {
    const s = await getJSON("/api/v1/cluster");
    document.getElementById("summary").textContent =
      s.workers + " workers · " + s.threads + " threads · " + s.tasks + " tasks (" +
      s.states.processing + " processing, " + s.states.memory + " in memory) · " +
      s.task_rate.toFixed(1) + " tasks/s · " + s.clients +
      (s.clients === 1 ? " client" : " clients");
  }

  function memoryChart(el, workers) {
    const y = workers.map(workerLabel);
    const part = (name, key, color) => ({
      type: "bar", orientation: "h", name: name, y: y, marker: { color: color },
      x: workers.map((w) => w.memory[key]),
      hovertemplate: "%{y}<br>" + name + ": %{customdata}<extra></extra>",
      customdata: workers.map((w) => bytes(w.memory[key])),
    });
    const limits = {
      type: "scatter", mode: "markers", name: "limit", y: y,
      x: workers.map((w) => w.memory_limit || null),
      marker: { symbol: "line-ns-open", size: 18, color: "#d62728" },
      hovertemplate: "%{y}<br>limit: %{customdata}<extra></extra>",
      customdata: workers.map((w) => bytes(w.memory_limit)),
    };
    return draw(el, [
      part("managed", "managed", "#2171b5"),
      part("unmanaged", "unmanaged", "#9ecae1"),
      part("spilled", "spilled", "#969696"),
      limits,
    ], {
      title: { text: "Worker memory (managed, unmanaged, spilled)" },
      barmode: "stack",
      xaxis: { rangemode: "tozero", tickformat: ".2s", ticksuffix: "B" },
    });
  }

  function cpuChart(el, workers) {
    return draw(el, [{
      type: "bar", orientation: "h", y: workers.map(workerLabel),
      x: workers.map((w) => w.cpu), marker: { color: "#41ab5d" }, name: "CPU",
    }], {
      title: { text: "CPU (% of one core)" },
      xaxis: { rangemode: "tozero" },
    });
  }

  function networkChart(el, workers) {
    const y = workers.map(workerLabel);
    return draw(el, [
      { type: "bar", orientation: "h", name: "read", y: y,
        x: workers.map((w) => w.network.read_bps), marker: { color: "#6baed6" } },
      { type: "bar", orientation: "h", name: "write", y: y,
        x: workers.map((w) => w.network.write_bps), marker: { color: "#fd8d3c" } },
    ], {
      title: { text: "Host network" },
      barmode: "group",
      xaxis: { rangemode: "tozero", tickformat: ".2s", ticksuffix: "B/s" },
    });
  }

  function workersTable(el, workers) {
    const cols = [
      ["name", (w) => String(w.name)],
      ["address", (w) => w.address],
      ["status", (w) => w.status],
      ["threads", (w) => w.nthreads],
      ["processing", (w) => w.processing],
      ["keys", (w) => w.keys],
      ["managed", (w) => bytes(w.memory.managed)],
      ["unmanaged", (w) => bytes(w.memory.unmanaged)],
      ["spilled", (w) => bytes(w.memory.spilled)],
      ["RSS", (w) => bytes(w.memory.rss)],
      ["limit", (w) => (w.memory_limit ? bytes(w.memory_limit) : "none")],
      ["CPU %", (w) => w.cpu.toFixed(0)],
      ["read/s", (w) => bytes(w.network.read_bps)],
      ["write/s", (w) => bytes(w.network.write_bps)],
      ["fetched", (w) => bytes(w.transfer_incoming_bytes)],
      ["lent", (w) => bytes(w.transfer_lent_bytes || 0)],
      ["last seen", (w) => w.last_seen.toFixed(1) + " s"],
    ];
    return draw(el, [{
      type: "table",
      header: { values: cols.map((c) => "<b>" + c[0] + "</b>"), fill: { color: "#1f3b57" },
                font: { color: "white" } },
      cells: { values: cols.map((c) => workers.map(c[1])) },
      columnwidth: cols.map((c) => (c[0] === "address" ? 2.4 : 1)),
    }], { title: { text: "Workers" }, margin: { l: 10, r: 10, t: 36, b: 10 } });
  }

  function progressChart(el, tasks, maxGroups) {
    const names = Object.keys(tasks.groups).slice(-maxGroups).reverse();
    const traces = STATES.map((state) => ({
      type: "bar", orientation: "h", name: state, y: names,
      x: names.map((g) => tasks.groups[g][state] || 0),
      marker: { color: STATE_COLORS[state] },
      hovertemplate: "%{y}<br>" + state + ": %{x}<extra></extra>",
    }));
    return draw(el, traces, {
      title: { text: "Progress: tasks of each group, by state (" + tasks.total + " tasks)" },
      barmode: "stack",
      yaxis: { automargin: true, autorange: "reversed" },
      xaxis: { rangemode: "tozero" },
    });
  }

  const stream = { next: 0, records: [] };

  async function pollStream() {
    const data = await getJSON("/api/v1/task-stream?since=" + stream.next);
    stream.next = data.next;
    stream.records = stream.records.concat(data.records);
    const horizon = data.now - STREAM_SECONDS;
    stream.records = stream.records.filter((r) => r.stop >= horizon).slice(-STREAM_MAX);
    return data.now;
  }

  // The row of each run: "<worker> #<n>", runs that overlap on one worker (its
  // threads) on separate rows, each on the lowest free one (as in performance_report).
  function lanes(records) {
    const order = records.map((r, i) => i).sort((a, b) => records[a].start - records[b].start);
    const ends = new Map();
    const rows = new Array(records.length);
    for (const i of order) {
      const r = records[i];
      if (!ends.has(r.worker)) ends.set(r.worker, []);
      const free = ends.get(r.worker);
      let n = free.findIndex((end) => end <= r.start);
      if (n < 0) n = free.push(0) - 1;
      free[n] = r.stop;
      rows[i] = r.worker + " #" + n;
    }
    return rows;
  }

  function streamChart(el, now) {
    const rows = lanes(stream.records);
    const byPrefix = new Map();
    stream.records.forEach((r, i) => {
      if (!byPrefix.has(r.name)) byPrefix.set(r.name, []);
      byPrefix.get(r.name).push([r, rows[i]]);
    });
    const oldest = stream.records.length ? stream.records[0].start : now - 5;
    const span = Math.min(Math.max(now - oldest, 5), STREAM_SECONDS);
    const traces = [];
    for (const [name, pairs] of byPrefix) {
      const recs = pairs.map((p) => p[0]);
      traces.push({
        type: "bar", orientation: "h", name: name,
        y: pairs.map((p) => p[1]),
        base: recs.map((r) => r.start - now),
        x: recs.map((r) => Math.max(r.stop - r.start, 0.001)),
        text: recs.map((r) => r.key + (r.status === "OK" ? "" : " (" + r.status + ")")),
        hovertemplate: "%{text}<br>%{y}<br>%{x:.3f} s<extra></extra>",
        textposition: "none",
        marker: {
          color: prefixColor(name),
          line: { width: recs.map((r) => (r.status === "OK" ? 0 : 2)), color: "black" },
        },
      });
    }
    return draw(el, traces, {
      title: { text: "Task stream: " + stream.records.length + " task runs in the last " +
                     Math.round(span) + " s" },
      barmode: "overlay",
      // the span of the runs shown (at most STREAM_SECONDS), so a new stream is legible
      xaxis: { title: { text: "seconds before now" }, range: [-span, 0.02 * span] },
      yaxis: { type: "category", automargin: true, categoryorder: "category descending" },
      showlegend: true,
    });
  }

  const graph = { version: null, layout: null };

  async function graphChart(el) {
    const path = "/api/v1/graph" + (graph.version ? "?version=" + graph.version : "");
    const data = await getJSON(path);
    if (data.x !== undefined) graph.layout = data;
    graph.version = data.version;
    const g = graph.layout;
    if (data.total > data.shown) {
      notice("Showing the newest " + data.shown.toLocaleString() + " of " +
             data.total.toLocaleString() + " tasks (the view draws at most " +
             data.limit.toLocaleString() + ").");
    } else if (g && g.edges_truncated) {
      notice("Some dependencies are not drawn: the view draws at most 10,000 edges.");
    } else {
      notice("");
    }
    return draw(el, [
      { type: "scatter", mode: "lines", x: g.edges.x, y: g.edges.y, hoverinfo: "skip",
        line: { color: "#bbbbbb", width: 1 }, showlegend: false },
      { type: "scatter", mode: "markers", x: g.x, y: g.y, text: g.keys,
        customdata: data.states,
        hovertemplate: "%{text}<br>%{customdata}<extra></extra>",
        marker: { size: 9, color: data.states.map((s) => STATE_COLORS[s] || "#888"),
                  line: { width: 0.5, color: "#444" } },
        showlegend: false },
      // one empty trace per state, for the legend
      ...STATES.map((s) => ({ type: "scatter", mode: "markers", x: [null], y: [null],
                              name: s, marker: { color: STATE_COLORS[s], size: 9 } })),
    ], {
      title: { text: "Task graph (" + data.shown + " of " + data.total + " tasks)" },
      xaxis: { title: { text: "depth" }, zeroline: false },
      yaxis: { visible: false },
      hovermode: "closest",
      margin: { l: 20, r: 20, t: 36, b: 40 },
    });
  }

  // ------------------------------------------------------------------ pages

  const PAGES = {
    async status() {
      const top = row("status-top");
      const boxes = [panel("memory", 280, top), panel("progress", 280, top),
                     panel("task-stream", 360)];
      const [workers, tasks, now] = await Promise.all([
        getJSON("/api/v1/workers"), getJSON("/api/v1/tasks"), pollStream(),
      ]);
      await memoryChart(boxes[0], workers.workers);
      await progressChart(boxes[1], tasks, 12);
      await streamChart(boxes[2], now);
    },
    async tasks() {
      const now = await pollStream();
      await streamChart(panel("task-stream", 600), now);
    },
    async progress() {
      const tasks = await getJSON("/api/v1/tasks");
      const n = Math.min(Math.max(Object.keys(tasks.groups).length, 4), 60);
      await progressChart(panel("progress", 120 + 22 * n), tasks, 60);
    },
    async workers() {
      const workers = (await getJSON("/api/v1/workers")).workers;
      const h = 160 + 26 * workers.length;
      const memory = panel("memory", h);
      const r = row("workers-row");
      const boxes = [panel("cpu", h, r), panel("network", h, r),
                     panel("workers-table", 120 + 28 * workers.length)];
      await memoryChart(memory, workers);
      await cpuChart(boxes[0], workers);
      await networkChart(boxes[1], workers);
      await workersTable(boxes[2], workers);
    },
    async graph() {
      await graphChart(panel("graph", 640));
    },
  };

  async function tick(page) {
    try {
      await Promise.all([summary(), PAGES[page]()]);
      if (page !== "graph") notice("");
    } catch (e) {
      notice("Lost contact with the scheduler (" + e.message + "); retrying.");
    }
    setTimeout(() => tick(page), PERIOD);
  }

  return {
    start(page) {
      if (!(page in PAGES)) throw new Error("unknown page " + page);
      tick(page);
    },
  };
})();
