// sluice dashboard: reads /usage and /stats of the sluice that served it, every 5 seconds.
// Plain script, no build step; uPlot (vendored beside it) draws the charts.
(function () {
  "use strict";

  var REFRESH_MS = 5000;
  var TOKEN_KEY = "sluice.adminToken";
  var MAX_SERIES = 7; // more than this many models or callers are summed as "other"
  var TOP_ROWS = 8;
  var RANGES = { "5h": 5 * 3600e3, "24h": 24 * 3600e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
  var PALETTE = ["#4f7cff", "#f59f3a", "#2fb387", "#d9577a", "#9b6cf0", "#3fb6d9", "#c2a33a", "#8a94a6"];

  var state = {
    range: "24h",
    stack: "model",
    custom: null, // {since: Date, until: Date|null}
    token: sessionStorage.getItem(TOKEN_KEY) || null,
    timer: null,
    charts: {},
    series: {}, // what each chart shows now, unstacked, for its hover readout
    lastUsage: null,
    lastStats: null,
  };
  // What the page shows, for people debugging it and for the browser test.
  var exposed = (window.__sluice = { charts: {}, totals: null, refreshes: 0 });

  var $ = function (id) { return document.getElementById(id); };
  var intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var usdFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 4, maximumFractionDigits: 4 });
  var pctFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  var msFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  function int(n) { return intFmt.format(Math.round(n || 0)); }
  function usd(n) { return "$" + usdFmt.format(n || 0); }
  function pct(x) { return pctFmt.format(x * 100) + "%"; }
  function ms(n) { return n == null ? "—" : msFmt.format(n); }
  function tokensOf(c) {
    return (c.input_tokens || 0) + (c.output_tokens || 0) +
      (c.cache_creation_input_tokens || 0) + (c.cache_read_input_tokens || 0);
  }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c != null) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function fill(id, nodes) {
    var target = $(id);
    target.replaceChildren.apply(target, nodes);
  }
  function none(text, code) {
    return el("p", { class: "none" }, code ? [text, el("code", { text: code })] : [text]);
  }
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function clock(d) { return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }
  function dayClock(d) {
    var sameDay = new Date().toDateString() === d.toDateString();
    return sameDay ? clock(d) : d.toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  }
  function duration(msLeft) {
    if (msLeft <= 0) return "now";
    var m = Math.ceil(msLeft / 60000);
    var d = Math.floor(m / 1440), h = Math.floor((m % 1440) / 60), mm = m % 60;
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + mm + " min";
    return mm + " min";
  }
  function ago(date) {
    var s = Math.max(0, (Date.now() - date.getTime()) / 1000);
    if (s < 90) return "just now";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  // Times arrive as RFC 3339 strings or as Unix seconds (the rate-limit headers' own form).
  function toDate(v) {
    if (v == null || v === "") return null;
    if (typeof v === "number" || /^\d+(\.\d+)?$/.test(String(v))) return new Date(Number(v) * 1000);
    var d = new Date(v);
    return isNaN(d) ? null : d;
  }

  // ---- data calls -------------------------------------------------------------------------

  var asking = null;
  function askToken(refused) {
    if (asking) return asking;
    var dialog = $("token-dialog");
    $("token-message").textContent = refused
      ? "That token was refused. Enter the admin token this sluice uses (its [admin] token_env)."
      : "This sluice has an admin token. Enter it to see usage; it is kept only in this tab.";
    $("token-message").className = refused ? "refused" : "";
    $("token-input").value = "";
    asking = new Promise(function (resolve) {
      $("token-form").onsubmit = function (ev) {
        ev.preventDefault();
        var token = $("token-input").value.trim();
        if (!token) return;
        state.token = token;
        sessionStorage.setItem(TOKEN_KEY, token);
        dialog.close();
        asking = null;
        syncForget();
        resolve();
      };
    });
    if (!dialog.open) dialog.showModal();
    return asking;
  }

  function api(path) {
    var headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    return fetch(path, { headers: headers, cache: "no-store", credentials: "same-origin" }).then(function (res) {
      if (res.status === 401) {
        var refused = !!state.token;
        state.token = null;
        sessionStorage.removeItem(TOKEN_KEY);
        syncForget();
        return askToken(refused).then(function () { return api(path); });
      }
      if (!res.ok) {
        return res.text().then(function (body) {
          var message = body;
          try { message = JSON.parse(body).error.message; } catch (e) { /* not sluice's JSON */ }
          throw new Error(path.split("?")[0] + " answered " + res.status + (message ? ": " + message : ""));
        });
      }
      return res.json();
    });
  }

  // ---- range and buckets ------------------------------------------------------------------

  function window_() {
    var now = new Date();
    if (state.range === "custom" && state.custom) {
      var until = state.custom.until || now;
      return { since: state.custom.since, until: state.custom.until, end: until };
    }
    return { since: new Date(now.getTime() - RANGES[state.range]), until: null, end: now };
  }
  function bucketOf(span) { return span <= 7 * 86400e3 + 1 ? "hour" : "day"; }
  function floorTo(date, bucket) {
    var d = new Date(date.getTime());
    d.setMinutes(0, 0, 0);
    if (bucket === "day") d.setHours(0);
    return d;
  }
  function step(date, bucket) {
    var d = new Date(date.getTime());
    if (bucket === "day") d.setDate(d.getDate() + 1); else d.setHours(d.getHours() + 1);
    return d;
  }
  // A bucket key from /usage: "2026-11-27" (a local day), an RFC 3339 hour, "2026-11-27 13:00",
  // or Unix seconds.
  function bucketTime(key) {
    if (typeof key === "number") return key;
    var m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(key);
    if (m) return new Date(+m[1], +m[2] - 1, +m[3]).getTime() / 1000;
    var d = toDate(String(key).replace(" ", "T"));
    return d ? d.getTime() / 1000 : null;
  }
  function query(params) {
    return Object.keys(params).filter(function (k) { return params[k] != null; }).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
  }

  // ---- refresh ----------------------------------------------------------------------------

  // A click may start a refresh while one is under way: only the newest renders and re-arms
  // the timer, so there is always exactly one refresh loop.
  var generation = 0;
  function refresh() {
    clearTimeout(state.timer);
    var mine = ++generation;
    var current = function () { return mine === generation; };
    var w = window_();
    var bucket = bucketOf(w.end - w.since);
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    // Whole seconds: every RFC 3339 reader takes them.
    var iso = function (d) { return d.toISOString().replace(/\.\d+Z$/, "Z"); };
    var range = { since: iso(w.since), until: w.until ? iso(w.until) : null };
    var usageQ = query({ group_by: bucket + "," + state.stack, since: range.since, until: range.until, tz: tz, format: "json" });
    var statsQ = query({ since: range.since, until: range.until });
    var setStatus = function (cls, text) {
      $("status").className = "status " + cls;
      $("status-text").textContent = text;
    };
    return api("usage?" + usageQ)
      .then(function (usage) {
        return api("stats?" + statsQ).then(function (stats) {
          if (!current()) return;
          state.lastUsage = usage;
          state.lastStats = stats;
          return Promise.resolve(render(usage, stats, w, bucket)).then(function () { exposed.refreshes += 1; });
        }).then(function () {
          if (current()) setStatus("live", "live · " + new Date().toLocaleTimeString());
        });
      })
      .catch(function (err) {
        if (current()) setStatus("failed", err && err.message ? err.message : "cannot reach sluice");
      })
      .then(function () {
        if (current()) state.timer = setTimeout(refresh, REFRESH_MS);
      });
  }

  function render(usage, stats, w, bucket) {
    var totals = usage.totals || {};
    renderKpis(totals, stats);
    var pending = renderCharts(usage, w, bucket, stats);
    renderSubscriptions(stats.rate_limits || {});
    renderQuotas(stats.quotas);
    renderTop("top-sessions", stats.by_session, true);
    renderTop("top-callers", stats.by_caller, false);
    renderTop("top-projects", stats.by_project, false);
    renderTop("top-models", stats.by_model, false);
    renderTop("top-clients", stats.by_client, false);
    renderErrors(stats, totals);
    renderLatency(stats.latency_ms || {});
    return pending;
  }

  function subscriptionCost(stats) {
    var oauth = (stats.by_source || {}).client_oauth;
    return oauth ? oauth.cost_usd || 0 : 0;
  }

  function renderKpis(totals, stats) {
    var tokens = tokensOf(totals);
    exposed.totals = { cost_usd: totals.cost_usd || 0, requests: totals.requests || 0, tokens: tokens, errors: totals.errors || 0 };
    $("kpi-cost").textContent = usd(totals.cost_usd);
    var sub = subscriptionCost(stats);
    $("kpi-cost-sub").textContent = sub > 0
      ? "incl. " + usd(sub) + " API-equivalent (subscription)"
      : "at API prices";
    $("kpi-requests").textContent = int(totals.requests);
    var streamed = totals.streamed ? int(totals.streamed) + " streamed" : "\u00a0";
    if (totals.usage_missing) streamed += " · " + int(totals.usage_missing) + " without usage";
    $("kpi-requests-sub").textContent = streamed;
    $("kpi-tokens").textContent = int(tokens);
    var cacheable = (totals.input_tokens || 0) + (totals.cache_creation_input_tokens || 0) + (totals.cache_read_input_tokens || 0);
    var tokensSub = cacheable
      ? pct((totals.cache_read_input_tokens || 0) / cacheable) + " of input read from cache"
      : "\u00a0";
    if (totals.reasoning_output_tokens) tokensSub += " · " + int(totals.reasoning_output_tokens) + " reasoning";
    $("kpi-tokens-sub").textContent = tokensSub;
    $("kpi-errors").textContent = int(totals.errors);
    $("kpi-errors-sub").textContent = totals.requests
      ? pct((totals.errors || 0) / totals.requests) + " of requests"
      : "\u00a0";
  }

  // ---- charts -----------------------------------------------------------------------------

  // Names come from clients ("__proto__", "constructor"): everything keyed by a name or a time
  // is a Map, never a plain object whose prototype a name could reach.
  function seriesFrom(usage, w, bucket, metric) {
    var dim = state.stack;
    var rows = usage.rows || [];
    var byName = new Map();
    rows.forEach(function (r) {
      var name = r[dim] == null || r[dim] === "" ? "(none)" : String(r[dim]);
      byName.set(name, (byName.get(name) || 0) + metric(r));
    });
    var names = Array.from(byName.keys()).sort(function (a, b) { return byName.get(b) - byName.get(a) || (a < b ? -1 : 1); });
    var kept = names.slice(0, MAX_SERIES);
    var folded = names.length > MAX_SERIES;
    if (folded) kept.push("other");

    // Every bucket of the range, so quiet hours show as gaps, plus any the rows name.
    var times = new Set();
    var end = w.end.getTime() / 1000;
    for (var t = floorTo(w.since, bucket); t.getTime() / 1000 <= end; t = step(t, bucket)) times.add(t.getTime() / 1000);
    rows.forEach(function (r) { var x = bucketTime(r[bucket]); if (x != null) times.add(x); });
    var xs = Array.from(times).sort(function (a, b) { return a - b; });
    var index = new Map();
    xs.forEach(function (x, i) { index.set(x, i); });

    var raw = new Map();
    kept.forEach(function (n) { raw.set(n, xs.map(function () { return 0; })); });
    rows.forEach(function (r) {
      var name = r[dim] == null || r[dim] === "" ? "(none)" : String(r[dim]);
      if (!raw.has(name)) name = "other";
      var x = bucketTime(r[bucket]);
      if (x == null) return;
      raw.get(name)[index.get(x)] += metric(r);
    });
    return { xs: xs, names: kept, raw: raw };
  }

  // A series map as [name, values] pairs for the test and for debugging: no object keyed by a
  // name, not even on the way out of the page.
  function seriesPairs(raw) {
    return Array.from(raw.entries());
  }

  function drawChart(key, targetId, legendId, readoutId, s, bucket, formatValue, colorOf) {
    var target = $(targetId);
    exposed.charts[key] = { names: s.names.slice(), raw: seriesPairs(s.raw), times: s.xs.slice() };
    state.series[key] = s;

    // Stacked bars: series k holds the sum of series 0..k and is drawn behind the ones below it.
    var stacked = [];
    var running = s.xs.map(function () { return 0; });
    s.names.forEach(function (n) {
      running = running.map(function (v, i) { return v + s.raw.get(n)[i]; });
      stacked.push(running.slice());
    });
    var order = s.names.map(function (_, i) { return i; }).reverse();
    var data = [s.xs].concat(order.map(function (i) { return stacked[i]; }));
    var ink = cssVar("--muted"), grid = cssVar("--grid");
    var bars = uPlot.paths.bars({ size: [0.86, 48], gap: 1 });
    var series = [{}].concat(order.map(function (i) {
      var color = colorOf(s.names[i]);
      return { label: s.names[i], stroke: color, fill: color, width: 0, paths: bars, points: { show: false } };
    }));
    var width = Math.max(200, target.clientWidth);
    var height = target.clientHeight || 220;
    // The same series, size and colours as last time: new data into the same chart, so a
    // refresh does not drop the reader's hover.
    var signature = [s.names.join("|"), s.xs.length, bucket, width, height, ink, grid].join("#");
    var chart = state.charts[key];
    if (chart && chart.signature === signature) {
      chart.setData(data);
      drawLegend(legendId, s, formatValue, colorOf);
      return;
    }
    if (chart) chart.destroy();
    target.replaceChildren();
    var opts = {
      width: width,
      height: height,
      legend: { show: false },
      cursor: { points: { show: false }, drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.08 : 1]; } } },
      axes: [
        { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: "11px system-ui, sans-serif" },
        {
          stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { show: false }, font: "11px system-ui, sans-serif",
          size: 64,
          values: function (u, splits, axis, space, incr) { return splits.map(function (v) { return formatValue(v, incr || 1); }); },
        },
      ],
      series: series,
      hooks: {
        setCursor: [function (u) {
          var i = u.cursor.idx;
          var s = state.series[key];
          var readout = $(readoutId);
          if (i == null) { readout.textContent = ""; return; }
          var when = new Date(s.xs[i] * 1000);
          var label = bucket === "day" ? when.toLocaleDateString([], { day: "numeric", month: "short" }) : dayClock(when);
          var parts = s.names.filter(function (n) { return s.raw.get(n)[i] > 0; }).map(function (n) { return n + " " + formatValue(s.raw.get(n)[i]); });
          readout.textContent = label + (parts.length ? " · " + parts.join(" · ") : " · none");
        }],
      },
    };
    state.charts[key] = new uPlot(opts, data, target);
    state.charts[key].signature = signature;
    drawLegend(legendId, s, formatValue, colorOf);
  }

  function drawLegend(legendId, s, formatValue, colorOf) {
    var totalsByName = s.names.map(function (n) { return s.raw.get(n).reduce(function (a, b) { return a + b; }, 0); });
    fill(legendId, s.names.map(function (n, i) {
      return el("li", null, [el("span", { class: "sw", style: "background:" + colorOf(n) }), n + " ", el("b", { text: formatValue(totalsByName[i]) })]);
    }));
  }

  // With nothing in the range, say whether anything was ever recorded (lifetime /stats).
  function renderEmpty(stats) {
    var empty = $("empty");
    var prefix = Object.keys(stats.by_route || {})[0] || "/anthropic";
    var target = el("code", { text: location.origin + prefix });
    var rangeText = state.range === "custom" ? "this range" : "the last " + state.range.replace("h", " hours").replace("d", " days");
    var show = function (lifetime) {
      empty.replaceChildren.apply(empty, lifetime > 0
        ? [el("strong", { text: "No requests in " + rangeText }), el("span", { text: "Pick a wider range above; " + int(lifetime) + " requests are recorded in all." })]
        : [el("strong", { text: "No requests yet" }), el("span", null, ["Point ", el("code", { text: "ANTHROPIC_BASE_URL" }), " at ", target, " and requests show up here within seconds."])]);
      empty.hidden = false;
    };
    return api("stats").then(function (all) { show(((all || {}).totals || {}).requests || 0); }, function () { show(0); });
  }

  function renderCharts(usage, w, bucket, stats) {
    var requests = (usage.totals || {}).requests || 0;
    var empty = $("empty");
    var charts = document.querySelector(".charts");
    if (!requests) {
      charts.hidden = true;
      Object.keys(state.charts).forEach(function (k) { if (state.charts[k]) state.charts[k].destroy(); state.charts[k] = null; });
      exposed.charts = {};
      return renderEmpty(stats);
    }
    empty.hidden = true;
    charts.hidden = false;
    var spend = seriesFrom(usage, w, bucket, function (r) { return r.cost_usd || 0; });
    var tokens = seriesFrom(usage, w, bucket, tokensOf);
    // One colour per model or caller in both charts, in the order of spend.
    var colors = new Map();
    spend.names.concat(tokens.names).forEach(function (n) {
      if (!colors.has(n)) colors.set(n, n === "other" ? "#8a94a6" : PALETTE[colors.size % (PALETTE.length - 1)]);
    });
    var colorOf = function (n) { return colors.get(n); };
    // On the axis, as many decimals as the tick step needs; elsewhere $0.0000.
    drawChart("spend", "chart-spend", "legend-spend", "spend-readout", spend, bucket, function (v, incr) {
      if (!incr) return usd(v);
      if (v === 0) return "$0";
      var decimals = Math.min(4, Math.max(0, Math.ceil(-Math.log10(incr) - 1e-9)));
      return "$" + v.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    }, colorOf);
    drawChart("tokens", "chart-tokens", "legend-tokens", "tokens-readout", tokens, bucket, function (v, incr) {
      if (incr) {
        if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M";
        if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
        return int(v);
      }
      return int(v);
    }, colorOf);
  }

  // ---- subscriptions ----------------------------------------------------------------------

  // The typed windows when the sluice gives them, else read from the raw unified headers.
  function windowsOf(entry) {
    if (entry.windows) return entry.windows;
    var h = entry.headers || {};
    var out = Object.create(null);
    Object.keys(h).forEach(function (name) {
      var m = /^anthropic-ratelimit-unified-([^-]+)-(utilization|reset|status)$/.exec(name);
      if (!m) return;
      var w = (out[m[1]] = out[m[1]] || {});
      if (m[2] === "utilization") w.utilization = parseFloat(h[name]);
      else if (m[2] === "reset") w.resets_at = h[name];
      else w.status = h[name];
    });
    return out;
  }
  function overallStatus(entry) {
    return entry.status || (entry.headers || {})["anthropic-ratelimit-unified-status"] || null;
  }
  function level(u, status) {
    if (status === "rejected" || u >= 1) return "bad";
    if (status === "allowed_warning" || u >= 0.8) return "warn";
    return "";
  }

  function renderSubscriptions(limits) {
    var names = Object.keys(limits);
    if (!names.length) {
      fill("subscriptions", [none("No subscription traffic seen yet. When Claude Code signed in with a Claude plan sends requests through sluice, its 5-hour and 7-day limits show here.")]);
      return;
    }
    // Refused credentials first, then those near their limit: what needs a look comes first.
    var urgency = function (n) { var st = overallStatus(limits[n]); return st === "rejected" ? 0 : st === "allowed_warning" ? 1 : 2; };
    names.sort(function (a, b) { return urgency(a) - urgency(b) || (a < b ? -1 : 1); });
    fill("subscriptions", names.map(function (name) {
      var entry = limits[name];
      var windows = windowsOf(entry);
      var status = overallStatus(entry);
      var badge = status === "rejected" ? ["bad", "limit reached"] : status === "allowed_warning" ? ["warn", "near limit"] : status === "allowed" ? ["ok", "ok"] : ["muted", status || "unknown"];
      var seen = toDate(entry.seen_at);
      var rows = [el("div", { class: "cred-head" }, [
        el("span", { class: "cred-name", title: name, text: name }),
        el("span", { class: "badge " + badge[0], text: badge[1] }),
      ])];
      var order = Object.keys(windows).sort(function (a, b) { return windowRank(a) - windowRank(b); });
      order.forEach(function (wname) {
        var w = windows[wname];
        var u = typeof w.utilization === "number" && isFinite(w.utilization) ? w.utilization : 0;
        var lv = level(u, w.status);
        rows.push(el("div", { class: "meter" }, [
          el("span", { class: "what", text: windowLabel(wname) }),
          el("div", { class: "track" }, [el("div", { class: "fill " + lv, style: "width:" + Math.min(100, u * 100).toFixed(1) + "%" })]),
          el("span", { class: "bar-text", text: pct(u) }),
        ]));
        var resets = toDate(w.resets_at);
        var when = el("div", { class: "when" + (w.status === "rejected" ? " refused" : "") });
        if (resets) {
          when.dataset.resets = String(resets.getTime());
          when.dataset.refused = w.status === "rejected" ? "1" : "";
        }
        rows.push(when);
      });
      if (seen) rows.push(el("div", { class: "when", text: "last seen " + ago(seen) }));
      return el("div", { class: "cred" }, rows);
    }));
    tickCountdowns();
  }
  function windowRank(name) { return name === "5h" ? 0 : name === "7d" ? 1 : 2; }
  function windowLabel(name) { return name === "5h" ? "5 hours" : name === "7d" ? "7 days" : name.replace(/_/g, " "); }

  // Countdowns move every second between refreshes.
  function tickCountdowns() {
    document.querySelectorAll("[data-resets]").forEach(function (node) {
      var at = new Date(Number(node.dataset.resets));
      var left = at.getTime() - Date.now();
      node.textContent = node.dataset.refused
        ? "Limit reached, resets at " + dayClock(at) + " (in " + duration(left) + ")"
        : "resets in " + duration(left) + " · " + dayClock(at);
    });
  }

  // ---- quotas -----------------------------------------------------------------------------

  // /stats lists each quota with its limits and, per subject (a caller, or "*" when one
  // budget is shared), what was used: one meter block per quota and subject. A quota nobody has
  // spent against yet still shows, at zero.
  function quotaEntries(quotas) {
    var out = [];
    (quotas || []).forEach(function (q) {
      var subjects = q.subjects && q.subjects.length ? q.subjects : [{}];
      subjects.forEach(function (s) {
        out.push({
          name: q.name, mode: q.mode, window: q.window, limits: q.limits, subject: s.subject,
          used: s.used, remaining: s.remaining, resets_at: s.resets_at,
          refused: s.refused, would_refuse: s.would_refuse,
        });
      });
    });
    return out;
  }
  var QUOTA_KINDS = [
    { key: "usd", used: "usd", label: "spend", fmt: usd },
    { key: "tokens", used: "tokens", label: "tokens", fmt: int },
    { key: "requests", used: "requests", label: "requests", fmt: int },
    { key: "concurrent", used: "in_flight", label: "in flight", fmt: int },
  ];
  function limitOf(limits, key) {
    if (!limits) return null;
    var v = limits[key];
    return typeof v === "number" ? v : null;
  }
  function renderQuotas(quotas) {
    var entries = quotaEntries(quotas);
    if (!entries.length) {
      fill("quotas", [el("p", { class: "none" }, ["No quotas set. Add a ", el("code", { text: "[[quotas]]" }), " table to sluice.toml to cap spend, tokens or requests per caller, per day, week or month."])]);
      return;
    }
    fill("quotas", entries.map(function (q) {
      var used = q.used || {};
      var head = el("div", { class: "cred-head" }, [
        el("span", null, [el("span", { class: "quota-name", text: q.name }), q.subject ? " · " + q.subject : ""]),
        el("span", { class: "quota-mode", text: [q.window, q.mode === "shadow" ? "shadow" : null].filter(Boolean).join(" · ") }),
      ]);
      var rows = [head];
      QUOTA_KINDS.forEach(function (k) {
        var limit = limitOf(q.limits, k.key);
        if (limit == null) return;
        var u = used[k.used] || 0;
        var share = limit > 0 ? u / limit : 1;
        var rem = q.remaining ? q.remaining[k.key] : null;
        rows.push(el("div", { class: "meter quota" }, [
          el("span", { class: "what", text: k.label }),
          el("div", { class: "track" }, [el("div", { class: "fill " + level(share, null), style: "width:" + Math.min(100, share * 100).toFixed(1) + "%" })]),
          el("span", { class: "bar-text", text: k.fmt(u) + " of " + k.fmt(limit) + (rem != null ? " · " + k.fmt(rem) + " left" : "") }),
        ]));
      });
      var resets = toDate(q.resets_at);
      var extra = [];
      if (resets) extra.push("resets " + dayClock(resets));
      if (q.refused) extra.push(int(q.refused) + " refused");
      if (q.would_refuse) extra.push(int(q.would_refuse) + " would be refused");
      if (extra.length) rows.push(el("div", { class: "when", text: extra.join(" · ") }));
      return el("div", { class: "cred" }, rows);
    }));
  }

  // ---- busiest, errors, latency -----------------------------------------------------------

  function renderTop(id, group, shorten) {
    var names = Object.keys(group || {});
    if (!names.length) { fill(id, [none("None in this range.")]); return; }
    names.sort(function (a, b) { return (group[b].cost_usd || 0) - (group[a].cost_usd || 0) || tokensOf(group[b]) - tokensOf(group[a]); });
    var head = el("tr", null, [el("th", { text: "name" }), el("th", { class: "n", text: "req" }), el("th", { class: "n", text: "tokens" }), el("th", { class: "n", text: "cost" })]);
    var rows = names.slice(0, TOP_ROWS).map(function (n) {
      var c = group[n];
      var shown = shorten && n.length > 13 ? n.slice(0, 8) + "…" : n;
      return el("tr", null, [
        el("td", { class: shorten ? "key" : "", title: n, text: shown }),
        el("td", { class: "n", text: int(c.requests) }),
        el("td", { class: "n", text: int(tokensOf(c)) }),
        el("td", { class: "n", text: usd(c.cost_usd) }),
      ]);
    });
    var table = el("table", null, [el("thead", null, [head]), el("tbody", null, rows)]);
    var more = names.length > TOP_ROWS ? none("and " + int(names.length - TOP_ROWS) + " more") : null;
    fill(id, more ? [table, more] : [table]);
  }

  var STATUS_TEXT = {
    400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found", 413: "too large",
    429: "rate limited", 500: "server error", 502: "upstream unreachable", 503: "unavailable",
    504: "timeout", 529: "overloaded",
  };
  function renderErrors(stats, totals) {
    var rows = [];
    var kinds = stats.by_error_kind || stats.by_outcome || {};
    Object.keys(kinds).forEach(function (k) {
      if (k === "ok" || k === "completed") return;
      var v = typeof kinds[k] === "number" ? kinds[k] : (kinds[k] || {}).requests;
      if (v) rows.push([k.replace(/_/g, " "), v]);
    });
    var statuses = stats.by_status || {};
    Object.keys(statuses).filter(function (s) { return Number(s) >= 400; }).sort().forEach(function (s) {
      var v = typeof statuses[s] === "number" ? statuses[s] : (statuses[s] || {}).requests;
      if (v) rows.push([s + " " + (STATUS_TEXT[s] || (Number(s) >= 500 ? "server error" : "client error")), v]);
    });
    var incomplete = (stats.totals || totals).incomplete || 0;
    if (incomplete) rows.push(["streams cut short", incomplete]);
    var requests = (stats.totals || totals).requests || 0;
    $("errors-hint").textContent = requests ? int((stats.totals || totals).errors || 0) + " of " + int(requests) + " requests" : "";
    if (!rows.length) { fill("errors", [none(requests ? "No errors in this range." : "No requests in this range.")]); return; }
    rows.sort(function (a, b) { return b[1] - a[1]; });
    var body = rows.map(function (r) {
      return el("tr", null, [el("td", { text: r[0] }), el("td", { class: "n", text: int(r[1]) }), el("td", { class: "n", text: requests ? pct(r[1] / requests) : "" })]);
    });
    fill("errors", [el("table", null, [
      el("thead", null, [el("tr", null, [el("th", { text: "kind" }), el("th", { class: "n", text: "count" }), el("th", { class: "n", text: "share" })])]),
      el("tbody", null, body),
    ])]);
  }

  function renderLatency(lat) {
    var kinds = [["ttfb", "first byte"], ["overhead", "sluice overhead"], ["total", "total"]].filter(function (k) { return lat[k[0]] && lat[k[0]].count; });
    if (!kinds.length) { fill("latency", [none("No finished requests in this range.")]); return; }
    var head = el("tr", null, [el("th", { text: "" }), el("th", { class: "n", text: "p50" }), el("th", { class: "n", text: "p90" }), el("th", { class: "n", text: "p99" }), el("th", { class: "n", text: "max" })]);
    var body = kinds.map(function (k) {
      var l = lat[k[0]];
      return el("tr", null, [el("td", { text: k[1] }), el("td", { class: "n", text: ms(l.p50) }), el("td", { class: "n", text: ms(l.p90) }), el("td", { class: "n", text: ms(l.p99) }), el("td", { class: "n", text: ms(l.max) })]);
    });
    fill("latency", [el("table", null, [el("thead", null, [head]), el("tbody", null, body)])]);
  }

  // ---- controls ---------------------------------------------------------------------------

  function press(groupId, attr, value) {
    document.querySelectorAll("#" + groupId + " button").forEach(function (b) {
      b.setAttribute("aria-pressed", b.getAttribute(attr) === value ? "true" : "false");
    });
  }
  function syncForget() { $("forget-token").hidden = !state.token; }
  function toLocalInput(d) {
    var pad = function (n) { return String(n).padStart(2, "0"); };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  $("ranges").addEventListener("click", function (ev) {
    var r = ev.target.getAttribute && ev.target.getAttribute("data-range");
    if (!r) return;
    press("ranges", "data-range", r);
    if (r === "custom") {
      $("custom").hidden = false;
      if (!$("custom-since").value) $("custom-since").value = toLocalInput(new Date(Date.now() - 3 * 86400e3));
      return;
    }
    $("custom").hidden = true;
    state.range = r;
    refresh();
  });
  $("custom").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var since = new Date($("custom-since").value);
    var until = $("custom-until").value ? new Date($("custom-until").value) : null;
    if (isNaN(since) || (until && (isNaN(until) || until <= since))) return;
    state.custom = { since: since, until: until };
    state.range = "custom";
    refresh();
  });
  $("stacks").addEventListener("click", function (ev) {
    var s = ev.target.getAttribute && ev.target.getAttribute("data-stack");
    if (!s) return;
    press("stacks", "data-stack", s);
    state.stack = s;
    refresh();
  });
  $("forget-token").addEventListener("click", function () {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    syncForget();
    refresh();
  });
  // Charts follow the window's width and the system's light or dark setting.
  var redrawSoon = null;
  function redraw() {
    clearTimeout(redrawSoon);
    redrawSoon = setTimeout(function () {
      if (state.lastUsage && state.lastStats) {
        var w = window_();
        renderCharts(state.lastUsage, w, bucketOf(w.end - w.since), state.lastStats);
      }
    }, 150);
  }
  window.addEventListener("resize", redraw);
  if (window.matchMedia) window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);

  syncForget();
  setInterval(tickCountdowns, 1000);
  refresh();
})();
