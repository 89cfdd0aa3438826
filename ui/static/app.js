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
  // putRows makes tb show rows, keeping the rows it already has where they
  // look the same but for their text: those get the new text in place, so a
  // table refreshed every second neither loses a click in progress nor
  // the keyboard focus. Rows are keyed by data-uuid, data-id or data-name.
  const rowKey = (tr) => tr.dataset.uuid || tr.dataset.id || tr.dataset.name || (tr.dataset.inv ? tr.dataset.inv + "#inventory" : "");
  const shape = (tr) => [...tr.children].map((td) => [...td.querySelectorAll("[data-action]")].map((b) => b.dataset.action + ":" + b.textContent).join(",")).join("|");
  function putRows(tb, rows) {
    const old = new Map();
    for (const tr of tb.children) { const k = rowKey(tr); if (k) old.set(k, tr); }
    const out = rows.map((tr) => {
      const prev = old.get(rowKey(tr));
      if (!prev || prev.children.length !== tr.children.length || shape(prev) !== shape(tr) || prev.className !== tr.className) return tr;
      [...tr.children].forEach((td, i) => {
        const p = prev.children[i];
        if (p.className !== td.className) p.className = td.className;
        if (p.title !== td.title) p.title = td.title;
        if (td.querySelector("[data-action]")) {
          td.querySelectorAll("[data-action]").forEach((b, j) => {
            const pb = p.querySelectorAll("[data-action]")[j];
            if (pb.getAttribute("aria-expanded") !== b.getAttribute("aria-expanded")) pb.setAttribute("aria-expanded", b.getAttribute("aria-expanded"));
          });
        } else if (p.textContent !== td.textContent || p.children.length || td.children.length) {
          if (p.isEqualNode(td)) return;
          p.replaceChildren(...td.childNodes);
        }
      });
      return prev;
    });
    const same = out.length === tb.children.length && out.every((tr, i) => tb.children[i] === tr);
    if (!same) tb.replaceChildren(...out);
  }

  // keepFocus runs render, which rebuilds the rows of tb, and puts the
  // keyboard focus back on the same control of the same row if it was in
  // tb: a table refreshed every second must not take the focus away.
  function keepFocus(tb, render) {
    const el = document.activeElement;
    const tr = el && tb.contains(el) ? el.closest("tr") : null;
    const key = tr ? tr.dataset.uuid || tr.dataset.id || tr.dataset.name : null;
    const action = el && el.dataset ? el.dataset.action : null;
    render();
    if (!key || !action) return;
    for (const row of tb.querySelectorAll("tr")) {
      if ((row.dataset.uuid || row.dataset.id || row.dataset.name) === key) {
        const b = row.querySelector('[data-action="' + CSS.escape(action) + '"]');
        if (b) b.focus();
        return;
      }
    }
  }
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
  let leaving = false; // on the way to the login page
  async function api(method, path, payload) {
    const headers = {};
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrf;
    let bodyText;
    if (payload !== undefined) { headers["Content-Type"] = "application/json"; bodyText = JSON.stringify(payload); }
    // A hung call must not stall the banner's poll for long.
    const r = await fetch(path, { method, headers, body: bodyText, credentials: "same-origin", signal: AbortSignal.timeout(10000) });
    // A relayed 401 may be the site's answer or central's (the session
    // ended): ask central, whose 401 then sends the browser to log in.
    if (r.status === 401 && path.startsWith("/v1/subclouds/")) await api("GET", "/v1/alarms/summary");
    if (r.status === 401 && !path.startsWith("/v1/subclouds/")) {
      if (!leaving) { leaving = true; location.assign("/ui/login"); } // once, whichever call saw it first
      throw new Error("the session ended");
    }
    let out = null;
    if (r.status !== 204) {
      try { out = await r.json(); } catch (e) { out = null; }
    }
    if (!r.ok) {
      const err = new Error(out && out.error ? out.error.message : r.status + " " + r.statusText);
      err.status = r.status;
      throw err;
    }
    return out;
  }

  // --- Fleet page (central) -------------------------------------------
  // The server filters, searches and pages: the page holds at most one
  // page of rows (100 by default) however large the fleet. A filter change
  // fetches /ui/fleet.json and updates the rows in place; a stream event
  // updates its row if shown, and at most once a second the view is
  // fetched again for the counts and for rows that entered or left it.

  const ALARM_KEYS = ["critical", "major", "minor", "warning"];
  function alarmText(s) { s = s || {}; return ALARM_KEYS.map((k) => Number(s[k]) || 0).join("/"); }
  // overallSync mirrors the server's: out-of-sync if any resource is,
  // in-sync if all are, else unknown.
  function overallSync(m) {
    if (typeof m === "string") return m;
    const v = Object.values(m || {});
    if (v.includes("out-of-sync")) return "out-of-sync";
    return v.length && v.every((x) => x === "in-sync") ? "in-sync" : "unknown";
  }
  const FLEET_FIELDS = ["shape", "availability", "management", "sync", "alarms", "status", "software", "hosts", "last_seen"];
  const CLASSED = { availability: true, sync: true, status: true };

  // fleetValues maps a row from /ui/fleet.json or a stream event (the
  // API's subcloud) to the table's fields.
  function fleetValues(sc) {
    return {
      shape: sc.shape, availability: sc.availability, management: sc.management, sync: overallSync(sc.sync),
      alarms: alarmText(sc.alarm_summary), status: sc.status, software: sc.software_version,
      hosts: typeof sc.hosts === "number" ? sc.hosts : (sc.hosts ? sc.hosts.total : 0),
      last_seen: sc.last_seen ? String(sc.last_seen).replace(/\.\d+/, "") : "-",
    };
  }

  function newFleetRow(name) {
    const tr = document.createElement("tr");
    tr.dataset.name = name;
    const a = document.createElement("a");
    a.href = "/ui/sites/" + encodeURIComponent(name);
    a.textContent = name;
    const first = document.createElement("td");
    first.appendChild(a);
    tr.appendChild(first);
    for (const f of FLEET_FIELDS) { const td = cell(); td.dataset.field = f; tr.appendChild(td); }
    return tr;
  }

  function fillFleetRow(tr, v) {
    for (const f of FLEET_FIELDS) {
      const td = tr.querySelector('[data-field="' + f + '"]');
      const val = v[f] === undefined || v[f] === null || v[f] === "" ? "-" : String(v[f]);
      if (td.textContent !== val) td.textContent = val;
      if (CLASSED[f] && td.className !== val) td.className = val;
    }
  }

  let fleetQuery = location.search;
  let fleetSeq = 0;
  let fleetTimer = null;
  let fleetLast = 0;

  function fleetParams() {
    const form = document.getElementById("fleet-filters");
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) q.set(k, String(v).trim());
    return q;
  }

  async function loadFleet(qs) {
    const seq = ++fleetSeq;
    fleetLast = Date.now();
    const asked = performance.now();
    let view;
    try {
      view = await api("GET", "/ui/fleet.json" + qs);
    } catch (e) {
      if (seq === fleetSeq) text(document.getElementById("fleet-matched"), "Cannot read the fleet: " + e.message);
      return;
    }
    if (seq !== fleetSeq) return; // a newer query answered or will
    showFleet(view, qs, asked);
  }

  // showFleet shows a view fetched at time asked. A row the stream updated
  // since is newer than the view's copy and is left as it is.
  function showFleet(view, qs, asked) {
    const t0 = performance.now();
    for (const k in view.counts) text(document.querySelector('[data-count="' + k + '"]'), view.counts[k]);
    const tb = document.querySelector("#fleet tbody");
    const old = new Map();
    for (const tr of tb.querySelectorAll("tr[data-name]")) old.set(tr.dataset.name, tr);
    const rows = view.rows.map((sc) => {
      const tr = old.get(sc.name) || newFleetRow(sc.name);
      if (!(Number(tr.dataset.eventAt) > asked)) fillFleetRow(tr, fleetValues(sc));
      return tr;
    });
    // Replace only when the order or membership changed.
    const same = rows.length === old.size && rows.every((tr, i) => tb.children[i] === tr);
    if (!same) {
      if (rows.length) tb.replaceChildren(...rows);
      else messageRow(tb, view.total ? "No subcloud matches." : "No subclouds yet.", "empty");
    }
    const m = document.getElementById("fleet-matched");
    text(m, view.matched ? "Showing " + (view.offset + 1) + "–" + (view.offset + view.rows.length) + " of " + view.matched +
      " matching (" + view.total + " subclouds)." : "0 of " + view.total + " subclouds match.");
    const prev = document.getElementById("fleet-prev");
    const next = document.getElementById("fleet-next");
    prev.hidden = !view.prev; prev.href = "/" + (view.prev || "");
    next.hidden = !view.next; next.href = "/" + (view.next || "");
    if (qs !== location.search) history.replaceState(null, "", "/" + qs);
    fleetQuery = qs;
    // For tests and the benchmark: how long the last update took, and how many there were.
    body.dataset.fleetRenderMs = (performance.now() - t0).toFixed(1);
    body.dataset.fleetShown = String(Number(body.dataset.fleetShown || 0) + 1);
  }

  // refreshFleet fetches the view again, at most once a second.
  function refreshFleet() {
    if (fleetTimer !== null) return;
    const wait = Math.max(0, 1000 - (Date.now() - fleetLast));
    fleetTimer = setTimeout(() => { fleetTimer = null; loadFleet(fleetQuery); }, wait);
  }

  function fleetEvent(sc) {
    const tr = document.querySelector('#fleet tr[data-name="' + CSS.escape(sc.name) + '"]');
    if (tr) { fillFleetRow(tr, fleetValues(sc)); tr.dataset.eventAt = String(performance.now()); }
    refreshFleet();
  }

  function wireFleet() {
    const form = document.getElementById("fleet-filters");
    let t = null;
    const go = () => {
      const q = fleetParams();
      const qs = q.toString() ? "?" + q.toString() : "";
      loadFleet(qs);
    };
    form.addEventListener("input", () => { clearTimeout(t); t = setTimeout(go, 120); });
    form.addEventListener("change", () => { clearTimeout(t); go(); });
    form.addEventListener("submit", (ev) => { ev.preventDefault(); clearTimeout(t); go(); });
    // Paging fetches the next view too (the links work without the script).
    for (const id of ["fleet-prev", "fleet-next"]) {
      document.getElementById(id).addEventListener("click", (ev) => {
        ev.preventDefault();
        loadFleet(new URL(ev.currentTarget.href).search);
      });
    }
  }

  // --- Site page: directly at a site, through central's relay at central --
  // Hosts (with inventory drill-down), VMs, service groups and the site's
  // active alarms, polled every second while the tab is visible (a site
  // has no event stream); a table is rebuilt only when its data changed.

  const siteAPI = body.dataset.api || "";
  const siteName = body.dataset.site;
  const expanded = new Set(); // hosts whose inventory is open
  const siteKeys = {};
  const siteData = { hosts: new Map(), servers: new Map() };
  let siteBusy = 0;

  function siteStatus(msg, isError) {
    const el = document.getElementById("site-status") || document.getElementById("patch-status") || document.getElementById("alarm-status");
    if (!el) return;
    el.textContent = msg;
    el.classList.toggle("error", !!isError);
  }

  async function siteTable(key, path, render) {
    const tb = document.querySelector("#" + key + " tbody");
    let out;
    try {
      out = await api("GET", siteAPI + path);
    } catch (e) {
      if (siteKeys[key] !== "error:" + e.message) {
        siteKeys[key] = "error:" + e.message;
        messageRow(tb, (fleet ? "Cannot reach the site: " : "Cannot read: ") + e.message, "error");
      }
      return;
    }
    const k = JSON.stringify(out) + "|" + [...expanded].join(",") + "|" + siteBusy;
    if (k === siteKeys[key]) return;
    siteKeys[key] = k;
    keepFocus(tb, () => render(tb, out.items || []));
  }

  function hostRows(tb, hosts) {
    siteData.hosts.clear();
    if (!hosts.length) { messageRow(tb, "No hosts.", "empty"); return; }
    const rows = [];
    for (const h of hosts) {
      siteData.hosts.set(h.uuid, h);
      const tr = document.createElement("tr");
      tr.dataset.name = h.name;
      tr.dataset.uuid = h.uuid;
      const nameTd = document.createElement("td");
      const more = button("inventory", h.name || h.uuid, "Show or hide the host's inventory");
      more.className = "link";
      more.setAttribute("aria-expanded", String(expanded.has(h.uuid)));
      nameTd.appendChild(more);
      const st = (v) => { const td = cell(v); if (v) td.className = v; return td; };
      const hb = h.heartbeat || {};
      const bmc = h.bmc || {};
      const admin = st(h.administrative); admin.dataset.field = "administrative";
      const oper = st(h.operational); oper.dataset.field = "operational";
      const avail = st(h.availability); avail.dataset.field = "availability";
      tr.append(nameTd, cell(h.personality), admin, oper, avail,
        cell(bmc.type ? bmc.type + ": " + (bmc.status || "-") : "none"), cell((hb.mgmt || "-") + " / " + (hb.cluster || "-")), cell(h.uptime_s));
      if (canAct) {
        const td = document.createElement("td");
        td.className = "actions";
        if (h.administrative === "locked") td.appendChild(button("unlock", "Unlock", "Unlock the host"));
        else td.appendChild(button("lock", "Lock", "Lock the host: its services and VMs move away"));
        if (h.personality === "controller") td.appendChild(button("swact", "Swact", "Move the active controller's services to its peer"));
        td.appendChild(button("reboot", "Reboot", "Reboot the host (it must be locked)"));
        td.appendChild(button("power-off", "Power off", "Power the host off through its BMC"));
        td.appendChild(button("power-on", "Power on", "Power the host on through its BMC"));
        tr.appendChild(td);
      }
      rows.push(tr);
      if (expanded.has(h.uuid)) rows.push(inventoryRow(h, tr.children.length));
    }
    putRows(tb, rows);
  }

  function inventoryRow(h, span) {
    const tr = document.createElement("tr");
    tr.className = "inventory";
    tr.dataset.inv = h.uuid;
    const td = document.createElement("td");
    td.colSpan = span;
    const dl = document.createElement("dl");
    const inv = h.inventory || {};
    const add = (k, v) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); text(dd, v);
      dl.append(dt, dd);
    };
    add("CPU", (inv.cpu_model || "-") + " · " + (inv.cores || 0) + " cores, " + (inv.threads || 0) + " threads, " + (inv.numa_nodes || 0) + " NUMA nodes");
    add("Memory", inv.memory_mib ? inv.memory_mib + " MiB" : "-");
    add("Disks", (inv.disks || []).map((d) => d.name + (d.size_gib ? " " + d.size_gib + " GiB" : d.size_bytes ? " " + Math.round(d.size_bytes / 2 ** 30) + " GiB" : "")).join(", "));
    add("NICs", (inv.nics || []).map((n) => n.name + (n.mac ? " " + n.mac : "")).join(", "));
    add("PCI devices", (inv.pci_devices || []).map((p) => p.address + " " + p.vendor + ":" + p.device).join(", "));
    add("Simulated profile", inv.simulated ? "yes" : "no");
    const bmc = h.bmc || {};
    add("BMC", bmc.type ? bmc.type + " at " + (bmc.address || "-") + ", " + (bmc.status || "-") : "none");
    add("Provisioning", h.provisioning);
    add("Software", (h.software_version || "-") + (h.patch_current ? " (patch current)" : " (not patch current)"));
    const rec = h.recovery || {};
    add("Recovery", rec.phase ? rec.phase + (rec.last_action ? ", last " + rec.last_action : "") : "none");
    add("Last report", h.last_report);
    td.appendChild(dl);
    tr.appendChild(td);
    return tr;
  }

  function serverRows(tb, servers) {
    siteData.servers.clear();
    if (!servers.length) { messageRow(tb, "No VMs.", "empty"); return; }
    putRows(tb, servers.map((s) => {
      siteData.servers.set(s.id, s);
      const tr = document.createElement("tr");
      tr.dataset.id = s.id;
      tr.dataset.name = s.name;
      const status = cell(s.status); status.dataset.field = "status";
      const host = cell(s.host); host.dataset.field = "host";
      tr.append(cell(s.name), host, status, cell(s.task), cell(s.power_state), cell(s.flavor ? s.flavor.name || s.flavor.id : ""));
      if (canAct) {
        const td = document.createElement("td");
        td.className = "actions";
        td.appendChild(button("migrate", "Migrate", "Live-migrate the VM to another host"));
        tr.appendChild(td);
      }
      return tr;
    }));
  }

  function groupRows(tb, groups) {
    if (!groups.length) { messageRow(tb, "No service groups.", "empty"); return; }
    putRows(tb, groups.map((g) => {
      const tr = document.createElement("tr");
      tr.dataset.name = g.name;
      const st = cell(g.status); if (g.status) st.className = g.status;
      tr.append(cell(g.name), st, cell((g.members || []).map((m) => m.host + ": " + m.state).join(", ")), cell(g.reason));
      return tr;
    }));
  }

  function siteAlarmRows(tb, alarms) {
    if (!alarms.length) { messageRow(tb, "No active alarms.", "empty"); return; }
    putRows(tb, alarms.map((a) => {
      const tr = document.createElement("tr");
      tr.dataset.uuid = a.uuid;
      const sev = cell(a.severity); if (SEVERITIES.includes(a.severity)) sev.className = "sev " + a.severity;
      tr.append(sev, cell(a.alarm_id), cell(a.entity_instance_id), cell(a.reason_text), cell(when(a.timestamp)));
      return tr;
    }));
  }

  let siteLoading = false;
  async function loadSite() {
    if (siteLoading) return;
    siteLoading = true;
    try {
      await Promise.all([
        siteTable("hosts", "/v1/hosts", hostRows),
        siteTable("servers", "/v1/servers", serverRows),
        siteTable("groups", "/v1/service-groups", groupRows),
        siteTable("site-alarms", "/v1/alarms?suppressed=false&limit=50", siteAlarmRows),
      ]);
    } finally {
      siteLoading = false;
    }
  }

  const HOST_VERBS = { lock: "Lock", unlock: "Unlock", swact: "Swact", reboot: "Reboot", "power-off": "Power off", "power-on": "Power on" };

  async function siteAct(action, tr) {
    let path, payload, what;
    if (action === "migrate") {
      const s = siteData.servers.get(tr.dataset.id);
      if (!s) return;
      what = "Migrate VM " + s.name + " from " + (s.host || "its host");
      path = siteAPI + "/v1/servers/" + encodeURIComponent(s.id) + "/action";
      payload = { action: "migrate" };
    } else {
      const h = siteData.hosts.get(tr.dataset.uuid);
      if (!h) return;
      what = HOST_VERBS[action] + " host " + h.name;
      path = siteAPI + "/v1/hosts/" + encodeURIComponent(h.uuid) + "/action";
      payload = { action };
    }
    if (!confirm(what + (fleet ? " at " + siteName : "") + "?")) return;
    siteBusy++;
    tr.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    siteStatus(what + "…");
    try {
      await api("POST", path, payload);
      siteStatus(what + ": accepted.");
    } catch (e) {
      siteStatus(what + " refused: " + e.message, true);
    } finally {
      tr.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      siteBusy--;
      for (const k in siteKeys) siteKeys[k] = "";
    }
    await loadSite();
  }

  function wireSite() {
    document.querySelector("main").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action]");
      if (!b) return;
      const tr = b.closest("tr");
      if (b.dataset.action === "inventory") {
        const id = tr.dataset.uuid;
        if (expanded.has(id)) expanded.delete(id); else expanded.add(id);
        siteKeys.hosts = "";
        const tb = document.querySelector("#hosts tbody");
        hostRows(tb, [...siteData.hosts.values()]);
        const again = tb.querySelector('tr[data-uuid="' + CSS.escape(id) + '"] button[data-action="inventory"]');
        if (again) again.focus();
        return;
      }
      if (canAct) siteAct(b.dataset.action, tr);
    });
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
      if (page === "site") await loadSite();
      if (page === "patching") await loadPatching();
      if (page === "events" && (changed || Date.now() - eventsLoadedAt >= LIST_MAX_AGE_MS)) await loadEvents();
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
      if (a.suppressed) td.appendChild(button("unsuppress", "Unsuppress", "Count and notify alarms " + a.alarm_id + " again"));
      else td.appendChild(button("suppress", "Suppress", "Suppress every alarm " + a.alarm_id + (fleet && a.site ? " at " + a.site : "") + ": kept, but not counted or notified"));
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
      keepFocus(tb, () => tb.replaceChildren(...out.items.map((a) => { shown.set(a.uuid, a); return alarmRow(a); })));
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
    const supPath = (fleet && a.site ? "/v1/subclouds/" + encodeURIComponent(a.site) + "/api" : "") + "/v1/alarm-suppressions/" + encodeURIComponent(a.alarm_id);
    const where = fleet && a.site ? " at " + a.site : "";
    if (action === "suppress" && !confirm("Suppress every alarm " + a.alarm_id + where + "?")) return;
    acting++;
    listEpoch++;
    tr.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      if (action === "ack") {
        await api("POST", alarmPath(a) + "/ack");
        status("Acknowledged " + what + ".");
      } else if (action === "suppress") {
        await api("PUT", supPath);
        status("Suppressed alarm " + a.alarm_id + where + ".");
      } else if (action === "unsuppress") {
        await api("DELETE", supPath);
        status("Unsuppressed alarm " + a.alarm_id + where + ".");
      } else {
        await api("DELETE", alarmPath(a));
        status("Cleared " + what + ".");
      }
    } catch (e) {
      status("Could not " + (action === "ack" ? "acknowledge" : action) + " " + what + ": " + e.message, true);
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

  // --- Event history ----------------------------------------------------

  let eventsLoadedAt = 0;
  let eventsKey = "";
  async function loadEvents() {
    const tb = document.querySelector("#events tbody");
    if (!tb) return;
    const p = new URLSearchParams(location.search);
    const q = new URLSearchParams();
    for (const [k, api_k] of [["type", "type"], ["alarm_id", "alarm_id"], ["entity", "entity_instance_id"], ["user", "user"], ["since", "since"]]) {
      const v = (p.get(k) || "").trim();
      if (v) q.set(api_k, v);
    }
    q.set("limit", p.get("limit") || "50");
    if (p.get("page_token")) q.set("page_token", p.get("page_token"));
    let out;
    try {
      out = await api("GET", "/v1/events?" + q.toString());
    } catch (e) {
      eventsKey = "";
      messageRow(tb, "Cannot list events: " + e.message, "error");
      return;
    }
    eventsLoadedAt = Date.now();
    const key = JSON.stringify(out);
    if (key === eventsKey) return;
    eventsKey = key;
    if (!out.items.length) messageRow(tb, "No events match.", "empty");
    else tb.replaceChildren(...out.items.map((ev) => {
      const tr = document.createElement("tr");
      tr.dataset.uuid = ev.uuid;
      tr.dataset.type = ev.type;
      const sev = cell(ev.severity); if (SEVERITIES.includes(ev.severity)) sev.className = "sev " + ev.severity;
      tr.append(cell(when(ev.timestamp)), cell(ev.type), sev, cell(ev.alarm_id), cell(ev.type === "audit" ? ev.target : ev.entity_instance_id),
        cell(ev.reason_text), cell(ev.user ? ev.user + (ev.role ? " (" + ev.role + ")" : "") : ""), cell(ev.result));
      if (fleet) tr.appendChild(cell(ev.site || "central"));
      return tr;
    }));
    const first = document.getElementById("events-first");
    const older = document.getElementById("events-next");
    const hadToken = p.has("page_token");
    p.delete("page_token");
    first.href = "/ui/events" + (p.toString() ? "?" + p.toString() : "");
    first.hidden = !hadToken;
    if (out.next_page_token) { p.set("page_token", out.next_page_token); older.href = "/ui/events?" + p.toString(); }
    older.hidden = !out.next_page_token;
  }

  // --- Patching page ----------------------------------------------------
  // Patches and patch strategies (a site's; at central also the fleet's),
  // polled every second while visible. A strategy is drawn generically
  // from its JSON: stages → steps → state, reason and any progress fields,
  // so central's fleet strategy (each step a site) and a site's strategy
  // (each step some hosts) render alike. 404 = no strategy.

  const strategyKeys = new Map();
  const strategies = new Map(); // scope -> strategy or null

  function progressText(pr) {
    if (pr === null || pr === undefined) return "";
    if (typeof pr !== "object") return String(pr);
    return Object.entries(pr).map(([k, v]) => k + ": " + (v !== null && typeof v === "object" ? JSON.stringify(v) : v)).join(", ");
  }

  // siteProgress says where a fleet step's site stands (the step's "site"
  // object, docs/api.md): its phase, its own strategy's state and steps,
  // the step it is on.
  function siteProgress(sp) {
    if (!sp || typeof sp !== "object") return "";
    const parts = [sp.phase || "-"];
    if (sp.state) parts.push("site strategy " + sp.state);
    if (sp.steps_total) parts.push(sp.steps_done + " of " + sp.steps_total + " steps");
    if (sp.action) parts.push("now " + sp.action + (sp.hosts && sp.hosts.length ? " " + sp.hosts.join(",") : ""));
    if (sp.offline_since) parts.push("unreachable since " + sp.offline_since);
    if (sp.reason) parts.push(sp.reason);
    return parts.join(" · ");
  }

  function drawStrategy(sec, st) {
    const sum = sec.querySelector(".strategy-summary");
    const ol = sec.querySelector("ol.stages");
    const actions = sec.querySelectorAll("[data-strategy]");
    for (const b of actions) {
      const a = b.dataset.strategy;
      // The API says why a step is not possible now; the buttons only follow existence.
      b.disabled = a === "create" ? !!st : !st;
    }
    if (!st) { text(sum, "No strategy."); ol.replaceChildren(); sec.dataset.state = "none"; return; }
    sec.dataset.state = st.state;
    const done = (st.stages || []).reduce((n, s) => n + (s.steps || []).filter((x) => /applied|complete|done|success/.test(x.state)).length, 0);
    const all = (st.stages || []).reduce((n, s) => n + (s.steps || []).length, 0);
    text(sum, "State " + st.state + " · " + done + " of " + all + " steps done" + (st.reason ? " · " + st.reason : "") +
      (st.patches && st.patches.length ? " · patches " + st.patches.join(", ") : ""));
    ol.replaceChildren(...(st.stages || []).map((stage) => {
      const li = document.createElement("li");
      li.dataset.state = stage.state || "";
      const h = document.createElement("div");
      h.className = "stage";
      h.textContent = (stage.name || "stage") + " — " + (stage.state || "-");
      const steps = document.createElement("ul");
      steps.replaceChildren(...(stage.steps || []).map((step) => {
        const s = document.createElement("li");
        s.className = "step " + (step.state || "");
        s.dataset.state = step.state || "";
        s.dataset.target = step.target || "";
        let t = (step.action ? step.action + " " : "") + (step.target || "") + ": " + (step.state || "-");
        if (step.reason) t += " — " + step.reason;
        const pr = step.site ? siteProgress(step.site) : progressText(step.progress);
        if (pr) t += " (" + pr + ")";
        s.textContent = t;
        return s;
      }));
      li.append(h, steps);
      return li;
    }));
  }

  async function loadStrategy(sec) {
    const base = sec.dataset.api || "";
    let st = null;
    try {
      st = await api("GET", base + "/v1/strategies/patch");
    } catch (e) {
      if (e.status !== 404) { text(sec.querySelector(".strategy-summary"), "Cannot read the strategy: " + e.message); strategyKeys.delete(sec); return; }
      st = null;
    }
    strategies.set(sec.dataset.scope, st);
    const key = JSON.stringify(st);
    if (strategyKeys.get(sec) === key) return;
    strategyKeys.set(sec, key);
    drawStrategy(sec, st);
  }

  // loadPatches fills every patch table of the page: a site's (its API
  // in the section's data-api) and, at central, central's own, whose IDs
  // the fleet strategy form offers.
  const patchKeys = new Map();
  async function loadPatches() {
    await Promise.all([...document.querySelectorAll("table.patches")].map(async (table) => {
      const tb = table.tBodies[0];
      const base = table.closest("section").dataset.api || "";
      let out;
      try {
        out = await api("GET", base + "/v1/patches");
      } catch (e) {
        patchKeys.delete(table); messageRow(tb, "Cannot list patches: " + e.message, "error"); return;
      }
      const key = JSON.stringify(out);
      if (key === patchKeys.get(table)) return;
      patchKeys.set(table, key);
      const ids = document.getElementById("central-patch-ids");
      if (table.id === "central-patches" && ids) {
        ids.replaceChildren(...out.items.map((p) => { const o = document.createElement("option"); o.value = p.id; return o; }));
      }
      if (!out.items.length) { messageRow(tb, "No patches uploaded.", "empty"); return; }
      tb.replaceChildren(...out.items.map((p) => {
        const tr = document.createElement("tr");
        tr.dataset.id = p.id;
        tr.append(cell(p.id), cell(p.version), cell(p.state), cell(p.reboot_required ? "yes" : "no"),
          cell(Object.entries(p.hosts || {}).map(([h, s]) => h + ": " + (typeof s === "object" ? progressText(s) : s)).join("; ")), cell(p.description));
        return tr;
      }));
    }));
  }


  let patchLoading = false;
  async function loadPatching() {
    if (patchLoading) return;
    patchLoading = true;
    try {
      await Promise.all([loadPatches(), ...[...document.querySelectorAll("section.strategy")].map(loadStrategy)]);
    } finally {
      patchLoading = false;
    }
  }

  async function strategyAct(sec, action, form) {
    const base = sec.dataset.api || "";
    const scope = sec.dataset.scope === "fleet" ? "the fleet patch strategy" : "the patch strategy of " + body.dataset.site;
    let done;
    if (action === "create") {
      const opts = {};
      for (const [k, v] of new FormData(form)) {
        const val = String(v).trim();
        if (k === "max_parallel_worker_hosts") opts[k] = Number(val);
        else if (k === "max_parallel") { if (val) opts[k] = Number(val); }
        else if (k === "stop_on_failure") opts[k] = true;
        else if (k === "patches") opts[k] = val.split(",").map((x) => x.trim()).filter((x) => x);
        else if (k === "group") { if (val) opts[k] = val; }
        else opts[k] = val;
      }
      if (!confirm("Create " + scope + "?")) return;
      done = () => api("POST", base + "/v1/strategies/patch", opts);
    } else if (action === "delete") {
      if (!confirm("Delete " + scope + "?")) return;
      done = () => api("DELETE", base + "/v1/strategies/patch");
    } else {
      if (!confirm((action === "apply" ? "Apply " : "Abort ") + scope + "?")) return;
      done = () => api("POST", base + "/v1/strategies/patch/actions", { action });
    }
    try {
      await done();
      siteStatus(action[0].toUpperCase() + action.slice(1) + " " + scope + ": accepted.");
    } catch (e) {
      siteStatus("Could not " + action + " " + scope + ": " + e.message, true);
    }
    strategyKeys.delete(sec);
    await loadPatching();
  }

  function wirePatching() {
    for (const sec of document.querySelectorAll("section.strategy")) {
      const form = sec.querySelector("form.strategy-create");
      if (form) form.addEventListener("submit", (ev) => { ev.preventDefault(); strategyAct(sec, "create", form); });
      sec.addEventListener("click", (ev) => {
        const b = ev.target.closest("button[data-strategy]");
        if (!b || b.type === "submit" || body.dataset.canAdmin !== "true") return;
        strategyAct(sec, b.dataset.strategy);
      });
    }
  }

  // --- Theme ------------------------------------------------------------
  // auto (the system's prefers-color-scheme), light or dark; the choice is
  // kept in localStorage.

  const THEMES = ["auto", "light", "dark"];
  function applyTheme(t) {
    if (t === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = t;
    text(document.getElementById("theme"), "Theme: " + t);
  }
  let theme = "auto";
  try { theme = localStorage.getItem("petrel-theme") || "auto"; } catch (e) { theme = "auto"; }
  if (!THEMES.includes(theme)) theme = "auto";
  applyTheme(theme);
  const themeButton = document.getElementById("theme");
  if (themeButton) themeButton.addEventListener("click", () => {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    try { localStorage.setItem("petrel-theme", theme); } catch (e) { /* private mode: this page only */ }
    applyTheme(theme);
  });

  // --- Start ------------------------------------------------------------

  if (page === "login") { text(live, ""); return; }
  if (page === "site") { wireSite(); loadSite(); }
  if (page === "alarms") wireAlarms();
  if (page === "fleet") wireFleet();
  if (page === "events") loadEvents();
  if (page === "patching") { wirePatching(); loadPatching(); }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) schedulePoll(0); });
  schedulePoll(0);

  if (!fleet) return; // only central has the event stream
  // The stream starts after the event the page was rendered at
  // (data-stream-from), so nothing between the render and the connection
  // is missed. The browser's EventSource reconnects by itself after a
  // dropped connection and sends Last-Event-ID: central replays what was
  // missed, or sends reset (a restart, or too far behind) and the page
  // reloads. If central refused a reconnect (say 503 while starting) the
  // EventSource gives up; then a new one is opened after a second from
  // the last event seen, and the view is fetched again.
  let stream = null;
  let lastEventId = body.dataset.streamFrom || ""; // the page is current at this event
  function openStream(catchUp) {
    const es = new EventSource("/v1/stream" + (lastEventId ? "?last_event_id=" + encodeURIComponent(lastEventId) : ""));
    stream = es;
    es.onopen = () => {
      text(live, "live");
      if (catchUp) { catchUp = false; if (page === "fleet") loadFleet(fleetQuery); }
    };
    es.onerror = () => {
      text(live, "reconnecting…");
      if (es.readyState === EventSource.CLOSED && stream === es) {
        setTimeout(async () => {
          // A dead session would fail every reconnect: check it first (a 401 sends the browser to log in).
          try { await api("GET", "/v1/alarms/summary"); } catch (e) { /* central still down: try again */ }
          openStream(true);
        }, 1000);
      }
    };
    const seen = (e) => { if (e.lastEventId) lastEventId = e.lastEventId; };
    es.addEventListener("reset", () => location.reload());
    es.addEventListener("subcloud", (e) => {
      seen(e);
      const sc = JSON.parse(e.data);
      if (page === "fleet") fleetEvent(sc);
      if (page === "site" && sc.name === body.dataset.site) loadSite();
    });
    es.addEventListener("subcloud-deleted", (e) => {
      seen(e);
      const { name } = JSON.parse(e.data);
      const tr = document.querySelector('#fleet tr[data-name="' + CSS.escape(name) + '"]');
      if (tr) tr.remove();
      if (page === "fleet") refreshFleet();
    });
  }
  openStream(false);
})();
