// The fleet page with 10,000 subclouds in a real browser: how long the page
// takes to load, to search, to filter and to page, and that the stream's
// updates touch only the page of rows shown. Run by TestBrowserFleet10k
// (PETREL_UI_BENCH=1), which seeds central's store and passes:
//   PETREL_URL, PETREL_TOKEN, PETREL_ADMIN_PASSWORD_FILE, PETREL_SCREENSHOTS,
//   NODE_EXTRA_CA_CERTS.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const { PETREL_URL: base, PETREL_ADMIN_PASSWORD_FILE: pwFile, PETREL_SCREENSHOTS: shots } = process.env;
const password = readFileSync(pwFile, "utf8").trim();
class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const fmt = (xs) => `median ${median(xs).toFixed(0)} ms (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)}, n=${xs.length})`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(base + "/");
  await page.fill("input[name=username]", "admin");
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForURL(base + "/"), page.click("button[type=submit]")]);

  // Load: the server filters and renders one page of 100 rows.
  const loads = [], ttfb = [];
  for (let i = 0; i < 5; i++) {
    await page.goto(base + "/");
    await page.waitForSelector("#live:text('live')", { timeout: 10000 });
    const nav = await page.evaluate(() => { const n = performance.getEntriesByType("navigation")[0]; return { ttfb: n.responseStart - n.requestStart, load: n.loadEventEnd }; });
    loads.push(nav.load); ttfb.push(nav.ttfb);
  }
  const rows = await page.$$eval("#fleet tbody tr[data-name]", (t) => t.length);
  const matched = await page.textContent("#fleet-matched");
  if (rows !== 100 || !/of 10000 matching/.test(matched)) fail(`first page: ${rows} rows, "${matched}"`);
  console.log(`load "/" (10,000 subclouds, 100 rows shown): server response ${fmt(ttfb)}; page loaded ${fmt(loads)}`);
  await page.screenshot({ path: shots + "/fleet-10k.png" });

  // Search and filter: from the input event to the rows shown (includes the
  // script's 120 ms debounce for typing; a select's change has none).
  async function timed(action) {
    const before = await page.evaluate(() => document.body.dataset.fleetShown || "0");
    const t0 = Date.now();
    await action();
    await page.waitForFunction((b) => (document.body.dataset.fleetShown || "0") !== b, before, { timeout: 10000 });
    return { total: Date.now() - t0, render: Number(await page.evaluate(() => document.body.dataset.fleetRenderMs)) };
  }
  const search = [], searchRender = [];
  for (const q of ["site-0424", "77", "site-09", "5", "site-00001"]) {
    const r = await timed(() => page.fill("input[name=q]", q));
    search.push(r.total); searchRender.push(r.render);
    const shown = await page.$$eval("#fleet tbody tr[data-name]", (t) => t.map((x) => x.dataset.name));
    if (!shown.every((n) => n.includes(q))) fail(`search ${q} shows ${shown.slice(0, 5)}`);
  }
  await timed(() => page.fill("input[name=q]", ""));
  console.log(`search (type into the box → rows shown, 120 ms debounce included): ${fmt(search)}; DOM update ${fmt(searchRender)}`);

  const filter = [], filterRender = [];
  for (const [name, value] of [["status", "critical"], ["status", "offline"], ["sync", "out-of-sync"], ["management", "unmanaged"], ["status", ""]]) {
    const r = await timed(() => page.selectOption(`select[name=${name}]`, value));
    filter.push(r.total); filterRender.push(r.render);
    if (value) {
      const bad = await page.$$eval(`#fleet tbody td[data-field="${name}"]`, (tds, v) => tds.filter((td) => td.textContent !== v).length, value);
      if (bad) fail(`filter ${name}=${value}: ${bad} rows do not match`);
    }
    if (value && name !== "status") await timed(() => page.selectOption(`select[name=${name}]`, ""));
  }
  console.log(`filter (choose a status/sync/management → rows shown): ${fmt(filter)}; DOM update ${fmt(filterRender)}`);

  const paging = [];
  for (let i = 0; i < 5; i++) {
    const first = await page.$eval("#fleet tbody tr[data-name]", (tr) => tr.dataset.name);
    const r = await timed(() => page.click("#fleet-next"));
    paging.push(r.total);
    const now = await page.$eval("#fleet tbody tr[data-name]", (tr) => tr.dataset.name);
    if (now <= first) fail(`next page starts at ${now}, after ${first}`);
  }
  console.log(`next page (click → rows shown): ${fmt(paging)}`);

  // JSON view alone, from the page (the server's share of a filter).
  const jsonTimes = await page.evaluate(async () => {
    const out = [];
    for (const q of ["", "?q=site-05", "?status=critical", "?sync=out-of-sync&offset=200"]) {
      const t0 = performance.now();
      await (await fetch("/ui/fleet.json" + q)).json();
      out.push(performance.now() - t0);
    }
    return out;
  });
  console.log(`GET /ui/fleet.json round trip: ${fmt(jsonTimes)}`);

  // Live updates while the API changes the fleet: 100 manage/unmanage
  // actions on subclouds of the page shown and 50 new subclouds. Each
  // event updates its row in place if shown; the view (counts, new rows)
  // is fetched again at most once a second. The table never holds more
  // than its page, and the longest main-thread task stays small.
  await page.goto(base + "/");
  await page.waitForSelector("#live:text('live')", { timeout: 10000 });
  await page.evaluate(() => {
    window.__bench = { events: 0, maxRows: 0, longest: 0, longTasks: 0, stop: false };
    const b = window.__bench;
    new PerformanceObserver((l) => { for (const e of l.getEntries()) { b.longTasks++; b.longest = Math.max(b.longest, e.duration); } })
      .observe({ type: "longtask" });
    (async () => { while (!b.stop) { b.maxRows = Math.max(b.maxRows, document.querySelectorAll("#fleet tbody tr").length); await new Promise((r) => setTimeout(r, 50)); } })();
  });
  const shown0 = Number(await page.evaluate(() => document.body.dataset.fleetShown || "0"));
  const api = (method, path, body) => fetch(base + path, {
    method, headers: { Authorization: "Bearer " + process.env.PETREL_TOKEN, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined });
  const inPlace = [];
  const tLive = Date.now();
  const online = await page.$$eval('#fleet tbody tr[data-name]', (trs) =>
    trs.filter((tr) => tr.querySelector('[data-field="availability"]').textContent === "online").map((tr) => tr.dataset.name));
  if (online.length < 50) fail(`only ${online.length} online rows on the first page`);
  for (let i = 0; i < 100; i++) {
    const name = online[i % 50];
    const want = await page.$eval(`#fleet tr[data-name="${name}"] [data-field="management"]`, (td) => td.textContent === "managed" ? "unmanaged" : "managed");
    const t0 = Date.now();
    const r = await api("POST", `/v1/subclouds/${name}/action`, { action: want === "managed" ? "manage" : "unmanage" });
    if (r.status !== 200) fail(`${want} ${name}: ${r.status} ${await r.text()}`);
    await page.waitForFunction(([n, w]) => document.querySelector(`#fleet tr[data-name="${n}"] [data-field="management"]`).textContent === w,
      [name, want], { timeout: 5000 });
    inPlace.push(Date.now() - t0);
  }
  for (let i = 0; i < 50; i++) {
    const r = await api("POST", "/v1/subclouds", { name: "zz-new-" + i, shape: "simplex" });
    if (r.status !== 201) fail(`create zz-new-${i}: ${r.status}`);
  }
  const liveMs = Date.now() - tLive;
  await page.waitForFunction(() => document.querySelector('[data-count="offline"]').textContent === String(1000 + 50), null, { timeout: 5000 })
    .catch(() => fail("the offline count did not follow the 50 new subclouds"));
  const b = await page.evaluate(() => { window.__bench.stop = true; return window.__bench; });
  const shown = Number(await page.evaluate(() => document.body.dataset.fleetShown || "0")) - shown0;
  console.log(`live: 150 changes through the API in ${(liveMs / 1000).toFixed(1)} s; a shown row changed ${fmt(inPlace)} after its API call; ` +
    `${shown} view fetches; rows in the table at most ${b.maxRows}; ${b.longTasks} long tasks (longest ${b.longest.toFixed(0)} ms)`);
  if (b.maxRows > 100) fail("the stream grew the table past its page");
  if (errors.length) fail("browser errors: " + errors.join("; "));
} catch (e) {
  console.error("FAIL: " + (e instanceof Failure ? e.message : e.stack || String(e)));
  process.exitCode = 1;
} finally {
  await browser.close();
}
if (!process.exitCode) console.log("PASS: fleet10k");
