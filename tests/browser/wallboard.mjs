// The wallboard in headless Chromium, driven by the Rust test that started ctid, the
// simulated PBX and a cuttable proxy (tests/wallboard.rs). It asks that test for each
// step on standard output (`step NAME`) and reads the answer on standard input
// (`ok [DETAIL]`). Failures throw: the exit code tells the test.
//
//   WALLBOARD_URL   the page, through the proxy
//   WALLBOARD_SHOT  with it, only takes a screenshot of the busy board into that file
//   WALLBOARD_TOKEN, WALLBOARD_AGENT_TOKEN  HTTP API tokens of tenant-b's supervisors and
//                   of an agent of the first tenant, for the page opened with ?token=
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const url = process.env.WALLBOARD_URL;
const shot = process.env.WALLBOARD_SHOT;
const input = createInterface({ input: process.stdin });
const answers = input[Symbol.asyncIterator]();

async function step(name) {
  console.log(`step ${name}`);
  const { value, done } = await answers.next();
  if (done || !value.startsWith("ok")) throw new Error(`step ${name}: ${value}`);
  return value.slice(3);
}

function check(cond, what) {
  if (!cond) throw new Error(what);
  console.log(`checked: ${what}`);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.on("console", (m) => console.log(`page: ${m.text()}`));
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  const frames = [];
  page.on("websocket", (ws) => ws.on("framereceived", (f) => frames.push(String(f.payload))));

  await page.goto(url);
  await page.fill("#user", "carol");
  await page.fill("#password", "carol");
  await page.click("button[type=submit]");
  await page.waitForSelector('#queues tr[data-queue="support"]', { timeout: 10000 });
  check(await page.isVisible("#board"), "carol logged in and sees her board");

  if (shot) {
    await step("busy");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot in ${shot}`);
  } else {
    await endToEnd(page, frames);
  }
  await step("done");
} finally {
  await browser.close();
  input.close();
  process.stdin.destroy();
}

// The page opened with tenant-b's supervisor token shows tenant-b's call and queue, and
// nothing of the first tenant's (`mine`); an agent's token is refused.
async function withToken(mine, other) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const bodies = [];
  page.on("response", async (r) => {
    if (r.url().includes("/api/")) bodies.push(await r.text().catch(() => ""));
  });
  await page.goto(`${url}?token=${process.env.WALLBOARD_TOKEN}`);
  await page.waitForSelector(`#calls tr[data-call-id="${other}"]`, { timeout: 3000 });
  await page.waitForSelector('#queues tr[data-queue="sales"]', { timeout: 3000 });
  check((await page.textContent("#context")) === "tenant-b", "the token's page shows tenant-b");
  const html = await page.content();
  check(!html.includes(mine) && !html.includes("support"), "the token's page shows nothing of the first tenant");
  const leaked = bodies.filter((b) => b.includes(mine) || b.includes("support") || b.includes("alice"));
  check(leaked.length === 0, `none of the ${bodies.length} answers it read names the first tenant`);
  await step("cut");
  await page.waitForSelector("#conn-warning", { state: "visible", timeout: 3000 });
  await step("restore");
  await page.waitForSelector("#conn-warning", { state: "hidden", timeout: 5000 });
  check(true, "the token's page warns while ctid cannot be reached, and recovers");
  await page.goto(url);
  await page.fill("#user", "alice");
  await page.fill("#password", "alice");
  await page.click("button[type=submit]");
  await page.waitForSelector("#error", { state: "visible", timeout: 5000 });
  const agent = await page.textContent("#error");
  check(agent.includes("supervisors") && !(await page.isVisible("#board")), `an agent's login is refused: ${agent}`);
  await page.goto(`${url}?token=${process.env.WALLBOARD_AGENT_TOKEN}`);
  await page.waitForSelector("#error", { state: "visible", timeout: 3000 });
  const refused = await page.textContent("#error");
  check(refused.includes("supervisors") && !(await page.isVisible("#board")), `an agent's token is refused: ${refused}`);
  await context.close();
}

async function endToEnd(page, frames) {
  const agentState = (login) =>
    page.getAttribute(`#agents tr[data-login="${login}"] td[data-state]`, "data-state");
  check((await agentState("alice")) === "logged_out", "alice shows logged out");

  // A call into the queue shows within a second.
  const placed = Date.now();
  const id = await step("place_call");
  await page.waitForSelector(`#calls tr[data-call-id="${id}"]`, { timeout: 1000 });
  const shown = Date.now() - placed;
  check(shown <= 1000, `the queued call ${id} showed ${shown} ms after it was placed`);
  await page.waitForFunction(
    () => document.querySelector('#queues tr[data-queue="support"] .waiting')?.textContent === "1",
    null,
    { timeout: 3000 },
  );
  check(true, "support shows 1 call waiting");

  await step("ring");
  await page.waitForFunction(
    () => document.querySelector('#agents tr[data-login="alice"] td[data-state]')?.dataset.state === "ringing",
    null,
    { timeout: 3000 },
  );
  check(true, "alice rings");
  await step("connect");
  await page.waitForFunction(
    () => document.querySelector('#agents tr[data-login="alice"] td[data-state]')?.dataset.state === "on_call",
    null,
    { timeout: 3000 },
  );
  const row = await page.textContent('#agents tr[data-login="alice"]');
  check(row.includes("Customer") && row.includes("support"), `alice is on the call: ${row}`);

  // Another tenant's call: neither on the page nor in anything the page received.
  const other = await step("place_other");
  await page.waitForTimeout(1500);
  const html = await page.content();
  check(!html.includes(other) && !html.includes("B customer"), "tenant-b's call is not on the page");
  const leaked = frames.filter((f) => f.includes(other) || f.includes("sales") || f.includes("tenant-b"));
  check(leaked.length === 0, `none of the ${frames.length} frames received names tenant-b (${leaked[0] || ""})`);
  await withToken(id, other);

  // The WebSocket is cut: the warning shows; a call placed meanwhile shows once it is back.
  await page.waitForSelector("#conn-warning", { state: "hidden", timeout: 10000 });
  await step("cut");
  await page.waitForSelector("#conn-warning", { state: "visible", timeout: 3000 });
  check(true, "the warning shows while the WebSocket is cut");
  const during = await step("place_call");
  await page.waitForTimeout(500);
  await step("restore");
  await page.waitForSelector("#conn-warning", { state: "hidden", timeout: 10000 });
  await page.waitForSelector(`#calls tr[data-call-id="${during}"]`, { timeout: 3000 });
  check(true, `back: the warning is gone and ${during}, placed during the cut, shows`);
  check((await page.textContent("#gaps")) === "0", "no call event was missed");
  await step("end_all");
  await page.waitForFunction(
    () => document.querySelectorAll("#calls tbody tr").length === 0,
    null,
    { timeout: 3000 },
  );
  // Queue figures come at most a second after the calls' events.
  await page.waitForFunction(
    () => document.querySelector('#queues tr[data-queue="support"] .abandoned')?.textContent === "1",
    null,
    { timeout: 3000 },
  );
  const answered = await page.textContent('#queues tr[data-queue="support"] .answered');
  check(answered === "1", "the call alice took counts as answered, the one ended while waiting as abandoned");

  // The media branch adds `call.media`; no call of the simulator has it here, so the page
  // is shown one that does, as a call event would bring it.
  const codec = await page.evaluate(() => {
    state.calls.set("x:1", { id: "x:1", state: "bridged", created: now(), caller: {}, callee: {}, media: { codec: "g722" } });
    renderCalls();
    const shown = document.querySelector('#calls tr[data-call-id="x:1"] .codec').textContent;
    state.calls.delete("x:1");
    renderCalls();
    return shown;
  });
  check(codec === "g722", "a call's codec shows when it has one");
}
