// The partner page: hourly charts over 7 days with limit and warn lines and pause /
// resume markers, the verdict in words, and the actions (each confirmed first). An id
// the API does not know (404) gets "no such partner" and nothing else.
"use strict";

(() => {
  const { api, el, word, count, statusText, pct, span, showError, stamp } = sesguard;
  const REFRESH_MS = 30000;
  const partnerId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const COLORS = {
    sends: "#90a4ae",
    bounce: "#c62828",
    complaint: "#6a1b9a",
    limit: "#d32f2f",
    warn: "#ef8f00",
    paused: "#c62828",
    resumed: "#2e7d32",
  };
  let current = null; // the last detail the API returned
  const charts = {};
  let shownStatus = null; // the status the action forms were last set up for

  // Vertical lines where the partner was paused or resumed (from the lifecycle events).
  const markerPlugin = {
    id: "sesguardMarkers",
    afterDatasetsDraw(chart, _args, options) {
      const { ctx, chartArea, scales } = chart;
      (options.markers || []).forEach((m, i) => {
        const x = scales.x.getPixelForValue(m.index);
        const color = COLORS[m.marker];
        ctx.save();
        ctx.strokeStyle = color;
        ctx.fillStyle = color;
        ctx.lineWidth = 2;
        ctx.setLineDash([5, 3]);
        ctx.beginPath();
        ctx.moveTo(x, chartArea.top);
        ctx.lineTo(x, chartArea.bottom);
        ctx.stroke();
        ctx.font = "bold 11px system-ui, sans-serif";
        const right = x > chartArea.right - 70;
        ctx.textAlign = right ? "right" : "left";
        ctx.fillText(m.marker, x + (right ? -5 : 5), chartArea.top + 12 + 13 * i);
        ctx.restore();
      });
    },
  };

  function hourLabel(iso) {
    const d = new Date(iso);
    const day = d.toISOString().slice(5, 10);
    return `${day} ${d.toISOString().slice(11, 13)}:00`;
  }

  function baseOptions(markers) {
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        sesguardMarkers: { markers },
      },
      scales: {
        x: { ticks: { autoSkip: true, maxTicksLimit: 8, maxRotation: 0 }, grid: { display: false } },
      },
    };
  }

  function volumeChart(s, markers) {
    const points = (data) => data.map((v) => (v > 0 ? 3 : 0));
    const options = baseOptions(markers);
    options.scales.y = { beginAtZero: true, title: { display: true, text: "sends" } };
    options.scales.y1 = {
      beginAtZero: true,
      position: "right",
      grid: { drawOnChartArea: false },
      title: { display: true, text: "bounces, complaints" },
      ticks: { precision: 0 },
    };
    return {
      type: "bar",
      data: {
        labels: s.hours.map(hourLabel),
        datasets: [
          { label: "sends", data: s.sent, backgroundColor: COLORS.sends, yAxisID: "y", barPercentage: 1, categoryPercentage: 0.9, minBarLength: 0 },
          { type: "line", label: "hard bounces", data: s.hard_bounces, borderColor: COLORS.bounce, backgroundColor: COLORS.bounce, yAxisID: "y1", pointRadius: points(s.hard_bounces), borderWidth: 1.5 },
          { type: "line", label: "complaints", data: s.complaints, borderColor: COLORS.complaint, backgroundColor: COLORS.complaint, yAxisID: "y1", pointRadius: points(s.complaints), borderWidth: 1.5 },
        ],
      },
      options,
    };
  }

  function rateChart(s, metric, limits, markers) {
    const limit = limits[`${metric}_rate`];
    const warn = limit * limits.warn_ratio;
    const hourly = s[`${metric}_rate`];
    const rolling = s[`${metric}_rate_rolling`];
    const color = COLORS[metric];
    const top = Math.max(limit * 1.25, ...hourly.filter((v) => v !== null), ...rolling.filter((v) => v !== null));
    const options = baseOptions(markers);
    options.scales.y = {
      beginAtZero: true,
      suggestedMax: top,
      ticks: { callback: (v) => pct(v, limit < 0.01 ? 2 : 1) },
    };
    options.plugins.tooltip = {
      callbacks: { label: (c) => `${c.dataset.label}: ${pct(c.parsed.y, 2)}` },
    };
    const flat = (v) => s.hours.map(() => v);
    return {
      type: "bar",
      data: {
        labels: s.hours.map(hourLabel),
        datasets: [
          { label: "rate of the hour", data: hourly, backgroundColor: `${color}55`, borderColor: color, borderWidth: 1, barPercentage: 1, categoryPercentage: 0.9 },
          { type: "line", label: `${span(s.rolling_hours)} rate (judged)`, data: rolling, borderColor: color, backgroundColor: color, pointRadius: rolling.map((v) => (v === null ? 0 : 2)), borderWidth: 2, spanGaps: false },
          { type: "line", label: `limit ${pct(limit)}`, data: flat(limit), borderColor: COLORS.limit, pointRadius: 0, borderWidth: 1.5 },
          { type: "line", label: `warn ${pct(warn)}`, data: flat(warn), borderColor: COLORS.warn, pointRadius: 0, borderWidth: 1.5, borderDash: [6, 4] },
        ],
      },
      options,
    };
  }

  // The last `hours` of the 7-day series (the range selector), markers moved along.
  function lastHours(series, events, hours) {
    const total = series.hours.length;
    const from = Math.max(0, total - hours);
    const s = { rolling_hours: series.rolling_hours };
    for (const [key, values] of Object.entries(series)) {
      if (Array.isArray(values)) s[key] = values.slice(from);
    }
    const markers = events
      .filter((e) => e.marker && e.index !== null && e.index >= from)
      .map((e) => ({ ...e, index: e.index - from }));
    return { s, markers };
  }

  function drawCharts(detail) {
    const hours = Number(document.getElementById("range").value);
    const { s, markers } = lastHours(detail.series, detail.events, hours);
    const limits = detail.partner.limits;
    const configs = {
      "chart-volume": volumeChart(s, markers),
      "chart-bounce": rateChart(s, "bounce", limits, markers),
      "chart-complaint": rateChart(s, "complaint", limits, markers),
    };
    for (const [id, config] of Object.entries(configs)) {
      if (charts[id]) {
        charts[id].data = config.data;
        charts[id].options = config.options;
        charts[id].update("none");
      } else {
        config.plugins = [markerPlugin];
        charts[id] = new Chart(document.getElementById(id), config);
      }
    }
  }

  function when(iso) {
    return iso ? `${iso.slice(0, 19).replace("T", " ")} UTC` : "?";
  }

  function fact(term, value) {
    return [el("dt", { text: term }), el("dd", { text: value })];
  }

  // The page's head and its two parts: the partner's detail, or "no such partner".
  function showPart(found) {
    document.getElementById("detail").hidden = !found;
    document.getElementById("missing").hidden = found;
  }

  function showMissing() {
    document.title = `sesguard · ${partnerId}: no such partner`;
    document.getElementById("pid").textContent = partnerId;
    const badge = document.getElementById("status");
    badge.textContent = "no such partner";
    badge.className = "badge status-missing";
    badge.hidden = false;
    document.getElementById("missing-text").textContent =
      `There is no partner ${partnerId}: none is registered under that id, and no mail was counted under it.`;
    showPart(false);
  }

  // What is true of the partner, each in its own colour: paused (and by whom), the
  // policy's verdict on its rates now (paused or not), or that it has no profile.
  function verdictLines(p) {
    const lines = [];
    if (p.status === "paused") {
      const by = { operator: "by the operator", policy: "by the policy" }[p.paused_by] || "";
      lines.push(
        el(
          "p",
          { class: "verdict level-paused", "data-kind": "paused" },
          el("strong", { text: by ? `Paused ${by}` : "Paused" }),
          p.paused_reason ? el("span", { class: "reason", text: `: ${p.paused_reason}` }) : null,
        ),
      );
    }
    if (!p.registered) {
      lines.push(
        el(
          "p",
          { class: "verdict level-low", "data-kind": "unregistered" },
          el("strong", { text: "Not registered" }),
          el("span", { text: ": mail was counted under this id, but it has no profile (no contact, no limits of its own), so there is nothing to act on here. Add it with " }),
          el("code", { text: "sesguard partners add" }),
          el("span", { text: "." }),
        ),
      );
    }
    lines.push(
      el(
        "p",
        { class: `verdict level-${p.verdict_level}`, "data-kind": "policy" },
        el("strong", { text: `policy verdict now: ${p.verdict}` }),
        p.verdict_reason ? el("span", { text: `: ${p.verdict_reason}` }) : null,
      ),
    );
    return lines;
  }

  function render(detail) {
    const p = detail.partner;
    document.title = `sesguard · ${p.partner_id}`;
    document.getElementById("pid").textContent = p.partner_id;
    const badge = document.getElementById("status");
    badge.textContent = statusText(p);
    badge.className = `badge status-${p.status}`;
    badge.hidden = false;
    showPart(true);
    document.getElementById("verdict").replaceChildren(...verdictLines(p));

    const lim = p.limits;
    const facts = [
      ...fact("contact", p.contact_email || "–"),
      ...fact("limits", `bounce ${pct(lim.bounce_rate)}, complaint ${pct(lim.complaint_rate, 3)}, min volume ${count(lim.min_volume, "judged send")}, warn at ${percent(lim.warn_ratio)}% of a limit`),
      ...fact("max rate", rateUse(p.throttle)),
      ...fact("daily quota", quotaUse(p.throttle)),
      ...fact("held jobs", String(p.held_jobs)),
    ];
    for (const w of p.windows) {
      facts.push(...fact(`last ${span(w.hours)}`, `${w.sent} sent, ${w.judged_sends} judged, ${count(w.hard_bounces, "hard bounce")} (${pct(w.bounce_rate)}), ${count(w.complaints, "complaint")} (${pct(w.complaint_rate, 3)})`));
    }
    if (p.status === "paused") {
      facts.push(...fact("paused", `${when(p.paused_at)} by ${p.paused_by || "?"}: ${p.paused_reason || ""}`));
    }
    if (p.resumed_at) facts.push(...fact("last resumed", when(p.resumed_at)));
    document.getElementById("facts").replaceChildren(...facts);

    document.getElementById("show-text").textContent = detail.text;
    const events = detail.events.length
      ? detail.events.map((e) =>
          el(
            "li",
            { class: e.marker ? `event-${e.marker}` : "" },
            el("time", { datetime: e.at, text: when(e.at) }),
            el("span", { class: "event-type", text: ` ${e.type}` }),
            e.actor ? el("span", { text: ` by ${e.actor}` }) : null,
            e.reason ? el("span", { class: "reason", text: `: ${e.reason}` }) : null,
          ),
        )
      : [el("li", { class: "muted", text: "none" })];
    document.getElementById("events").replaceChildren(...events);
    renderActions(p);
    drawCharts(detail);
  }

  // The throttle with its use, in the words of `sesguard partners show`: the rates are
  // counted from SES's Send events (they lag by the Firehose buffer), today's sends by the
  // senders against the quota.
  function rateUse(th) {
    const cap = th.max_rate === null ? "no cap" : `${th.max_rate} sends/s`;
    return `${cap} (sending ${th.rate_this_hour}/s this hour, ${th.rate_last_hour}/s last hour)`;
  }

  function quotaUse(th) {
    return th.daily_quota === null ? "no cap" : `${th.quota_used} of ${th.daily_quota} today (UTC)`;
  }

  function renderActions(p) {
    document.getElementById("actions").hidden = !p.registered;
    const paused = p.status === "paused";
    document.getElementById("pause-form").hidden = paused;
    const resume = document.getElementById("resume-form");
    resume.hidden = !paused && p.held_jobs === 0;
    document.getElementById("resume-title").textContent = paused ? "Resume" : `Held jobs (${p.held_jobs})`;
    document.getElementById("resume-button").textContent = paused ? "Resume…" : "Release held jobs…";
    const keep = resume.querySelector('input[value="keep"]');
    keep.closest("label").hidden = !paused;
    if (p.status !== shownStatus) {
      // The safe default for each state, as on the command line: resume keeps held jobs;
      // an active partner's held jobs can only be replayed or discarded.
      resume.querySelector(`input[value="${paused ? "keep" : "replay"}"]`).checked = true;
      shownStatus = p.status;
    }
    showLimits(p, false);
  }

  // ---- the limits form: the current limits as the fields' values, in percent (the API
  // speaks fractions, as the command line does: 0.05 = 5%)

  // `cap`: a throttle field (from the partner's `throttle`), empty for no cap, sent as
  // typed ("none" when emptied); the API checks it, in the CLI's words.
  const LIMITS = [
    { name: "bounce_limit", key: "bounce_rate", label: "bounce limit", percent: true, max: 100 },
    { name: "complaint_limit", key: "complaint_rate", label: "complaint limit", percent: true, max: 100 },
    { name: "min_volume", key: "min_volume", label: "min volume", percent: false },
    { name: "warn_ratio", key: "warn_ratio", label: "warn level", percent: true, max: 100, below: true },
    { name: "max_rate", key: "max_rate", label: "max rate", cap: true, unit: " sends/s" },
    { name: "daily_quota", key: "daily_quota", label: "daily quota", cap: true, unit: " sends per UTC day" },
  ];

  // 0.05 -> "5", 0.001 -> "0.1" (12 significant digits: no 0.07 * 100 = 7.000000000000001)
  function percent(fraction) {
    return String(Number((fraction * 100).toPrecision(12)));
  }

  // "5" -> "0.05", sent as text like the command line's options (the API checks it again)
  function fraction(percentValue) {
    return String(Number((percentValue / 100).toPrecision(12)));
  }

  // Each field shows its current value unless the operator is editing it (then the page's
  // refresh leaves it alone); `force` (after an action) shows the current values again.
  function showLimits(p, force) {
    for (const f of LIMITS) {
      const input = document.getElementById(f.name);
      const value = f.cap ? p.throttle[f.key] : p.limits[f.key];
      const now = f.cap && value === null ? "" : f.percent ? percent(value) : String(value);
      // ("current" may be "": no cap; only a field never filled counts as new)
      if (force || !("current" in input.dataset) || input.value === input.dataset.current) input.value = now;
      input.dataset.current = now;
    }
  }

  // The fields the operator changed: {body, changes} or {error}.
  function changedLimits() {
    const body = {};
    const changes = [];
    for (const f of LIMITS) {
      const input = document.getElementById(f.name);
      const text = input.value.trim().replace(/\s*%$/, "");
      if (f.cap) {
        if (text === input.dataset.current) continue;
        if (text && input.dataset.current && Number(text) === Number(input.dataset.current)) continue;
        const was = input.dataset.current ? `${input.dataset.current}${f.unit}` : "no cap";
        body[f.name] = text || "none";
        changes.push(`${f.label}: ${was} → ${text ? `${text}${f.unit}` : "no cap"}`);
        continue;
      }
      const unit = f.percent ? "%" : "";
      if (!text) return { error: `${f.label}: give a value (it is ${input.dataset.current}${unit} now)` };
      if (text === input.dataset.current) continue;
      if (!f.percent) {
        body[f.name] = text; // the API refuses anything but a whole number, in the CLI's words
        changes.push(`${f.label}: ${input.dataset.current} → ${text}`);
        continue;
      }
      const value = Number(text);
      if (!/^\d*\.?\d+$|^\d+\.$/.test(text) || !(value > 0 && (f.below ? value < f.max : value <= f.max))) {
        const range = f.below ? `above 0 and below ${f.max}` : `above 0, at most ${f.max}`;
        return { error: `${f.label}: ${text} is not a percentage ${range} (5 = 5%)` };
      }
      if (value === Number(input.dataset.current)) continue;
      body[f.name] = fraction(value);
      const of = f.name === "warn_ratio" ? " of the limit" : "";
      changes.push(`${f.label}: ${input.dataset.current}% → ${value}%${of}`);
    }
    return { body, changes };
  }

  // A modal question; resolves true only on "Confirm".
  function confirmAction(text, okLabel) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = okLabel;
    return new Promise((resolve) => {
      const done = (answer) => {
        dialog.close();
        resolve(answer);
      };
      document.getElementById("confirm-ok").onclick = () => done(true);
      document.getElementById("confirm-cancel").onclick = () => done(false);
      dialog.oncancel = () => resolve(false);
      dialog.showModal();
    });
  }

  // The outcome of an action, above the forms (a live region: screen readers say it).
  function showResult(text, isError) {
    const result = document.getElementById("result");
    result.hidden = false;
    result.className = isError ? "result error" : "result";
    result.textContent = text;
    result.scrollIntoView({ block: "nearest" });
  }

  async function act(question, okLabel, path, body) {
    if (!(await confirmAction(question, okLabel))) return false;
    let ok = false;
    const buttons = document.querySelectorAll("#actions button");
    buttons.forEach((b) => (b.disabled = true));
    showResult("working…", false);
    try {
      const answer = await api(`/api/partners/${encodeURIComponent(partnerId)}/${path}`, body);
      showResult(answer.lines.join("\n") || "done", false);
      ok = true;
    } catch (err) {
      showResult(err.message, true);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
    await load();
    return ok;
  }

  document.getElementById("pause-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reason = document.getElementById("pause-reason").value;
    const notify = document.getElementById("pause-notify").checked;
    const question =
      `Pause partner ${partnerId}? Its jobs will be held until it is resumed.\n\n` +
      (notify ? `Its contact gets a notice quoting the reason:\n“${reason.trim()}”` : `No notice is sent. Reason: “${reason.trim()}”`);
    act(question, "Pause", "pause", { reason, notify });
  });

  document.getElementById("resume-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const held = document.querySelector('#resume-form input[name="held"]:checked').value;
    const n = current ? current.partner.held_jobs : 0;
    const paused = current && current.partner.status === "paused";
    const jobs = count(n, "held job");
    const what = {
      keep: `${jobs} ${word(n, "stays", "stay")} held.`,
      replay: `${jobs} ${word(n, "is", "are")} sent, in the order they were held (this takes a few seconds).`,
      discard: `${jobs} ${word(n, "is", "are")} deleted and never sent (this takes a few seconds).`,
    }[held];
    const question = paused ? `Resume partner ${partnerId}? ${what}` : `Partner ${partnerId}: ${what}`;
    act(question, paused ? "Resume" : "Release", "resume", { held });
  });

  document.getElementById("limits-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const { body, changes, error } = changedLimits();
    if (error || !changes.length) {
      showResult(error || "nothing to change: change at least one field", true);
      return;
    }
    act(`Set limits of partner ${partnerId}?\n\n${changes.join("\n")}`, "Set limits", "limits", body).then((ok) => {
      if (ok && current) showLimits(current.partner, true);
    });
  });

  async function load() {
    try {
      current = await api(`/api/partners/${encodeURIComponent(partnerId)}`);
      showError("");
      stamp(current.now);
      render(current);
      document.body.dataset.loaded = "true";
    } catch (err) {
      if (err.status !== 404) {
        showError(`Could not load partner ${partnerId}: ${err.message}`);
        return;
      }
      current = null;
      showError("");
      showMissing();
      document.body.dataset.loaded = "true";
    }
  }

  document.getElementById("range").addEventListener("change", () => {
    if (current) drawCharts(current);
  });
  load();
  setInterval(load, REFRESH_MS);
})();
