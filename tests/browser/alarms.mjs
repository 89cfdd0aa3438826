// Alarm banner and alarms page in a real browser, at central and at a site
// controller: alarms raised through the API appear in the banner and on the
// page without a reload, an operator acknowledges and clears them with the
// page's buttons, a reader sees no buttons, API text is never HTML. Run by
// the Go test TestBrowserAlarms, which starts both daemons and passes:
//   PETREL_URL, PETREL_TOKEN, PETREL_ADMIN_PASSWORD_FILE (central),
//   PETREL_SITE_URL, PETREL_SITE_TOKEN, PETREL_SITE_ADMIN_PASSWORD_FILE (the site),
//   PETREL_SCREENSHOTS (a directory), NODE_EXTRA_CA_CERTS (both CAs).
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const env = process.env;
const central = { base: env.PETREL_URL, token: env.PETREL_TOKEN, password: readFileSync(env.PETREL_ADMIN_PASSWORD_FILE, "utf8").trim() };
const site = { base: env.PETREL_SITE_URL, token: env.PETREL_SITE_TOKEN, password: readFileSync(env.PETREL_SITE_ADMIN_PASSWORD_FILE, "utf8").trim() };
const shots = env.PETREL_SCREENSHOTS;
// The banner polls every second; the issue asks for about 2 s. The deadline
// leaves room for a busy 2-core machine; the measured times are printed.
const LIVE_MS = 3000;

class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };
const api = (d, method, path, body) => fetch(d.base + path, {
  method, headers: { Authorization: "Bearer " + d.token, "Content-Type": "application/json" },
  body: body ? JSON.stringify(body) : undefined,
});
async function raise(d, alarmID, entity, fields) {
  const r = await api(d, "POST", "/v1/alarms", { alarm_id: alarmID, entity_instance_id: entity, fields });
  if (r.status !== 201) fail(`raise ${alarmID} ${entity}: ${r.status} ${await r.text()}`);
  return r.json();
}

const errors = [];
function watch(page, label) {
  page.on("pageerror", (e) => errors.push(label + ": " + e.message));
  // Script errors fail the test; refusals the test provokes (403) do not.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(label + ": " + m.text()); });
  page.on("response", (res) => { if (res.status() === 404) errors.push(label + ": 404 for " + res.url()); });
  page.on("dialog", (d) => d.accept()); // the Clear button confirms
}

async function login(browser, d, user, password, label) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  watch(page, label);
  await page.goto(d.base + "/");
  if (!page.url().endsWith("/ui/login")) fail(label + ": not sent to the login page: " + page.url());
  await page.fill("input[name=username]", user);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForURL(d.base + "/"), page.click("button[type=submit]")]);
  return page;
}

