// The partners page: every partner with its rates against its limits; sortable,
// filterable by status, refreshed every 10 s.
"use strict";

(() => {
  const { api, el, count, statusText, pct, span, showError, stamp } = sesguard;
  const REFRESH_MS = 10000;
  const state = { rows: [], windows: [], sortKey: "level", sortDesc: true, filter: "" };
  const LEVEL_ORDER = { paused: 3, over: 2, warn: 1, ok: 0 };

  function columns() {
    const cols = [
      { key: "partner_id", label: "Partner", value: (r) => r.partner_id },
      { key: "status", label: "Status", value: (r) => r.status },
      { key: "level", label: "Verdict", value: (r) => LEVEL_ORDER[r.level] },
    ];
    for (const metric of ["bounce", "complaint"]) {
      for (const [i, hours] of state.windows.entries()) {
        cols.push({
          key: `${metric}:${hours}`,
          label: `${metric === "bounce" ? "Bounce" : "Complaint"} ${span(hours)}`,
          num: true,
          value: (r) => rateOf(r, i, metric),
          cell: (r) => rateCell(r, i, metric),
        });
      }
    }
    for (const [i, hours] of state.windows.entries()) {
      cols.push({
        key: `sent:${hours}`,
        label: `Sends ${span(hours)}`,
        num: true,
        value: (r) => (r.windows[i] ? r.windows[i].sent : 0),
      });
    }
    cols.push({ key: "held_jobs", label: "Held jobs", num: true, value: (r) => r.held_jobs });
    cols.push({
      key: "rate",
      label: "Sends/s",
      num: true,
      value: (r) => r.throttle.rate_this_hour,
      cell: (r) => capCell(r.throttle.rate_this_hour, r.throttle.max_rate, `sends/s this hour (${r.throttle.rate_last_hour}/s last hour), from SES's Send events`),
    });
    cols.push({
      key: "quota",
      label: "Today (UTC)",
      num: true,
      value: (r) => r.throttle.quota_used,
      cell: (r) => capCell(r.throttle.quota_used, r.throttle.daily_quota, "sends today (UTC) against the daily quota"),
    });
    return cols;
  }

  // "0.4 / 5": the use and the cap ("–": no cap).
  function capCell(used, cap, what) {
    const title = `${used} ${what}; ${cap === null ? "no cap" : `cap ${cap}`}`;
    return el(
      "td",
      { class: "num", title },
      el("span", { class: "rate", text: String(used) }),
      el("span", { class: "limit", text: ` / ${cap === null ? "–" : cap}` }),
    );
  }

  function rateOf(row, i, metric) {
    const w = row.windows[i];
    return w ? w[`${metric}_rate`] : null;
  }

  function rateCell(row, i, metric) {
    const w = row.windows[i];
    const limit = row.limits[`${metric}_rate`];
    const level = w ? w[`${metric}_level`] : "none";
    const n = w ? w[metric === "bounce" ? "hard_bounces" : "complaints"] : 0;
    const judged = w ? w.judged_sends : 0;
    let title = `${n} of ${count(judged, "judged send")}; limit ${pct(limit)}, warn from ${pct(limit * row.limits.warn_ratio)}`;
    if (level === "low") title += `; not judged yet: fewer than ${count(row.limits.min_volume, "judged send")}`;
    return el(
      "td",
      { class: `num cell-${level}`, title },
      el("span", { class: "rate", text: pct(w ? w[`${metric}_rate`] : null) }),
      el("span", { class: "limit", text: ` / ${pct(limit, limit < 0.01 ? 2 : 0)}` }),
    );
  }

  function render() {
    const cols = columns();
    const head = document.querySelector("#partners thead tr");
    head.replaceChildren(
      ...cols.map((c) => {
        const arrow = c.key === state.sortKey ? (state.sortDesc ? " ▼" : " ▲") : "";
        const th = el("th", { class: c.num ? "num sortable" : "sortable", text: c.label + arrow, "data-key": c.key, scope: "col" });
        th.addEventListener("click", () => {
          state.sortDesc = state.sortKey === c.key ? !state.sortDesc : c.key !== "partner_id";
          state.sortKey = c.key;
          render();
        });
        return th;
      }),
    );
    const col = cols.find((c) => c.key === state.sortKey) || cols[0];
    const rows = state.rows.filter((r) => !state.filter || r.status === state.filter);
    rows.sort((a, b) => compare(col.value(a), col.value(b), state.sortDesc) || a.partner_id.localeCompare(b.partner_id));
    const body = document.querySelector("#partners tbody");
    body.replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          { class: `level-${r.level}`, "data-partner": r.partner_id },
          el("td", {}, el("a", { href: `/partners/${encodeURIComponent(r.partner_id)}`, text: r.partner_id })),
          el("td", {}, el("span", { class: `badge status-${r.status}`, text: statusText(r), title: r.paused_reason || undefined })),
          el("td", { class: `verdict-cell level-${r.level}`, text: verdictWord(r), title: r.verdict_reason || undefined }),
          ...cols.slice(3).map((c) => (c.cell ? c.cell(r) : el("td", { class: "num", text: c.value(r) }))),
        ),
      ),
    );
    document.getElementById("empty").hidden = rows.length > 0;
    const paused = state.rows.filter((r) => r.status === "paused").length;
    document.getElementById("counts").textContent = `${count(state.rows.length, "partner")}, ${paused} paused`;
  }

  function verdictWord(r) {
    return { paused: "paused", over: "over a limit", warn: "warn", ok: "ok" }[r.level];
  }

  function compare(a, b, desc) {
    const missingA = a === null || a === undefined;
    const missingB = b === null || b === undefined;
    if (missingA || missingB) return missingA === missingB ? 0 : missingA ? 1 : -1; // last
    const order = typeof a === "string" ? a.localeCompare(b) : a - b;
    return desc ? -order : order;
  }

  async function refresh() {
    try {
      const data = await api("/api/partners");
      state.rows = data.partners;
      state.windows = data.windows;
      showError("");
      stamp(data.now);
      render();
    } catch (err) {
      showError(`Could not load partners: ${err.message}`);
    }
  }

  document.getElementById("status-filter").addEventListener("change", (event) => {
    state.filter = event.target.value;
    render();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
