// Veil web demo: submit a photo through the public API, poll its job, then show the original and the
// blurred result under a before/after divider with the detection boxes. No framework, no build step.
// The original is shown from the browser's own File object, never fetched back; the only thing stored is
// the API key, in sessionStorage (this tab only).
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("demo-form");
const keyInput = $("api-key");
const fileInput = $("photo");
const drop = $("drop-zone");
const statusBox = $("status");
const errorBox = $("error");
const viewer = $("viewer");
const compare = $("compare");
const boxes = $("boxes");
const slider = $("slider");
const download = $("download");
const KEY_ITEM = "veil-demo-key";
const POLL_LIMIT_MS = 3 * 60 * 1000;
const EXTENSIONS = { "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp" };
const HINTS = {
  400: "Veil could not use this photo or an option",
  401: "The API key was refused: check it, or get a fresh demo link from veil up",
  404: "The job was not found (its key may have expired)",
  409: "The job has not finished yet",
  413: "The photo is too large",
  415: "This file is not a JPEG, PNG or WebP image",
  429: "Too many photos at once",
  503: "Veil is busy or not ready",
};

let objectUrls = []; // revoked when the images are no longer shown
let jobId = null;

function say(text) {
  statusBox.textContent = text;
}

function fail(text) {
  say("");
  errorBox.textContent = text;
}

function remember(key) {
  try {
    sessionStorage.setItem(KEY_ITEM, key);
  } catch {
    // storage disabled: the field still holds the key
  }
}

function readKey() {
  // From the link's fragment (never sent to the server), then taken out of the address bar and history.
  const match = /(?:^|&)key=([^&]+)/.exec(location.hash.slice(1));
  if (match) {
    remember(decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  try {
    keyInput.value = sessionStorage.getItem(KEY_ITEM) || "";
  } catch {
    keyInput.value = match ? decodeURIComponent(match[1]) : "";
  }
}

function forgetImages() {
  objectUrls.forEach((url) => URL.revokeObjectURL(url));
  objectUrls = [];
  $("original").removeAttribute("src");
  $("result").removeAttribute("src");
  download.setAttribute("href", "#");
  viewer.hidden = true;
  jobId = null;
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  objectUrls.push(url);
  return url;
}

async function apiError(response) {
  let message = "";
  try {
    message = (await response.json()).message || "";
  } catch {
    // not JSON: the status says enough
  }
  const hint = HINTS[response.status] || `Veil answered ${response.status}`;
  const retry = response.headers.get("Retry-After");
  return new Error(`${hint}${message ? ` (${message})` : ""}.${retry ? ` Try again in ${retry} s.` : ""}`);
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, cache: "no-store", headers: { "X-API-Key": keyInput.value.trim() } });
  } catch {
    throw new Error("Veil could not be reached. Is it running?");
  }
  if (!response.ok) throw await apiError(response);
  return response;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForJob(id) {
  // ?output=base64: the finished job carries its result inline, same origin as this page.
  const started = Date.now();
  for (let wait = 250; ; wait = Math.min(wait * 1.5, 2000)) {
    const job = await (await api(`/v1/jobs/${encodeURIComponent(id)}?output=base64`)).json();
    if (job.status === "succeeded" || job.status === "failed") return job;
    say(job.status === "running" ? "Finding faces and plates…" : "Queued, waiting for a worker…");
    if (Date.now() - started > POLL_LIMIT_MS) throw new Error("The job did not finish within 3 minutes.");
    await pause(wait);
  }
}

function svg(name, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", name);
  Object.entries(attributes).forEach(([key, value]) => element.setAttribute(key, value));
  return element;
}

function describe(detection) {
  const sources = (detection.sources || []).join(" + ") || "unknown";
  return `${detection.class} ${detection.score.toFixed(2)} · ${sources}${detection.skipped ? " (kept)" : ""}`;
}

