// retrieval web page: plain JavaScript, no build step. Talks to /ui/api/* on the same server.
"use strict";

(() => {
  const PAGE = 24;
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const state = {
    tenant: params.get("tenant") || localStorage.getItem("retrieval.tenant") || "default_tenant",
    database: params.get("database") || localStorage.getItem("retrieval.database") || "default_database",
    token: localStorage.getItem("retrieval.token") || "",
    collection: params.get("collection") || "",
    info: null,
    described: null,
    mode: "text",
    query: null, // the body fields of the current search (text | image | uri | like_id)
    where: null,
    offset: 0,
    hasMore: false,
    loading: false, // a page of the current search is on its way
    seq: 0, // bumps on every new search so late answers of an old one are dropped
    controller: null, // aborts the current search's request when a newer one starts
    pickSeq: 0, // bumps on every collection pick: the newest pick wins too
    blobs: [],
  };

  // Relative to the page, so the page also works behind a reverse proxy under a path prefix.
  const here = (path) => new URL(path.replace(/^\//, ""), document.baseURI);

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options = {}) {
    const url = here(path);
    url.searchParams.set("tenant", state.tenant);
    url.searchParams.set("database", state.database);
    const headers = { ...(options.headers || {}) };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const res = await fetch(url, { ...options, headers });
    if (!res.ok) {
      let message = res.statusText;
      try {
        const body = await res.json();
        message = body.message || body.detail || body.error || message;
        if (typeof message !== "string") message = JSON.stringify(message);
      } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, message);
    }
    return res.json();
  }

  // ------------------------------------------------------------------ notices

  function notice(html, kind = "") {
    const el = $("notice");
    el.title = "";
    if (!html) { el.hidden = true; el.innerHTML = ""; return; }
    el.className = "notice " + kind;
    el.innerHTML = html;
    el.hidden = false;
  }

  function showError(err) {
    if (err.status === 401 || (err.status === 403 && /token|auth/i.test(err.message))) {
      askForToken(err.message);
    } else {
      notice(codeify(err.message || String(err)), "error");
    }
  }

  // The server wants credentials: say so as a person would, open Connection, and keep search off
  // until a token works (the server's own message, for developers, stays in the tooltip).
  function askForToken(serverMessage = "") {
    notice(state.token
      ? "This server did not accept that access token. Check it above, under <b>Connection</b>."
      : "This server needs an access token. Enter it above, under <b>Connection</b>.", "error");
    $("notice").title = serverMessage;
    setSearchable(false);
    $("settings").hidden = false;
    $("settings-toggle").setAttribute("aria-expanded", "true");
    $("token").focus();
  }

  // Searching needs a connection and a collection: until then its controls are disabled, not dead.
  function setSearchable(on) {
    for (const el of $("search").elements) el.disabled = !on;
    $("collection").disabled = !on;
    $("search").classList.toggle("off", !on);
  }

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const codeify = (s) => esc(s).replace(/`([^`]+)`/g, "<code>$1</code>");

  // ----------------------------------------------------------- collections

  async function loadCollections() {
    const select = $("collection");
    select.innerHTML = "";
    let list = [];
    try {
      list = await api("/ui/api/collections");
    } catch (err) {
      showError(err);
      return false;
    }
    setSearchable(list.length > 0);
    if (!list.length) {
      select.innerHTML = "<option value=''>no collections</option>";
      $("info").innerHTML = "";
      setStatus(`No collections in ${state.tenant} / ${state.database}. Index a folder with <code>retrieval index FOLDER --collection NAME</code>.`);
      clearGrid();
      return true;
    }
    for (const c of list) {
      const opt = document.createElement("option");
      opt.value = c.name;
      opt.textContent = `${c.name} (${c.count})`;
      select.appendChild(opt);
    }
    if (!list.some((c) => c.name === state.collection)) state.collection = list[0].name;
    select.value = state.collection;
    await pickCollection(state.collection);
    return true;
  }

  async function pickCollection(name) {
    state.collection = name;
    rememberUrl();
    const pick = ++state.pickSeq;
    newRequest(); // a page of the collection picked before must not land in this one's grid
    clearGrid();
    showLoading(true);
    setStatus(`Opening <b>${esc(name)}</b> …`);
    const seq = state.seq;
    let d;
    try {
      d = await api(`/ui/api/collections/${encodeURIComponent(name)}`);
    } catch (err) {
      if (pick !== state.pickSeq) return;
      showLoading(false);
      showError(err);
      return;
    }
    if (pick !== state.pickSeq) return; // another collection was picked meanwhile: it wins
    state.described = d;
    renderInfo(d);
    fillFilterKeys(d.metadata_keys || []);
    fillDateRange(d.date_range);
    clearFilter(false);
    explainEmbedding();
    if (seq === state.seq) search(null); // unless a search was started meanwhile: the newest wins
  }

  function renderInfo(d) {
    const ef = d.embedding_function;
    const model = ef && ef.config && (ef.config.model_name || ef.config.model || "");
    const chips = [
      ["records", d.count],
      ["dimension", d.dimension ?? "–"],
      ["embedding function", ef ? ef.name + (model ? ` · ${model}` : "") : "none"],
      ["space", d.space],
    ];
    if (d.data_loader) chips.push(["loader", d.data_loader]);
    $("info").innerHTML = chips.map(([k, v]) => `<span class="chip" data-key="${esc(k)}">${esc(k)} <b>${esc(v)}</b></span>`).join("");
  }

  function explainEmbedding() {
    const d = state.described;
    if (d && !d.can_embed) {
      notice(codeify(d.embed_hint) + " Browsing, filtering and <b>Similar</b> work without it.");
    } else {
      notice("");
    }
  }

  // ------------------------------------------------------------------ filter

  function fillFilterKeys(keys) {
    const select = $("filter-key");
    select.innerHTML = "<option value=''>metadata key…</option>";
    state.keys = {};
    for (const k of keys) {
      state.keys[k.key] = k;
      const opt = document.createElement("option");
      opt.value = k.key;
      opt.textContent = k.key;
      select.appendChild(opt);
    }
    fillFilterValues();
  }

  function fillFilterValues() {
    const k = state.keys && state.keys[$("filter-key").value];
    $("filter-values").innerHTML = (k ? k.values : []).map((v) => `<option value="${esc(v)}">`).join("");
  }

  function typedValue(key, raw) {
    const info = state.keys && state.keys[key];
    const text = raw.trim();
    if (info && info.type === "number" && text !== "" && !isNaN(Number(text))) return Number(text);
    if (info && info.type === "bool" && /^(true|false)$/i.test(text)) return text.toLowerCase() === "true";
    return text;
  }

  function applyFilter() {
    const key = $("filter-key").value;
    const raw = $("filter-value").value;
    if (!key || raw.trim() === "") { clearFilter(true); return; }
    const info = state.keys && state.keys[key];
    state.where = info && info.type === "list"
      ? { [key]: { $contains: typedValue(key, raw) } }
      : { [key]: { $eq: typedValue(key, raw) } };
    $("filter-clear").hidden = false;
    search(state.query);
  }

  function clearFilter(rerun) {
    state.where = null;
    $("filter-value").value = "";
    $("filter-clear").hidden = true;
    if (rerun) search(state.query);
  }

  // ------------------------------------------------------------- date range
  // Photos indexed by `retrieval index` carry date_taken_ts (seconds since 1970, UTC); the page offers
  // a day range over it when the collection has any. Days are UTC, as the stored stamps are.

  function fillDateRange(range) {
    state.dateKey = range ? range.key : null;
    $("date-range").hidden = !range;
    for (const id of ["date-from", "date-to"]) {
      const input = $(id);
      input.value = "";
      input.min = range ? new Date(range.min * 1000).toISOString().slice(0, 10) : "";
      input.max = range ? new Date(range.max * 1000).toISOString().slice(0, 10) : "";
    }
  }

  function dateWhere() {
    if (!state.dateKey) return null;
    const from = $("date-from").value, to = $("date-to").value;
    const clauses = [];
    if (from) clauses.push({ [state.dateKey]: { $gte: Date.parse(from + "T00:00:00Z") / 1000 } });
    if (to) clauses.push({ [state.dateKey]: { $lt: Date.parse(to + "T00:00:00Z") / 1000 + 86400 } });
    return clauses;
  }

  function currentWhere() {
    const clauses = [...(state.where ? [state.where] : []), ...(dateWhere() || [])];
    return clauses.length > 1 ? { $and: clauses } : clauses[0] || null;
  }

  // ------------------------------------------------------------------ search

  function setMode(mode) {
    state.mode = mode;
    for (const b of document.querySelectorAll(".modes button")) b.setAttribute("aria-selected", String(b.dataset.mode === mode));
    $("text").hidden = mode !== "text";
    $("drop").hidden = mode !== "image";
    $("uri").hidden = mode !== "uri";
    $("go").hidden = mode === "image";
    (mode === "text" ? $("text") : mode === "uri" ? $("uri") : $("file")).focus({ preventScroll: true });
  }

  function submit(ev) {
    if (ev) ev.preventDefault();
    if (state.mode === "text") {
      const text = $("text").value.trim();
      search(text ? { text } : null);
    } else if (state.mode === "uri") {
      const uri = $("uri").value.trim();
      search(uri ? { uri } : null);
    }
  }

  function searchImageFile(file) {
    if ($("search").classList.contains("off")) return; // not connected yet: the notice says what to do
    if (!file || !file.type.startsWith("image/")) {
      notice(`${esc(file ? file.name : "That")} is not an image file.`, "error");
      return;
    }
    setMode("image");
    const reader = new FileReader();
    reader.onload = () => {
      $("preview").src = reader.result;
      $("preview").hidden = false;
      $("drop-label").innerHTML = `${esc(file.name)} · <label class="linklike" for="file">choose another</label>`;
      search({ image: reader.result, name: file.name });
    };
    reader.readAsDataURL(file);
  }

  async function search(query) {
    state.query = query;
    state.offset = 0;
    state.hasMore = false;
    newRequest();
    clearGrid();
    await loadPage();
  }

  // A new search (or pick) supersedes whatever is loading: its request is aborted, and the sequence
  // number makes sure an answer that still arrives is dropped.
  function newRequest() {
    state.seq += 1;
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.loading = false;
  }

  function showLoading(on) {
    $("status").classList.toggle("loading", on);
    $("status").setAttribute("aria-busy", String(on));
    $("grid").setAttribute("aria-busy", String(on));
  }

  function describeQuery() {
    const q = state.query;
    const where = state.where ? ` where ${esc(Object.keys(state.where)[0])} = ${esc(Object.values(Object.values(state.where)[0])[0])}` : "";
    if (!q) return `Browsing <b>${esc(state.collection)}</b>${where}`;
    if (q.text) return `Nearest to “${esc(q.text)}”${where}`;
    if (q.image) return `Nearest to the image ${esc(q.name || "")}${where}`;
    if (q.uri) return `Nearest to ${esc(q.uri)}${where}`;
    return `Similar to ${esc(q.like_id)}${where}`;
  }

  async function loadPage() {
    if (state.loading || !state.collection) return;
    const seq = state.seq;
    const controller = new AbortController();
    state.controller = controller;
    state.loading = true;
    showLoading(true);
    $("more").disabled = true;
    const body = { offset: state.offset, limit: PAGE, where: currentWhere() };
    if (state.query) for (const k of ["text", "image", "uri", "like_id"]) if (state.query[k]) body[k] = state.query[k];
    try {
      setStatus(describeQuery() + (state.offset ? " · loading more …" : " · searching …"));
      const res = await api(`/ui/api/collections/${encodeURIComponent(state.collection)}/search`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (seq !== state.seq) return;
      renderItems(res.items, state.offset);
      state.offset += res.items.length;
      state.hasMore = res.has_more;
      const shown = $("grid").querySelectorAll(".card").length;
      setStatus(`${describeQuery()} · ${shown} shown${state.hasMore ? "" : shown ? " (all)" : ""}${distanceHint()}`);
      if (!shown) $("grid").innerHTML = `<div class="empty">Nothing matches.</div>`;
      explainEmbedding();
    } catch (err) {
      if (seq !== state.seq) return; // superseded (aborted or late): the newer search reports itself
      setStatus(describeQuery());
      showError(err);
    } finally {
      if (seq === state.seq) {
        state.loading = false;
        state.controller = null;
        showLoading(false);
        $("more").hidden = !state.hasMore;
        $("more").disabled = false;
        // The observer only reports changes: if the end of the grid is still in view, keep filling.
        if (state.hasMore && nearBottom()) loadPage();
      }
    }
  }

  // Distances mean nothing to most people until told which way is better.
  function distanceHint() {
    if (!$("grid").querySelector("[data-testid=distance]")) return "";
    return ` · <span class="hint" data-testid="distance-hint">lower distance = closer match</span>`;
  }

  const nearBottom = () => $("sentinel").getBoundingClientRect().top < window.innerHeight + 400;

  function setStatus(html) { $("status").innerHTML = html; }

  function clearGrid() {
    $("grid").innerHTML = "";
    $("more").hidden = true;
    for (const url of state.blobs) URL.revokeObjectURL(url);
    state.blobs = [];
  }

  // ------------------------------------------------------------------- cards

  function renderItems(items, start) {
    const grid = $("grid");
    items.forEach((item, i) => grid.appendChild(card(item, start + i + 1)));
  }

  function card(item, rank) {
    const el = document.createElement("article");
    el.className = "card";
    el.dataset.id = item.id;
    el.setAttribute("data-testid", "result");
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    if (item.thumbnail) {
      const img = document.createElement("img");
      img.alt = item.id;
      img.loading = "lazy";
      img.decoding = "async";
      img.onerror = () => { thumb.innerHTML = `<span class="placeholder">no preview</span>`; };
      setThumb(img, item.id);
      thumb.appendChild(img);
    } else if (item.document) {
      thumb.classList.add("doc");
      thumb.innerHTML = `<p title="${esc(item.document)}">${esc(item.document)}</p>`;
    } else {
      thumb.innerHTML = `<span class="placeholder">${item.uri ? esc(item.uri) : "no preview"}</span>`;
    }
    const badge = document.createElement("span");
    badge.className = "rank";
    badge.textContent = "#" + rank;
    thumb.appendChild(badge);
    el.appendChild(thumb);

    const md = Object.entries(item.metadata || {})
      .map(([k, v]) => `<span title="${esc(k)}: ${esc(JSON.stringify(v))}"><i>${esc(k)}</i> ${esc(Array.isArray(v) ? v.join(", ") : v)}</span>`)
      .join("");
    const dist = item.distance === null || item.distance === undefined ? "" : `<span class="dist" data-testid="distance" title="distance to the query: lower is closer (0 is the same)">${Math.max(0, item.distance).toFixed(4)}</span>`;
    const body = document.createElement("div");
    body.className = "body";
    body.innerHTML =
      `<div class="line1"><span class="id" data-testid="result-id" title="${esc(item.id)}">${esc(item.id)}</span>${dist}</div>` +
      (md ? `<div class="md">${md}</div>` : "") +
      (item.document && item.thumbnail ? `<p class="doctext">${esc(item.document)}</p>` : "");
    const similar = document.createElement("button");
    similar.type = "button";
    similar.className = "similar";
    similar.textContent = "Similar";
    similar.title = "Records nearest to this one (uses its stored embedding)";
    similar.onclick = () => { window.scrollTo({ top: 0, behavior: "smooth" }); search({ like_id: item.id }); };
    body.appendChild(similar);
    el.appendChild(body);
    return el;
  }

  function thumbUrl(id) {
    const url = here(`/ui/api/collections/${encodeURIComponent(state.collection)}/thumbnail`);
    url.searchParams.set("id", id);
    url.searchParams.set("tenant", state.tenant);
    url.searchParams.set("database", state.database);
    return url;
  }

  function setThumb(img, id) {
    if (!state.token) { img.src = thumbUrl(id); return; } // plain <img>: lazy loading and the HTTP cache
    // An <img> cannot send a header, so with a token the bytes come through fetch.
    fetch(thumbUrl(id), { headers: { Authorization: "Bearer " + state.token } })
      .then((res) => (res.ok ? res.blob() : Promise.reject(res.status)))
      .then((blob) => { const u = URL.createObjectURL(blob); state.blobs.push(u); img.src = u; })
      .catch(() => img.onerror());
  }

  // ---------------------------------------------------------------- settings

  function rememberUrl() {
    const p = new URLSearchParams();
    if (state.tenant !== "default_tenant") p.set("tenant", state.tenant);
    if (state.database !== "default_database") p.set("database", state.database);
    if (state.collection) p.set("collection", state.collection);
    history.replaceState(null, "", p.toString() ? "?" + p : location.pathname);
  }

  async function applySettings() {
    state.tenant = $("tenant").value.trim() || "default_tenant";
    state.database = $("database").value.trim() || "default_database";
    state.token = $("token").value.trim();
    localStorage.setItem("retrieval.tenant", state.tenant);
    localStorage.setItem("retrieval.database", state.database);
    if (state.token) localStorage.setItem("retrieval.token", state.token);
    else localStorage.removeItem("retrieval.token");
    notice("");
    await loadDatabases();
    if (await loadCollections()) {  // connected: fold the panel away
      $("settings").hidden = true;
      $("settings-toggle").setAttribute("aria-expanded", "false");
    }
  }

  async function loadDatabases() {
    try {
      const names = await api("/ui/api/databases");
      $("databases").innerHTML = names.map((n) => `<option value="${esc(n)}">`).join("");
    } catch (_) { /* the tenant may not exist yet; loadCollections reports it */ }
  }

  // -------------------------------------------------------------------- wire

  function wire() {
    $("tenant").value = state.tenant;
    $("database").value = state.database;
    $("token").value = state.token;
    $("settings-toggle").onclick = () => {
      const s = $("settings");
      s.hidden = !s.hidden;
      $("settings-toggle").setAttribute("aria-expanded", String(!s.hidden));
    };
    $("settings").onsubmit = (ev) => { ev.preventDefault(); applySettings(); };
    $("collection").onchange = (ev) => pickCollection(ev.target.value);
    $("search").onsubmit = submit;
    for (const b of document.querySelectorAll(".modes button")) b.onclick = () => setMode(b.dataset.mode);
    $("file").onchange = (ev) => searchImageFile(ev.target.files[0]);
    $("filter-key").onchange = fillFilterValues;
    $("filter-apply").onclick = applyFilter;
    $("filter-value").onkeydown = (ev) => { if (ev.key === "Enter") { ev.preventDefault(); applyFilter(); } };
    $("filter-clear").onclick = () => clearFilter(true);
    $("date-from").onchange = $("date-to").onchange = () => search(state.query);
    $("more").onclick = loadPage;

    // Drop an image anywhere on the page.
    let depth = 0;
    const veil = $("dropveil");
    const hasFiles = (ev) => ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes("Files");
    window.addEventListener("dragenter", (ev) => { if (hasFiles(ev)) { depth += 1; veil.hidden = false; } });
    window.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) veil.hidden = true; });
    window.addEventListener("dragover", (ev) => { if (hasFiles(ev)) ev.preventDefault(); });
    window.addEventListener("drop", (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth = 0;
      veil.hidden = true;
      searchImageFile(ev.dataTransfer.files[0]);
    });

    // More results on scroll.
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && state.hasMore && !state.loading) loadPage();
    }, { rootMargin: "400px" }).observe($("sentinel"));
  }

  async function start() {
    wire();
    setMode("text");
    setSearchable(false); // until the server has answered with a collection to search
    try {
      state.info = await api("/ui/api/info");
      if (!state.info.thumbnails.enabled) console.info(state.info.thumbnails.hint);
    } catch (err) {
      showError(err);
      return;
    }
    await loadDatabases();
    await loadCollections();
  }

  window.retrievalPage = { state }; // for debugging from the console
  start();
})();
