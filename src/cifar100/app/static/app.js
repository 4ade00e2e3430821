// The page's only behaviour: send the chosen photo to POST /predict and show the answer.
// The 32x32 view comes from the server (the exact pixels the model classified), not from a
// resize in the browser, so what is shown is what was judged.
"use strict";

const dropZone = document.getElementById("drop-zone");
const fileInput = document.getElementById("file-input");
const cropBox = document.getElementById("crop");
const statusLine = document.getElementById("status");
const result = document.getElementById("result");
const original = document.getElementById("original");
const modelInput = document.getElementById("model-input");
const bars = document.getElementById("bars");

let currentFile = null;
let originalUrl = null;

function showStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

async function describeModel() {
  try {
    const response = await fetch("/health");
    const health = await response.json();
    const megabytes = (health.max_upload_bytes / 1048576).toFixed(0);
    document.getElementById("model-info").textContent =
      `A CNN trained on 32x32 images, ${health.num_classes} classes (epoch ${health.epoch}). ` +
      `Photos up to ${megabytes} MiB; nothing is stored.`;
    const classes = (await (await fetch("/classes")).json()).classes;
    document.querySelector("#classes summary").textContent = `The ${classes.length} classes it knows`;
    document.getElementById("class-list").replaceChildren(...classes.map((name) => {
      const item = document.createElement("li");
      item.textContent = name.replaceAll("_", " ");
      return item;
    }));
  } catch (err) {
    document.getElementById("model-info").textContent = "The server did not answer.";
  }
}

function renderBars(topK) {
  bars.replaceChildren();
  for (const entry of topK) {
    const item = document.createElement("li");
    item.className = "bar";
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = entry["class"];
    const track = document.createElement("span");
    track.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${(100 * entry.probability).toFixed(1)}%`;
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(100 * entry.probability).toFixed(1)}%`;
    item.append(name, track, value);
    bars.appendChild(item);
  }
}

async function classify(file) {
  currentFile = file;
  if (originalUrl) URL.revokeObjectURL(originalUrl);
  originalUrl = URL.createObjectURL(file);
  showStatus(`Classifying ${file.name}…`, false);
  const form = new FormData();
  form.append("file", file);
  const query = new URLSearchParams({ top_k: "5", crop: cropBox.checked ? "true" : "false" });
  let response;
  try {
    response = await fetch(`/predict?${query}`, { method: "POST", body: form });
  } catch (err) {
    showStatus("The server could not be reached.", true);
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    showStatus(`${file.name}: ${detail}`, true);
    result.hidden = true;
    return;
  }
  original.src = originalUrl;
  modelInput.src = `data:image/png;base64,${body.model_input_png}`;
  renderBars(body.top_k);
  result.hidden = false;
  const [width, height] = body.original_size;
  showStatus(`${file.name}: ${body.format}, ${width}x${height}; the model's best guess is ${body.top_k[0]["class"]}.`, false);
}

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) classify(fileInput.files[0]);
});
cropBox.addEventListener("change", () => {
  if (currentFile) classify(currentFile);
});
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) classify(file);
});
dropZone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") fileInput.click();
});

describeModel();
