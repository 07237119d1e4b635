// wsfw dashboard: polls /api/stats and /api/events and draws them.
// Served as a file (the admin CSP allows no inline script). Everything that
// comes from traffic (excerpts, parameter paths, addresses, routes) is put in
// the page with textContent or as an attribute value, never parsed as markup.
"use strict";

(function () {
  const POLL_MS = 2000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  let lastEventId = 0;
  let windowSeconds = 600;

  const $ = (id) => document.getElementById(id);

  function setText(id, text) {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function fmtCount(n) {
    return Math.round(n).toLocaleString("en-US");
  }

  function fmtRate(n) {
    if (n >= 1000) return (n / 1000).toFixed(1) + "k";
    if (n >= 100) return Math.round(n).toString();
    if (n >= 10) return n.toFixed(1);
    return n.toFixed(2);
  }

  function fmtBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? Math.round(n) : n.toFixed(1)) + " " + units[i];
  }

  function fmtDuration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    return s + "s";
  }

  function fmtTime(epoch) {
    const d = new Date(epoch * 1000);
    return d.toLocaleTimeString("en-GB", { hour12: false });
  }

  function niceCeil(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function svgEl(name, attrs, text) {
    const el = document.createElementNS(SVG_NS, name);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // A time-series chart in plain SVG: gridlines, y labels, relative-time x labels, one line (+ area) per series.
  function drawChart(svg, times, series, now) {
    const W = Math.max(svg.clientWidth, 200), H = Math.max(svg.clientHeight, 120);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const L = 46, R = 8, T = 10, B = 20;
    if (times.length < 2) {
      svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "nodata" }, "collecting data…"));
      return;
    }
    const t1 = Math.max(now, times[times.length - 1]);
    const t0 = Math.max(times[0], t1 - windowSeconds);
    const span = Math.max(t1 - t0, 1);
    let max = 0;
    for (const s of series) for (const v of s.values) if (v > max) max = v;
    const yMax = niceCeil(max);
    const x = (t) => L + (W - L - R) * (t - t0) / span;
    const y = (v) => T + (H - T - B) * (1 - v / yMax);
    for (const f of [0, 0.5, 1]) {
      const v = yMax * f, yy = y(v);
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "grid" }));
      svg.appendChild(svgEl("text", { x: L - 6, y: yy + 3, "text-anchor": "end", class: "axis" },
        yMax <= 5 && f === 0.5 ? (v).toFixed(1) : fmtRate(v).replace(/\.0+$/, "")));
    }
    const ticks = 4;
    for (let i = 0; i <= ticks; i++) {
      const t = t0 + span * i / ticks, ago = t1 - t;
      const label = i === ticks ? "now" : (ago >= 90 ? "-" + Math.round(ago / 60) + "m" : "-" + Math.round(ago) + "s");
      svg.appendChild(svgEl("text", { x: x(t), y: H - 5, "text-anchor": i === 0 ? "start" : (i === ticks ? "end" : "middle"), class: "axis" }, label));
    }
    for (const s of series) {
      let line = "", first = null, last = null;
      for (let i = 0; i < times.length; i++) {
        if (times[i] < t0) continue;
        const px = x(times[i]).toFixed(1), py = y(s.values[i]).toFixed(1);
        line += (line ? " L" : "M") + px + " " + py;
        if (first === null) first = px;
        last = px;
      }
      if (!line) continue;
      if (s.area) {
        const base = y(0).toFixed(1);
        svg.appendChild(svgEl("path", { d: line + " L" + last + " " + base + " L" + first + " " + base + " Z", class: "area " + s.cls }));
      }
      svg.appendChild(svgEl("path", { d: line, class: "line " + s.cls }));
    }
  }

  function renderBars(listId, emptyId, rows, nameOf, clsOf) {
    const list = $(listId);
    while (list.firstChild) list.removeChild(list.firstChild);
    $(emptyId).classList.toggle("hidden", rows.length > 0);
    const max = rows.reduce((m, r) => Math.max(m, r.count), 1);
    for (const r of rows) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name mono";
      name.textContent = nameOf(r);
      if (clsOf) {
        const c = document.createElement("span");
        c.className = "cls";
        c.textContent = clsOf(r);
        name.appendChild(c);
      }
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = fmtCount(r.count);
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = (100 * r.count / max).toFixed(1) + "%";  // CSSOM, allowed by the CSP
      track.appendChild(fill);
      li.append(name, count, track);
      list.appendChild(li);
    }
  }

  function primaryRule(ev) {
    const matches = ev.matches || [];
    if (matches.length) {
      let best = matches[0];
      for (const m of matches) if ((m.score || 0) > (best.score || 0)) best = m;
      return [best.rule_id || "", best["class"] || ""];
    }
    return [(ev.rule_ids || [])[0] || ev.inspector || "", (ev.classes || [])[0] || ""];
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text === undefined || text === null ? "" : String(text);
    tr.appendChild(td);
    return td;
  }

  function renderEvents(events) {
    const body = $("events-body");
    const newest = events.length ? events[0].id : lastEventId;
    while (body.firstChild) body.removeChild(body.firstChild);
    $("events-empty").classList.toggle("hidden", events.length > 0);
    for (const ev of events) {
      const tr = document.createElement("tr");
      tr.dataset.id = String(ev.id);
      if (lastEventId && ev.id > lastEventId) tr.className = "fresh";
      const [rule, cls] = primaryRule(ev);
      cell(tr, ev.time ? fmtTime(ev.time) : "", "mono");
      const action = cell(tr, "");
      const badge = document.createElement("span");
      badge.className = "badge badge-" + (ev.enforced ? "block" : "detect");
      badge.textContent = ev.enforced ? ev.action : "detect";
      action.appendChild(badge);
      cell(tr, ev.peer, "mono");
      cell(tr, ev.route);
      cell(tr, ev.param || (ev.kind === "http" ? "(polling body)" : ""), "mono param");
      cell(tr, rule, "mono rule");
      cell(tr, cls, "cls");
      cell(tr, ev.score);
      cell(tr, ev.excerpt, "mono excerpt");
      tr.setAttribute("title", [ev.reason, ev.request_path, ev.framing, ev.conn].filter(Boolean).join(" · "));
      body.appendChild(tr);
    }
    lastEventId = newest;
  }

  function renderStats(s) {
    windowSeconds = s.window || windowSeconds;
    for (const el of document.querySelectorAll(".window-label")) el.textContent = Math.round(windowSeconds / 60) + " min";
    const t = s.totals, series = s.series;
    const pill = $("status");
    pill.textContent = s.ready ? "ready" : "not ready";
    pill.className = "pill " + (s.ready ? "pill-ok" : "pill-bad");
    setText("version", "v" + s.version);
    setText("uptime", "up " + fmtDuration(s.uptime));
    setText("updated", "updated " + fmtTime(s.now));
    setText("connections-open", fmtCount(t.connections_open));
    setText("handshakes-pending", fmtCount(t.handshakes_pending));
    setText("handshakes-ok", fmtCount(t.handshakes_ok));
    const n = series.t.length;
    const rate = n ? series.client_messages_per_s[n - 1] + series.upstream_messages_per_s[n - 1] : 0;
    setText("messages-rate", fmtRate(rate));
    setText("messages-total", fmtCount(t.messages.client + t.messages.upstream));
    setText("bytes-total", fmtBytes(t.bytes.client + t.bytes.upstream));
    setText("blocks-total", fmtCount(t.blocked));
    setText("blocks-window", fmtCount(t.blocked_window));
    setText("detected-total", fmtCount(t.detected));
    setText("upstream-failures", fmtCount(t.upstream_failures));
    setText("handshakes-failed", fmtCount(t.handshakes_failed));
    setText("inspector-errors", fmtCount(t.inspector_errors));
    setText("routes", "routes: " + s.routes.map((r) => r.name + " " + (r.host || "") + r.path + " (" + r.mode + ")").join(", "));
    drawChart($("chart-messages"), series.t, [
      { values: series.client_messages_per_s, cls: "s-client", area: true },
      { values: series.upstream_messages_per_s, cls: "s-upstream", area: false },
    ], s.now);
    drawChart($("chart-blocks"), series.t, [
      { values: series.blocks_per_s, cls: "s-block", area: true },
      { values: series.detections_per_s, cls: "s-detect", area: false },
    ], s.now);
    drawChart($("chart-connections"), series.t, [{ values: series.connections, cls: "s-conn", area: true }], s.now);
    renderBars("top-rules", "top-rules-empty", s.top_rules, (r) => r.rule, (r) => r["class"]);
    renderBars("top-clients", "top-clients-empty", s.top_clients, (r) => r.client, null);
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }

  async function poll() {
    try {
      const [stats, events] = await Promise.all([getJSON("/api/stats"), getJSON("/api/events?blocked=1&limit=30")]);
      renderStats(stats);
      renderEvents(events.events);
      document.body.dataset.polls = String((Number(document.body.dataset.polls) || 0) + 1);
    } catch (err) {
      const pill = $("status");
      pill.textContent = "unreachable";
      pill.className = "pill pill-bad";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", poll);
})();
