// The study page (Sec. 5.3): one item at a time, rank the candidates best to worst, next.
// Plain JS, no build step, no CDN. The page knows candidates only by random image ids, in this rater's order.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null;  // the step being ranked: {item, task, prompt, photo, candidates}
let picks = [];  // candidate ids, best first

function setState(state) {
  document.body.dataset.state = state;
  $("start").hidden = state !== "start";
  $("item").hidden = !(state === "item" || state === "sending");
  $("finished").hidden = state !== "done";
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error}: ${body.detail}`;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

function renderPicks() {
  for (const button of document.querySelectorAll(".candidate")) {
    const rank = picks.indexOf(button.dataset.id);
    const badge = button.querySelector(".badge");
    if (rank >= 0) {
      button.dataset.rank = String(rank + 1);
      badge.textContent = String(rank + 1);
      badge.hidden = false;
      button.setAttribute("aria-label", `image ranked ${rank + 1}`);
    } else {
      delete button.dataset.rank;
      badge.hidden = true;
      button.setAttribute("aria-label", "image, not ranked yet");
    }
  }
  $("send").disabled = !current || picks.length !== current.candidates.length;
}

function toggle(id) {
  const at = picks.indexOf(id);
  if (at >= 0) picks.splice(at, 1);  // un-rank it; the later picks move up
  else picks.push(id);
  renderPicks();
}

// Drag an image onto another: it is ranked just above that one (taking its place; the later picks move down).
function dropOnto(dragged, target) {
  if (dragged === target) return;
  const from = picks.indexOf(dragged);
  if (from >= 0) picks.splice(from, 1);
  const at = picks.indexOf(target);
  if (at >= 0) picks.splice(at, 0, dragged);
  else picks.push(dragged, target);
  renderPicks();
}

function show(doc) {
  const bar = $("progress");
  bar.max = Math.max(doc.total, 1);
  bar.value = doc.done;
  $("progress-text").textContent = `${doc.done} / ${doc.total}`;
  document.body.dataset.done = String(doc.done);
  if (!doc.step) {
    current = null;
    setState("done");
    setStatus("");
    return;
  }
  current = doc.step;
  picks = [];
  document.body.dataset.item = current.item;
  document.body.dataset.task = current.task;
  $("prompt").textContent = current.prompt;
  $("photo").src = current.photo;
  $("count-key").textContent = String(current.candidates.length);
  const list = $("candidates");
  list.replaceChildren();
  current.candidates.forEach((candidate, i) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "candidate";
    button.dataset.id = candidate.id;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.hidden = true;
    const img = document.createElement("img");
    img.src = candidate.url;
    img.draggable = false;  // the button is dragged, carrying the candidate's id
    img.alt = `candidate ${i + 1}`;
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = `key ${i + 1}`;
    button.append(badge, img, key);
    button.addEventListener("click", () => toggle(candidate.id));
    button.draggable = true;
    button.addEventListener("dragstart", (event) => event.dataTransfer.setData("text/plain", candidate.id));
    button.addEventListener("dragover", (event) => event.preventDefault());
    button.addEventListener("drop", (event) => {
      event.preventDefault();
      const dragged = event.dataTransfer.getData("text/plain");
      if (current.candidates.some((c) => c.id === dragged)) dropOnto(dragged, candidate.id);
    });
    li.append(button);
    list.append(li);
  });
  renderPicks();
  setState("item");
  setStatus("");
}

async function loadNext() {
  const response = await fetch("api/next", {cache: "no-store"});
  if (response.status === 401) {
    setState("start");
    return;
  }
  if (!response.ok) {
    setState("error");
    setStatus(await errorText(response), true);
    return;
  }
  show(await response.json());
}

async function begin() {
  $("begin").disabled = true;
  const response = await fetch("api/raters", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({name: $("name").value.trim()}),
  });
  $("begin").disabled = false;
  if (!response.ok) {
    setStatus(await errorText(response), true);
    return;
  }
  show(await response.json());
}

async function send() {
  if (!current || picks.length !== current.candidates.length || document.body.dataset.state === "sending") return;
  setState("sending");
  const response = await fetch("api/responses", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({item: current.item, task: current.task, ranking: picks}),
  });
  if (response.status === 201) {
    show(await response.json());
  } else if (response.status === 409) {
    await loadNext();  // recorded already (a retried send): go on
  } else {
    setState("item");
    setStatus(await errorText(response), true);
  }
}

document.addEventListener("keydown", (event) => {
  if (document.body.dataset.state !== "item" || event.target.tagName === "INPUT") return;
  const n = Number.parseInt(event.key, 10);
  if (n >= 1 && n <= current.candidates.length) {
    toggle(current.candidates[n - 1].id);
    event.preventDefault();
  } else if (event.key === "Backspace") {
    picks.pop();
    renderPicks();
    event.preventDefault();
  } else if (event.key === "Enter" && !$("send").disabled) {
    send();
    event.preventDefault();
  }
});

$("begin").addEventListener("click", begin);
$("name").addEventListener("keydown", (event) => { if (event.key === "Enter") begin(); });
$("undo").addEventListener("click", () => { picks.pop(); renderPicks(); });
$("send").addEventListener("click", send);
loadNext().catch((e) => { setState("error"); setStatus(String(e), true); });
