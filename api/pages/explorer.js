// The persona explorer: plain JS over the API's GraphQL endpoint and run pictures, with the
// analyst key the person pastes in (kept in this tab's sessionStorage only). Every value from
// the API goes into the page as text, never as HTML.
"use strict";

const PICTURES = [
  ["profile", "Profile heat map: each persona's mean of every feature (z-scores)"],
  ["pca", "2-D map of users (PCA), coloured by persona"],
  ["dendrogram", "Dendrogram: how segments merge"],
  ["silhouette", "Silhouette of each segment"],
];
const RUN_FIELDS = `id createdAt algorithm k nUsers silhouette kReason ariVsPrevious usersMoved
  newPersonas stability clearStructure warnings topics features`;
const pictureUrls = [];
let key = sessionStorage.getItem("personas.explorer.key") || "";

function $(id) { return document.getElementById(id); }

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function graphql(query, variables) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: {"Content-Type": "application/json", "Authorization": `Bearer ${key}`},
    body: JSON.stringify({query, variables: variables || {}}),
  });
  const body = await response.json();
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const code = first.extensions && first.extensions.code;
    throw new Error(code ? `${code}: ${first.message}` : first.message);
  }
  return body.data;
}

async function openSession() {
  showError("");
  const response = await fetch("/v1/explorer/session",
                               {headers: {"Authorization": `Bearer ${key}`}});
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const message = (body.error && body.error.message) || response.statusText;
    throw new Error(response.status === 403
      ? `This explorer is for analyst and admin keys. ${message}` : message);
  }
  const who = await response.json();
  $("who").textContent = `key ${who.key_id} (${who.role})`;
  sessionStorage.setItem("personas.explorer.key", key);
  $("main").hidden = false;
  await loadRuns();
}

async function loadRuns() {
  const data = await graphql(`{ segmentationRuns(first: 20) { edges { node { ${RUN_FIELDS} } } } }`);
  const body = $("runs").querySelector("tbody");
  body.replaceChildren();
  const runs = data.segmentationRuns.edges.map(e => e.node);
  if (!runs.length) {
    const row = el("tr");
    row.append(el("td", "No segmentation run yet: run `personas segment`.", {colspan: "11"}));
    body.append(row);
    return;
  }
  runs.forEach((run, index) => {
    const row = el("tr", null, {"data-run": run.id});
    for (const value of [run.id, new Date(run.createdAt).toLocaleString(), run.algorithm, run.k,
                         run.nUsers, fixed(run.silhouette, 3), fixed(run.ariVsPrevious, 3),
                         run.usersMoved ?? "–", run.newPersonas ?? "–", fixed(run.stability, 3),
                         run.clearStructure === null ? "–" : (run.clearStructure ? "yes" : "no")]) {
      row.append(el("td", value));
    }
    row.addEventListener("click", () => loadRun(run, index === 0).catch(e => showError(e.message)));
    body.append(row);
  });
  await loadRun(runs[0], true);
}

async function loadRun(run, latest) {
  for (const row of $("runs").querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.dataset.run === run.id);
  }
  $("run").hidden = false;
  $("run-id").textContent = run.id;
  $("run-notes").textContent = `${run.nUsers} users, ${run.k} personas (${run.kReason}); ` +
    `features: ${run.features.join(", ")}.`;
  const warnings = $("run-warnings");
  warnings.replaceChildren(...run.warnings.map(w => el("li", w)));
  $("topics").replaceChildren(...(run.topics.length ? run.topics.map(t => el("li", t))
                                                     : [el("li", "No text topics in this run.")]));
  // Favourite categories are known for the latest run's personas only.
  const favourites = latest ? "personas { id topCategories(first: 3) { category weight } }" : "";
  const data = await graphql(`query($run: ID!) { segments(runId: $run) { id label description
    size level parentId stability why { feature zScore } persona { id name description } }
    ${favourites} }`, {run: run.id});
  const liked = new Map((data.personas || []).map(p => [p.id, p.topCategories]));
  renderCards(data.segments, liked);
  renderTree(data.segments);
  await renderPictures(run.id);
}