function drawBoxes(job) {
  const { width, height } = job.input;
  const size = Math.max(12, Math.round(Math.max(width, height) / 40));
  boxes.setAttribute("viewBox", `0 0 ${width} ${height}`);
  boxes.replaceChildren();
  for (const detection of job.detections) {
    const [x1, y1, x2, y2] = detection.box;
    const group = svg("g", { class: detection.class });
    group.append(svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
    const labelY = y1 > size * 1.5 ? y1 - size * 0.4 : y2 + size;
    const text = svg("text", { x: x1, y: labelY, "font-size": size, "stroke-width": size / 5 });
    text.textContent = describe(detection);
    group.append(text);
    boxes.append(group);
  }
}

function listDetections(detections) {
  const rows = detections.map((detection) => {
    const row = document.createElement("tr");
    const cells = [
      detection.class + (detection.skipped ? " (kept)" : ""),
      detection.score.toFixed(2),
      (detection.sources || []).join(", "),
      detection.box.map(Math.round).join(", "),
    ];
    cells.forEach((value) => row.append(Object.assign(document.createElement("td"), { textContent: value })));
    return row;
  });
  if (!rows.length) {
    const cell = Object.assign(document.createElement("td"), { colSpan: 4, textContent: "No faces or plates found." });
    rows.push(document.createElement("tr"));
    rows[0].append(cell);
  }
  $("detections").tBodies[0].replaceChildren(...rows);
}

function showResult(job, file) {
  const binary = atob(job.result.base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  const type = job.result.content_type;
  const url = objectUrl(new Blob([bytes], { type }));
  $("result").src = url;
  download.href = url;
  download.download = `${file.name.replace(/\.[^.]*$/, "")}-blurred.${EXTENSIONS[type] || "img"}`;
  drawBoxes(job);
  listDetections(job.detections);
  viewer.hidden = false;
  const blurred = job.detections.filter((detection) => !detection.skipped).length;
  say(`Done: ${blurred} region${blurred === 1 ? "" : "s"} blurred. Drag the divider to compare.`);
}

function setSplit() {
  compare.style.setProperty("--split", `${slider.value}%`);
  slider.setAttribute("aria-valuetext", `divider at ${slider.value} %`);
}

function fileChosen() {
  const file = fileInput.files[0];
  $("file-name").textContent = file ? `${file.name} (${Math.ceil(file.size / 1024)} KB)` : "";
  errorBox.textContent = "";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.textContent = "";
  const key = keyInput.value.trim();
  const file = fileInput.files[0];
  if (!key) return fail("Enter an API key first: veil up prints a demo link that carries one.");
  if (!file) return fail("Choose or drop a photo first.");
  remember(key);
  forgetImages();
  const body = new FormData();
  body.append("image", file, file.name);
  body.append("targets", form.elements.targets.value);
  if (form.elements.blur.value !== "auto") body.append("blur", form.elements.blur.value);
  $("submit").disabled = true;
  form.setAttribute("aria-busy", "true");
  try {
    say("Uploading…");
    const created = await (await api("/v1/jobs", { method: "POST", body })).json();
    const job = await waitForJob(created.id);
    if (job.status === "failed") {
      throw new Error(`The job failed: ${job.error ? job.error.message : "no reason given"}.`);
    }
    jobId = job.id;
    $("original").src = objectUrl(file);
    showResult(job, file);
  } catch (error) {
    forgetImages();
    fail(error.message);
  } finally {
    $("submit").disabled = false;
    form.removeAttribute("aria-busy");
  }
});

$("delete").addEventListener("click", async () => {
  if (!jobId) return;
  try {
    await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
    forgetImages();
    fileInput.value = "";
    fileChosen();
    say("Deleted: the result is gone from Veil, and this page no longer shows either image.");
  } catch (error) {
    fail(error.message);
  }
});

drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) {
    fileInput.files = event.dataTransfer.files;
    fileChosen();
  }
});
fileInput.addEventListener("change", fileChosen);
slider.addEventListener("input", setSplit);
$("show-boxes").addEventListener("change", (event) => boxes.classList.toggle("hidden", !event.target.checked));
readKey();
setSplit();
