// Petrel dashboard: live updates through central's event stream, the alarm
// banner on every page and the alarms page.
// No framework, no inline script (the page's CSP forbids it), and API data
// only ever reaches the page as text (textContent), never as HTML.
"use strict";
(function () {
  const body = document.body;
  const page = body.dataset.page;
  const fleet = body.dataset.fleet === "true"; // central: fleet pages, event stream, site column
  const canAct = body.dataset.canAct === "true"; // operator and up: action buttons
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const live = document.getElementById("live");
  const SEVERITIES = ["critical", "major", "minor", "warning"];

  function text(el, v) { if (el) { el.textContent = v === undefined || v === null || v === "" ? "-" : String(v); } }
  function cell(v) { const td = document.createElement("td"); text(td, v); return td; }
  function messageRow(tb, msg, cls) {
    const tr = document.createElement("tr");
    tr.className = cls;
    const td = cell(msg);
    td.colSpan = tb.closest("table").querySelectorAll("thead th").length;
    tr.appendChild(td);
    tb.replaceChildren(tr);
  }

  // api calls the daemon's REST API with the session cookie; a state change
  // carries the session's CSRF token. A 401 from the daemon itself means
  // the session ended (one relayed from a site is that site's answer).
  async function api(method, path) {
    const headers = {};
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrf;
    // A hung call must not stall the banner's poll for long.
    const r = await fetch(path, { method, headers, credentials: "same-origin", signal: AbortSignal.timeout(10000) });
    if (r.status === 401 && !path.startsWith("/v1/subclouds/")) {
      location.assign("/ui/login");
      throw new Error("the session ended");
    }
    let out = null;
    if (r.status !== 204) {
      try { out = await r.json(); } catch (e) { out = null; }
    }
    if (!r.ok) throw new Error(out && out.error ? out.error.message : r.status + " " + r.statusText);
    return out;
  }

  // --- Fleet page (central) -------------------------------------------

  function fleetRow(sc) {
    const tb = document.querySelector("#fleet tbody");
    if (!tb) return;
    const empty = tb.querySelector("tr.empty");
    if (empty) empty.remove();
    let tr = tb.querySelector('tr[data-name="' + CSS.escape(sc.name) + '"]');
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.name = sc.name;
      const a = document.createElement("a");
      a.href = "/ui/sites/" + encodeURIComponent(sc.name);
      a.textContent = sc.name;
      const first = document.createElement("td");
      first.appendChild(a);
      tr.append(first, cell(sc.shape), cell(), cell(sc.management), cell(), cell(), cell());
      tr.children[2].dataset.field = "availability";
      tr.children[4].dataset.field = "status";
      tr.children[5].dataset.field = "hosts";
      tr.children[6].dataset.field = "last_seen";
      tb.appendChild(tr);
    }
    const f = (name) => tr.querySelector('[data-field="' + name + '"]');
    text(f("availability"), sc.availability); f("availability").className = sc.availability;
    text(f("status"), sc.status); f("status").className = sc.status;
    text(f("hosts"), sc.hosts ? sc.hosts.total : 0);
    text(f("last_seen"), sc.last_seen);
    recount();
  }

  function recount() {
    const counts = { critical: 0, degraded: 0, ok: 0, offline: 0 };
    document.querySelectorAll('#fleet [data-field="status"]').forEach((td) => {
      if (td.textContent in counts) counts[td.textContent]++;
    });
    for (const k in counts) text(document.querySelector('[data-count="' + k + '"]'), counts[k]);
  }

  // --- Site page: hosts, directly at a site, through the relay at central --

  async function loadHosts() {
    const tb = document.querySelector("#hosts tbody");
    try {
      const out = await api("GET", body.dataset.hosts);
      if (!out.items.length) { messageRow(tb, "No hosts.", "empty"); return; }
      tb.replaceChildren();
      for (const h of out.items) {
        const tr = document.createElement("tr");
        tr.dataset.name = h.name;
        tr.append(cell(h.name), cell(h.personality), cell(h.administrative), cell(h.operational), cell(h.availability), cell(h.uptime_s));
        tb.appendChild(tr);
      }
    } catch (e) {
      messageRow(tb, (fleet ? "Cannot reach the site: " : "Cannot list hosts: ") + e.message, "error");
    }
  }

  // --- Alarm banner (every page) ----------------------------------------
  // It polls GET /v1/alarms/summary every second while the page is visible:
  // the summary API exists on both daemons (central's event stream does not).

  const POLL_MS = 1000;
  let lastSummary = "";
  let pollTimer = null;
  let polling = false;

  function showSummary(sum) {
    const banner = document.getElementById("alarm-banner");
    if (!banner) return;
    let worst = "none";
    for (const sev of SEVERITIES) {
      const n = Number(sum[sev]) || 0;
      const b = banner.querySelector('[data-alarm-count="' + sev + '"]');
      text(b, n);
      if (b) b.parentElement.classList.toggle("zero", n === 0);
      if (n > 0 && worst === "none") worst = sev;
    }
    banner.dataset.worst = worst;
  }

  function bannerState(msg) {
    const el = document.getElementById("alarm-banner-state");
    if (el) el.textContent = msg;
  }

  async function poll() {
    pollTimer = null;
    if (polling || document.hidden) return; // visibilitychange restarts it
    polling = true;
    try {
      const sum = await api("GET", "/v1/alarms/summary");
      const key = JSON.stringify(sum);
      const changed = key !== lastSummary;
      lastSummary = key;
      showSummary(sum);
      bannerState("");
      if (!fleet) text(live, "live");
      if (page === "alarms" && (changed || Date.now() - listLoadedAt >= LIST_MAX_AGE_MS)) await loadAlarms();
    } catch (e) {
      bannerState("(not current: " + e.message + ")");
      if (!fleet) text(live, "reconnecting…");
    } finally {
      polling = false;
    }
    schedulePoll(POLL_MS);
  }

  function schedulePoll(ms) {
    if (pollTimer !== null) clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, ms);
  }

  // --- Alarms page ------------------------------------------------------
  // The page's URL holds its filters (the form submits with GET) and its
  // page token; the rows come from GET /v1/alarms, newest first. The list
  // refreshes when the summary changes and at least every few seconds
  // (an acknowledgement elsewhere changes no count).

  const LIST_MAX_AGE_MS = 3000;
  let listLoadedAt = 0;
  let listKey = "";
  let listEpoch = 0; // bumped by actions: an answer from before one is stale
  let acting = 0;
  const shown = new Map(); // uuid -> alarm as last rendered

  function alarmQuery() {
    const p = new URLSearchParams(location.search);
    const q = new URLSearchParams();
    const sev = (p.get("severity") || "").trim();
    if (sev) q.set("severity", sev);
    const id = (p.get("alarm_id") || "").trim();
    if (id) q.set("alarm_id", id);
    const ent = (p.get("entity") || "").trim();
    if (ent) q.set("entity_instance_id", ent);
    if (fleet) {
      const site = p.get("site") || "";
      if (site === "-") q.set("site", ""); // central's own alarms
      else if (site) q.set("site", site);
    }
    if (p.get("suppressed") !== "include") q.set("suppressed", "false");
    q.set("limit", p.get("limit") || "50");
    if (p.get("page_token")) q.set("page_token", p.get("page_token"));
    return q;
  }

  function filtered() {
    const p = new URLSearchParams(location.search);
    return ["severity", "alarm_id", "entity", "site"].some((k) => p.get(k));
  }

  function pager(next) {
    const p = new URLSearchParams(location.search);
    const first = document.getElementById("first-page");
    const older = document.getElementById("next-page");
    const hadToken = p.has("page_token");
    p.delete("page_token");
    first.href = "/ui/alarms" + (p.toString() ? "?" + p.toString() : "");
    first.hidden = !hadToken;
    if (next) {
      p.set("page_token", next);
      older.href = "/ui/alarms?" + p.toString();
    }
    older.hidden = !next;
  }

  function when(ts) {
    const d = new Date(ts);
    return isNaN(d) ? ts : d.toISOString().slice(0, 19).replace("T", " ");
  }

  function alarmRow(a) {
    const tr = document.createElement("tr");
    tr.dataset.uuid = a.uuid;
    tr.dataset.alarmId = a.alarm_id;
    const sevKnown = SEVERITIES.includes(a.severity);
    const sev = cell(a.severity);
    sev.dataset.field = "severity";
    if (sevKnown) sev.className = "sev " + a.severity;
    if (a.suppressed) {
      tr.className = "suppressed";
      const tag = document.createElement("small");
      tag.textContent = " suppressed";
      sev.appendChild(tag);
    }
    const reason = cell(a.reason_text);
    reason.dataset.field = "reason";
    if (a.proposed_repair_action) reason.title = "Repair: " + a.proposed_repair_action;
    tr.append(sev, cell(a.alarm_id), cell(a.entity_instance_id), reason);
    if (fleet) {
      const site = cell(a.site || "central");
      site.dataset.field = "site";
      tr.appendChild(site);
    }
    const t = document.createElement("time");
    t.dateTime = a.timestamp;
    t.textContent = when(a.timestamp);
    const tc = document.createElement("td");
    tc.appendChild(t);
    const acked = cell(a.acked_by);
    acked.dataset.field = "acked_by";
    if (a.acked_at) acked.title = "at " + a.acked_at;
    tr.append(tc, acked);
    if (canAct) {
      const td = document.createElement("td");
      td.className = "actions";
      if (!a.acked_by) td.appendChild(button("ack", "Ack", "Acknowledge: record that you are on it"));
      td.appendChild(button("clear", "Clear", "Clear (delete) the alarm"));
      tr.appendChild(td);
    }
    return tr;
  }

  function button(action, label, title) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.action = action;
    b.textContent = label;
    b.title = title;
    return b;
  }

  async function loadAlarms() {
    const tb = document.querySelector("#alarms tbody");
    if (!tb || acting) return;
    const epoch = listEpoch;
    let out;
    try {
      out = await api("GET", "/v1/alarms?" + alarmQuery().toString());
    } catch (e) {
      if (epoch !== listEpoch) return;
      listKey = "";
      messageRow(tb, "Cannot list alarms: " + e.message, "error");
      return;
    }
    if (epoch !== listEpoch || acting) return; // an action happened meanwhile: its own refresh follows
    listLoadedAt = Date.now();
    const key = JSON.stringify(out);
    if (key === listKey) return;
    listKey = key;
    shown.clear();
    if (!out.items.length) {
      messageRow(tb, filtered() ? "No active alarms match these filters." : "No active alarms.", "empty");
    } else {
      tb.replaceChildren(...out.items.map((a) => { shown.set(a.uuid, a); return alarmRow(a); }));
    }
    pager(out.next_page_token);
  }

  // alarmPath is where an alarm is acted on. At central a site's alarm
  // belongs to that site: the call goes there through central's relay,
  // and the site checks the caller's role.
  function alarmPath(a) {
    const base = fleet && a.site ? "/v1/subclouds/" + encodeURIComponent(a.site) + "/api" : "";
    return base + "/v1/alarms/" + encodeURIComponent(a.uuid);
  }

  function status(msg, isError) {
    const el = document.getElementById("alarm-status");
    if (!el) return;
    el.textContent = msg;
    el.classList.toggle("error", !!isError);
  }

  async function act(action, a, tr) {
    const what = a.alarm_id + " on " + a.entity_instance_id + (fleet && a.site ? " at " + a.site : "");
    if (action === "clear" && !confirm("Clear alarm " + what + "?")) return;
    acting++;
    listEpoch++;
    tr.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      if (action === "ack") {
        await api("POST", alarmPath(a) + "/ack");
        status("Acknowledged " + what + ".");
      } else {
        await api("DELETE", alarmPath(a));
        status("Cleared " + what + ".");
      }
    } catch (e) {
      status((action === "ack" ? "Could not acknowledge " : "Could not clear ") + what + ": " + e.message, true);
      tr.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    } finally {
      acting--;
      listEpoch++;
      listKey = "";
    }
    await loadAlarms();
    schedulePoll(0); // the banner follows at once
  }

  function wireAlarms() {
    const table = document.getElementById("alarms");
    table.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action]");
      if (!b || !canAct) return;
      const tr = b.closest("tr");
      const a = shown.get(tr.dataset.uuid);
      if (a) act(b.dataset.action, a, tr);
    });
  }

  // --- Start ------------------------------------------------------------

  if (page === "login") { text(live, ""); return; }
  if (page === "site") loadHosts();
  if (page === "alarms") wireAlarms();
  document.addEventListener("visibilitychange", () => { if (!document.hidden) schedulePoll(0); });
  schedulePoll(0);

  if (!fleet) return; // only central has the event stream
  const es = new EventSource("/v1/stream");
  es.onopen = () => text(live, "live");
  es.onerror = () => text(live, "reconnecting…");
  es.addEventListener("reset", () => location.reload());
  es.addEventListener("subcloud", (e) => {
    const sc = JSON.parse(e.data);
    if (page === "fleet") fleetRow(sc);
    if (page === "site" && sc.name === body.dataset.site) loadHosts();
  });
  es.addEventListener("subcloud-deleted", (e) => {
    const { name } = JSON.parse(e.data);
    const tr = document.querySelector('#fleet tr[data-name="' + CSS.escape(name) + '"]');
    if (tr) { tr.remove(); recount(); }
  });
})();
