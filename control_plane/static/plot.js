// farmiq-plot: a tiny SVG line plotter for the FarmIQ dashboard (no dependencies).
// Written here rather than vendored: the dashboard needs time-series lines, a dashed
// threshold, two axis labels and a legend, which is ~100 lines; chart libraries that do
// it are 50-200 KB. Usage:
//   FarmiqPlot.lines(el, {series: [{name, points: [[t_seconds, value], ...]}],
//                         thresholds: [{value, label}], unit: "ms" | "%" | "", yMin: 0})
(function (global) {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fb3", "#2f9e55", "#d99a1e", "#8e44ad", "#d2483c", "#16a085",
                  "#7f8c8d", "#c0392b", "#2c3e50", "#f39c12"];
  function node(tag, attrs, parent) {
    const n = document.createElementNS(NS, tag);
    for (const k in attrs) n.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(n);
    return n;
  }
  function fmt(v, unit) {
    if (unit === "%") return (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%";
    const a = Math.abs(v);
    const s = a >= 1000 ? (v / 1000).toFixed(1) + "k" : a >= 10 ? v.toFixed(0) : a >= 1 ? v.toFixed(1) : v.toFixed(2);
    return unit ? s + " " + unit : s;
  }
  function clock(t) {
    const d = new Date(t * 1000);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }
  function lines(el, opts) {
    const W = el.clientWidth || 420, H = opts.height || 150;
    const pad = {l: 46, r: 8, t: 8, b: 20};
    const series = (opts.series || []).filter(s => s.points && s.points.length);
    el.innerHTML = "";
    const svg = node("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "plot"}, el);
    if (!series.length) {
      node("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "plot-empty"}, svg)
        .textContent = opts.empty || "no data yet";
      return svg;
    }
    let x0 = Infinity, x1 = -Infinity, y0 = opts.yMin ?? Infinity, y1 = -Infinity;
    for (const s of series) for (const [x, y] of s.points) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    for (const th of opts.thresholds || []) y1 = Math.max(y1, th.value * 1.1);
    if (x1 === x0) { x0 -= 30; x1 += 30; }
    if (y1 === y0) { y1 = y0 + (y0 === 0 ? 1 : Math.abs(y0) * 0.2); }
    const X = x => pad.l + (x - x0) / (x1 - x0) * (W - pad.l - pad.r);
    const Y = y => H - pad.b - (y - y0) / (y1 - y0) * (H - pad.t - pad.b);
    node("line", {x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b, class: "plot-axis"}, svg);
    node("line", {x1: pad.l, y1: pad.t, x2: pad.l, y2: H - pad.b, class: "plot-axis"}, svg);
    for (const [v, y] of [[y1, pad.t + 8], [y0, H - pad.b]])
      node("text", {x: pad.l - 4, y: y, "text-anchor": "end", class: "plot-tick"}, svg).textContent = fmt(v, opts.unit);
    node("text", {x: pad.l, y: H - 4, class: "plot-tick"}, svg).textContent = clock(x0);
    node("text", {x: W - pad.r, y: H - 4, "text-anchor": "end", class: "plot-tick"}, svg).textContent = clock(x1);
    for (const th of opts.thresholds || []) {
      node("line", {x1: pad.l, x2: W - pad.r, y1: Y(th.value), y2: Y(th.value), class: "plot-threshold",
                    "data-threshold": th.value}, svg);
      node("text", {x: W - pad.r - 2, y: Y(th.value) - 3, "text-anchor": "end", class: "plot-tick"}, svg)
        .textContent = th.label || fmt(th.value, opts.unit);
    }
    series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const pts = s.points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" ");
      const g = node("g", {class: "plot-series", "data-name": s.name}, svg);
      node("polyline", {points: pts, fill: "none", stroke: color, "stroke-width": 1.8}, g);
      if (s.points.length === 1) node("circle", {cx: X(s.points[0][0]), cy: Y(s.points[0][1]), r: 3, fill: color}, g);
      node("title", {}, g).textContent = s.name;
    });
    const legend = document.createElement("div");
    legend.className = "plot-legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${s.color || COLORS[i % COLORS.length]}"></i>`;
      item.appendChild(document.createTextNode(s.name));
      legend.appendChild(item);
    });
    el.appendChild(legend);
    return svg;
  }
  global.FarmiqPlot = {lines: lines, fmt: fmt};
})(window);
