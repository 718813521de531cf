// The Meshwork shop's storefront: plain JavaScript, no framework and no build
// step, calling the gateway's REST API on the same origin. The URL's
// #fragment picks the view (#/catalog/<category>, #/product/<id>, #/cart,
// #/orders, #/account); the session (access token and user) lives in
// sessionStorage, so it ends with the tab. The product page follows its
// product live over Server-Sent Events. Everything from the API is put on
// the page as text (never as HTML).
"use strict";

const SESSION_KEY = "meshwork.session";
const PAGE_SIZE = 12;

const $ = (id) => document.getElementById(id);

// ---- The REST API ----

/** An answer other than 2xx: the google.rpc.Status message and the HTTP status. */
class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** One call to the gateway as the logged-in user; the parsed JSON answer, or an ApiError. */
function api(method, path, body) {
  return call(method, path, body, currentSession());
}

/** The catalog is public: read it without the token, so browsing works whatever the session. */
function browse(path) {
  return call("GET", path, undefined, null);
}

async function call(method, path, body, session) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session) headers.Authorization = `Bearer ${session.token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `the shop cannot be reached (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    // Not JSON (a proxy's error page, say): the HTTP status speaks instead.
  }
  if (!response.ok) {
    let message = (data && data.message) || `${response.status} ${response.statusText}`.trim();
    if (response.status === 401 && session) {
      // The gateway refused the token (expired, or its key retired): the session is over.
      endSession();
      message += "; log in again";
    }
    throw new ApiError(response.status, message, data && data.code);
  }
  if (data === null) throw new ApiError(response.status, `${method} ${path} answered with something other than JSON`);
  return data;
}

const query = (params) => new URLSearchParams(params).toString();

// ---- The session ----

function currentSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (session && Date.parse(session.expiresAt) > Date.now()) return session;
  } catch {
    // A damaged entry is no session.
  }
  return null;
}

function startSession(login) {
  sessionStorage.setItem(
    SESSION_KEY,
    JSON.stringify({ token: login.accessToken, expiresAt: login.expiresAt, user: login.user }),
  );
  showWho();
}

function endSession() {
  sessionStorage.removeItem(SESSION_KEY);
  showWho();
  setCartCount(0);
}

function showWho() {
  const session = currentSession();
  $("whoami").hidden = $("logout").hidden = !session;
  $("nav-account").hidden = Boolean(session);
  $("whoami").textContent = session ? `Hello, ${session.user.displayName || session.user.email}` : "";
}

/** The views that need a session send the visitor to log in first. */
function needSession(what) {
  if (currentSession()) return true;
  go("#/account", `Log in to see ${what}.`);
  return false;
}

// ---- Little helpers for the page ----

/** An element with attributes and children (text or nodes); null, undefined and false are left out. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
  return node;
}

const formatters = new Map();

/** Money as the visitor's locale writes it; amountMinor is an int64 in a string. */
function money(m) {
  if (!m || !m.currencyCode) return "—";
  let format = formatters.get(m.currencyCode);
  if (!format) {
    try {
      format = new Intl.NumberFormat(undefined, { style: "currency", currency: m.currencyCode });
    } catch {
      return `${m.amountMinor || "0"} ${m.currencyCode} (minor units)`;
    }
    formatters.set(m.currencyCode, format);
  }
  const digits = format.resolvedOptions().maximumFractionDigits;
  return format.format(Number(m.amountMinor || "0") / 10 ** digits);
}

/** A price on the page, its exact amount in data attributes for scripts and tests. */
function priceTag(m, testid) {
  return el(
    "span",
    { class: "money", "data-amount-minor": (m && m.amountMinor) || "0", "data-currency": m && m.currencyCode, "data-testid": testid },
    money(m),
  );
}

/** The sum of price × quantity over lines, exact (BigInt); null for mixed currencies. */
function total(lines) {
  let currency = null;
  let minor = 0n;
  for (const { price, quantity } of lines) {
    if (!price) return null;
    if (currency && price.currencyCode !== currency) return null;
    currency = price.currencyCode;
    minor += BigInt(price.amountMinor || "0") * BigInt(quantity);
  }
  return { amountMinor: minor.toString(), currencyCode: currency };
}

function say(text) {
  $("notice").textContent = text;
  $("notice").hidden = false;
}

