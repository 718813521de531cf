//! The shop walked through again from outside the mesh, as a browser, an app
//! or a partner's script sees it: HTTP and JSON to the gateway's REST API,
//! with no mesh identity, only the access token that logging in returns.
//! Each step prints the request, the HTTP status and what came back; the
//! README's curl steps are the same calls.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use meshwork_config::Gateway;
use meshwork_proto::common::Money;
use serde_json::{Value, json};

/// A checkout runs a saga over three services: give it time.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/1.1 and JSON to the gateway, as the logged-in user once there is a token.
struct Rest {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Rest {
    /// `method path` with an optional JSON body: the HTTP status and the JSON answer.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
        let what = format!("{method} {path}");
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::default(),
        };
        let exchange = async {
            let response = self.client.request(request.body(body)?).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{what}: no answer within {CALL_TIMEOUT:?}"))?
            .with_context(|| what.clone())?;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| format!("{what}: {status}, and the answer is not JSON"))?
        };
        Ok((status, json))
    }

    /// A call that must succeed; a refusal names the status and the gateway's message.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let what = format!("{method} {path}");
        let (status, json) = self.call(method, path, body).await?;
        if !status.is_success() {
            bail!("{what}: {status}: {}", message(&json));
        }
        Ok(json)
    }
}

/// The `message` of a google.rpc.Status answer.
fn message(json: &Value) -> &str {
    json["message"].as_str().unwrap_or("(no message)")
}

fn text<'a>(json: &'a Value, field: &str) -> Result<&'a str> {
    json[field].as_str().with_context(|| format!("no {field} in {json}"))
}

/// Money in its proto3 JSON form (`amountMinor` is an int64 in a string), as the demo prints it.
fn money(json: &Value) -> String {
    let amount_minor = json["amountMinor"].as_str().and_then(|a| a.parse().ok()).unwrap_or(0);
    let currency_code = json["currencyCode"].as_str().unwrap_or("").to_string();
    super::money(&Some(Money {
        amount_minor,
        currency_code,
    }))
}

pub async fn walk(gateway: &Gateway, stamp: u128) -> Result<()> {
    if gateway.tls.is_some() {
        // The demo has no trust anchor for a certificate the operator chose.
        println!(
            "demo: the gateway at {} speaks TLS; walk its REST API with curl (README: The shop over HTTP)",
            gateway.listen
        );
        return Ok(());
    }
    let mut rest = Rest {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{}", gateway.listen),
        token: None,
    };
    println!("demo: now over HTTP and JSON through the gateway at {}", rest.base);

    let email = format!("lin+{stamp}@example.com");
    let password = "correct horse battery";
    let registered = rest
        .ok(
            Method::POST,
            "/v1/users",
            Some(json!({ "email": email, "password": password, "displayName": "Lin Clark" })),
        )
        .await?;
    let user = &registered["user"];
    println!(
        "demo: http 1. POST /v1/users → 200: registered {} as user {}",
        text(user, "email")?,
        text(user, "id")?
    );

    let login = rest
        .ok(
            Method::POST,
            "/v1/login",
            Some(json!({ "email": email, "password": password })),
        )
        .await?;
    let token = text(&login, "accessToken")?;
    let token_head: String = token.chars().take(24).collect();
    println!(
        "demo: http 2. POST /v1/login → 200: access token {token_head}… until {}",
        login["expiresAt"].as_str().unwrap_or("?")
    );

    // The catalog is public: browsed without the token, as the storefront does.
    let books = "/v1/products?category=books&pageSize=3";
    let page = rest.ok(Method::GET, books, None).await?;
    let products = page["products"].as_array().cloned().unwrap_or_default();
    println!("demo: http 3. GET {books} → 200:");
    for product in &products {
        println!(
            "demo:      {:<22} {:<40} {:>10}",
            product["id"].as_str().unwrap_or("?"),
            product["name"].as_str().unwrap_or("?"),
            money(&product["price"])
        );
    }
    let [first, second, ..] = products.as_slice() else {
        bail!("GET {books}: fewer than two books");
    };
    let (first, second) = (text(first, "id")?, text(second, "id")?);

    // Everything about "me" from here on is the token's user.
    rest.token = Some(token.to_string());

    let items = "/v1/users/me/cart/items";
    let (status, refused) = rest
        .call(Method::POST, items, Some(json!({ "productId": first, "quantity": -2 })))
        .await?;
    if status != StatusCode::BAD_REQUEST {
        bail!("POST {items} with quantity -2 should be 400, got {status}: {refused}");
    }
    println!(
        "demo: http 4. POST {items} with -2 units → {status}: {}",
        message(&refused)
    );
    rest.ok(Method::POST, items, Some(json!({ "productId": first, "quantity": 2 })))
        .await?;
    let cart = rest
        .ok(Method::POST, items, Some(json!({ "productId": second, "quantity": 1 })))
        .await?;
    let lines: Vec<String> = cart["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|i| format!("{} × {}", i["quantity"], i["productId"].as_str().unwrap_or("?")))
        .collect();
    println!(
        "demo: http 5. POST {items} (twice) → 200: cart holds {}",
        lines.join(", ")
    );

    let checkout = "/v1/users/me/cart:checkout";
    let order = rest.ok(Method::POST, checkout, Some(json!({}))).await?;
    let order_id = text(&order, "id")?;
    println!(
        "demo: http 6. POST {checkout} → 200: order {order_id} for {}, {}",
        money(&order["total"]),
        order["status"].as_str().unwrap_or("?")
    );

    let orders = rest.ok(Method::GET, "/v1/users/me/orders", None).await?;
    let listed = orders["orders"]
        .as_array()
        .is_some_and(|all| all.iter().any(|o| o["id"] == order_id));
    if !listed {
        bail!("GET /v1/users/me/orders does not list order {order_id}: {orders}");
    }
    let cart = rest.ok(Method::GET, "/v1/users/me/cart", None).await?;
    let empty = cart["items"].as_array().is_none_or(Vec::is_empty);
    if !empty {
        bail!("the cart is not empty after checkout: {cart}");
    }
    println!("demo: http 7. GET /v1/users/me/orders → 200: lists {order_id}; the cart is empty again");

    rest.token = None;
    let (status, anonymous) = rest.call(Method::GET, "/v1/users/me/orders", None).await?;
    if status != StatusCode::UNAUTHORIZED {
        bail!("GET /v1/users/me/orders without a token should be 401, got {status}: {anonymous}");
    }
    println!(
        "demo: http 8. GET /v1/users/me/orders without a token → {status}: {}",
        message(&anonymous)
    );
    Ok(())
}