const count = async (page, sev) => Number(await page.textContent(`[data-alarm-count="${sev}"]`));
async function bannerReaches(page, sev, want, t0, what) {
  await page.waitForFunction(([s, n]) => document.querySelector(`[data-alarm-count="${s}"]`).textContent === String(n),
    [sev, want], { timeout: LIVE_MS }).catch(() => fail(`${what}: banner ${sev} did not reach ${want} within ${LIVE_MS} ms`));
  console.log(`${what}: banner ${sev} = ${want} ${Date.now() - t0} ms after the API call`);
}
const row = (uuid) => `#alarms tbody tr[data-uuid="${uuid}"]`;
const field = (uuid, name) => `${row(uuid)} [data-field="${name}"]`;
async function rowUUIDs(page) {
  return page.$$eval("#alarms tbody tr[data-uuid]", (trs) => trs.map((tr) => tr.dataset.uuid));
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  // ---- Central -------------------------------------------------------
  let r = await api(central, "POST", "/v1/users", { name: "viewer", role: "reader", password: "viewer-password-1" });
  if (r.status !== 201) fail("create reader: " + r.status);
  const page = await login(browser, central, "admin", central.password, "central admin");
  const crit0 = await count(page, "critical");
  const major0 = await count(page, "major");

  // The banner follows a new alarm on the fleet page, without a reload.
  let t0 = Date.now();
  const a = await raise(central, "280.001", "subcloud=site-gone");
  await bannerReaches(page, "critical", crit0 + 1, t0, "raise on the fleet page");
  if (await page.getAttribute("#alarm-banner", "data-worst") !== "critical") fail("banner not marked critical");
  await page.screenshot({ path: shots + "/alarm-banner.png" });

  // The banner leads to the alarms page, which lists the alarm.
  await Promise.all([page.waitForURL(central.base + "/ui/alarms"), page.click("#alarm-banner")]);
  await page.waitForSelector(row(a.uuid), { timeout: LIVE_MS });
  const heads = await page.$$eval("#alarms thead th", (ths) => ths.map((th) => th.textContent));
  if (heads.join("|") !== "Severity|Alarm ID|Entity|Reason|Site|Time (UTC)|Acked by|Actions") fail("central's columns: " + heads.join("|"));
  const cells = await page.$$eval(row(a.uuid) + " td", (tds) => tds.map((td) => td.textContent));
  if (cells[0] !== "critical" || cells[1] !== "280.001" || cells[2] !== "subcloud=site-gone" ||
      cells[3] !== "Subcloud site-gone is offline" || cells[4] !== "central" || cells[6] !== "-") fail("row of 280.001: " + cells.join("|"));

  // A new alarm appears on the open page, newest first; its text stays text.
  const evil = '<img src=x onerror="window.__xss=1">';
  t0 = Date.now();
  const b = await raise(central, "280.004", "subcloud=site-x", { phase: evil });
  await page.waitForSelector(row(b.uuid), { timeout: LIVE_MS });
  console.log(`new alarm listed ${Date.now() - t0} ms after the API call`);
  await bannerReaches(page, "major", major0 + 1, t0, "raise on the alarms page");
  const order = await rowUUIDs(page);
  if (order.indexOf(b.uuid) > order.indexOf(a.uuid)) fail("not newest first: " + order.join(", "));
  if (await page.textContent(field(b.uuid, "reason")) !== "Subcloud site-x deploy failed in phase " + evil) fail("reason text changed");
  if (await page.$("#alarms img") || await page.evaluate(() => window.__xss)) fail("API text was treated as HTML");
  const c = await raise(central, "280.002", "subcloud=site-x.resource=images");
  await page.waitForSelector(row(c.uuid), { timeout: LIVE_MS });
  await page.screenshot({ path: shots + "/alarms.png" });

  // Paging: one alarm a page, following the next-page links, gives the
  // API's full list in order.
  r = await api(central, "GET", "/v1/alarms?suppressed=false&limit=100");
  const all = (await r.json()).items.map((x) => x.uuid);
  await page.goto(central.base + "/ui/alarms?limit=1");
  const paged = [];
  for (let i = 0; i < all.length + 1; i++) {
    await page.waitForSelector("#alarms tbody tr[data-uuid]", { timeout: LIVE_MS });
    const uuids = await rowUUIDs(page);
    if (uuids.length !== 1) fail(`page ${i + 1} of limit=1 has ${uuids.length} rows`);
    paged.push(uuids[0]);
    if (i > 0 && !await page.isVisible("#first-page")) fail("no link back to the newest page");
    if (await page.isHidden("#next-page")) break;
    await Promise.all([page.waitForURL(/page_token=/), page.click("#next-page")]);
  }
  if (paged.join() !== all.join()) fail(`paged ${paged.join()} != listed ${all.join()}`);

  // Filters: severity, entity prefix, site; the form keeps them in the URL.
  await page.goto(central.base + "/ui/alarms");
  await page.selectOption("select[name=severity]", "critical");
  await Promise.all([page.waitForURL(/severity=critical/), page.click("#alarm-filters button[type=submit]")]);
  await page.waitForSelector(row(a.uuid), { timeout: LIVE_MS });
  if ((await page.$$eval("#alarms tbody td.sev", (tds) => tds.map((td) => td.textContent))).some((s) => s !== "critical")) fail("severity filter let others through");
  await page.goto(central.base + "/ui/alarms");
  await page.fill("input[name=entity]", "subcloud=site-x");
  await page.selectOption("select[name=site]", "-");
  await Promise.all([page.waitForURL(/entity=subcloud%3Dsite-x/), page.click("#alarm-filters button[type=submit]")]);
  await page.waitForSelector(row(b.uuid), { timeout: LIVE_MS });
  if ((await rowUUIDs(page)).sort().join() !== [b.uuid, c.uuid].sort().join()) fail("entity filter rows: " + (await rowUUIDs(page)).join());
  await page.fill("input[name=alarm_id]", "999.999");
  await Promise.all([page.waitForURL(/alarm_id=999.999/), page.click("#alarm-filters button[type=submit]")]);
  await page.waitForSelector("#alarms tbody tr.empty", { timeout: LIVE_MS });

  // Acknowledge with the button: acked_by shows, the Ack button goes.
  const resp = await page.goto(central.base + "/ui/alarms");
  const csp = resp.headers()["content-security-policy"] || "";
  if (!csp.includes("script-src 'self'") || csp.includes("unsafe")) fail("alarms page CSP: " + csp);
  await page.waitForSelector(row(a.uuid), { timeout: LIVE_MS });
  t0 = Date.now();
  await page.click(`${row(a.uuid)} button[data-action=ack]`);
  await page.waitForSelector(`${field(a.uuid, "acked_by")}:text-is("admin")`, { timeout: LIVE_MS });
  console.log(`acked_by shown ${Date.now() - t0} ms after the click`);
  if (await page.$(`${row(a.uuid)} button[data-action=ack]`)) fail("Ack button still there after acknowledging");
  r = await api(central, "GET", "/v1/alarms/" + a.uuid);
  if ((await r.json()).acked_by !== "admin") fail("the API does not show the acknowledgement");

  // Clear with the button: the row goes, the banner drops.
  t0 = Date.now();
  await page.click(`${row(a.uuid)} button[data-action=clear]`);
  await page.waitForSelector(row(a.uuid), { state: "detached", timeout: LIVE_MS });
  console.log(`row gone ${Date.now() - t0} ms after the click`);
  await bannerReaches(page, "critical", crit0, t0, "clear from the page");
  r = await api(central, "GET", "/v1/alarms/" + a.uuid);
  if (r.status !== 404) fail("cleared alarm still in the API: " + r.status);

  // A reader sees the alarms but no buttons, and the API refuses its actions.
  const reader = await login(browser, central, "viewer", "viewer-password-1", "central reader");
  await reader.goto(central.base + "/ui/alarms");
  await reader.waitForSelector(row(b.uuid), { timeout: LIVE_MS });
  if (await reader.$$eval("#alarms button", (bs) => bs.length) !== 0) fail("a reader has action buttons");
  if ((await reader.$$eval("#alarms thead th", (ths) => ths.map((th) => th.textContent))).includes("Actions")) fail("a reader has an Actions column");
  const refused = await reader.evaluate(async (uuid) => (await fetch("/v1/alarms/" + uuid + "/ack", { method: "POST",
    headers: { "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content } })).status, b.uuid);
  if (refused !== 403) fail("reader's ack with its CSRF token: " + refused + "; want 403");
  await reader.screenshot({ path: shots + "/alarms-reader.png", fullPage: true });
  // A clear elsewhere (the API) reaches the reader's open page.
  t0 = Date.now();
  r = await api(central, "DELETE", "/v1/alarms/" + b.uuid);
  if (r.status !== 204) fail("clear through the API: " + r.status);
  await reader.waitForSelector(row(b.uuid), { state: "detached", timeout: LIVE_MS });
  console.log(`row gone on another user's page ${Date.now() - t0} ms after the API call`);
  await bannerReaches(reader, "major", major0 + 1, t0, "clear through the API"); // c is still active

  // ---- Site controller ----------------------------------------------
  const sp = await login(browser, site, "admin", site.password, "site admin");
  await sp.waitForSelector("h1:text('Site site-ui')");
  await sp.waitForSelector("#hosts tr.empty:has-text('No hosts.')", { timeout: LIVE_MS });
  await sp.waitForSelector("#live:text('live')", { timeout: LIVE_MS });
  const siteMajor0 = await count(sp, "major");
  t0 = Date.now();
  const s = await raise(site, "200.010", "host=controller-0");
  await bannerReaches(sp, "major", siteMajor0 + 1, t0, "raise at the site");
  await sp.screenshot({ path: shots + "/site-banner.png" });
  await Promise.all([sp.waitForURL(site.base + "/ui/alarms"), sp.click("#alarm-banner")]);
  await sp.waitForSelector(row(s.uuid), { timeout: LIVE_MS });
  const siteHeads = await sp.$$eval("#alarms thead th", (ths) => ths.map((th) => th.textContent));
  if (siteHeads.includes("Site") || !siteHeads.includes("Actions")) fail("site's columns: " + siteHeads.join("|"));
  await sp.click(`${row(s.uuid)} button[data-action=ack]`);
  await sp.waitForSelector(`${field(s.uuid, "acked_by")}:text-is("admin")`, { timeout: LIVE_MS });
  // Suppress its alarm ID (after a confirmation): hidden from the list and
  // the banner; listed again, marked, with suppressed included; unsuppress.
  t0 = Date.now();
  await sp.click(`${row(s.uuid)} button[data-action=suppress]`);
  await sp.waitForSelector(row(s.uuid), { state: "detached", timeout: LIVE_MS });
  await bannerReaches(sp, "major", siteMajor0, t0, "suppress at the site");
  await sp.goto(site.base + "/ui/alarms?suppressed=include");
  await sp.waitForSelector(`${row(s.uuid)}.suppressed button[data-action=unsuppress]`, { timeout: LIVE_MS });
  t0 = Date.now();
  await sp.click(`${row(s.uuid)} button[data-action=unsuppress]`);
  await bannerReaches(sp, "major", siteMajor0 + 1, t0, "unsuppress at the site");
  await sp.waitForSelector(`${row(s.uuid)}:not(.suppressed)`, { timeout: LIVE_MS });
  t0 = Date.now();
  await sp.click(`${row(s.uuid)} button[data-action=clear]`);
  await sp.waitForSelector(row(s.uuid), { state: "detached", timeout: LIVE_MS });
  await bannerReaches(sp, "major", siteMajor0, t0, "clear at the site");
  await sp.screenshot({ path: shots + "/site-alarms.png", fullPage: true });

  if (errors.length) fail("browser errors: " + errors.join("; "));
} catch (e) {
  console.error("FAIL: " + (e instanceof Failure ? e.message : e.stack || String(e)));
  process.exitCode = 1;
  // What each open page showed, for the log and the screenshots directory.
  let n = 0;
  for (const ctx of browser.contexts()) {
    for (const p of ctx.pages()) {
      n++;
      await p.screenshot({ path: `${shots}/failed-${n}.png`, fullPage: true }).catch(() => {});
      console.error(`page ${n} ${p.url()}:\n` + await p.textContent("main").catch(() => "?"));
    }
  }
  if (errors.length) console.error("browser errors: " + errors.join("; "));
} finally {
  await browser.close();
}
if (!process.exitCode) console.log("PASS: alarms");