function complain(what, error) {
  const detail = error instanceof ApiError ? error.message : String(error);
  $("error").textContent = `${what}: ${detail}`;
  $("error").dataset.status = error instanceof ApiError ? error.status : "";
  $("error").hidden = false;
}

function clearMessages() {
  $("notice").hidden = $("error").hidden = true;
}

/** A click or submit handler: the control is disabled while `work` runs; failures are shown. */
function action(control, what, work) {
  return async (event) => {
    if (event) event.preventDefault();
    clearMessages();
    control.disabled = true;
    try {
      await work();
    } catch (error) {
      complain(what, error);
    } finally {
      control.disabled = false;
    }
  };
}

function show(view) {
  for (const section of document.querySelectorAll("[data-view]")) {
    section.hidden = section.dataset.view !== view;
  }
}

// ---- Catalog ----

// Answers to an older listing (the visitor changed category meanwhile) are dropped.
let listing = 0;

/** The API has no list of categories: gather them from the catalog's pages once. */
async function loadCategories() {
  const found = new Set();
  let pageToken = "";
  for (let page = 0; page < 20; page++) {
    const answer = await browse(`/v1/products?${query({ pageSize: 100, pageToken })}`);
    for (const p of answer.products || []) found.add(p.category);
    pageToken = answer.nextPageToken || "";
    if (!pageToken) break;
  }
  const select = $("category");
  for (const category of [...found].sort()) {
    select.append(el("option", { value: category }, category));
  }
  const [view, category] = routeParts();
  if (view === "catalog" || view === "") select.value = category;
}

async function showCatalog(category) {
  show("catalog");
  $("category").value = category;
  const list = $("products");
  list.replaceChildren();
  delete list.dataset.category;
  await loadPage(category, "", ++listing);
}

async function loadPage(category, pageToken, ticket) {
  const path = category
    ? `/v1/categories/${encodeURIComponent(category)}/products?${query({ pageSize: PAGE_SIZE, pageToken })}`
    : `/v1/products?${query({ pageSize: PAGE_SIZE, pageToken })}`;
  const answer = await browse(path);
  if (ticket !== listing) return;
  const list = $("products");
  list.append(...(answer.products || []).map(productCard));
  // Set once the page is drawn: tests wait for it.
  list.dataset.category = category;
  const more = $("more");
  more.hidden = !answer.nextPageToken;
  more.onclick = action(more, "Could not load more products", () =>
    loadPage(category, answer.nextPageToken, ticket),
  );
}

function stockLine(p) {
  const stock = p.stock || 0;
  return el(
    "p",
    { class: stock > 0 ? "stock" : "stock out", "data-testid": "stock", "data-stock": stock },
    stock > 0 ? `${stock} in stock` : "Sold out",
  );
}

function addButton(p, quantity) {
  const button = el("button", { type: "button", class: "add", "data-testid": "add-to-cart", disabled: !(p.stock > 0) }, "Add to cart");
  button.addEventListener(
    "click",
    action(button, `Could not add ${p.name} to the cart`, () => addToCart(p, quantity())),
  );
  return button;
}

function productCard(p) {
  return el(
    "li",
    { class: "card", "data-product": p.id, "data-category": p.category, "data-testid": "product-card" },
    el("h3", {}, el("a", { href: `#/product/${encodeURIComponent(p.id)}`, class: "product-link" }, p.name)),
    el("p", { class: "category" }, p.category),
    el("p", { class: "price" }, priceTag(p.price, "price")),
    stockLine(p),
    addButton(p, () => 1),
  );
}

async function showProduct(id) {
  show("product");
  const article = $("product");
  article.replaceChildren(el("p", {}, "Loading…"));
  const p = await browse(`/v1/products/${encodeURIComponent(id)}`);
  const quantity = el("input", { id: "quantity", type: "number", min: 1, value: 1, "aria-label": "Quantity" });
  article.dataset.product = p.id;
  delete article.dataset.live;
  article.replaceChildren(
    el("h1", { "data-testid": "product-name" }, p.name),
    el("p", { class: "category" }, p.category),
    el("p", { class: "description" }, p.description),
    el("p", { class: "price" }, priceTag(p.price, "price")),
    stockLine(p),
    el("div", { class: "buy" }, quantity, addButton(p, () => Number(quantity.value))),
  );
  watchProduct(p.id, (fresh) => {
    if (article.dataset.product !== fresh.id) return;
    // From the stream's first record on, the page is live (tests wait for it).
    article.dataset.live = "true";
    article.querySelector(".stock").replaceWith(stockLine(fresh));
    article.querySelector(".price").replaceChildren(priceTag(fresh.price, "price"));
    article.querySelector(".add").disabled = !(fresh.stock > 0);
  });
}

