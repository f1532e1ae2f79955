// Pages of other origins attack a running `ovation run` in headless Chromium, then the
// dashboard's own page does the same things. Driven by tests/tests/dashboard.rs, which passes:
//   DASHBOARD, APP   the dashboard's and the app's URLs (http://127.0.0.1:PORT)
//   EVIL             a page server on another origin (another loopback port)
//   PRODUCT_ID       a product whose stock the attacks try to take
//   DEAD_ID          a dead letter of send-order-confirmation they try to redrive
//   OWNED            a file the SQL box attacks try to create
//   CHROMIUM         the browser binary
// It prints one JSON line: what each attack saw from inside the page. The test checks what
// happened on the server's side.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const [dashboard, app, evil] = [env("DASHBOARD"), env("APP"), env("EVIL")];
const [product, dead, owned] = [env("PRODUCT_ID"), env("DEAD_ID"), env("OWNED")];
const dashboardPort = new URL(dashboard).port;
const rebound = `http://evil.example:${dashboardPort}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // evil.example resolves to 127.0.0.1, as a rebinding attacker's DNS answers once the page
  // is loaded; nothing else leaves the machine.
  args: ["--no-sandbox", "--host-resolver-rules=MAP evil.example 127.0.0.1, EXCLUDE localhost"],
});
const report = {};
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  // 1. Another origin (another port of 127.0.0.1): cross-site forms and fetches.
  await page.goto(`${evil}/`);
  report.crossOrigin = await page.evaluate(
    async ({ dashboard, app, product, dead, owned }) => {
      const seen = {};
      // A form posted into a hidden frame: a classic CSRF, no script needed.
      const submit = (action, fields) =>
        new Promise((resolve) => {
          const frame = document.createElement("iframe");
          frame.name = "f" + Math.random().toString(36).slice(2);
          frame.style.display = "none";
          frame.onload = () => resolve();
          document.body.appendChild(frame);
          const form = document.createElement("form");
          form.method = "POST";
          form.action = action;
          form.target = frame.name;
          for (const [name, value] of Object.entries(fields)) {
            const input = document.createElement("input");
            input.name = name;
            input.value = value;
            form.appendChild(input);
          }
          document.body.appendChild(form);
          form.submit();
          setTimeout(resolve, 3000);
        });
      const attempt = async (name, url, init) => {
        try {
          const r = await fetch(url, init);
          seen[name] = r.type === "opaque" ? "opaque" : r.status;
        } catch (e) {
          seen[name] = "blocked";
        }
      };
      const copy = `COPY (SELECT 1) TO PROGRAM 'touch ${owned}'`;
      await submit(`${dashboard}/databases/products/query`, { sql: copy });
      await submit(`${dashboard}/databases/products/query`, { sql: copy, csrf: "0".repeat(64) });
      await submit(`${dashboard}/pubsub/send-order-confirmation/redrive`, { messageId: dead });
      await submit(`${dashboard}/cron/expire-reservations/run`, {});
      await submit(`${dashboard}/workflows/runs/${product}/retry`, {});
      await submit(`${app}/products/${product}/reserve`, { quantity: "3" });
      const call = JSON.stringify({
        service: "products", endpoint: "reserve_inventory", params: { id: product }, body: { quantity: 3 },
      });
      await attempt("explorer no-cors text/plain", `${dashboard}/api/explorer`, {
        method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body: call,
      });
      await attempt("explorer cors json", `${dashboard}/api/explorer`, {
        method: "POST", headers: { "content-type": "application/json" }, body: call,
      });
      await attempt("sql no-cors form", `${dashboard}/databases/products/query`, {
        method: "POST", mode: "no-cors",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ sql: copy }),
      });
      await attempt("app redrive no-cors text/plain", `${app}/__ovation/pubsub/send-order-confirmation/redrive`, {
        method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" },
        body: JSON.stringify({ messageId: dead }),
      });
      await attempt("otlp no-cors", `${dashboard}/v1/traces`, {
        method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body: "{}",
      });
      await attempt("read traces", `${dashboard}/api/traces`, {});
      await attempt("read app model", `${app}/__ovation/meta`, {});
      return seen;
    },
    { dashboard, app, product, dead, owned },
  );

  // 2. DNS rebinding: the attacker's page was served as http://evil.example:<dashboard port>/,
  //    then the name resolves to 127.0.0.1, so its requests are same-origin with the
  //    dashboard — and carry `Host: evil.example:<port>`.
  await page.route(`${rebound}/`, (route) =>
    route.fulfill({ contentType: "text/html", body: "<!doctype html><title>evil</title><p>hi</p>" }),
  );
  await page.goto(`${rebound}/`);
  await page.unroute(`${rebound}/`);
  report.rebound = await page.evaluate(async (product) => {
    const seen = {};
    const status = async (name, url, init) => {
      try {
        seen[name] = (await fetch(url, init)).status;
      } catch (e) {
        seen[name] = "blocked";
      }
    };
    await status("services page", "/services");
    await status("traces", "/api/traces");
    await status("explorer", "/api/explorer", {
      method: "POST",
      headers: { "content-type": "application/json", "x-ovation-csrf": "0".repeat(64) },
      body: JSON.stringify({ service: "products", endpoint: "reserve_inventory", params: { id: product }, body: { quantity: 3 } }),
    });
    await status("sql", "/databases/products/query", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "sql=SELECT+1",
    });
    return seen;
  }, product);
  // Chromium shows its own error page for an empty 421: the status is read off the wire.
  const answered = page.waitForResponse(`${rebound}/databases`);
  await page.goto(`${rebound}/databases`).catch(() => {});
  report.rebound["navigation"] = (await answered).status();

  // 3. The same actions from the dashboard's own page work.
  await page.close();
  const own = await context.newPage();
  own.on("pageerror", (e) => errors.push(String(e)));
  await own.goto(`${dashboard}/explorer?endpoint=products.reserve_inventory`);
  await own.locator('input[data-param="id"]').fill(product);
  await own.locator('textarea[name="body"]').fill('{"quantity": 1}');
  await own.locator("#explorer button").click();
  await own.locator("#response-status .badge", { hasText: "204" }).waitFor();
  await own.goto(`${dashboard}/databases`);
  await own.locator("#database-products textarea").fill("SELECT inventory FROM products");
  await own.locator("#database-products form.sql button").click();
  await own.locator("#query-count").waitFor();
  await own.goto(`${dashboard}/pubsub`);
  await own.locator(`tr[data-message="${dead}"] button.redrive`).click();
  report.ownRedrive = await own.locator("#redriven").textContent();

  if (errors.length) throw new Error(`script errors: ${errors.join("; ")}`);
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
