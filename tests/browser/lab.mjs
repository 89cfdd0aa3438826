// The dashboard against a real one-site lab. An alarm raised by a lab
// fault: the site's WAN link cut (lab fault partition), central marks it
// offline and raises 280.001, which the open fleet page and alarms page
// (banner and list) show without a reload, and which goes when the link
// is back (lab fault clear). Then a patch strategy run from the browser
// at central's patching page, through the relay: the site's strategy
// created with the form, applied, followed live to applied, deleted; then
// the fleet strategy, created from its box, applied and followed to
// applied.
// Run by TestBrowserLab, which starts the lab, applies the site patch
// (PETREL_PATCH, in service) before, and does the lab's side on hooks
// ("@fault", "@fault-clear", "@fleet-setup": the fleet patch uploaded to
// central and the site managed):
//   PETREL_URL, PETREL_TOKEN (central's), PETREL_SITE, PETREL_PATCH,
//   PETREL_FLEET_PATCH, PETREL_SCREENSHOTS (a directory),
//   NODE_EXTRA_CA_CERTS (the lab's CA).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

// hook asks the Go test to do something in the lab and waits until it is done.
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function hook(name) { console.log("@" + name); await stdinLines.next(); }

const env = process.env;
const base = env.PETREL_URL;
const SITE = env.PETREL_SITE, PATCH = env.PETREL_PATCH, FLEET_PATCH = env.PETREL_FLEET_PATCH;
const shots = env.PETREL_SCREENSHOTS;
const ALARM = "280.001"; // Subcloud {subcloud} is offline (docs/alarms.md)
// alarmRow returns the cells of the alarms page's row of ALARM for SITE, or null.
function alarmRow() {
  const [id, entity] = [window.ALARM, window.ENTITY];
  for (const tr of document.querySelectorAll("#alarms tbody tr")) {
    const cells = [...tr.children].map((td) => td.textContent);
    if (tr.dataset.alarmId === id && cells.includes(entity)) return cells;
  }
  return null;
}
const CRITICAL = '#alarm-banner [data-alarm-count="critical"]';
// Deadlines, not waits: central marks a site offline after three silent
// 5 s update intervals; a healed link is back after the site's reconnect
// backoff (up to 30 s); a strategy takes its steps.
const ALARM_MS = 40000, CLEAR_MS = 45000, STRATEGY_MS = 90000;
class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };
const api = (method, path, body) => fetch(base + path, {
  method, headers: { Authorization: "Bearer " + env.PETREL_TOKEN, "Content-Type": "application/json" },
  body: body ? JSON.stringify(body) : undefined,
});

const errors = [];
const dialogs = [];
const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
function watch(page, label) {
  page.on("pageerror", (e) => errors.push(label + ": " + e.message));
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(label + ": " + m.text()); });
  page.on("dialog", (d) => { dialogs.push(d.message()); d.accept(); });
  return page;
}
// waitText waits until the element sel's text matches re (a live change:
// no reload) and returns how long it took.
async function waitText(page, sel, re, ms, what) {
  const t0 = Date.now();
  await page.waitForFunction(([s, src]) => { const el = document.querySelector(s); return !!el && new RegExp(src).test(el.textContent); },
    [sel, re.source], { timeout: ms })
    .catch(async () => fail(`${what}: ${sel} is "${await page.textContent(sel).catch(() => "(none)")}", want ${re} within ${ms} ms`));
  return Date.now() - t0;
}
const hostCell = (field) => `#hosts tr[data-name="controller-0"] [data-field="${field}"]`;

// recordStates keeps every state a strategy box shows (its data-state),
// so the test can say it saw the strategy applying, not only applied.
async function recordStates(page, scope) {
  await page.evaluate((sc) => {
    const sec = document.querySelector(`section.strategy[data-scope="${sc}"]`);
    window.seen = window.seen || {};
    window.seen[sc] = [sec.dataset.state];
    new MutationObserver(() => { const s = sec.dataset.state; if (window.seen[sc].at(-1) !== s) window.seen[sc].push(s); })
      .observe(sec, { attributes: true, attributeFilter: ["data-state"] });
  }, scope);
}
const statesSeen = (page, scope) => page.evaluate((sc) => window.seen[sc], scope);

// act clicks a strategy box's button and checks the confirmation named it.
async function act(page, scope, action, want) {
  const n = dialogs.length;
  await page.click(`section.strategy[data-scope="${scope}"] button[data-strategy="${action}"]`);
  if (dialogs.length !== n + 1 || !dialogs[n].includes(want)) fail(`${action}: confirmation ${JSON.stringify(dialogs.slice(n))}, want one with "${want}"`);
  await page.waitForFunction((a) => new RegExp("^" + a + " .*: accepted\\.$", "i").test(document.getElementById("patch-status").textContent), action, { timeout: 5000 })
    .catch(async () => fail(`${action}: the page says "${await page.textContent("#patch-status")}"`));
}