// The product page follows the product's price and stock live: WatchProducts,
// a server stream, which the gateway sends as Server-Sent Events.
let watching = null;

function stopWatching() {
  if (watching) watching.close();
  watching = null;
}

function watchProduct(id, onUpdate) {
  stopWatching();
  const source = new EventSource(`/v1/products:watch?${query({ productIds: id })}`);
  source.addEventListener("message", (event) => {
    const update = JSON.parse(event.data);
    if (update.product) onUpdate(update.product);
  });
  source.addEventListener("error", (event) => {
    // With data, the stream's last record: a google.rpc.Status. Without, a
    // lost connection, which EventSource retries by itself.
    if (!event.data) return;
    source.close();
    let message = event.data;
    try {
      message = JSON.parse(event.data).message || message;
    } catch {
      // Shown as it came.
    }
    complain("The live stock stopped", new ApiError(0, message));
  });
  watching = source;
}

// ---- Cart ----

function setCartCount(count) {
  $("cart-count").textContent = String(count);
}

const unitsIn = (cart) => (cart.items || []).reduce((n, item) => n + (item.quantity || 0), 0);

async function addToCart(product, quantity) {
  if (!needSession("your cart")) return;
  const cart = await api("POST", "/v1/users/me/cart/items", { productId: product.id, quantity });
  setCartCount(unitsIn(cart));
  say(`Added ${quantity} × ${product.name} to your cart.`);
}

async function showCart() {
  if (!needSession("your cart")) return;
  show("cart");
  $("order-confirmation").hidden = true;
  await drawCart(await api("GET", "/v1/users/me/cart"));
}

/** The cart's lines with the catalog's current names and prices. */
async function drawCart(cart) {
  const items = cart.items || [];
  setCartCount(unitsIn(cart));
  let products = new Map();
  if (items.length) {
    const ids = new URLSearchParams(items.map((i) => ["productIds", i.productId]));
    const answer = await browse(`/v1/products:batchGet?${ids}`);
    products = new Map((answer.products || []).map((p) => [p.id, p]));
  }
  const lines = items.map((item) => ({ item, product: products.get(item.productId) }));
  $("cart-items").replaceChildren(...lines.map(cartRow));
  const sum = total(lines.map(({ item, product }) => ({ price: product && product.price, quantity: item.quantity })));
  $("cart-total").replaceChildren(sum ? priceTag(sum, "cart-total-amount") : "—");
  $("cart").hidden = $("checkout").hidden = items.length === 0;
  $("cart-empty").hidden = items.length > 0;
}

function cartRow({ item, product }) {
  const name = product ? product.name : item.productId;
  const remove = el("button", { type: "button", class: "link", "data-testid": "remove" }, "Remove");
  remove.addEventListener(
    "click",
    action(remove, `Could not remove ${name}`, async () => {
      const path = `/v1/users/me/cart/items/${encodeURIComponent(item.productId)}`;
      await drawCart(await api("DELETE", path));
    }),
  );
  const price = product && product.price;
  const subtotal = price && total([{ price, quantity: item.quantity }]);
  return el(
    "tr",
    { "data-product": item.productId, "data-testid": "cart-item" },
    el("td", {}, el("a", { href: `#/product/${encodeURIComponent(item.productId)}` }, name)),
    el("td", { class: "num", "data-testid": "quantity" }, String(item.quantity)),
    el("td", { class: "num" }, priceTag(price)),
    el("td", { class: "num" }, priceTag(subtotal, "subtotal")),
    el("td", {}, remove),
  );
}

