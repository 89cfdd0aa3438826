// Petrel dashboard: live updates through the server's event stream.
// No framework, no inline script (the page's CSP forbids it).
"use strict";
(function () {
  const page = document.body.dataset.page;
  const live = document.getElementById("live");
  function text(el, v) { if (el) { el.textContent = v === undefined || v === null || v === "" ? "-" : String(v); } }
  function cell(v) { const td = document.createElement("td"); text(td, v); return td; }

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

  async function loadHosts() {
    const site = document.body.dataset.site;
    const tb = document.querySelector("#hosts tbody");
    try {
      const r = await fetch("/v1/subclouds/" + encodeURIComponent(site) + "/api/v1/hosts", { credentials: "same-origin" });
      const body = await r.json();
      if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
      tb.replaceChildren();
      for (const h of body.items) {
        const tr = document.createElement("tr");
        tr.dataset.name = h.name;
        tr.append(cell(h.name), cell(h.personality), cell(h.administrative), cell(h.operational), cell(h.availability), cell(h.uptime_s));
        tb.appendChild(tr);
      }
      if (!body.items.length) tb.innerHTML = '<tr class="empty"><td colspan="6">No hosts.</td></tr>';
    } catch (e) {
      tb.replaceChildren();
      const tr = document.createElement("tr");
      tr.className = "error";
      const td = cell("Cannot reach the site: " + e.message);
      td.colSpan = 6;
      tr.appendChild(td);
      tb.appendChild(tr);
    }
  }

  if (page === "login") { text(live, ""); return; }
  if (page === "site") loadHosts();
  const es = new EventSource("/v1/stream");
  es.onopen = () => text(live, "live");
  es.onerror = () => text(live, "reconnecting…");
  es.addEventListener("reset", () => location.reload());
  es.addEventListener("subcloud", (e) => {
    const sc = JSON.parse(e.data);
    if (page === "fleet") fleetRow(sc);
    if (page === "site" && sc.name === document.body.dataset.site) loadHosts();
  });
  es.addEventListener("subcloud-deleted", (e) => {
    const { name } = JSON.parse(e.data);
    const tr = document.querySelector('#fleet tr[data-name="' + CSS.escape(name) + '"]');
    if (tr) { tr.remove(); recount(); }
  });
})();