function renderCards(segments, favourites) {
  const leaves = segments.filter(s => s.persona && s.level === 0)
                         .sort((a, b) => b.size - a.size);
  const cards = leaves.map(segment => {
    const card = el("article", null, {class: "card", "data-persona": segment.persona.id});
    card.append(el("h4", segment.persona.name));
    card.append(el("div", `${segment.size} users · segment ${segment.label}` +
                          (segment.stability === null ? "" :
                           ` · stability ${fixed(segment.stability, 2)}`), {class: "size"}));
    card.append(el("p", segment.persona.description));
    const why = el("ul");
    for (const w of segment.why.slice(0, 5)) {
      why.append(el("li", `${w.feature}: ${w.zScore >= 0 ? "+" : ""}${fixed(w.zScore, 2)} σ`));
    }
    card.append(el("strong", "Distinctive features"), why);
    const liked = favourites.get(segment.persona.id) || [];
    if (liked.length) {
      card.append(el("strong", "Favourite categories"),
                  el("p", liked.map(c => `${c.category} (${fixed(c.weight, 2)})`).join(", ")));
    }
    return card;
  });
  $("cards").replaceChildren(...cards);
}

function renderTree(segments) {
  const children = new Map();
  for (const s of segments) {
    const siblings = children.get(s.parentId || null) || [];
    siblings.push(s);
    children.set(s.parentId || null, siblings);
  }
  function branch(parentId) {
    const list = el("ul");
    for (const s of (children.get(parentId) || []).sort((a, b) => b.size - a.size)) {
      const name = s.persona ? ` — ${s.persona.name}` : "";
      const item = el("li", `${s.label} (level ${s.level}, ${s.size} users)${name}`);
      if (children.has(s.id)) item.append(branch(s.id));
      list.append(item);
    }
    return list;
  }
  $("tree").replaceChildren(branch(null));
}

async function renderPictures(runId) {
  while (pictureUrls.length) URL.revokeObjectURL(pictureUrls.pop());
  const figures = await Promise.all(PICTURES.map(async ([kind, caption]) => {
    const figure = el("figure", null, {"data-kind": kind});
    const response = await fetch(`/runs/${encodeURIComponent(runId)}/plots/${kind}.png`,
                                 {headers: {"Authorization": `Bearer ${key}`}});
    if (response.ok) {
      const url = URL.createObjectURL(await response.blob());
      pictureUrls.push(url);
      figure.append(el("img", null, {src: url, alt: caption}));
    } else {
      figure.append(el("p", `No ${kind} picture for this run (${response.status}).`));
    }
    figure.append(el("figcaption", caption));
    return figure;
  }));
  $("pictures").replaceChildren(...figures);
}

async function loadHistory(userId) {
  const data = await graphql(`query($id: ID!) { user(id: $id) { id persona { name confidence }
    personaHistory(first: 20) { edges { node { persona { name } validFrom validTo runId } } } } }`,
    {id: userId});
  const user = data.user;
  const table = el("table", null, {id: "history-table"});
  const head = el("tr");
  for (const h of ["Persona", "From", "To", "Run"]) head.append(el("th", h));
  table.append(el("thead"), el("tbody"));
  table.tHead.append(head);
  for (const {node} of user.personaHistory.edges) {
    const row = el("tr");
    for (const value of [node.persona.name, new Date(node.validFrom).toLocaleString(),
                         node.validTo ? new Date(node.validTo).toLocaleString() : "now",
                         node.runId || "–"]) {
      row.append(el("td", value));
    }
    table.tBodies[0].append(row);
  }
  const now = user.persona ? `Now: ${user.persona.name} (confidence ${fixed(user.persona.confidence, 2)})`
                           : "No persona now.";
  $("history").replaceChildren(el("p", now), table);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = key;
  $("key-form").addEventListener("submit", event => {
    event.preventDefault();
    key = $("key").value.trim();
    openSession().catch(e => { $("main").hidden = true; showError(e.message); });
  });
  $("user-form").addEventListener("submit", event => {
    event.preventDefault();
    loadHistory($("user-id").value.trim()).then(() => showError(""))
      .catch(e => showError(e.message));
  });
  if (key) openSession().catch(e => showError(e.message));
});