async function checkout() {
  const order = await api("POST", "/v1/users/me/cart:checkout", {});
  const box = $("order-confirmation");
  box.dataset.order = order.id;
  box.replaceChildren(
    "Thank you! Order ",
    el("a", { href: "#/orders", "data-testid": "order-id" }, order.id),
    " is paid: ",
    priceTag(order.total, "order-total"),
    ".",
  );
  box.hidden = false;
  // The server's cart, which checkout emptied.
  await drawCart(await api("GET", "/v1/users/me/cart"));
}

// ---- Orders ----

const STATUS = { ORDER_STATUS_PAID: "paid", ORDER_STATUS_REFUNDED: "refunded" };

async function showOrders() {
  if (!needSession("your orders")) return;
  show("orders");
  const orders = (await api("GET", "/v1/users/me/orders")).orders || [];
  $("orders-empty").hidden = orders.length > 0;
  $("orders").replaceChildren(...orders.map(orderItem));
  $("orders").dataset.count = orders.length;
}

function orderItem(order) {
  const when = order.createdAt ? new Date(order.createdAt).toLocaleString() : "";
  const status = order.status || "ORDER_STATUS_UNSPECIFIED";
  return el(
    "li",
    { class: "order", "data-order": order.id, "data-status": status, "data-testid": "order" },
    el(
      "header",
      {},
      el("strong", {}, `Order ${order.id}`),
      el("span", {}, when),
      el("span", { class: `status ${STATUS[status] || ""}` }, STATUS[status] || status),
      priceTag(order.total, "order-total"),
    ),
    el(
      "ul",
      {},
      (order.lines || []).map((line) =>
        el(
          "li",
          { "data-product": line.productId },
          `${line.quantity} × ${line.name || line.productId} at `,
          priceTag(line.unitPrice),
        ),
      ),
    ),
  );
}

// ---- Account ----

function showAccount() {
  show("account");
}

async function register() {
  const email = $("register-email").value.trim();
  const answer = await call("POST", "/v1/users", {
    email,
    password: $("register-password").value,
    displayName: $("register-name").value.trim(),
  }, null);
  $("register-form").reset();
  $("login-email").value = email;
  $("login-password").focus();
  say(`Welcome, ${answer.user.displayName}! Your account is ready: log in.`);
}

async function login() {
  const answer = await call("POST", "/v1/login", {
    email: $("login-email").value.trim(),
    password: $("login-password").value,
  }, null);
  startSession(answer);
  $("login-form").reset();
  go("#/catalog", `Logged in as ${answer.user.email}.`);
  setCartCount(unitsIn(await api("GET", "/v1/users/me/cart")));
}

// ---- Routing ----

// What to tell the visitor once the view `go` asked for is shown.
let pendingNotice = null;

/** Shows another view with a notice on it (a hashchange clears the old messages). */
function go(hash, notice) {
  if (location.hash === hash) {
    say(notice);
    return;
  }
  pendingNotice = notice;
  location.hash = hash;
}

function routeParts() {
  const path = location.hash.replace(/^#\/?/, "");
  const slash = path.indexOf("/");
  return slash < 0 ? [path, ""] : [path.slice(0, slash), decodeURIComponent(path.slice(slash + 1))];
}

async function route() {
  const [view, argument] = routeParts();
  stopWatching();
  try {
    if (view === "product") await showProduct(argument);
    else if (view === "cart") await showCart();
    else if (view === "orders") await showOrders();
    else if (view === "account") showAccount();
    else await showCatalog(argument);
  } catch (error) {
    complain("Could not load this page", error);
  }
}

$("category").addEventListener("change", (event) => {
  location.hash = event.target.value ? `#/catalog/${encodeURIComponent(event.target.value)}` : "#/catalog";
});
$("checkout").addEventListener("click", action($("checkout"), "Could not check out", checkout));
$("register-form").addEventListener("submit", action($("register"), "Could not register", register));
$("login-form").addEventListener("submit", action($("login"), "Could not log in", login));
$("logout").addEventListener("click", () => {
  endSession();
  go("#/catalog", "Logged out.");
});
window.addEventListener("hashchange", () => {
  clearMessages();
  if (pendingNotice) say(pendingNotice);
  pendingNotice = null;
  route();
});

showWho();
loadCategories().catch((error) => complain("Could not load the categories", error));
route();
if (currentSession()) {
  api("GET", "/v1/users/me/cart")
    .then((cart) => setCartCount(unitsIn(cart)))
    .catch((error) => complain("Could not load your cart", error));
}
