// A site's page in a real browser, on a site controller with one real
// agent host (worker-0): hosts with their states and inventory, unlock and
// lock with confirmation, a refused action with the API's reason, an alarm
// appearing live, the events and patching pages, the theme toggle, a
// reader without buttons, and a session that ends while the page is open.
// Run by TestBrowserSite, which starts the site controller and the agent:
//   PETREL_SITE_URL, PETREL_SITE_TOKEN, PETREL_SITE_ADMIN_PASSWORD_FILE,
//   PETREL_SCREENSHOTS (a directory), NODE_EXTRA_CA_CERTS.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const env = process.env;
const central = { base: env.PETREL_URL, token: env.PETREL_TOKEN, password: readFileSync(env.PETREL_ADMIN_PASSWORD_FILE, "utf8").trim() };
const site = { base: env.PETREL_SITE_URL, token: env.PETREL_SITE_TOKEN, password: readFileSync(env.PETREL_SITE_ADMIN_PASSWORD_FILE, "utf8").trim() };
const shots = env.PETREL_SCREENSHOTS;
const LIVE_MS = 3000;
class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };
const api = (method, path, body, token = site.token) => fetch(site.base + path, {
  method, headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
  body: body ? JSON.stringify(body) : undefined,
});
async function host(name) {
  const r = await api("GET", "/v1/hosts/" + name);
  if (r.status !== 200) fail(`GET host ${name}: ${r.status}`);
  return r.json();
}

