// Walks the dashboard in headless Chromium, as a developer would, and fails on the first
// thing that is not there. Driven by tests/tests/dashboard.rs, which passes:
//   DASHBOARD  the dashboard's URL         APP      the app's URL
//   USER_ID, PRODUCT_ID  a user and a product to order
//   OUT        where screenshots go        CHROMIUM the browser binary
// Every request that would leave 127.0.0.1 is blocked and reported: the page must work offline.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const [dashboard, app, out] = [env("DASHBOARD"), env("APP"), env("OUT")];
const external = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === "127.0.0.1") return route.continue();
    external.push(url.href);
    return route.abort();
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  // Services: every service of the shop, its endpoints and the topic it publishes.
  await page.goto(`${dashboard}/services`);
  for (const service of ["users", "products", "orders", "checkout", "notifications"]) {
    await page.locator(`#service-${service}`).waitFor();
  }
  await page.locator("#service-orders", { hasText: "/orders" }).waitFor();
  await page.locator("#service-products .badge.private").first().waitFor();
  await page.locator("#service-orders", { hasText: "order-created" }).waitFor();
  await page.locator("#service-orders summary", { hasText: "/orders" }).first().click();
  await page.locator("#service-orders .tree", { hasText: "userId" }).first().waitFor();
  await page.screenshot({ path: `${out}/services.png`, fullPage: false });

  // API explorer: a private endpoint is marked and answers the explorer's signed call (204: it
  // returns nothing); a POST /orders sent from the form answers 200 and links to its trace.
  await page.goto(`${dashboard}/explorer?endpoint=products.reserve_inventory`);
  await page.locator("#explorer").waitFor();
  await page.locator(".call .badge.private").waitFor();
  await page.locator('input[data-param="id"]').fill(env("PRODUCT_ID"));
  await page.locator('textarea[name="body"]').fill('{"quantity": 1}');
  await page.locator("#explorer button").click();
  await page.locator("#response-status .badge", { hasText: "204" }).waitFor();
  await page.goto(`${dashboard}/explorer?endpoint=orders.create`);
  const body = await page.locator('textarea[name="body"]').inputValue();
  if (!body.includes("userId")) throw new Error(`the body is not prefilled from the schema: ${body}`);
  await page.locator('textarea[name="body"]').fill(
    JSON.stringify({ userId: env("USER_ID"), productId: env("PRODUCT_ID"), quantity: 1 }),
  );
  await page.locator("#explorer button").click();
  await page.locator("#response-status .badge", { hasText: "200" }).waitFor();
  await page.locator("#response-body", { hasText: "confirmed" }).waitFor();
  await page.screenshot({ path: `${out}/explorer.png`, fullPage: false });
  // The explorer's order appears in Traces (live, no reload) and opens as its waterfall.
  const explored = (await page.locator("#response-trace").getAttribute("href")).split("/").pop();
  await page.goto(`${dashboard}/traces`);
  await page.locator(`#trace-rows tr[data-trace="${explored}"]`).waitFor({ timeout: 20000 });
  await page.locator(`#trace-rows tr[data-trace="${explored}"] a`).click();
  await page.locator("#waterfall summary", { hasText: "orders.create" }).first().waitFor();
  // An `auth` endpoint takes the credential in the form: without it 401, with the token a
  // login through the explorer returned, the signed-in user.
  const explorerEmail = `explorer-${Date.now()}@example.com`;
  const explore = async (endpoint, fill) => {
    await page.goto(`${dashboard}/explorer?endpoint=${endpoint}`);
    await page.locator("#explorer").waitFor();
    await fill();
    await page.locator("#explorer button").click();
    await page.locator("#response-status .badge").waitFor();
    return {
      status: await page.locator("#response-status .badge").innerText(),
      body: await page.locator("#response-body").innerText(),
    };
  };
  const signup = await explore("users.create", () =>
    page.locator('textarea[name="body"]').fill(JSON.stringify({ email: explorerEmail, name: "Explorer", password: "long enough" })));
  if (signup.status !== "200") throw new Error(`sign-up: ${signup.status} ${signup.body}`);
  const login = await explore("users.create_session", () =>
    page.locator('textarea[name="body"]').fill(JSON.stringify({ email: explorerEmail, password: "long enough" })));
  if (login.status !== "200") throw new Error(`login: ${login.status} ${login.body}`);
  const token = JSON.parse(login.body).token;
  const anonymous = await explore("users.me", async () => {
    await page.locator(".call .badge.auth").waitFor();
  });
  if (anonymous.status !== "401") throw new Error(`/me without a credential: ${anonymous.status}`);
  const me = await explore("users.me", () => page.locator("input[data-credential]").fill(token));
  if (me.status !== "200" || !me.body.includes(explorerEmail)) throw new Error(`/me: ${me.status} ${me.body}`);

  // Raw endpoints and streams are listed with their kind. The explorer sends a raw body as
  // written (the webhook refuses it unsigned: 401), and opens the live orders stream: an order
  // placed meanwhile shows up as it is pushed; closing it closes normally.
  await page.goto(`${dashboard}/services`);
  await page.locator("#service-orders .badge.kind", { hasText: "stream-out" }).waitFor();
  await page.locator("#service-payments .badge.kind", { hasText: "raw" }).first().waitFor();
  const hook = await explore("payments.payments_webhook", () =>
    page.locator('textarea[name="raw"]').fill('{"id": "evt_explorer", "type": "charge.succeeded"}'));
  if (hook.status !== "401") throw new Error(`unsigned webhook: ${hook.status} ${hook.body}`);
  await page.goto(`${dashboard}/explorer?endpoint=orders.live`);
  await page.locator("#explorer").waitFor();
  await page.locator("#explorer button").click();
  await page.locator("#stream-state", { hasText: "Open" }).waitFor();
  const pushed = await (await fetch(`${app}/orders`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId: env("USER_ID"), productId: env("PRODUCT_ID"), quantity: 1 }),
  })).json();
  if (!pushed.id) throw new Error(`order for the stream: ${JSON.stringify(pushed)}`);
  await page.locator("#stream-messages li", { hasText: pushed.id }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: `${out}/stream.png`, fullPage: false });
  await page.locator("#stream-close").click();
  await page.locator("#stream-state", { hasText: "Closed: 1000" }).waitFor();

  // Services shows each endpoint's recent activity, from the metrics the app exports every 5 s:
  // the orders placed above are bars in orders.create's sparkline, and their deliveries in the
  // confirmation subscription's.
  const sparkCount = async (selector) => {
    const spark = page.locator(`${selector} svg.spark`).first();
    return Number((await spark.getAttribute("data-count")) || 0);
  };
  const orders = 'li[data-endpoint="orders.create"]';
  const confirmations = "#subscription-send-order-confirmation";
  const activityDeadline = Date.now() + 30000;
  for (;;) {
    await page.goto(`${dashboard}/services`);
    if ((await sparkCount(orders)) >= 2 && (await sparkCount(confirmations)) >= 1) break;
    if (Date.now() > activityDeadline) {
      throw new Error(`no activity on the Services page: orders.create ${await sparkCount(orders)}, ` +
        `send-order-confirmation ${await sparkCount(confirmations)}`);
    }
    await page.waitForTimeout(1000);
  }
  if ((await page.locator(`${orders} svg.spark rect`).count()) === 0) {
    throw new Error("orders.create's sparkline draws no bar");
  }
  const title = await page.locator(`${orders} svg.spark title`).textContent();
  if (!/^\d+ requests, \d+ failed/.test(title)) throw new Error(`the sparkline's summary: ${title}`);
  await page.locator(`${orders} .activity`).scrollIntoViewIfNeeded();
  await page.screenshot({ path: `${out}/activity.png`, fullPage: false });

  // The shop's own status page (static files) shows the live feed: an order appears in it.
  await page.goto(`${app}/`);
  await page.locator("#state", { hasText: "connected" }).waitFor();
  const shown = await (await fetch(`${app}/orders`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId: env("USER_ID"), productId: env("PRODUCT_ID"), quantity: 1 }),
  })).json();
  await page.locator("#orders tr", { hasText: shown.id }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: `${out}/status-page.png`, fullPage: false });

  // Traces: a new order appears without a reload, and opens as a waterfall.
  await page.goto(`${dashboard}/traces`);
  const before = await page.locator("#trace-rows tr").evaluateAll((rows) => rows.map((r) => r.dataset.trace));
  const response = await fetch(`${app}/orders`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId: env("USER_ID"), productId: env("PRODUCT_ID"), quantity: 1 }),
  });
  if (response.status !== 200) throw new Error(`POST /orders answered ${response.status}`);
  const handle = await page.waitForFunction(
    (known) => {
      const row = [...document.querySelectorAll("#trace-rows tr")].find(
        (r) => r.textContent.includes("orders.create") && !known.includes(r.dataset.trace),
      );
      return row ? row.dataset.trace : null;
    },
    before,
    { timeout: 20000 },
  );
  const fresh = await handle.jsonValue();
  await page.screenshot({ path: `${out}/traces.png`, fullPage: false });
  await page.click(`#trace-rows tr[data-trace="${fresh}"] a`);
  await page.locator("#waterfall").waitFor();
  for (const span of ["orders.create", "call users.get", "call products.reserve_inventory", "publish order-created"]) {
    await page.locator("#waterfall summary", { hasText: span }).first().waitFor();
  }
  await page.locator("#waterfall summary", { hasText: "db " }).first().click();
  await page.locator("#waterfall table.attrs", { hasText: "db.statement" }).first().waitFor();
  await page.screenshot({ path: `${out}/trace.png`, fullPage: false });

  // The status bar says the app runs, and where.
  await page.locator("footer#status.running", { hasText: app }).waitFor();

  // Architecture: every service and the topic, drawn from the source.
  await page.goto(`${dashboard}/architecture`);
  for (const node of ["users", "products", "orders", "checkout", "notifications", "order-created"]) {
    await page.locator(`svg.architecture g[data-name="${node}"]`).waitFor();
  }
  const calls = await page.locator("svg.architecture path.edge.call").count();
  if (calls < 5) throw new Error(`only ${calls} call arrows`);
  await page.screenshot({ path: `${out}/architecture.png`, fullPage: false });

  // Databases: tables with their columns, a table's rows, the read-only SQL box.
  await page.goto(`${dashboard}/databases`);
  for (const db of ["users", "products", "orders", "notifications"]) {
    await page.locator(`#database-${db}`).waitFor();
  }
  await page.locator("#database-users .columns", { hasText: "email" }).waitFor();
  await page.locator("#database-users", { hasText: "1_create_users.up.sql" }).waitFor();
  await page.screenshot({ path: `${out}/databases.png`, fullPage: false });
  await page.locator('#database-users a[href="/databases/users/tables/users"]').click();
  const email = env("USER_EMAIL");
  let found = await page.locator("table.rows", { hasText: email }).count();
  while (!found) {
    const next = page.locator("a.next");
    if (!(await next.count())) throw new Error(`${email} is on no page of the users table`);
    await next.click();
    found = await page.locator("table.rows", { hasText: email }).count();
  }
  await page.screenshot({ path: `${out}/table.png`, fullPage: false });
  await page.goto(`${dashboard}/databases`);
  await page.locator("#database-users textarea").fill("SELECT count(*) AS n FROM users");
  await page.locator("#database-users form.sql button").click();
  await page.locator("#query-count", { hasText: "1 row" }).waitFor();
  await page.locator("form.sql textarea").fill("DELETE FROM users");
  await page.locator("form.sql button").click();
  await page.locator("#query-error", { hasText: "read-only" }).waitFor();

  // Pub/Sub: the dead letter is listed with its error, and goes back on redrive.
  const dead = env("DEAD_ID");
  await page.goto(`${dashboard}/pubsub`);
  await page.locator("#subscription-send-order-confirmation").waitFor();
  const letter = page.locator(`tr[data-message="${dead}"]`);
  await letter.locator(".error-text", { hasText: "poisoned" }).waitFor();
  await page.screenshot({ path: `${out}/pubsub.png`, fullPage: false });
  await letter.locator("button.redrive").click();
  await page.locator("#redriven", { hasText: "Put 1 message back" }).waitFor();

  // Cron: the shop's job is listed with its schedule; "Run now" runs it, and /api/cron shows
  // the run (by hand, succeeded).
  await page.goto(`${dashboard}/cron`);
  const job = page.locator("#cron-expire-reservations");
  await job.locator("code", { hasText: "every 1m" }).waitFor();
  await page.screenshot({ path: `${out}/cron.png`, fullPage: false });
  await job.locator("button.run-now").click();
  await page.locator("#started", { hasText: "expire-reservations" }).waitFor();
  let lastRun = null;
  for (let i = 0; i < 100; i++) {
    const jobs = await page.evaluate(() => fetch("/api/cron").then((r) => r.json()));
    const found = jobs.find((j) => j.name === "expire-reservations");
    if (!found || found.service !== "products" || !found.nextRun) {
      throw new Error(`/api/cron: ${JSON.stringify(jobs)}`);
    }
    lastRun = found.lastRun;
    if (lastRun && lastRun.manual && lastRun.status === "succeeded") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!(lastRun && lastRun.manual && lastRun.status === "succeeded")) {
    throw new Error(`"Run now" left no successful run: ${JSON.stringify(lastRun)}`);
  }
  await page.goto(`${dashboard}/cron`);
  await job.locator("tr.run.succeeded").first().waitFor();

  // Workflows: the explorer's order ran `place-order` (reserve, then record); an order for more
  // than the stock fails at its first step, and "Retry" runs it again from that step.
  await page.goto(`${dashboard}/explorer?endpoint=orders.create`);
  await page.locator('textarea[name="body"]').fill(
    JSON.stringify({ userId: env("USER_ID"), productId: env("PRODUCT_ID"), quantity: 100000 }),
  );
  await page.locator("#explorer button").click();
  await page.locator("#response-status .badge", { hasText: "400" }).waitFor();
  await page.goto(`${dashboard}/workflows?workflow=place-order`);
  const flow = page.locator("#workflow-place-order");
  await flow.locator(".status.completed").waitFor();
  await flow.locator(".status.failed").waitFor();
  await page.screenshot({ path: `${out}/workflows.png`, fullPage: false });
  await page.locator("#runs tr.run.completed a").first().click();
  const steps = page.locator("#steps");
  await steps.locator("tr.step.succeeded", { hasText: "reserve" }).waitFor();
  await steps.locator("tr.step.succeeded", { hasText: "record" }).waitFor();
  await page.goto(`${dashboard}/workflows?workflow=place-order`);
  await page.locator("#runs tr.run.failed a").first().click();
  await page.locator("#run-error", { hasText: "insufficient inventory" }).waitFor();
  await page.locator("#steps tr.step.failed", { hasText: "reserve" }).waitFor();
  await page.screenshot({ path: `${out}/workflow-run.png`, fullPage: true });
  await page.locator("button.retry").click();
  await page.locator("#retried").waitFor();
  const api = await page.evaluate(() => fetch("/api/workflows").then((r) => r.json()));
  if (!api.workflows.some((w) => w.name === "checkout" && w.service === "checkout")) {
    throw new Error(`/api/workflows: ${JSON.stringify(api.workflows)}`);
  }

  // An unknown page is a 404 page, not a blank one.
  const missing = await page.goto(`${dashboard}/no-such-page`);
  if (missing.status() !== 404) throw new Error(`an unknown page answered ${missing.status()}`);
  await page.locator("h1", { hasText: "Not found" }).waitFor();
  await page.screenshot({ path: `${out}/not-found.png` });

  if (errors.length) throw new Error(`script errors: ${errors.join("; ")}`);
  if (external.length) throw new Error(`requests left 127.0.0.1: ${external.join(", ")}`);
  console.log(JSON.stringify({ ok: true, screenshots: out }));
} finally {
  await browser.close();
}