try {
  // An admin (strategies need one) logs in through the form.
  const password = "lab-admin-password-1";
  const r = await api("POST", "/v1/users", { name: "lab-admin", role: "admin", password });
  if (r.status !== 201) fail(`create lab-admin: ${r.status} ${await r.text()}`);
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const fleet = watch(await ctx.newPage(), "fleet");
  await fleet.goto(base + "/");
  if (!fleet.url().endsWith("/ui/login")) fail("not sent to the login page");
  await fleet.fill("input[name=username]", "lab-admin");
  await fleet.fill("input[name=password]", password);
  await Promise.all([fleet.waitForURL(base + "/"), fleet.click("button[type=submit]")]);
  const fleetRow = (f) => `#fleet tr[data-name="${SITE}"] [data-field="${f}"]`;
  await waitText(fleet, fleetRow("availability"), /^online$/, 10000, "the site on the fleet page");

  // The site's page at central, through the relay: its host available.
  const sp = watch(await ctx.newPage(), "site");
  await sp.goto(base + "/ui/sites/" + SITE);
  await waitText(sp, hostCell("availability"), /^available$/, 10000, "controller-0 on the site page");
  await sp.close();

  // Central's alarms page, with the banner, and the fleet page open.
  const ap = watch(await ctx.newPage(), "alarms");
  await ap.goto(base + "/ui/alarms");
  await ap.waitForSelector('#alarms tbody tr:not(:has-text("Loading"))', { timeout: 5000 });
  await ap.evaluate(([id, entity]) => { window.ALARM = id; window.ENTITY = entity; }, [ALARM, "subcloud=" + SITE]);
  const crit0 = Number(await ap.textContent(CRITICAL));
  if (await ap.evaluate(alarmRow)) fail(`${ALARM} for ${SITE} is active before the fault`);

  // The fault cuts the site's WAN link: central hears nothing from it for
  // three update intervals, marks it offline and raises 280.001. Both open
  // pages follow without a reload.
  await hook("fault");
  let t0 = Date.now();
  await waitText(fleet, fleetRow("availability"), /^offline$/, ALARM_MS, "the site offline on the fleet page");
  console.log(`fleet page: ${SITE} offline ${Date.now() - t0} ms after lab fault partition`);
  await waitText(ap, CRITICAL, new RegExp("^" + (crit0 + 1) + "$"), ALARM_MS, "the banner's critical count");
  await ap.waitForFunction(alarmRow, null, { timeout: ALARM_MS }).catch(() => fail(`${ALARM} is not on the alarms page`));
  console.log(`alarms page: ${ALARM} for ${SITE} in the banner and the list ${Date.now() - t0} ms after lab fault partition`);
  const cells = await ap.evaluate(alarmRow);
  if (cells[0] !== "critical" || !cells[3].includes(SITE + " is offline")) fail("the alarm's row: " + cells.join(" | "));
  if (await fleet.textContent(fleetRow("status")) !== "offline") fail("the site's status on the fleet page: " + await fleet.textContent(fleetRow("status")));
  await ap.screenshot({ path: shots + "/alarms-lab.png" });

  // The clear: the site dials home again; the alarm goes, again live.
  await hook("fault-clear");
  t0 = Date.now();
  await waitText(fleet, fleetRow("availability"), /^online$/, CLEAR_MS, "the site online again on the fleet page");
  console.log(`fleet page: ${SITE} online ${Date.now() - t0} ms after lab fault clear`);
  await ap.waitForFunction(`!(${alarmRow})()`, null, { timeout: CLEAR_MS }).catch(() => fail(`${ALARM} is still on the alarms page`));
  await waitText(ap, CRITICAL, new RegExp("^" + crit0 + "$"), 5000, "the banner's critical count after the clear");
  console.log(`alarms page: ${ALARM} gone from the banner and the list ${Date.now() - t0} ms after lab fault clear`);
  await ap.close();

  // The site's strategy, from its box on central's patching page.
  const pp = fleet;
  await pp.goto(base + "/ui/patching?site=" + SITE);
  await pp.waitForSelector(`#patches tr[data-id="${PATCH}"]`, { timeout: 10000 });
  const site = 'section.strategy[data-scope="site"]';
  await pp.waitForSelector(site + '[data-state="none"]', { timeout: 10000 });
  await recordStates(pp, "site");
  await pp.selectOption(site + ' select[name="alarm_restrictions"]', "relaxed");
  await act(pp, "site", "create", "Create the patch strategy of " + SITE);
  await pp.waitForSelector(site + '[data-state="ready-to-apply"]', { timeout: 5000 });
  const plan = await pp.textContent(site + " ol.stages");
  if (!plan.includes("sw-patch-hosts controller-0")) fail("the site's plan drawn as: " + plan);
  if (plan.includes("lock-hosts")) fail("an in-service patch's plan locks a host: " + plan);
  t0 = Date.now();
  await act(pp, "site", "apply", "Apply the patch strategy of " + SITE);
  await pp.waitForSelector(site + '[data-state="applied"]', { timeout: STRATEGY_MS })
    .catch(async () => fail("the site's strategy is not applied: " + await pp.textContent(site + " .strategy-summary")));
  console.log(`site strategy: applied on the page ${Date.now() - t0} ms after Apply; states seen ${(await statesSeen(pp, "site")).join(" → ")}`);
  if (!(await statesSeen(pp, "site")).includes("applying")) fail("the page never showed the site's strategy applying");
  const summary = await pp.textContent(site + " .strategy-summary");
  if (!/State applied · (\d+) of \1 steps done/.test(summary)) fail("the applied strategy's summary: " + summary);
  await pp.waitForFunction((id) => { const tr = document.querySelector(`#patches tr[data-id="${id}"]`); return tr && tr.children[2].textContent === "deployed"; },
    PATCH, { timeout: 5000 }).catch(() => fail(PATCH + " is not shown deployed"));
  await pp.evaluate(() => document.getElementById("h-patches").scrollIntoView());
  await pp.screenshot({ path: shots + "/patching-applied.png" });
  await act(pp, "site", "delete", "Delete the patch strategy of " + SITE);
  await pp.waitForSelector(site + '[data-state="none"]', { timeout: 5000 });

  // The fleet strategy at central: the patch uploaded at central, the
  // site managed (the hook), created from the fleet box, applied.
  await hook("fleet-setup");
  const fl = 'section.strategy[data-scope="fleet"]';
  await pp.waitForSelector(`#central-patches tr[data-id="${FLEET_PATCH}"]`, { timeout: 10000 });
  await pp.waitForSelector(fl + '[data-state="none"]', { timeout: 5000 });
  await recordStates(pp, "fleet");
  await recordStates(pp, "site");
  await pp.fill(fl + ' input[name="patches"]', FLEET_PATCH);
  await pp.selectOption(fl + ' select[name="alarm_restrictions"]', "relaxed");
  await act(pp, "fleet", "create", "Create the fleet patch strategy");
  await pp.waitForSelector(fl + '[data-state="ready-to-apply"]', { timeout: 5000 });
  await pp.waitForSelector(`${fl} li.step[data-target="${SITE}"]`, { timeout: 5000 });
  t0 = Date.now();
  await act(pp, "fleet", "apply", "Apply the fleet patch strategy");
  await pp.waitForSelector(fl + '[data-state="applied"]', { timeout: STRATEGY_MS })
    .catch(async () => fail("the fleet strategy is not applied: " + await pp.textContent(fl + " .strategy-summary") + " / " + await pp.textContent(fl + " ol.stages")));
  console.log(`fleet strategy: applied on the page ${Date.now() - t0} ms after Apply; states seen ${(await statesSeen(pp, "fleet")).join(" → ")}; ` +
    `the site's own box: ${(await statesSeen(pp, "site")).join(" → ")}`);
  if (!(await statesSeen(pp, "fleet")).includes("applying")) fail("the page never showed the fleet strategy applying");
  const step = await pp.textContent(`${fl} li.step[data-target="${SITE}"]`);
  if (!/: applied/.test(step) || !/done/.test(step)) fail("the site's fleet step drawn as: " + step);
  // The site's own box follows the strategy the fleet created there.
  await pp.waitForSelector(site + '[data-state="applied"]', { timeout: 5000 })
    .catch(async () => fail("the site's box after the fleet strategy: " + await pp.textContent(site + " .strategy-summary")));
  await pp.waitForFunction((id) => { const tr = document.querySelector(`#patches tr[data-id="${id}"]`); return tr && tr.children[2].textContent === "deployed"; },
    FLEET_PATCH, { timeout: 5000 }).catch(() => fail(FLEET_PATCH + " is not shown deployed at the site"));
  await pp.evaluate(() => document.getElementById("h-strategy-fleet").scrollIntoView());
  await pp.screenshot({ path: shots + "/patching-fleet-applied.png" });

  if (errors.length) fail("browser errors: " + errors.join("; "));
} catch (e) {
  console.error("FAIL: " + (e instanceof Failure ? e.message : e.stack || String(e)));
  process.exitCode = 1;
} finally {
  await browser.close();
}
if (!process.exitCode) console.log("PASS: lab");
process.exit(process.exitCode || 0); // stdin (the hook channel) would keep node running
