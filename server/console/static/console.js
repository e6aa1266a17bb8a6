// Interlock operator console. Plain DOM code, no framework, no build step.
// Every value from the server is rendered with textContent, never parsed as HTML: approval arguments and
// conversation messages are attacker-influenced.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "interlock-console";
  const state = {
    auth: null, token: null, tenant: null, who: null,
    view: "pending", pending: new Map(), history: [], historyNext: null,
    selected: null, stream: null, retry: 0, flash: null,
  };

  // --- small DOM helpers -----------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const clear = (node) => { while (node.firstChild) node.removeChild(node.firstChild); return node; };
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
  const pretty = (value) => JSON.stringify(value, null, 2);
  const badge = (text) => el("span", { class: `badge ${String(text).replace(/[^a-z_]/g, "")}`, text });

  // --- API -------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  function url(path, params) {
    const u = new URL(path, window.location.origin);
    if (!state.auth && path.startsWith("/approvals")) u.searchParams.set("tenant", state.tenant || "");
    for (const [k, v] of Object.entries(params || {})) u.searchParams.set(k, v);
    return u;
  }

  function headers(json) {
    const h = { Accept: "application/json" };
    if (state.token) h.Authorization = `Bearer ${state.token}`;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  async function api(path, { params, method = "GET", body } = {}) {
    const response = await fetch(url(path, params), {
      method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store",
    });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail !== undefined ? data.detail : response.statusText;
      throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return { data, headers: response.headers };
  }

  // --- sign-in ---------------------------------------------------------------------------------
  async function boot() {
    const config = (await api("/console/config.json")).data;
    state.auth = Boolean(config.auth);
    $("token-field").hidden = !state.auth;
    $("tenant-field").hidden = state.auth;
    const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
    if (saved) {
      state.token = saved.token || null;
      state.tenant = saved.tenant || null;
      try { await signedIn(); return; } catch (_) { sessionStorage.removeItem(KEY); }
    }
    showSignIn();
  }

  function showSignIn(message) {
    $("app").hidden = true; $("trace").hidden = true; $("who").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = message || "";
    (state.auth ? $("token") : $("tenant")).focus();
  }

  async function signIn(event) {
    event.preventDefault();
    state.token = state.auth ? $("token").value.trim() : null;
    state.tenant = state.auth ? null : $("tenant").value.trim();
    if (state.auth ? !state.token : !state.tenant) {
      $("sign-in-error").textContent = state.auth ? "Enter your operator token." : "Enter a tenant.";
      return;
    }
    try {
      await signedIn();
      sessionStorage.setItem(KEY, JSON.stringify({ token: state.token, tenant: state.tenant }));
    } catch (err) {
      state.token = null;
      $("sign-in-error").textContent = `Sign-in failed: ${err.message}`;
    }
  }

  async function signedIn() {
    state.who = (await api("/approvals/operator")).data;
    $("who-name").textContent = `${state.who.identity} · tenant ${state.who.tenant}`;
    $("who").hidden = false;
    $("sign-in").hidden = true;
    $("token").value = "";
    await loadPending();
    startStream();
    route();
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    if (state.stream) state.stream.abort();
    state.stream = null; state.token = null; state.tenant = null;
    state.pending.clear(); state.history = []; state.selected = null; state.flash = null;
    setLive(false);
    window.location.hash = "";
    showSignIn("Signed out.");
  }

  // --- live updates (SSE over fetch, so the bearer token travels in a header) -------------------
  function setLive(on) {
    $("live").textContent = on ? "live" : "offline";
    $("live").classList.toggle("on", on);
  }

  async function startStream() {
    if (state.stream) state.stream.abort();
    const controller = new AbortController();
    state.stream = controller;
    try {
      const response = await fetch(url("/approvals/events"), {
        headers: { ...headers(false), Accept: "text/event-stream" }, signal: controller.signal, cache: "no-store",
      });
      if (!response.ok || !response.body) throw new ApiError(response.status, "event stream refused");
      setLive(true);
      state.retry = 0;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const lines = frame.split("\n");
          const name = (lines.find((l) => l.startsWith("event:")) || "").slice(6).trim();
          const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (name === "approval" && data) onApprovalEvent(JSON.parse(data));
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    if (controller.signal.aborted || state.stream !== controller) return;
    setLive(false);
    state.retry = Math.min(state.retry + 1, 5);
    setTimeout(() => { if (state.stream === controller) startStream(); }, 1000 * state.retry);
  }

  function onApprovalEvent(event) {
    const approval = event.approval;
    if (!approval) return;
    if (approval.status === "pending") state.pending.set(approval.id, approval);
    else state.pending.delete(approval.id);
    const known = state.history.findIndex((a) => a.id === approval.id);
    if (approval.status !== "pending") {
      if (known >= 0) state.history[known] = approval; else state.history.unshift(approval);
    }
    renderList();
    if (state.selected === approval.id) showApproval(approval.id, { keepFocus: true, keepForm: true });
  }

  // --- lists -----------------------------------------------------------------------------------
  async function loadPending() {
    const { data } = await api("/approvals", { params: { status: "pending", limit: "200" } });
    state.pending = new Map(data.map((a) => [a.id, a]));
  }

  async function loadHistory(more) {
    const offset = more ? state.historyNext : 0;
    const { data, headers: h } = await api("/approvals", {
      params: { status: "decided", limit: "25", offset: String(offset || 0) },
    });
    state.history = more ? state.history.concat(data) : data;
    state.historyNext = h.get("X-Pagination-Next");
  }

  function renderList() {
    const pending = [...state.pending.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    $("pending-count").textContent = String(pending.length);
    const items = state.view === "history" ? state.history : pending;
    $("list-title").textContent = state.view === "history" ? "Decided approvals" : "Pending approvals";
    $("list-empty").textContent = state.view === "history" ? "No decided approvals yet." : "Nothing is waiting for a decision.";
    $("list-empty").hidden = items.length > 0;
    $("more").hidden = !(state.view === "history" && state.historyNext);
    const list = clear($("list"));
    for (const a of items) {
      const button = el("button", {
        type: "button", "data-id": a.id, "aria-current": state.selected === a.id ? "true" : null,
        "aria-label": `${a.tool} on ${a.server}, requested by ${a.principal}, ${a.status}`,
        onclick: () => { window.location.hash = `#/${state.view}/${encodeURIComponent(a.id)}`; },
      },
      el("span", { class: "tool", text: `${a.tool} · ${a.server}` }),
      el("span", { class: "meta" }, badge(a.status), " ", badge(a.risk), ` ${a.principal} · ${when(a.created_at)}`),
      a.decided_by ? el("span", { class: "meta", text: `decided by ${a.decided_by}` }) : null);
      list.append(el("li", {}, button));
    }
  }

  function onListKeys(event) {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const buttons = [...$("list").querySelectorAll("button")];
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    event.preventDefault();
    const next = buttons[Math.max(0, Math.min(buttons.length - 1, at + (event.key === "ArrowDown" ? 1 : -1)))];
    next.focus();
  }

  // --- one approval ----------------------------------------------------------------------------
  function facts(rows) {
    const dl = el("dl", { class: "facts" });
    for (const [name, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      dl.append(el("dt", { text: name }), el("dd", {}, value));
    }
    return dl;
  }

  async function showApproval(id, { keepFocus = false, keepForm = false } = {}) {
    state.selected = id;
    renderList();
    const body = $("detail-body");
    if (keepForm && body.querySelector("form[data-busy='true']")) return;
    let d;
    try {
      d = (await api(`/approvals/${encodeURIComponent(id)}`)).data;
    } catch (err) {
      $("detail-title").textContent = "Approval not available";
      clear(body).append(el("p", { class: "error", role: "alert", text: err.message }));
      return;
    }
    if (state.selected !== id) return;
    const openEdit = keepForm && body.querySelector("#edit-fields") && !body.querySelector("#edit-fields").hidden;
    const savedReason = keepForm && body.querySelector("#reason") ? body.querySelector("#reason").value : "";
    $("detail-title").textContent = `${d.tool} on ${d.server}`;
    clear(body);
    if (state.flash && state.flash.id === d.id) {
      const f = state.flash;
      body.append(el("p", { class: "notice", role: "status", id: "decision-result", tabindex: "-1" }, f.text,
        f.thread && f.run ? " " : null,
        f.thread && f.run ? el("a", { href: `#/trace/${encodeURIComponent(f.thread)}/${encodeURIComponent(f.run)}`,
          text: "Trace of the resumed run" }) : null));
    }
    const traceLink = d.thread_id && d.run_id
      ? el("a", { href: `#/trace/${encodeURIComponent(d.thread_id)}/${encodeURIComponent(d.run_id)}`, text: "Open the run trace" })
      : (d.thread_id ? null : "none: requested directly by an MCP client");
    body.append(facts([
      ["Status", badge(d.status)],
      ["Risk", badge(d.risk)],
      ["Why it needs approval", d.reason],
      ["Requester", d.principal],
      ["Tenant", d.tenant],
      ["Requested", when(d.created_at)],
      ["Expires", d.status === "pending" || d.status === "approved" ? when(d.expires_at) : null],
      ["Decided by", d.decided_by],
      ["Decision reason", d.decision_reason],
      ["Approval id", d.id],
      ["Run", traceLink],
    ]));
    body.append(el("h3", { text: "Arguments" }), el("pre", { id: "args", text: pretty(d.args) }));
    if (d.conversation && d.conversation.length) {
      const ol = el("ol", { class: "messages", "aria-label": "Last messages of the conversation" });
      for (const m of d.conversation) {
        const calls = (m.tool_calls || []).map((c) => `→ ${c.name} ${JSON.stringify(c.args)}`).join("\n");
        ol.append(el("li", { class: m.type || "" },
          el("div", { class: "role", text: m.type === "tool" ? `tool ${m.name || ""}` : (m.type || "message") }),
          el("div", { text: m.content || "" }),
          calls ? el("pre", { text: calls }) : null));
      }
      body.append(el("h3", { text: "Conversation (last messages)" }), ol);
    }
    if (d.status === "pending") body.append(decisionForm(d, openEdit, savedReason));
    body.append(auditTable(d));
    if (!keepFocus) $("detail").focus();
  }

  function fieldInput(name, spec, value) {
    const id = `edit-${name}`;
    const type = spec.type;
    let input;
    if (type === "boolean") {
      input = el("input", { id, type: "checkbox", "data-arg": name, "data-type": type });
      input.checked = Boolean(value);
    } else if (type === "object" || type === "array") {
      input = el("textarea", { id, "data-arg": name, "data-type": type });
      input.value = value === undefined ? "" : JSON.stringify(value);
    } else {
      input = el("input", { id, type: "text", "data-arg": name, "data-type": type || "string",
        inputmode: type === "integer" || type === "number" ? "decimal" : null });
      input.value = value === undefined || value === null ? "" : String(value);
    }
    const hint = [type, spec.pattern ? `pattern ${spec.pattern}` : null, spec.description].filter(Boolean).join(" · ");
    return el("div", {}, el("label", { for: id, text: name }), input, hint ? el("p", { class: "hint", text: hint }) : null);
  }

  function editedArgs(fields, original) {
    const out = {};
    for (const input of fields.querySelectorAll("[data-arg]")) {
      const name = input.getAttribute("data-arg");
      const type = input.getAttribute("data-type");
      const raw = input.type === "checkbox" ? input.checked : input.value;
      if (raw === "" && !(name in original)) continue;
      if (type === "integer" && /^-?\d+$/.test(raw)) out[name] = parseInt(raw, 10);
      else if (type === "number" && raw !== "" && !Number.isNaN(Number(raw))) out[name] = Number(raw);
      else if ((type === "object" || type === "array") && raw !== "") {
        try { out[name] = JSON.parse(raw); } catch (_) { out[name] = raw; }
      } else out[name] = raw; // sent as typed: the server validates against the tool's schema and says what is wrong
    }
    return out;
  }

  function renderDiff(target, original, edited) {
    clear(target);
    const keys = [...new Set([...Object.keys(original), ...Object.keys(edited)])].sort();
    const changed = keys.filter((k) => JSON.stringify(original[k]) !== JSON.stringify(edited[k]));
    if (!changed.length) { target.append(el("p", { class: "hint", text: "No changes from the original call." })); return; }
    const tbody = el("tbody");
    for (const k of changed) {
      tbody.append(el("tr", {}, el("th", { scope: "row", text: k }),
        el("td", { class: "old", text: k in original ? JSON.stringify(original[k]) : "(absent)" }),
        el("td", { class: "new", text: k in edited ? JSON.stringify(edited[k]) : "(removed)" })));
    }
    target.append(el("div", { class: "table-wrap" }, el("table", { class: "diff", "aria-label": "Changes to the arguments" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Argument" }), el("th", { scope: "col", text: "Original" }),
        el("th", { scope: "col", text: "Edited" }))), tbody)));
  }

  function decisionForm(d, openEdit, savedReason) {
    const error = el("p", { class: "error", id: "decision-error", role: "alert" });
    const notice = el("p", { class: "notice", id: "decision-notice", role: "status" });
    const reason = el("textarea", { id: "reason", maxlength: "2000" });
    reason.value = savedReason || "";
    const schema = d.input_schema || { properties: {} };
    const props = { ...(schema.properties || {}) };
    for (const k of Object.keys(d.args || {})) if (!(k in props)) props[k] = {};
    const fields = el("fieldset", { id: "edit-fields", hidden: !openEdit },
      el("legend", { text: "Edit the arguments (validated against the tool's input schema)" }),
      Object.entries(props).map(([name, spec]) => fieldInput(name, spec, (d.args || {})[name])));
    const diff = el("div", { id: "edit-diff", "aria-live": "polite" });
    fields.append(el("h4", { text: "Changes" }), diff,
      el("div", { class: "actions" }, el("button", { type: "button", class: "primary", id: "submit-edit",
        onclick: () => submit("edit") }, "Approve with these arguments")));
    fields.addEventListener("input", () => renderDiff(diff, d.args || {}, editedArgs(fields, d.args || {})));
    renderDiff(diff, d.args || {}, editedArgs(fields, d.args || {}));
    const form = el("form", { id: "decision", "aria-label": "Decision", onsubmit: (e) => e.preventDefault() },
      el("h3", { text: "Decision" }),
      el("label", { for: "reason", text: "Reason (recorded in the audit trail)" }), reason,
      el("div", { class: "actions" },
        el("button", { type: "button", class: "approve", id: "approve", onclick: () => submit("approve") }, "Approve"),
        el("button", { type: "button", class: "reject", id: "reject", onclick: () => submit("reject") }, "Reject"),
        el("button", { type: "button", id: "edit", "aria-expanded": openEdit ? "true" : "false", "aria-controls": "edit-fields",
          onclick: (e) => {
            fields.hidden = !fields.hidden;
            e.currentTarget.setAttribute("aria-expanded", fields.hidden ? "false" : "true");
            if (!fields.hidden) { const first = fields.querySelector("[data-arg]"); if (first) first.focus(); }
          } }, "Edit…")),
      fields, error, notice);

    async function submit(decision) {
      error.textContent = ""; notice.textContent = "";
      const body = { decision };
      if (reason.value.trim()) body.reason = reason.value.trim();
      if (decision === "edit") body.args = editedArgs(fields, d.args || {});
      form.setAttribute("data-busy", "true");
      for (const b of form.querySelectorAll("button")) b.disabled = true;
      try {
        const { data } = await api(`/approvals/${encodeURIComponent(d.id)}`, { method: "POST", body });
        form.removeAttribute("data-busy");
        const outcome = data.output && data.output.outcome ? `; run outcome: ${data.output.outcome}` : "";
        // Kept in state: a live update may re-render this approval at any moment and must show it too.
        state.flash = { id: d.id, text: `${decision === "reject" ? "Rejected" : "Approved"} as ${data.approval.decided_by}${outcome}.`,
          thread: data.thread_id, run: data.run_id };
        await showApproval(d.id, { keepFocus: true });
        const msg = $("decision-result");
        if (msg) msg.focus();
      } catch (err) {
        form.removeAttribute("data-busy");
        for (const b of form.querySelectorAll("button")) b.disabled = false;
        error.textContent = err.status === 422 ? `Not valid: ${err.message}` : err.message;
      }
    }
    return form;
  }

  function auditTable(d) {
    const cells = (at, what, who, detail) => el("tr", {},
      el("td", { "data-label": "When", text: at }), el("td", { "data-label": "What" }, what),
      el("td", { "data-label": "Who", text: who || "" }), el("td", { "data-label": "Detail", text: detail || "" }));
    const rows = (d.audit || []).map((e) => cells(when(e.at), badge(e.kind), e.actor, e.reason));
    for (const c of d.tool_calls || []) {
      rows.push(cells(when(new Date(c.ts * 1000).toISOString()), badge(`tool call: ${c.outcome}`), c.principal,
        `${c.tool} on ${c.server} over ${c.transport || "?"}${c.reason ? ` (${c.reason})` : ""}`));
    }
    return el("section", { "aria-labelledby": "audit-title" }, el("h3", { id: "audit-title", text: "Audit trail" }),
      el("div", { class: "table-wrap" }, el("table", { id: "audit", class: "stack" },
        el("thead", {}, el("tr", {}, ["When", "What", "Who", "Reason / detail"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, rows))));
  }

  // --- run trace -------------------------------------------------------------------------------
  async function showTrace(threadId, runId) {
    $("app").hidden = true; $("trace").hidden = false;
    const summary = clear($("trace-summary"));
    const spans = clear($("trace-spans"));
    const select = clear($("trace-run"));
    $("trace-title").textContent = `Run trace ${runId}`;
    try {
      const runs = (await api(`/threads/${encodeURIComponent(threadId)}/runs`)).data || [];
      for (const r of runs) {
        const option = el("option", { value: r.run_id, text: `${when(r.created_at)} · ${r.status} · ${r.run_id}` });
        option.selected = r.run_id === runId;
        select.append(option);
      }
      select.onchange = () => { window.location.hash = `#/trace/${encodeURIComponent(threadId)}/${encodeURIComponent(select.value)}`; };
    } catch (_) { select.append(el("option", { value: runId, text: runId })); }
    let t;
    try {
      t = (await api(`/threads/${encodeURIComponent(threadId)}/runs/${encodeURIComponent(runId)}/trace`)).data;
    } catch (err) {
      spans.append(el("li", { class: "error", role: "alert", text: err.message }));
      return;
    }
    const all = t.spans || [];
    const count = (kind) => all.filter((s) => s.kind === kind).length;
    for (const [k, v] of [["Status", t.status], ["Graph", t.graph_id], ["Tokens", t.tokens], ["Cost (USD)", t.cost_usd],
      ["Duration", `${Math.round(t.latency_ms || 0)} ms`], ["Tool calls", count("tool")], ["Guard verdicts", count("guard")],
      ["Retrievals", count("retrieval")], ["Policy hash", (t.policy_hash || "").slice(0, 12)]]) {
      summary.append(el("div", {}, el("dt", { text: k }), el("dd", { text: v === undefined || v === null ? "" : v })));
    }
    const starts = all.map((s) => Date.parse(s.start)).filter((x) => !Number.isNaN(x));
    const t0 = starts.length ? Math.min(...starts) : 0;
    const ends = all.map((s) => Date.parse(s.end || s.start) || t0);
    const total = Math.max(1, Math.max(t0 + (t.latency_ms || 0), ...ends) - t0);
    all.forEach((s) => {
      const start = (Date.parse(s.start) || t0) - t0;
      const width = Math.max(0.4, ((s.latency_ms || 0) / total) * 100);
      const left = Math.min(99.6, (start / total) * 100);
      const bar = el("div", { class: "span-bar" });
      bar.style.left = `${left}%`;
      bar.style.width = `${Math.min(width, 100 - left)}%`;
      const label = { tool: "tool call", guard: "guard verdict", retrieval: "retrieved chunks", usage: "model usage" }[s.kind] || s.kind;
      const detail = {};
      for (const key of ["attributes", "inputs", "outputs", "error"]) if (s[key] !== null && s[key] !== undefined) detail[key] = s[key];
      spans.append(el("li", { class: `k-${String(s.kind).replace(/[^a-z_]/g, "")}` },
        el("div", { class: "name" }, badge(label), ` ${s.name} · ${Math.round(s.latency_ms || 0)} ms`),
        el("div", { class: "track", role: "img", "aria-label": `${s.name}: starts at ${Math.round(start)} ms, lasts ${Math.round(s.latency_ms || 0)} ms` }, bar),
        el("details", {}, el("summary", { text: `Details of ${s.name}` }), el("pre", { text: pretty(detail) }))));
    });
    $("trace-title").focus();
  }

  // --- routing ---------------------------------------------------------------------------------
  async function route() {
    if (!state.who) return;
    const parts = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] === "trace" && parts[1] && parts[2]) { await showTrace(parts[1], parts[2]); return; }
    $("trace").hidden = true; $("app").hidden = false;
    const view = parts[0] === "history" ? "history" : "pending";
    const changed = view !== state.view;
    state.view = view;
    $("tab-pending").setAttribute("aria-current", view === "pending" ? "page" : "false");
    $("tab-history").setAttribute("aria-current", view === "history" ? "page" : "false");
    if (view === "history" && (changed || !state.history.length)) {
      try { await loadHistory(false); } catch (err) { $("list-empty").textContent = err.message; }
    }
    renderList();
    if (parts[1]) await showApproval(parts[1]);
    else if (changed || !state.selected) {
      state.selected = null;
      $("detail-title").textContent = "Select an approval";
      clear($("detail-body"));
      renderList();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("list").addEventListener("keydown", onListKeys);
    $("more").addEventListener("click", async () => { await loadHistory(true); renderList(); });
    $("trace-title").setAttribute("tabindex", "-1");
    window.addEventListener("hashchange", route);
    boot().catch((err) => showSignIn(`The console could not start: ${err.message}`));
  });
})();
