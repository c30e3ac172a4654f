// The demo page: one image, the detections of the model run here (when the folder is a static build,
// python -m helpers web) beside the Lambda handler's (when python -m helpers serve serves the page).
// Both are asked for every box down to score 0.01 once; the slider then only filters and redraws.
const REQUEST_THRESHOLD = 0.01;
const MAX_DETECTIONS = 100;
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6"];
const $ = (id) => document.getElementById(id);
let classes = [], image = null;
const panels = { browser: { prefix: "browser-", found: null }, lambda: { prefix: "", found: null } };

async function json(url) {
  const answer = await fetch(url).catch(() => null);
  return answer && answer.ok && (answer.headers.get("content-type") || "").includes("json") ? answer.json() : null;
}

function setThreshold(value) {
  $("threshold").value = value;
  $("threshold-value").textContent = Number(value).toFixed(2);
}

function colour(label) { return COLOURS[Math.max(0, classes.indexOf(label)) % COLOURS.length]; }

function draw(panel) {
  const el = (id) => $(panel.prefix + id), canvas = el("canvas"), ctx = canvas.getContext("2d");
  const shown = image && image.naturalWidth > 0, threshold = Number($("threshold").value);
  if (shown) {
    canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
    ctx.drawImage(image, 0, 0);
  }
  const visible = panel.found ? panel.found.filter((d) => d.score >= threshold) : [];
  const line = Math.max(2, canvas.width / 300), font = Math.max(14, canvas.width / 40);
  el("detections").replaceChildren(...visible.map((d) => {
    const item = document.createElement("li"), text = `${d.label} ${d.score.toFixed(2)}`;
    item.textContent = text;
    item.dataset.label = d.label;
    item.dataset.score = d.score;
    item.style.color = colour(d.label);
    if (shown) {
      const [x1, y1, x2, y2] = d.box;
      ctx.strokeStyle = ctx.fillStyle = colour(d.label);
      ctx.lineWidth = line;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.font = `${font}px sans-serif`;
      const width = ctx.measureText(text).width + 6, top = y1 > font + 4 ? y1 - font - 4 : y1;
      ctx.fillRect(x1, top, width, font + 4);
      ctx.fillStyle = "white";
      ctx.fillText(text, x1 + 3, top + font);
    }
    return item;
  }));
  return visible.length;
}

function drawAll() {
  const counts = Object.values(panels).filter((p) => p.found).map((p) => `${draw(p)} of ${p.found.length}`);
  $("status").textContent = counts.length ? `${counts.join(" | ")} boxes shown` : "";
}

function showTimings(panel, timings) {
  $(panel.prefix + "timings").replaceChildren(...Object.entries(timings).map(([stage, ms]) => {
    const row = document.createElement("tr");
    row.innerHTML = "<th></th><td></td>";
    row.cells[0].textContent = stage; row.cells[1].textContent = ms.toFixed(1);
    return row;
  }));
}

function clear(panel, message = "") {
  panel.found = null;
  for (const id of ["detections", "timings"]) $(panel.prefix + id).replaceChildren();
  $(panel.prefix + "error").textContent = message;
}

async function askLambda(file) {
  const panel = panels.lambda;
  const answer = await fetch(`./?threshold=${REQUEST_THRESHOLD}&max_detections=${MAX_DETECTIONS}`, {
    method: "POST", headers: { "content-type": file.type || "application/octet-stream" }, body: file,
  });
  const body = await answer.json().catch(() => ({ error: `HTTP ${answer.status}` }));
  if (!answer.ok) return clear(panel, `${answer.status}: ${body.error}`);
  panel.found = body.detections;
  showTimings(panel, body.timings_ms);
}

async function askBrowser(detector, file) {
  const panel = panels.browser;
  try {
    const result = await detector.detect(file, REQUEST_THRESHOLD, MAX_DETECTIONS);
    panel.found = result.detections;
    showTimings(panel, result.timings_ms);
  } catch (err) {
    clear(panel, `the browser cannot decode or run this image: ${err.message || err}`);
  }
}

async function detect(file, detector, lambda) {
  $("status").textContent = "detecting ...";
  Object.values(panels).forEach((panel) => clear(panel));
  image = null;
  await Promise.all([lambda && askLambda(file), detector && askBrowser(detector, file)]);
  const shown = new Image();
  await new Promise((done) => { shown.onload = shown.onerror = done; shown.src = URL.createObjectURL(file); });
  image = shown.naturalWidth > 0 ? shown : null;
  for (const panel of Object.values(panels)) {
    const canvas = $(panel.prefix + "canvas");
    if (!image) canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
  drawAll();
  if (!image && Object.values(panels).some((p) => p.found)) $("status").textContent += "; the browser cannot show this image";
}

async function start() {
  const [lambda, build] = await Promise.all([json("config"), json("config.json")]);
  const about = [];
  let detector = null;
  if (build) {
    $("browser-panel").hidden = false;
    try {
      const { Detector } = await import("./detector.js");
      detector = await Detector.load();
    } catch (err) { // e.g. a model this ONNX Runtime Web cannot read: the Lambda panel still works
      $("browser-error").textContent = `the model does not load in this browser: ${err.message || err}`;
    }
    classes = build.classes;
    setThreshold(build.score_threshold);
    about.push(`In this browser: ${build.model}, served threshold ${build.score_threshold}.`);
  }
  if (lambda) {
    $("lambda-panel").hidden = false;
    classes = lambda.classes;
    setThreshold(lambda.score_threshold);
    about.push(`Lambda handler: ${lambda.model}; served threshold ${lambda.score_threshold}.`);
  }
  if (lambda && !build) about.push("(python -m helpers web builds the in-browser panel.)");
  $("about").textContent = about.join(" ");
  const run = (file) => file && detect(file, detector, lambda);
  $("file").addEventListener("change", (e) => run(e.target.files[0]));
  $("threshold").addEventListener("input", () => { setThreshold($("threshold").value); drawAll(); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); run(e.dataTransfer.files[0]); });
  return detector;
}

// The page's detector, for the parity check (helpers.web.parity) to drive; null without a static build.
window.fridge = start();
