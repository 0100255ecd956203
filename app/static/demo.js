// The demo page: GET model for classes and palette, POST segment?format=json for the mask
// (a palette PNG), areas, timings, the confidence PNG and the objects' polygons; the overlay,
// the heat map and the outlines are drawn here so they can change without another request.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    modelInfo: $("model-info"), file: $("file"), dropZone: $("drop-zone"),
    keyBox: $("key-box"), keyForm: $("key-form"), apiKey: $("api-key"),
    status: $("status"), error: $("error"),
    result: $("result"), original: $("original"), overlay: $("overlay"),
    overlayCaption: $("overlay-caption"), opacity: $("opacity"), opacityValue: $("opacity-value"),
    heat: $("heat"), heatRamp: $("heat-ramp"), latency: $("latency"),
    download: $("download"), legend: $("legend"), objects: $("objects"),
    objectCount: $("object-count"),
  };
  const SEGMENT_URL = "segment?format=json&include=confidence,objects";
  // Heat map colours from low to high confidence (the winning class's probability × 255).
  const HEAT_STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
  const KEY_STORAGE = "deconvseg.apiKey";
  let card = null;        // GET /model
  let shown = null;       // {image, layer, heat, name} of the current result
  let outlined = null;    // the object whose outline is drawn over the overlay
  let requestCount = 0;   // a newer upload makes older responses stale
  let usedKey = "";       // the API key the model card was last requested with
  const urls = [];        // object URLs of the current result, revoked when replaced

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function authHeaders() {
    const key = ui.apiKey.value.trim();
    return key ? { "X-API-Key": key } : {};
  }

  async function call(url, options = {}) {
    let response;
    try {
      response = await fetch(url, { ...options, headers: authHeaders() });
    } catch (err) {
      throw new APIError(0, "unreachable", `Could not reach the server (${err.message}).`);
    }
    if (response.ok) return response;
    let code = `http_${response.status}`;
    let message = `The server answered ${response.status} ${response.statusText}.`;
    try {
      const body = await response.json();
      if (body && body.error) ({ code, message } = body.error);
    } catch (_) { /* not the API's JSON error: keep the status line */ }
    throw new APIError(response.status, code, message);
  }

  function showError(err, context) {
    let text = context ? `${context}: ${err.message}` : err.message;
    if (err.code && err.status) text += ` (${err.code}, HTTP ${err.status})`;
    if (err.status === 401) {
      text += " Enter the key under “API key”.";
      ui.keyBox.open = true;
    }
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
  }

  const percent = (fraction) =>
    fraction > 0 && fraction < 0.0005 ? "<0.1%" : `${(fraction * 100).toFixed(1)}%`;

  function renderLegend(areas) {
    ui.legend.replaceChildren(...card.classes.map((name, index) => {
      const row = document.createElement("tr");
      const label = document.createElement("td");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = `rgb(${card.palette[index].join(" ")})`;
      label.append(swatch, name);
      const area = document.createElement("td");
      area.className = "num";
      area.textContent = areas ? percent(areas[name] ?? 0) : "—";
      row.dataset.class = name;
      row.append(label, area);
      return row;
    }));
  }

  async function loadModel() {
    card = await (await call("model")).json();
    ui.modelInfo.textContent =
      `Model “${card.name}” · ${card.classes.length} classes · ` +
      `${card.device}, ${card.backend} · sha256 ${card.sha256.slice(0, 12)}…`;
    renderLegend(null);
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error("the browser could not display this image"));
      image.src = url;
    });
  }

  // A canvas of the image's size with `recolour(data, i)` applied to each RGBA pixel.
  function recoloured(image, recolour) {
    const layer = document.createElement("canvas");
    layer.width = image.naturalWidth;
    layer.height = image.naturalHeight;
    const ctx = layer.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(image, 0, 0);
    const pixels = ctx.getImageData(0, 0, layer.width, layer.height);
    for (let i = 0; i < pixels.data.length; i += 4) recolour(pixels.data, i);
    ctx.putImageData(pixels, 0, 0);
    return layer;
  }

  // The mask's colours on transparent background pixels: drawn over the image at any opacity.
  function maskLayer(mask) {
    const [r, g, b] = card.palette[0];
    return recoloured(mask, (data, i) => {
      if (data[i] === r && data[i + 1] === g && data[i + 2] === b) data[i + 3] = 0;
    });
  }

  // 256 RGB colours interpolated between HEAT_STOPS: index = confidence × 255.
  function heatColours() {
    const colours = new Uint8ClampedArray(256 * 3);
    const last = HEAT_STOPS.length - 1;
    for (let value = 0; value < 256; value++) {
      const t = (value / 255) * last;
      const i = Math.min(Math.floor(t), last - 1);
      for (let c = 0; c < 3; c++) {
        const [from, to] = [HEAT_STOPS[i][c], HEAT_STOPS[i + 1][c]];
        colours[value * 3 + c] = Math.round(from + (to - from) * (t - i));
      }
    }
    return colours;
  }
  const HEAT = heatColours();

  // The one-band confidence PNG coloured with HEAT, opaque: drawn over the image at any opacity.
  function heatLayer(confidence) {
    return recoloured(confidence, (data, i) => {
      const at = data[i] * 3;  // grey: r = g = b
      data[i] = HEAT[at];
      data[i + 1] = HEAT[at + 1];
      data[i + 2] = HEAT[at + 2];
      data[i + 3] = 255;
    });
  }

  // The exterior and hole rings, in image pixels with (0, 0) the top-left corner, stroked dark
  // then light so the outline shows on any colour, about 4 and 2 screen pixels wide.
  function drawOutline(ctx, polygon) {
    const canvas = ctx.canvas;
    const scale = Math.max(canvas.width / (canvas.clientWidth || canvas.width),
                           canvas.height / (canvas.clientHeight || canvas.height));
    ctx.beginPath();
    for (const ring of polygon.coordinates) {
      ring.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.closePath();
    }
    ctx.lineJoin = "round";
    ctx.strokeStyle = "rgb(0 0 0 / 0.8)";
    ctx.lineWidth = 4 * scale;
    ctx.stroke();
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 2 * scale;
    ctx.stroke();
  }

  function drawOverlay() {
    if (!shown) return;
    const { image, layer, heat, name } = shown;
    const heatOn = ui.heat.checked;
    const canvas = ui.overlay;
    canvas.width = layer.width;
    canvas.height = layer.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0, layer.width, layer.height);
    ctx.globalAlpha = Number(ui.opacity.value) / 100;
    ctx.drawImage(heatOn ? heat : layer, 0, 0);
    ctx.globalAlpha = 1;
    if (outlined) drawOutline(ctx, outlined.polygon);
    ui.overlayCaption.textContent = heatOn ? "Confidence heat map" : "Mask overlay";
    canvas.setAttribute("aria-label", heatOn
      ? `Confidence of the segmentation of ${name} over the image`
      : `Segmentation mask of ${name} over the image`);
  }

  function outline(object) {
    outlined = object;
    drawOverlay();
  }

  function renderObjects(objects) {
    outlined = null;
    ui.objectCount.textContent = `(${objects.length})`;
    if (!objects.length) {
      const none = document.createElement("tr");
      none.append(Object.assign(document.createElement("td"),
                                { colSpan: 3, className: "muted", textContent: "None found." }));
      ui.objects.replaceChildren(none);
      return;
    }
    ui.objects.replaceChildren(...objects.map((object, n) => {
      const row = document.createElement("tr");
      row.tabIndex = 0;
      row.dataset.class = object.class;
      const label = document.createElement("td");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = `rgb(${card.palette[object.index].join(" ")})`;
      label.append(swatch, `${n + 1}. ${object.class}`);
      const area = document.createElement("td");
      area.className = "num";
      area.textContent = object.area.toLocaleString("en");
      const score = document.createElement("td");
      score.className = "num";
      score.textContent = object.score === null ? "—" : object.score.toFixed(2);
      row.append(label, area, score);
      row.addEventListener("mouseenter", () => outline(object));
      row.addEventListener("focus", () => outline(object));
      row.addEventListener("mouseleave", () => outline(null));
      row.addEventListener("blur", () => outline(null));
      return row;
    }));
  }

  function showOpacity() {
    ui.opacityValue.textContent = `${ui.opacity.value}%`;
    drawOverlay();
  }

  function serverTimings(header, body) {
    const stages = header
      ? header.split(",").map((part) => {
          const [name, ...params] = part.trim().split(";");
          const dur = params.find((p) => p.trim().startsWith("dur="));
          return [name, dur ? Number(dur.split("=")[1]) : NaN];
        })
      : Object.entries(body.timings_ms);
    return stages.filter(([, ms]) => Number.isFinite(ms))
      .map(([name, ms]) => `${name} ${ms.toFixed(1)} ms`).join(", ");
  }

  function base64Blob(data, type) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    return new Blob([bytes], { type });
  }

  async function segment(file) {
    const id = ++requestCount;
    clearError();
    ui.status.textContent = `Segmenting ${file.name}…`;
    try {
      if (!card) await loadModel();
      const form = new FormData();
      form.append("file", file, file.name);
      const started = performance.now();
      const response = await call(SEGMENT_URL, { method: "POST", body: form });
      const body = await response.json();
      const roundTrip = performance.now() - started;
      if (id !== requestCount) return;
      const imageUrl = URL.createObjectURL(file);
      const maskUrl = URL.createObjectURL(base64Blob(body.mask.data, "image/png"));
      const confidenceUrl = URL.createObjectURL(base64Blob(body.confidence.data, "image/png"));
      const [image, mask, confidence] = await Promise.all(
        [imageUrl, maskUrl, confidenceUrl].map(loadImage));
      if (id !== requestCount) return;
      urls.splice(0).forEach((url) => URL.revokeObjectURL(url));
      urls.push(imageUrl, maskUrl);
      URL.revokeObjectURL(confidenceUrl);
      shown = { image, layer: maskLayer(mask), heat: heatLayer(confidence), name: file.name };
      ui.heat.disabled = false;
      renderObjects(body.objects);

      ui.original.src = imageUrl;
      ui.original.alt = `Uploaded image ${file.name}, ${body.width}×${body.height} pixels`;
      ui.original.hidden = false;
      ui.overlay.hidden = false;
      drawOverlay();
      renderLegend(body.areas);
      const server = serverTimings(response.headers.get("Server-Timing"), body);
      ui.latency.textContent = `Latency: ${Math.round(roundTrip)} ms round trip` +
        (server ? ` · server: ${server}` : "");
      const stem = file.name.replace(/\.[^.]*$/, "") || "image";
      ui.download.href = maskUrl;
      ui.download.download = `${stem}.mask.png`;
      ui.download.removeAttribute("aria-disabled");
      ui.result.dataset.state = "done";
      ui.status.textContent = `Segmented ${file.name} (${body.width}×${body.height}).`;
    } catch (err) {
      if (id !== requestCount) return;
      ui.status.textContent = "";
      showError(err, `Could not segment ${file.name}`);
    }
  }

  function useKey() {
    const key = ui.apiKey.value.trim();
    if (key === usedKey && card) return;
    usedKey = key;
    sessionStorage.setItem(KEY_STORAGE, key);
    clearError();
    loadModel().catch((err) => showError(err, "Could not load the model card"));
  }

  function chosen(files) {
    if (files && files.length) segment(files[0]);
  }

  ui.file.addEventListener("change", () => {
    chosen(ui.file.files);
    ui.file.value = "";  // choosing the same file again segments it again
  });
  ui.dropZone.addEventListener("dragover", (event) => {
    event.preventDefault();
    ui.dropZone.classList.add("dragging");
  });
  ui.dropZone.addEventListener("dragleave", () => ui.dropZone.classList.remove("dragging"));
  ui.dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    ui.dropZone.classList.remove("dragging");
    chosen(event.dataTransfer.files);
  });
  // A file dropped beside the zone would otherwise replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  ui.opacity.addEventListener("input", showOpacity);
  ui.heat.addEventListener("change", drawOverlay);
  ui.apiKey.addEventListener("change", useKey);
  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    useKey();
  });

  ui.heatRamp.style.background = `linear-gradient(to right, ${
    HEAT_STOPS.map((rgb) => `rgb(${rgb.join(" ")})`).join(", ")})`;
  ui.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
  usedKey = ui.apiKey.value.trim();
  if (ui.apiKey.value) ui.keyBox.open = true;
  loadModel().catch((err) => {
    ui.modelInfo.textContent = "Model card unavailable.";
    showError(err, "Could not load the model card");
  });
})();
