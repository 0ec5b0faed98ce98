// p2pd fleet dashboard: reads dashboard/data every two seconds and draws it. Read-only.
// The selected release is in the address (#release=<id>), so a link shows the same view.
"use strict";

const fromHash = () => new URLSearchParams(location.hash.slice(1)).get("release");
let selected = fromHash();
window.addEventListener("hashchange", () => { selected = fromHash(); refresh(); });
const select = (id) => {
  selected = id;
  history.replaceState(null, "", "#release=" + encodeURIComponent(id));
};

const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = String(text);
  return e;
};
const pct = (n, d) => (d ? (100 * n / d).toFixed(1) : "0.0") + " %";
const dur = (s) => {
  if (s === null || s === undefined) return "-";
  s = Math.round(s);
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
};
const when = (unix) => new Date(unix * 1000).toISOString().replace(".000", "");

function drawReleases(data) {
  const body = document.querySelector("#releases tbody");
  body.replaceChildren();
  document.getElementById("empty").hidden = data.releases.length > 0;
  for (const r of data.releases) {
    const s = r.report.states;
    const tr = el("tr", { "data-release": r.id });
    if (r.id === selected) tr.classList.add("selected");
    const hold = s.complete + s.activated + (s.held || 0) + (s.waiting || 0) + (s.rolled_back || 0);
    const cells = [
      [`${r.channel} v${r.version} (${r.id.slice(0, 12)})`, ""],
      [r.severity, ""],
      [`${hold}/${r.report.nodes} (${pct(hold, r.report.nodes)})`, "hold"],
      [s.activated, "activated"], [s.complete, "complete"], [s.held || 0, "held"],
      [s.waiting || 0, "rollout"], [s.rolled_back || 0, "rolledback"],
      [s.superseded, "superseded"],
      [s.downloading, "downloading"], [s.paused, "paused"], [s.unknown, "unknown"],
      [s.silent, "silent"], [s.failed, "failed"], [s.refused + s.not_followed, "refused"],
      [r.report.holding_per_min.toFixed(1) + "/min", ""], [dur(r.report.eta_s), ""],
    ];
    for (const [v, cls] of cells) {
      const td = el("td", cls ? { class: cls } : {}, v);
      tr.append(td);
    }
    tr.addEventListener("click", () => { select(r.id); refresh(); });
    body.append(tr);
  }
}

function drawGrid(release) {
  const grid = document.getElementById("grid");
  grid.replaceChildren();
  document.getElementById("grid-release").textContent =
    release ? `${release.channel} v${release.version}` : "";
  // What the fleet view warns of for this release (a halted rollout among them).
  const warnings = document.getElementById("warnings");
  warnings.replaceChildren(
    ...((release && release.report.warnings) || []).map((w) => el("li", {}, w)));
  if (!release) return;
  const sites = [...release.report.sites].sort((a, b) => a.site.localeCompare(b.site));
  for (const s of sites) {
    let cls = "waiting";
    const silent = s.silent || 0;
    if (s.failed > 0) cls = "failed";
    else if (s.holding + s.superseded >= s.nodes) cls = "done";
    else if (silent > 0 && s.holding + s.superseded + silent >= s.nodes) cls = "silent";
    else if (s.progress > 0) cls = "moving";
    const age = s.age_s === null || s.age_s === undefined ? "" : `, summary ${dur(s.age_s)} old${s.stale ? " (stale)" : ""}`;
    const title = `${s.site}: ${s.holding}/${s.nodes} hold it, ${s.superseded} a newer version, ${s.failed} failed, ${silent} silent, ${(100 * s.progress).toFixed(0)} % of chunks${age}`;
    const c = el("div", { class: `cell ${cls}`, role: "listitem", title, "data-site": s.site });
    c.style.setProperty("--p", `${(100 * s.progress).toFixed(0)}%`);
    c.addEventListener("mouseenter", () => {
      document.getElementById("site-detail").textContent = title;
    });
    grid.append(c);
  }
}

function drawFailures(data) {
  const body = document.querySelector("#failures tbody");
  body.replaceChildren();
  const total = data.releases.reduce((n, r) => n + r.report.states.failed, 0);
  document.getElementById("failed-count").textContent = `(${total})`;
  const names = new Map(data.releases.map((r) => [r.id, `${r.channel} v${r.version}`]));
  for (const f of data.failures) {
    const tr = el("tr", { "data-release": f.release });
    tr.append(el("td", {}, names.get(f.release) || f.release.slice(0, 12)),
      el("td", {}, f.node.slice(0, 12)), el("td", {}, f.site),
      el("td", {}, when(f.since_unix_s)), el("td", { class: "error" }, f.error));
    body.append(tr);
  }
}

async function refresh() {
  try {
    const res = await fetch("dashboard/data", { cache: "no-store" });
    if (!res.ok) throw new Error(res.status + " " + res.statusText);
    const data = await res.json();
    document.getElementById("node").textContent =
      `node ${data.node_id.slice(0, 12)} · site ${data.site}`;
    if (!data.releases.some((r) => r.id === selected)) {
      selected = data.releases.length ? data.releases[0].id : null;
    }
    const release = data.releases.find((r) => r.id === selected) || null;
    drawReleases(data);
    drawGrid(release);
    drawFailures(data);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (e) {
    document.getElementById("updated").textContent = "cannot reach the node: " + e.message;
  }
}

refresh();
setInterval(refresh, 2000);