const errors = [];
let dialogs = [];
let answer = true;
async function login(browser, user, password, label, d = site) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => errors.push(label + ": " + e.message));
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(label + ": " + m.text()); });
  page.on("dialog", (d) => { dialogs.push(d.message()); if (answer) d.accept(); else d.dismiss(); });
  await page.goto(d.base + "/");
  if (!page.url().endsWith("/ui/login")) fail(label + ": not sent to the login page");
  await page.fill("input[name=username]", user);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForURL(d.base + "/"), page.click("button[type=submit]")]);
  return page;
}
const cellOf = (name, field) => `#hosts tr[data-name="${name}"] [data-field="${field}"]`;
async function reaches(page, sel, want, what) {
  const t0 = Date.now();
  await page.waitForFunction(([s, w]) => { const el = document.querySelector(s); return el && el.textContent === w; }, [sel, want], { timeout: LIVE_MS })
    .catch(async () => fail(`${what}: ${sel} is "${await page.textContent(sel).catch(() => "(none)")}", want "${want}" within ${LIVE_MS} ms`));
  return Date.now() - t0;
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  for (const [name, role] of [["ops", "operator"], ["viewer", "reader"]]) {
    const r = await api("POST", "/v1/users", { name, role, password: name + "-password-1" });
    if (r.status !== 201) fail(`create ${name}: ${r.status}`);
  }
  const page = await login(browser, "ops", "ops-password-1", "operator");

  // The host, its three states and personality, and its inventory.
  await page.waitForSelector('#hosts tr[data-name="worker-0"]', { timeout: 5000 });
  let h = await host("worker-0");
  await reaches(page, cellOf("worker-0", "administrative"), h.administrative, "first paint");
  const cells = await page.$$eval('#hosts tr[data-name="worker-0"] td', (tds) => tds.map((td) => td.textContent));
  if (cells[1] !== "worker") fail("personality cell: " + cells[1]);
  await page.click('#hosts tr[data-name="worker-0"] button[data-action="inventory"]');
  await page.waitForSelector("#hosts tr.inventory", { timeout: 2000 });
  const inv = await page.textContent("#hosts tr.inventory");
  if (!inv.includes("65536 MiB") || !inv.includes("16 cores")) fail("inventory row: " + inv);
  for (const t of ["#servers", "#groups", "#site-alarms"]) await page.waitForSelector(`${t} tbody tr:not(:has-text("Loading"))`, { timeout: 5000 });

  // Unlock, from the keyboard: focus the button, Enter, confirm.
  if (h.administrative !== "locked") fail("a new host should be locked, is " + h.administrative);
  answer = false; dialogs = [];
  await page.click('#hosts tr[data-name="worker-0"] button[data-action="unlock"]');
  if (!dialogs.length || !dialogs[0].includes("Unlock host worker-0")) fail("no confirmation for unlock: " + dialogs);
  await page.waitForTimeout(300); // a cancelled action must send nothing
  if ((await host("worker-0")).administrative !== "locked") fail("a cancelled unlock unlocked the host");
  answer = true;
  await page.focus('#hosts tr[data-name="worker-0"] button[data-action="unlock"]');
  // The table refreshes as the host's report changes (uptime) without
  // replacing the row: the focus stays, and a click in progress would land.
  await page.evaluate(() => {
    window.oldRow = document.querySelector('#hosts tr[data-name="worker-0"]');
    window.oldUptime = window.oldRow.children[7].textContent;
  });
  await page.waitForFunction(() => document.querySelector('#hosts tr[data-name="worker-0"]').children[7].textContent !== window.oldUptime, null, { timeout: 5000 })
    .catch(() => fail("the host's uptime did not refresh within 5 s"));
  if (!await page.evaluate(() => document.querySelector('#hosts tr[data-name="worker-0"]') === window.oldRow)) fail("the refresh replaced the host's row");
  const focused = await page.evaluate(() => document.activeElement.dataset.action + " " + document.activeElement.closest("tr").dataset.name);
  if (focused !== "unlock worker-0") fail("after the table's refresh the focus is on " + focused + ", not worker-0's unlock button");
  let t0 = Date.now();
  await page.keyboard.press("Enter");
  await reaches(page, cellOf("worker-0", "administrative"), "unlocked", "unlock");
  console.log(`unlock: the row shows unlocked ${Date.now() - t0} ms after Enter`);
  if ((await host("worker-0")).administrative !== "unlocked") fail("the API does not show worker-0 unlocked");
  await page.screenshot({ path: shots + "/site.png" });

  // A refused action shows the API's reason (reboot needs a locked host).
  await page.click('#hosts tr[data-name="worker-0"] button[data-action="reboot"]');
  await page.waitForSelector("#site-status.error", { timeout: 3000 });
  const reason = await page.textContent("#site-status");
  if (!/refused: .*lock host worker-0 before rebooting/.test(reason)) fail("refusal shown as: " + reason);
  console.log("refused reboot shown as: " + reason);

  // Lock.
  t0 = Date.now();
  await page.click('#hosts tr[data-name="worker-0"] button[data-action="lock"]');
  await reaches(page, cellOf("worker-0", "administrative"), "locked", "lock");
  console.log(`lock: the row shows locked ${Date.now() - t0} ms after the click`);

  // An alarm raised through the API appears on the open page.
  t0 = Date.now();
  let r = await api("POST", "/v1/alarms", { alarm_id: "200.004", entity_instance_id: "host=worker-0", fields: { hostname: "worker-0" } });
  if (r.status !== 201) fail("raise: " + r.status + " " + await r.text());
  await page.waitForSelector('#site-alarms td:text("200.004")', { timeout: LIVE_MS });
  console.log(`alarm 200.004 on the site page ${Date.now() - t0} ms after the API call`);

  // Tablet width: the site page does not scroll sideways.
  await page.setViewportSize({ width: 820, height: 1180 });
  const [sw, iw] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (sw > iw) fail(`the site page at 820 px scrolls sideways (${sw} px wide)`);
  await page.setViewportSize({ width: 1280, height: 800 });

  // Theme toggle: auto → light → dark, kept across pages.
  await page.click("#theme");
  if (await page.evaluate(() => document.documentElement.dataset.theme) !== "light") fail("theme toggle: not light");
  await page.click("#theme");
  if (await page.evaluate(() => document.documentElement.dataset.theme) !== "dark") fail("theme toggle: not dark");
  await page.screenshot({ path: shots + "/site-dark.png" });
  await page.click("#theme"); // back to auto

  // Events: the lock and unlock are audit events.
  await page.goto(site.base + "/ui/events?type=audit");
  await page.waitForSelector('#events tr[data-type="audit"]', { timeout: 5000 });
  const audits = await page.$$eval("#events tbody tr", (trs) => trs.map((tr) => tr.textContent));
  if (!audits.some((a) => a.includes("/v1/hosts/") && a.includes("ops"))) fail("no audit event of ops's host actions: " + audits.slice(0, 3));
  if (audits.some((a) => !a.includes("audit"))) fail("type=audit shows other events");
  await page.screenshot({ path: shots + "/events.png" });

  // Patching: an operator sees the strategy but no buttons (strategies need
  // an admin). For the admin: no patches, no strategy; creating one is
  // refused with the API's reason.
  await page.goto(site.base + "/ui/patching");
  await page.waitForSelector('section.strategy[data-state="none"]', { timeout: 5000 });
  if (await page.$("section.strategy button")) fail("an operator has strategy buttons");
  const admin = await login(browser, "admin", site.password, "admin");
  await admin.goto(site.base + "/ui/patching");
  await admin.waitForSelector('section.strategy[data-state="none"]', { timeout: 5000 });
  await admin.waitForSelector('#patches td:text("No patches uploaded.")', { timeout: 5000 });
  await admin.click('section.strategy button[data-strategy="create"]');
  await admin.waitForSelector("#patch-status.error", { timeout: 3000 });
  const why = await admin.textContent("#patch-status");
  if (!why.includes("apply a patch first")) fail("strategy create refused as: " + why);
  await admin.screenshot({ path: shots + "/patching.png" });

  // A reader sees no action buttons, and the API refuses its lock.
  const reader = await login(browser, "viewer", "viewer-password-1", "reader");
  await reader.waitForSelector('#hosts tr[data-name="worker-0"]', { timeout: 5000 });
  if (await reader.$('#hosts button[data-action="lock"], #hosts button[data-action="unlock"]')) fail("a reader has host action buttons");
  if (await reader.$("#hosts th:text('Actions')")) fail("a reader has an Actions column");
  const readerLock = await reader.evaluate(async () => {
    const id = document.querySelector('#hosts tr[data-name="worker-0"]').dataset.uuid;
    return (await fetch("/v1/hosts/" + id + "/action", { method: "POST", headers: { "Content-Type": "application/json",
      "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content }, body: '{"action":"unlock"}' })).status;
  });
  if (readerLock !== 403) fail("a reader's unlock from the page: " + readerLock);

  // The operator's session ends (revoked, as an expiry does) while the page
  // is open: the next action lands on the login page and changes nothing.
  await page.goto(site.base + "/");
  await page.waitForSelector('#hosts tr[data-name="worker-0"] button[data-action="unlock"]', { timeout: 5000 });
  const toks = await (await api("GET", "/v1/tokens?user=ops")).json();
  for (const t of toks.items) {
    r = await api("DELETE", "/v1/tokens/" + t.id);
    if (r.status !== 204) fail("revoke ops's token: " + r.status);
  }
  // The page may notice the ended session by itself first (its event
  // stream re-checks credentials) and be on the login page already: then
  // there is no button left to click, which is as right.
  await page.click('#hosts tr[data-name="worker-0"] button[data-action="unlock"]', { timeout: 5000 }).catch(() => {});
  const loginDeadline = Date.now() + 5000;
  while (!page.url().endsWith("/ui/login") && Date.now() < loginDeadline) await page.waitForTimeout(50);
  if (!page.url().endsWith("/ui/login")) fail("an action with an ended session did not land on the login page: " + page.url());
  await page.waitForSelector("input[name=username]", { timeout: 5000 });
  if ((await host("worker-0")).administrative !== "locked") fail("an action with an ended session unlocked the host");

  // At central: the site is online on the fleet page, and its page,
  // through central's relay, shows the host and locks and unlocks it.
  const cp = await login(browser, "admin", central.password, "central admin", central);
  await cp.waitForFunction(() => { const td = document.querySelector('#fleet tr[data-name="site-ui"] [data-field="availability"]'); return td && td.textContent === "online"; },
    null, { timeout: 15000 }).catch(() => fail("site-ui is not online on central's fleet page"));
  await Promise.all([cp.waitForURL(central.base + "/ui/sites/site-ui"), cp.click('#fleet a[href="/ui/sites/site-ui"]')]);
  await cp.waitForSelector('#hosts tr[data-name="worker-0"]', { timeout: 5000 });
  await reaches(cp, cellOf("worker-0", "administrative"), "locked", "worker-0 through the relay");
  await cp.waitForSelector('#site-alarms td:text("200.004")', { timeout: LIVE_MS }).catch(() => fail("the site's alarm is not on its page at central"));
  t0 = Date.now();
  await cp.click('#hosts tr[data-name="worker-0"] button[data-action="unlock"]');
  await reaches(cp, cellOf("worker-0", "administrative"), "unlocked", "unlock through the relay");
  console.log(`unlock at central through the relay: the row shows unlocked ${Date.now() - t0} ms after the click`);
  if ((await host("worker-0")).administrative !== "unlocked") fail("the site does not show worker-0 unlocked");
  await cp.screenshot({ path: shots + "/site-central.png" });
  t0 = Date.now();
  await cp.click('#hosts tr[data-name="worker-0"] button[data-action="lock"]');
  await reaches(cp, cellOf("worker-0", "administrative"), "locked", "lock through the relay");
  console.log(`lock at central through the relay: the row shows locked ${Date.now() - t0} ms after the click`);

  if (errors.length) fail("browser errors: " + errors.join("; "));
} catch (e) {
  console.error("FAIL: " + (e instanceof Failure ? e.message : e.stack || String(e)));
  process.exitCode = 1;
} finally {
  await browser.close();
}
if (!process.exitCode) console.log("PASS: site");
