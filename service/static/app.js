// The demo page: a photo in, the generated product and the top-K catalog matches out.
// Plain JS, no build step, no CDN. `/?sample=N` runs the N-th sample at once (used by the browser test).
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function setState(state) {
  document.body.dataset.state = state;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error}: ${body.detail}`;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

function renderResults(data) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of data.results) {
    const item = document.createElement("li");
    item.className = "result";
    const img = document.createElement("img");
    img.src = hit.image_url.replace(/^\//, "");
    img.alt = hit.product_id;
    img.loading = "lazy";
    const head = document.createElement("div");
    head.innerHTML = `<span class="rank"></span><span class="score"></span>`;
    head.querySelector(".rank").textContent = `#${hit.rank}`;
    head.querySelector(".score").textContent = hit.score.toFixed(3);
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = [hit.product_id, hit.title, hit.category].filter(Boolean).join(" \u00b7 ");
    item.append(img, head, meta);
    list.append(item);
  }
  const t = data.timings_ms;
  $("timings").textContent = `(${data.results.length} in ${t.total.toFixed(0)} ms: generate ${t.generate.toFixed(0)}, ` +
    `embed ${t.embed.toFixed(0)}, search ${t.search.toFixed(1)})`;
  $("results-box").hidden = false;
}

async function runSearch(blob) {
  setState("busy");
  setStatus("Generating the product image and searching the catalog...");
  $("query").src = URL.createObjectURL(blob);
  $("generated").removeAttribute("src");
  $("pair").hidden = false;
  const form = new FormData();
  form.append("image", blob, blob.name || "photo");
  form.append("k", String(Math.min(100, Math.max(1, parseInt($("k").value, 10) || 10))));
  form.append("include_generated", "true");
  try {
    const response = await fetch("search", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorText(response));
    const data = await response.json();
    $("generated").src = `data:image/png;base64,${data.generated_png_base64}`;
    renderResults(data);
    setStatus(data.results.length ? "Done: the best matches first." : "Done, but the catalog has no products.");
    setState("done");
  } catch (e) {
    setStatus(`Search failed: ${e.message}`, true);
    setState("error");
  }
}

async function runSample(sample) {
  const response = await fetch(sample.url.replace(/^\//, ""));
  if (!response.ok) throw new Error(await errorText(response));
  const blob = await response.blob();
  blob.name = sample.name;
  await runSearch(blob);
}

async function loadSamples() {
  const box = $("samples");
  let samples = [];
  try {
    const response = await fetch("demo/samples");
    if (!response.ok) throw new Error(await errorText(response));
    samples = (await response.json()).samples;
  } catch (e) {
    box.textContent = `Samples unavailable: ${e.message}`;
    return [];
  }
  box.replaceChildren();
  if (!samples.length) box.innerHTML = `<span class="muted">No samples configured (RTD_DEMO_SAMPLES).</span>`;
  for (const sample of samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = sample.name;
    const img = document.createElement("img");
    img.src = sample.url.replace(/^\//, "");
    img.alt = sample.name;
    button.append(img);
    button.addEventListener("click", () => runSample(sample).catch((e) => setStatus(e.message, true)));
    box.append(button);
  }
  return samples;
}

function wireDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) runSearch(e.target.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) runSearch(file);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
}

async function main() {
  wireDrop();
  const samples = await loadSamples();
  const wanted = new URLSearchParams(location.search).get("sample");
  if (wanted !== null) {
    const sample = samples[parseInt(wanted, 10)];
    if (sample) await runSample(sample).catch((e) => { setStatus(e.message, true); setState("error"); });
    else { setStatus(`No sample number ${wanted}.`, true); setState("error"); }
  }
}

main();
