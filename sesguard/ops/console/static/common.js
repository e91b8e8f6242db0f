// sesguard console: what both pages share. Partner-supplied text (ids, reasons,
// contacts) only ever reaches the page as text (textContent, attribute values): no HTML
// is built from strings anywhere (the server's Content-Security-Policy enforces it with
// Trusted Types).
"use strict";

const sesguard = (() => {
  const token = document.querySelector('meta[name="sesguard-token"]').content;

  async function api(path, body) {
    const init = {
      method: body === undefined ? "GET" : "POST",
      headers: { "X-Sesguard-Token": token },
      credentials: "same-origin",
      cache: "no-store",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new Error("the console does not answer (was `sesguard console` stopped?)");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      throw new Error(`HTTP ${response.status}`);
    }
    if (!response.ok) {
      const err = new Error(data && data.error ? data.error : `HTTP ${response.status}`);
      err.status = response.status; // 404: no such partner
      throw err;
    }
    return data;
  }

  // el("td", {class: "num", text: "5%", title: "..."}, child, ...): text only, never HTML.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  // The word for a count: word(1, "complaint") -> "complaint", word(2, "complaint") ->
  // "complaints", word(2, "stays", "stay") -> "stay". count(n, ...) puts the number first:
  // count(1, "complaint") -> "1 complaint". Every count with a noun goes through these.
  function word(n, singular, plural) {
    return n === 1 ? singular : plural || `${singular}s`;
  }

  function count(n, singular, plural) {
    return `${n} ${word(n, singular, plural)}`;
  }

  // A partner's status as both pages show it: who paused it, when it is paused.
  function statusText(p) {
    return p.status === "paused" && p.paused_by ? `paused (${p.paused_by})` : p.status;
  }

  function pct(rate, digits) {
    if (rate === null || rate === undefined) return "–";
    return `${(rate * 100).toFixed(digits === undefined ? 2 : digits)}%`;
  }

  // 24 -> "24 h", 168 -> "7 d" (the windows' names, as the CLI spells them; a no-break
  // space, so a column heading wraps before the number, never inside "24 h")
  function span(hours) {
    return hours % 24 === 0 && hours > 24 ? `${hours / 24}\u00a0d` : `${hours}\u00a0h`;
  }

  function showError(message) {
    const node = document.getElementById("error");
    node.textContent = message || "";
    node.hidden = !message;
  }

  function stamp(iso) {
    const node = document.getElementById("updated");
    if (node) node.textContent = `updated ${new Date(iso).toISOString().slice(11, 19)} UTC`;
  }

  return { api, el, word, count, statusText, pct, span, showError, stamp };
})();
