// Dashboard test in a real browser: log in through the form, watch a
// subcloud appear live (EventSource) without a reload, disappear when
// deleted, and see a forged state change refused. Run by the Go test
// TestBrowserDashboard, which starts central and passes:
//   PETREL_URL, PETREL_TOKEN (admin API token), PETREL_ADMIN_PASSWORD_FILE,
//   PETREL_SCREENSHOTS (a directory), NODE_EXTRA_CA_CERTS (central's CA).
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

// hook asks the Go test to do something (restart central) and waits until it is done.
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function hook(name) { console.log("@" + name); await stdinLines.next(); }

const { PETREL_URL: base, PETREL_TOKEN: token, PETREL_ADMIN_PASSWORD_FILE: pwFile, PETREL_SCREENSHOTS: shots } = process.env;
const password = readFileSync(pwFile, "utf8").trim();
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };
const api = (method, path, body) => fetch(base + path, {
  method, headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
  body: body ? JSON.stringify(body) : undefined,
});

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
  // Script errors fail the test; failed requests the test provokes (403, 503) do not.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });
  // 404 is an error but for central's fleet strategy, which is "none" then.
  page.on("response", (res) => { if (res.status() === 404 && !res.url().endsWith("/v1/strategies/patch")) errors.push("404 for " + res.url()); });

  await page.goto(base + "/");
  if (!page.url().endsWith("/ui/login")) fail("not sent to the login page: " + page.url());
  await page.screenshot({ path: shots + "/login.png" });
  await page.fill("input[name=username]", "admin");
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForURL(base + "/"), page.click("button[type=submit]")]);
  await page.waitForSelector("#live:text('live')", { timeout: 5000 });

  // A new subcloud appears live.
  let t0 = Date.now();
  let r = await api("POST", "/v1/subclouds", { name: "site-live", shape: "duplex" });
  if (r.status !== 201) fail("create subcloud: " + r.status);
  await page.waitForSelector('#fleet tr[data-name="site-live"]', { timeout: 3000 });
  console.log(`row appeared ${Date.now() - t0} ms after the API call`);
  const offline = await page.textContent('[data-count="offline"]');
  if (offline !== "1") fail("offline count " + offline + "; want 1");

  // Search and filter: the server answers one page; the script swaps the rows.
  for (const name of ["site-other", "site-live-2"]) {
    r = await api("POST", "/v1/subclouds", { name, shape: "simplex" });
    if (r.status !== 201) fail("create " + name + ": " + r.status);
  }
  await page.waitForSelector('#fleet tr[data-name="site-live-2"]', { timeout: 3000 });
  await page.fill("input[name=q]", "other");
  await page.waitForFunction(() => [...document.querySelectorAll("#fleet tbody tr[data-name]")].map((tr) => tr.dataset.name).join() === "site-other", null, { timeout: 3000 })
    .catch(() => fail("search 'other' does not narrow the fleet to site-other"));
  if (!page.url().endsWith("/?q=other")) fail("the search is not in the page's URL: " + page.url());
  await page.fill("input[name=q]", "");
  await page.selectOption("select[name=status]", "ok");
  await page.waitForSelector('#fleet td:text("0 of 3 subclouds match.")', { timeout: 3000 }).catch(() => {});
  await page.waitForFunction(() => document.getElementById("fleet-matched").textContent === "0 of 3 subclouds match.", null, { timeout: 3000 })
    .catch(async () => fail("status=ok: " + await page.textContent("#fleet-matched")));
  await page.selectOption("select[name=status]", "");
  await page.waitForSelector('#fleet tr[data-name="site-live-2"]', { timeout: 3000 });
  // The filters are reachable from the keyboard.
  await page.focus("input[name=q]");
  await page.keyboard.press("Tab");
  if (await page.evaluate(() => document.activeElement.name) !== "status") fail("Tab from the search does not reach the status filter");
  for (const name of ["site-other", "site-live-2"]) await api("DELETE", "/v1/subclouds/" + name);
  await page.waitForSelector('#fleet tr[data-name="site-other"]', { state: "detached", timeout: 3000 });
  // The counts and the matched line follow the deletes within about a second.
  await page.waitForFunction(() => document.getElementById("fleet-matched").textContent.startsWith("Showing 1–1 of 1 matching (1 subclouds)")
    && document.querySelector('[data-count="offline"]').textContent === "1", null, { timeout: 3000 })
    .catch(async () => fail("after the deletes: " + await page.textContent("#fleet-matched")));
  await page.screenshot({ path: shots + "/fleet.png" });

  // Central restarts with the page open: the stream reconnects (a new
  // central run: reset, the page reloads) and the page is live again.
  // The marker goes with the reload that central's reset asks for.
  await page.evaluate(() => { window.beforeRestart = true; });
  t0 = Date.now();
  await hook("restart-central");
  const restarted = Date.now();
  // A change right after the restart, likely before the page reconnects: it must show.
  r = await api("POST", "/v1/subclouds", { name: "site-during", shape: "duplex" });
  if (r.status !== 201) fail("create site-during: " + r.status);
  await page.waitForFunction(() => !window.beforeRestart && document.getElementById("live") && document.getElementById("live").textContent === "live",
    null, { timeout: 15000 }).catch(() => fail("the page did not reconnect, reset and go live again after central restarted"));
  console.log(`central restart: stopped and started in ${restarted - t0} ms; page live again ${Date.now() - restarted} ms after`);
  await page.waitForSelector('#fleet tr[data-name="site-during"]', { timeout: 3000 }).catch(() => fail("the page missed a subcloud created during its reconnect"));
  await api("DELETE", "/v1/subclouds/site-during");
  t0 = Date.now();
  r = await api("POST", "/v1/subclouds", { name: "site-after", shape: "simplex" });
  if (r.status !== 201) fail("create site-after: " + r.status);
  await page.waitForSelector('#fleet tr[data-name="site-after"]', { timeout: 3000 });
  console.log(`after the restart, a new subcloud appeared ${Date.now() - t0} ms after the API call`);
  await api("DELETE", "/v1/subclouds/site-after");

  // The site page opens (its hosts come through the relay; this site never dialed home).
  await page.click('a[href="/ui/sites/site-live"]');
  await page.waitForSelector("#hosts tr.error", { timeout: 5000 });
  await page.screenshot({ path: shots + "/site.png" });
  await page.goBack();
  await page.waitForSelector("#live:text('live')", { timeout: 5000 });

  // A state change without the CSRF token is refused, even from the page.
  const forged = await page.evaluate(async () =>
    (await fetch("/v1/subclouds", { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"name":"x","shape":"simplex"}' })).status);
  if (forged !== 403) fail("POST without CSRF from the page: " + forged + "; want 403");

  // Deleted: the row goes away live.
  t0 = Date.now();
  r = await api("DELETE", "/v1/subclouds/site-live");
  if (r.status !== 204) fail("delete subcloud: " + r.status);
  await page.waitForSelector('#fleet tr[data-name="site-live"]', { state: "detached", timeout: 3000 });
  console.log(`row removed ${Date.now() - t0} ms after the API call`);

  // Patching at central: no fleet strategy yet (the fleet API answers
  // 404). Then a fleet strategy in progress (scope "fleet", each stage a
  // batch of sites, each step a site with its "site" progress object, as
  // docs/api.md has it), answered here by the test through page.route, as
  // a fleet needs real sites to get that far (TestFleetPatchStrategyInTheLab): the page draws it generically, follows its progress live,
  // and Apply/Abort ask for confirmation and post {action}.
  let answer = true, dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); if (answer) d.accept(); else d.dismiss(); });
  await page.goto(base + "/ui/patching");
  await page.waitForSelector('section.strategy[data-scope="fleet"][data-state="none"]', { timeout: 5000 });
  await page.waitForSelector('#central-patches td:text("No patches uploaded.")', { timeout: 5000 });
  // Central's real fleet API refuses a strategy of a patch it does not
  // hold, and the page shows why.
  await page.fill('section.strategy[data-scope="fleet"] input[name="patches"]', "PETREL-NOT-UPLOADED");
  await page.fill('section.strategy[data-scope="fleet"] input[name="max_parallel"]', "2");
  await page.check('section.strategy[data-scope="fleet"] input[name="stop_on_failure"]');
  await page.click('section.strategy[data-scope="fleet"] button[data-strategy="create"]');
  await page.waitForSelector("#patch-status.error", { timeout: 3000 });
  const refused = await page.textContent("#patch-status");
  if (!refused.includes("PETREL-NOT-UPLOADED is not uploaded at central")) fail("fleet strategy create refused as: " + refused);
  let polls = 0;
  const posted = [];
  const fleetStrategy = () => {
    const p = Math.min(polls, 3);
    const step = (site, i) => ({ action: "patch-subcloud", target: site, state: i < p ? "applied" : i === p ? "applying" : "initial",
      reason: "", site: i === p ? { phase: "apply-strategy", state: "applying", steps_done: 1, steps_total: 2, action: "lock-hosts", hosts: ["controller-0"] } : undefined });
    return { type: "patch", scope: "fleet", state: p >= 3 ? "applied" : "applying", options: {}, patches: ["PETREL-26.09.1"],
      stages: [{ name: "batch 1", state: p >= 2 ? "applied" : "applying", steps: ["site-a", "site-b"].map(step) },
        { name: "batch 2", state: p >= 3 ? "applied" : "initial", steps: ["site-c"].map((x) => step(x, 2)) }] };
  };
  await page.route(/\/v1\/strategies\/patch(\/actions)?$/, async (route) => {
    const req = route.request();
    if (req.url().endsWith("/actions")) { posted.push({ body: req.postDataJSON(), csrf: req.headers()["x-csrf-token"] }); return route.fulfill({ status: 202, json: fleetStrategy() }); }
    polls++;
    return route.fulfill({ status: 200, json: fleetStrategy() });
  });
  await page.waitForSelector('section.strategy[data-scope="fleet"] li.step[data-target="site-a"]', { timeout: 5000 });
  const firstText = await page.textContent('section.strategy[data-scope="fleet"] ol.stages');
  if (!/batch 1/.test(firstText) || !/site-c/.test(firstText)) fail("fleet strategy drawn as: " + firstText);
  await page.waitForSelector('section.strategy[data-scope="fleet"] li.step[data-target="site-b"]:has-text("1 of 2 steps · now lock-hosts controller-0")', { timeout: 5000 })
    .catch(() => fail("a step's progress fields are not shown"));
  await page.waitForSelector('section.strategy[data-scope="fleet"][data-state="applied"]', { timeout: 5000 })
    .catch(() => fail("the fleet strategy's progress is not followed live"));
  await page.screenshot({ path: shots + "/patching-fleet.png" });
  answer = false;
  await page.click('section.strategy[data-scope="fleet"] button[data-strategy="abort"]');
  if (!dialogs.some((d) => d.includes("Abort the fleet patch strategy"))) fail("no confirmation for abort: " + dialogs);
  answer = true;
  await page.click('section.strategy[data-scope="fleet"] button[data-strategy="apply"]');
  await page.waitForFunction(() => /Apply the fleet patch strategy: accepted/.test(document.getElementById("patch-status").textContent), null, { timeout: 3000 })
    .catch(() => fail("apply not reported"));
  if (posted.length !== 1 || posted[0].body.action !== "apply" || !posted[0].csrf) fail("posted actions: " + JSON.stringify(posted));
  await page.unroute(/\/v1\/strategies\/patch(\/actions)?$/);

  // Tablet width: the page does not scroll sideways (wide tables scroll in their box).
  await page.setViewportSize({ width: 820, height: 1180 });
  for (const path of ["/", "/ui/alarms", "/ui/events", "/ui/patching"]) {
    await page.goto(base + path);
    const [sw, iw] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    if (sw > iw) fail(`${path} at 820 px scrolls sideways (${sw} px wide)`);
  }
  await page.goto(base + "/");
  await page.screenshot({ path: shots + "/fleet-tablet.png" });
  await page.setViewportSize({ width: 1280, height: 800 });

  // Logging out ends the session.
  await Promise.all([page.waitForURL(base + "/ui/login"), page.click(".logout button")]);
  await page.goto(base + "/");
  if (!page.url().endsWith("/ui/login")) fail("still logged in after logout");
  if (errors.length) fail("browser errors: " + errors.join("; "));
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
}
if (!process.exitCode) console.log("PASS: dashboard");
process.exit(process.exitCode || 0); // stdin (the hook channel) would keep node running
