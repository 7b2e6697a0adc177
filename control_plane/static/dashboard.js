// The FarmIQ operator dashboard: renders /dashboard/data and keeps it live (fetch, no reload).
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("dashboard-config").textContent);
  let data = JSON.parse(document.getElementById("dashboard-data").textContent);
  let showAll = false;
  const VERDICT_COLOR = {ok: "#cdebd5", warn: "#f6dd9b", drift: "#f0a69e", insufficient: "#eceeea"};
  const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
  const $ = id => document.getElementById(id);
  function ago(ts) {
    if (!ts) return "never";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  const agoCell = (ts, tag = "td") => `<${tag} class="ago" data-ts="${ts || ""}"></${tag}>`;
  const badge = (s) => `<span class="badge ${esc(s)}">${esc(String(s).replace(/_/g, " "))}</span>`;

  function summary(d) {
    const s = d.summary;
    const card = (k, v, cls = "") => `<div class="card"><div class="k">${k}</div><div class="v ${cls}">${v}</div></div>`;
    $("summary").innerHTML =
      card("Gateways", s.devices) +
      card("Online", s.online, s.online === s.devices && s.devices ? "good" : "warn") +
      card("Degraded", s.degraded, s.degraded ? "bad" : "good") +
      card("Active rollouts", s.active_rollouts) +
      card("Models drifting", s.drifting_models, s.drifting_models ? "bad" : "good") +
      card("Alerts", s.alerts, s.alerts ? "warn" : "good");
  }

  function alerts(d) {
    const rows = (d.alerts || []).slice(0, 30).map(a => `
      <tr class="alert" data-kind="${esc(a.kind)}" data-severity="${esc(a.severity)}">
        <td><span class="sev ${esc(a.severity)}">${esc(a.severity)}</span></td>
        <td class="mono">${esc(a.kind)}</td><td>${esc(a.message)}</td>
        <td class="mono">${esc(a.device_id || a.farm_id || "")}</td>${agoCell(a.ts)}</tr>`).join("");
    $("alerts").innerHTML = `<h2>Alerts <small>newest first · also on RabbitMQ, MQTT and webhooks</small></h2>` +
      (rows ? `<table><thead><tr><th>Severity</th><th>Kind</th><th>Message</th><th>Where</th><th>When</th></tr></thead><tbody>${rows}</tbody></table>`
            : `<div class="empty">No alerts.</div>`);
  }

  function gateDetail(w) {
    const g = w.gate;
    let out = "";
    if (g && g.passed === false) {
      const checks = (g.checks || []).filter(c => !c.passed)
        .map(c => `${esc(c.name)} ${esc(c.value)} vs ${esc(c.threshold)}${c.detail ? ": " + esc(c.detail) : ""}`);
      out += `<div class="gate-failed">gate failed: ${checks.join("; ")}</div>`;
    }
    if ((w.failures || []).length) {
      out += `<ul class="failures">` + w.failures.map(f =>
        `<li class="failure" data-device="${esc(f.device_id)}"><span class="mono">${esc(f.device_id)}</span> ` +
        `<b>${esc(f.code)}</b>${f.reason ? ": " + esc(f.reason) : ""}</li>`).join("") + `</ul>`;
    }
    return out;
  }

  function rollouts(d) {
    const cards = (d.rollouts || []).map(r => {
      const where = r.wave_now === null
        ? `${r.waves_done} of ${r.waves_total} waves passed`
        : `on wave ${r.wave_now} (waves 0-${r.waves_total - 1})`;
      const waves = r.waves.map(w => {
        const sent = (w.by_status || {}).sent || 0, n = w.devices || 0;
        const pct = x => n ? (x / n * 100).toFixed(2) : 0;
        return `<div class="wave" data-wave="${w.index}">
          <div>Wave ${w.index} · ${Math.round(w.percent * 10) / 10}%${w.mode !== "install" ? " · " + esc(w.mode) : ""}</div>
          <div class="bar"><div class="ok" style="width:${pct(w.done)}%"></div><div class="sent" style="width:${pct(sent)}%"></div><div class="fail" style="width:${pct(w.failed)}%"></div></div>
          <div>${badge(w.status)} <span class="muted">&nbsp;${w.done}/${n}${w.failed ? " · " + w.failed + " failed" : ""}</span></div>
          <div class="wave-detail">${gateDetail(w)}</div></div>`;
      }).join("");
      return `<div class="rollout" data-rollout="${esc(r.id)}" data-status="${esc(r.status)}">
        <div class="top"><div><span class="title">${esc(r.model)} v${esc(r.version)}</span><span class="muted mono">&nbsp;${esc(r.id)}</span></div>
          <div><span class="muted where">${r.done}/${r.devices} installed · ${where}</span>&nbsp;${badge(r.status)}</div></div>
        <div class="bar" title="${(r.progress * 100).toFixed(1)}% installed"><div class="ok" style="width:${(r.progress * 100).toFixed(2)}%"></div></div>
        <div class="waves">${waves}</div>
        ${r.reason ? `<div class="muted reason">${esc(r.reason)}</div>` : ""}</div>`;
    }).join("");
    $("rollouts").innerHTML = `<h2>Rollouts <small>progress by wave (numbered from 0) · newest first</small></h2>` +
      (cards || `<div class="empty">No rollouts yet.</div>`) +
      `<div class="plotbox"><div class="plot-title">Rollout progress (share installed)</div><div class="plot-host" id="plot-rollouts"></div></div>`;
    FarmiqPlot.lines($("plot-rollouts"), {unit: "%", yMin: 0,
      series: (d.rollouts || []).filter(r => (r.progress_history || []).length > 1)
        .slice(0, 8).map(r => ({name: `${r.model} v${r.version} (${r.id})`, points: r.progress_history}))});
  }

  function serving(d) {
    const s = d.serving || [];
    const name = x => `${x.device_id} · ${x.model}`;
    FarmiqPlot.lines($("plot-rate"), {unit: "/s", yMin: 0, series: s.map(x => ({name: name(x), points: x.rate}))});
    FarmiqPlot.lines($("plot-p99"), {unit: "ms", yMin: 0, series: s.map(x => ({name: name(x), points: x.p99_ms}))});
    FarmiqPlot.lines($("plot-errors"), {unit: "%", yMin: 0, thresholds: [{value: 0.05, label: "gate 5%"}],
      series: s.map(x => ({name: name(x), points: x.error_rate}))});
  }

  function fleet(d) {
    const devs = d.devices || [];
    const rows = devs.map((dev, i) => `
      <tr data-device="${esc(dev.device_id)}"${i >= cfg.fleet_rows && !showAll ? ' class="more" hidden' : ""}>
        <td class="mono"><span class="dot ${esc(dev.status)}" title="${esc(dev.status)}"></span>${esc(dev.device_id)}</td>
        <td>${esc(dev.farm_id)}</td>
        <td><span class="badge ${esc(dev.health.state)}" title="${esc(dev.health.detail)}">${esc(dev.health.state)}</span></td>
        <td class="mono">${esc(dev.agent_version || "—")}</td>
        <td>${Object.entries(dev.models).map(([n, v]) => `<span class="chip">${esc(n)} v${esc(v)}</span>`).join("") || '<span class="muted">none</span>'}</td>
        <td>${dev.tags.map(t => `<span class="chip">${esc(t)}</span>`).join("")}</td>
        ${agoCell(dev.last_seen)}</tr>`).join("");
    $("fleet").innerHTML = `<h2>Fleet <small>${devs.length} gateways</small></h2>` + (devs.length
      ? `<table><thead><tr><th>Gateway</th><th>Farm</th><th>Health</th><th>Agent</th><th>Models</th><th>Tags</th><th>Last seen</th></tr></thead><tbody>${rows}</tbody></table>` +
        (devs.length > cfg.fleet_rows && !showAll ? `<button id="show-all" class="link">Show all ${devs.length} gateways</button>` : "")
      : `<div class="empty">No gateway has reported yet.</div>`);
    const btn = $("show-all");
    if (btn) btn.addEventListener("click", () => { showAll = true; fleet(data); paintTimes(); });
  }

  function drift(d) {
    const blocks = (d.drift || []).map((m, k) => {
      let heat = `<div class="empty">No windows reported yet.</div>`;
      if (m.devices && m.devices.length) {
        const head = m.features.map(f => `<th title="PSI drift ≥ ${esc((m.psi_threshold || {})[f])}">${esc(f)}</th>`).join("");
        const body = m.ranked.slice(0, cfg.heat_rows).map(dev => `<tr><th class="dev mono">${esc(dev)}</th>` +
          m.features.map(f => {
            const c = m.cells[dev][f];
            const psi = c.psi === null ? "" : c.psi;
            return `<td class="cell" data-psi="${psi}" data-verdict="${esc(c.verdict)}" style="background:${VERDICT_COLOR[c.verdict] || "#eceeea"}"
              title="${esc(dev)} · ${esc(f)}: PSI ${psi === "" ? "n/a" : psi} (${esc(c.verdict)})">${c.psi === null ? "·" : c.psi.toFixed(2)}</td>`;
          }).join("") + `</tr>`).join("");
        heat = `<table class="heat"><thead><tr><th></th>${head}</tr></thead><tbody>${body}</tbody></table>` +
          (m.devices.length > cfg.heat_rows ? `<div class="muted small">the ${cfg.heat_rows} most drifted of ${m.devices.length} gateways</div>` : "");
      }
      return `<div class="drift-model" data-model="${esc(m.model)}" data-version="${esc(m.version ?? "")}">
        <div class="drift-title"><b>${esc(m.model)}</b>${m.version ? ` <span class="muted">v${esc(m.version)}</span>` : ""}
          &nbsp;${badge(m.status)}${m.rows ? ` <span class="muted small">${m.rows} rows</span>` : ""}</div>${heat}
        ${m.psi_history ? `<div class="plotbox"><div class="plot-title">Fleet PSI per feature over time (dashed: drift threshold)</div><div class="plot-host psi-plot" id="plot-psi-${k}"></div></div>` : ""}</div>`;
    }).join("");
    $("drift").innerHTML = `<h2>Drift <small>every version serving traffic · PSI per feature and gateway</small></h2>` +
      (blocks || `<div class="empty">No monitored models.</div>`) +
      `<div class="legend">verdict<i style="background:#cdebd5"></i>ok<i style="background:#f6dd9b"></i>warn<i style="background:#f0a69e"></i>drift<i style="background:#eceeea"></i>too few rows · the number is the PSI</div>`;
    (d.drift || []).forEach((m, k) => {
      const host = $("plot-psi-" + k);
      if (!host) return;
      const th = Object.values(m.psi_threshold || {});
      const uniq = [...new Set(th)];
      FarmiqPlot.lines(host, {yMin: 0, thresholds: uniq.map(v => ({value: v, label: "drift " + v})),
        series: m.features.map(f => ({name: f, points: (m.psi_history || {})[f] || []}))});
    });
  }

  function models(d) {
    const blocks = (d.models || []).map(m => `
      <div class="model" data-model="${esc(m.name)}"><div><b>${esc(m.name)}</b> ${Object.entries(m.aliases).map(([a, v]) => `<span class="chip">${esc(a)} → v${esc(v)}</span>`).join("")}</div>
      <table class="hist"><thead><tr><th>Version</th><th>Registered</th><th>Alias</th></tr></thead><tbody>
      ${m.versions.slice(0, 6).map(v => `<tr><td class="mono">v${esc(v.version)}</td>${agoCell(v.created)}<td>${esc(v.alias || "")}</td></tr>`).join("")}
      </tbody></table>
      ${m.bundles.length ? `<div class="muted small">bundles: ${m.bundles.slice(0, 5).map(b => `<span class="chip mono" title="${esc(b.bundle_id)}">v${esc(b.version)} · ${(b.size / 1024).toFixed(1)} KiB</span>`).join("")}</div>` : ""}</div>`).join("");
    $("models").innerHTML = `<h2>Models <small>registry versions and bundles</small></h2>` + (blocks || `<div class="empty">No registered models.</div>`);
  }

  function paintTimes() {
    document.querySelectorAll(".ago").forEach(el => {
      const ts = parseFloat(el.dataset.ts);
      el.textContent = ago(ts);
      if (ts) el.title = new Date(ts * 1000).toISOString();
    });
  }

  function render(d) {
    summary(d); alerts(d); rollouts(d); serving(d); fleet(d); drift(d); models(d);
    $("updated").dataset.ts = d.generated;
    document.body.dataset.generated = d.generated;
    paintTimes();
  }

  async function refresh() {
    try {
      const r = await fetch(cfg.data_url, {credentials: "same-origin", cache: "no-store"});
      if (!r.ok) throw new Error("HTTP " + r.status);
      data = await r.json();
      render(data);
      $("status").textContent = "";
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    } catch (e) {
      $("status").textContent = "update failed: " + e.message;
    }
  }

  render(data);
  const auto = $("auto");
  auto.checked = localStorage.getItem("farmiq-auto") !== "0";
  auto.addEventListener("change", () => localStorage.setItem("farmiq-auto", auto.checked ? "1" : "0"));
  setInterval(() => { if (auto.checked) refresh(); }, cfg.refresh_s * 1000);
  setInterval(paintTimes, 5000);
  window.farmiqDashboard = {refresh: refresh, render: render};
})();
