// The calculator page: a drawing pad (white ink on black, like MNIST), an upload input,
// and a Read button that POSTs a PNG to /api/read and shows what came back.
// document.body.dataset.state is idle | reading | done | failed, for people and tests.
"use strict";

const STROKE_WIDTH = 18;        // pixels of the 960x320 pad: MNIST-like stroke to height
const MAX_UPLOAD_SIDE = 1600;   // photos are downscaled in the browser before sending

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const statusLine = document.getElementById("status");
const result = document.getElementById("result");
let last = null;                // the previous point of the stroke being drawn

function setState(state, message) {
  document.body.dataset.state = state;
  statusLine.textContent = message;
  statusLine.classList.toggle("failed", state === "failed");
}

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  result.hidden = true;
  setState("idle", "");
}

function padPoint(event) {
  const rect = pad.getBoundingClientRect();
  return {
    x: (event.clientX - rect.left) * (pad.width / rect.width),
    y: (event.clientY - rect.top) * (pad.height / rect.height),
  };
}

function inkTo(point) {
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = STROKE_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(point.x, point.y);
  ctx.stroke();
  last = point;
}

function dot(point) {
  ctx.fillStyle = "#fff";
  ctx.beginPath();
  ctx.arc(point.x, point.y, STROKE_WIDTH / 2, 0, 2 * Math.PI);
  ctx.fill();
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  last = padPoint(event);
  dot(last);                    // a tap leaves a dot (the "." and the dots of "÷")
});
pad.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) inkTo(padPoint(e));
});
for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, () => { last = null; });
}

function showReading(answer) {
  document.getElementById("expression").textContent = answer.text || "(nothing)";
  document.getElementById("value").textContent =
    answer.value === null ? "" : "= " + answer.value;
  const error = document.getElementById("error");
  error.textContent = answer.error || "";
  error.hidden = !answer.error;
  document.getElementById("annotated").src = answer.annotated;
  const rows = document.querySelector("#symbols tbody");
  rows.replaceChildren();
  answer.symbols.forEach((symbol, i) => {
    const row = rows.insertRow();
    row.insertCell().textContent = String(i + 1);
    const cell = row.insertCell();
    cell.textContent = symbol.char;
    cell.className = "symbol";
    row.insertCell().textContent = (100 * symbol.confidence).toFixed(1) + " %";
  });
  result.hidden = false;
  setState("done", answer.symbols.length + " symbols read");
}

async function send(body, contentType) {
  setState("reading", "Reading…");
  let answer;
  try {
    const response = await fetch("/api/read", {
      method: "POST",
      headers: { "Content-Type": contentType },
      body,
    });
    answer = await response.json();
    if (!response.ok) {
      throw new Error(answer.error || "the server answered " + response.status);
    }
  } catch (error) {
    result.hidden = true;
    setState("failed", "Error: " + error.message);
    return;
  }
  showReading(answer);
}

function canvasPng(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function readPad() {
  send(await canvasPng(pad), "image/png");
}

async function readUpload(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    // Not an image the browser can decode: let the server say what is wrong with it.
    send(file, file.type || "application/octet-stream");
    return;
  }
  const scale = Math.min(1, MAX_UPLOAD_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";     // transparent parts are paper
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  send(await canvasPng(canvas), "image/png");
}

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("read").addEventListener("click", readPad);
document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";      // choosing the same file again reads it again
  if (file) readUpload(file);
});
clearPad();
