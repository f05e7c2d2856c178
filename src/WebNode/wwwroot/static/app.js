"use strict";
// The whole UI: sign in, shorten, list your links with their click counts. Talks to /api only.
const $ = (id) => document.getElementById(id);
let cursor = null;

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    credentials: "same-origin",
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) throw new Error(data.message || response.statusText);
  return data;
}

function show(user) {
  $("signed-out").hidden = !!user;
  $("signed-in").hidden = !user;
  if (user) {
    $("me").textContent = user;
    $("links").textContent = "";
    cursor = null;
    loadLinks();
  }
}

function row(link) {
  const tr = document.createElement("tr");
  const a = document.createElement("a");
  a.href = link.shortUrl;
  a.textContent = link.code;
  const cells = [a, link.url, String(link.clicks), new Date(link.createdAt).toLocaleString()];
  cells.forEach((value, i) => {
    const td = document.createElement("td");
    if (i === 1) td.className = "url";
    if (value instanceof Node) td.appendChild(value); else td.textContent = value;
    tr.appendChild(td);
  });
  return tr;
}

async function loadLinks() {
  const query = cursor ? "?cursor=" + encodeURIComponent(cursor) : "";
  const page = await api("GET", "/api/me/links" + query);
  page.links.forEach((link) => $("links").appendChild(row(link)));
  cursor = page.next;
  $("more").hidden = !cursor;
  $("error").textContent = page.partial ? "Some links are missing: a shard is unavailable." : "";
}

$("auth").addEventListener("submit", async (event) => {
  event.preventDefault();
  const action = event.submitter?.dataset.action || "login";
  try {
    const me = await api("POST", "/api/" + action, { username: $("username").value, password: $("password").value });
    $("error").textContent = "";
    show(me.username);
  } catch (error) {
    $("error").textContent = error.message;
  }
});

$("shorten").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const link = await api("POST", "/api/links", { url: $("url").value });
    $("result").textContent = "";
    const a = document.createElement("a");
    a.href = link.shortUrl;
    a.textContent = link.shortUrl;
    $("result").appendChild(a);
    $("url").value = "";
    show($("me").textContent);
  } catch (error) {
    $("error").textContent = error.message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("POST", "/api/logout");
  show(null);
});

$("more").addEventListener("click", () => loadLinks().catch((e) => ($("error").textContent = e.message)));

api("GET", "/api/me").then((me) => show(me.username), () => show(null));
