//! A seller and a buyer using the shop through the URL `up` printed, as the system tests
//! need them: orders that were acknowledged, and a way to check they are all still there.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

pub struct Shopper {
    pub base: String,
    http: Client,
    pub seller: String,
    pub buyer: String,
    /// The product every order buys one of.
    pub product: i64,
}

impl Shopper {
    /// Registers a seller with a shop and a product of `stock` units, and a buyer.
    pub fn new(base: &str, stock: u32) -> Shopper {
        let http = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let post = |path: &str, token: Option<&str>, body: Value| with_token(http.post(format!("{base}{path}")).json(&body), token);
        for (email, roles) in [("seller@example.com", "seller"), ("buyer@example.com", "buyer")] {
            let r = post("/register", None, json!({"email": email, "password": PASSWORD, "roles": roles})).send().unwrap();
            assert_eq!(r.status(), 201, "register {email}: {}", r.text().unwrap());
        }
        let login = |email: &str| -> String {
            let r = post("/login", None, json!({"email": email, "password": PASSWORD})).send().unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string()
        };
        let (seller, buyer) = (login("seller@example.com"), login("buyer@example.com"));
        let shop: Value = post("/shops", Some(&seller), json!({"name": "Gadgets"})).send().unwrap().json().unwrap();
        let r = post(
            "/products",
            Some(&seller),
            json!({"shop_id": shop["id"], "name": "Phone", "description": "a phone", "price_cents": 49_900, "stock": stock}),
        )
        .send()
        .unwrap();
        assert_eq!(r.status(), 201);
        let product = r.json::<Value>().unwrap()["id"].as_i64().unwrap();
        Shopper { base: base.to_string(), http, seller, buyer, product }
    }

    fn post(&self, path: &str, body: Value) -> RequestBuilder {
        with_token(self.http.post(format!("{}{path}", self.base)).json(&body), Some(&self.buyer))
    }

    /// One checkout of one unit under `key`. Ok(order id) when the shop acknowledged it;
    /// Err(what happened) otherwise, which during a failover is expected. Retrying with
    /// the same key is safe: the shop returns the same order.
    pub fn try_order(&self, key: &str) -> Result<i64, String> {
        let r = self.post("/cart/items", json!({"product_id": self.product, "quantity": 1})).send().map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("add to cart: {}", r.status()));
        }
        let r = self.post("/checkout", json!({})).header("Idempotency-Key", key).send().map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            200 | 201 => Ok(r.json::<Value>().map_err(|e| e.to_string())?["id"].as_i64().ok_or("checkout without an id")?),
            code => Err(format!("checkout: {code} {}", r.text().unwrap_or_default())),
        }
    }

    /// An order that must succeed now.
    pub fn order(&self, key: &str) -> i64 {
        self.try_order(key).unwrap_or_else(|e| panic!("order {key}: {e}"))
    }

    /// Ids of the buyer's orders, as the shop lists them (following its pages).
    pub fn order_ids(&self) -> Vec<i64> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/orders?limit=100", self.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = with_token(self.http.get(url), Some(&self.buyer)).send().unwrap().json().unwrap();
            let items = page["items"].as_array().or_else(|| page.as_array()).cloned().unwrap_or_default();
            ids.extend(items.iter().filter_map(|o| o["id"].as_i64()));
            match page["next_cursor"].as_str() {
                Some(c) if !items.is_empty() => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        ids
    }

    /// Whether the buyer's order history answers now (a read the database serves).
    pub fn history_answers(&self) -> bool {
        with_token(self.http.get(format!("{}/orders?limit=1", self.base)), Some(&self.buyer)).send().is_ok_and(|r| r.status().is_success())
    }

    pub fn stock(&self) -> i64 {
        let p: Value = self.http.get(format!("{}/products/{}", self.base, self.product)).send().unwrap().json().unwrap();
        p["stock"].as_i64().unwrap()
    }
}

fn with_token(req: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}
