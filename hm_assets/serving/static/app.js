// The page of `hm-recs serve`: a customer's recent purchases and recommendations; "buy" records a
// purchase (POST /customers/{id}/purchases) and redraws the list, marking the articles that are new.
"use strict";

const $ = (selector) => document.querySelector(selector);
const current = { id: null, query: "", articles: [] };

function setStatus(text, error = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

async function call(method, url, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const answer = await fetch(url, options);
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(data.detail || `${answer.status} ${answer.statusText}`);
  return data;
}

function picture(item) {
  if (item.image_url) {
    const img = document.createElement("img");
    img.src = item.image_url;
    img.alt = item.prod_name;
    img.title = `${item.prod_name} (${item.article_id})`;
    return img;
  }
  const missing = document.createElement("div");
  missing.className = "placeholder";
  missing.textContent = "no image";
  return missing;
}

function tile(item, className) {
  const li = document.createElement("li");
  li.className = className;
  li.dataset.article = item.article_id;
  li.append(picture(item));
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = item.prod_name;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${item.product_type_name} · ${item.colour_group_name} · ${item.article_id}`;
  li.append(name, meta);
  return li;
}

function customerUrl(path) {
  return `/customers/${encodeURIComponent(current.id)}/${path}${current.query ? "?" + current.query : ""}`;
}

function drawHistory(history) {
  const list = $("#history");
  list.replaceChildren(...history.purchases.map((item) => {
    const li = tile(item, "history-item" + (item.online ? " online" : ""));
    const when = document.createElement("div");
    when.className = "meta when";
    when.textContent = item.online ? "bought online just now" : item.t_dat;
    li.append(when);
    return li;
  }));
  if (!history.purchases.length) list.textContent = "no purchases";
}

function drawRecommendations(recs, previous) {
  const before = new Set(previous);
  const list = $("#recs");
  list.replaceChildren(...recs.items.map((item) => {
    const li = tile(item, "rec-item");
    li.dataset.rank = item.rank;
    if (previous.length && !before.has(item.article_id)) li.classList.add("changed");
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = item.rank;
    const why = document.createElement("div");
    why.className = "meta retrievers";
    why.textContent = item.score === null ? "fallback (bestsellers)" : item.retrievers.join(", ");
    const buy = document.createElement("button");
    buy.type = "button";
    buy.className = "buy";
    buy.textContent = "buy";
    buy.addEventListener("click", () => purchase(item.article_id));
    li.append(rank, why, buy);
    return li;
  }));
  current.articles = recs.items.map((item) => item.article_id);
  $("#source").textContent = `(${recs.source}${recs.known ? "" : ", new customer"})`;
  const changed = list.querySelectorAll(".rec-item.changed").length;
  $("#changes").textContent = previous.length ? `${changed} of ${recs.items.length} articles changed` : "";
}

async function show(id, query) {
  current.id = id;
  current.query = query;
  setStatus(`loading ${id} …`);
  try {
    const [history, recs] = await Promise.all([call("GET", customerUrl("history")), call("GET", customerUrl("recommendations"))]);
    drawHistory(history);
    drawRecommendations(recs, []);
    setStatus(`${recs.known ? "customer" : "new customer"} ${recs.customer_id} · week ${recs.week}`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function purchase(articleId) {
  setStatus(`buying ${articleId} …`);
  document.querySelectorAll(".buy").forEach((button) => { button.disabled = true; });
  try {
    const eventId = window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
    const recs = await call("POST", customerUrl("purchases"), { articles: [articleId], event_id: eventId });
    drawRecommendations(recs, current.articles);
    drawHistory(await call("GET", customerUrl("history")));
    setStatus(`bought ${articleId}; the list is recomputed with ${recs.bought_online.length} online purchase(s)`);
  } catch (error) {
    setStatus(error.message, true);
    document.querySelectorAll(".buy").forEach((button) => { button.disabled = false; });
  }
}

async function start() {
  $("#pick").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#customer").value.trim();
    if (id) show(id, "");
  });
  $("#new-customer").addEventListener("click", () => {
    const id = "web-" + Math.random().toString(16).slice(2, 14);
    $("#customer").value = id;
    show(id, new URLSearchParams({ age: $("#age").value || "25" }).toString());
  });
  try {
    const examples = await call("GET", "/examples");
    $("#week").textContent = examples.week;
    for (const customer of examples.customers) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "example";
      button.dataset.customer = customer.customer_id;
      button.textContent = `${customer.customer_id.slice(0, 10)}… (${customer.purchases_4_weeks} purchases` +
        `${customer.age === null ? "" : ", age " + customer.age})`;
      button.addEventListener("click", () => {
        $("#customer").value = customer.customer_id;
        show(customer.customer_id, "");
      });
      $("#examples").append(button);
    }
  } catch (error) {
    setStatus(error.message, true);
  }
}

start();
