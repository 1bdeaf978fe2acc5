//! The shop's traffic as workloads: browse, checkout, and the level's mix; and `raw`, one
//! GET against any server (for measuring the generator itself).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::engine::{Class, Classify, Row, Step, Workload};
use crate::http::Request;
use crate::schedule::SplitMix;
use crate::shop::{Setup, WORDS};

/// The operations of the mix, in the manifest's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Browse,
    Search,
    Cart,
    Checkout,
    Login,
    OrderHistory,
}

impl Op {
    pub const ALL: [Op; 6] = [Op::Browse, Op::Search, Op::Cart, Op::Checkout, Op::Login, Op::OrderHistory];
}

/// Weights of each operation, in the order of [`Op::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix(pub [u32; 6]);

impl Mix {
    pub fn browse() -> Mix {
        Mix([80, 20, 0, 0, 0, 0])
    }
    pub fn checkout() -> Mix {
        Mix([0, 0, 0, 100, 0, 0])
    }
    pub fn login() -> Mix {
        Mix([0, 0, 0, 0, 100, 0])
    }
    fn total(&self) -> u32 {
        self.0.iter().sum()
    }
    /// The operation a uniform draw in `0..total` lands on.
    fn pick(&self, mut draw: u32) -> Op {
        for (op, w) in Op::ALL.iter().zip(self.0) {
            if draw < w {
                return *op;
            }
            draw -= w;
        }
        Op::Browse
    }
}

// Rows of the report, one per endpoint.
const PRODUCT: usize = 0;
const SEARCH: usize = 1;
const CART_ADD: usize = 2;
const CHECKOUT: usize = 3;
const LOGIN: usize = 4;
const ORDERS: usize = 5;
const ROW_NAMES: [&str; 6] = ["GET /products/{id}", "GET /products?q=", "POST /cart/items", "POST /checkout", "POST /login", "GET /orders"];

fn expect_200(status: u16, _: &[u8]) -> Class {
    if status == 200 { Class::Ok } else { Class::Fail }
}

fn expect_201(status: u16, _: &[u8]) -> Class {
    if status == 201 { Class::Ok } else { Class::Fail }
}

/// The shop's traffic: operation i goes to buyer `i % buyers` (so one buyer's operations
/// rarely overlap) and picks its operation, product and search word from the seed.
pub struct ShopWorkload {
    pub setup: Arc<Setup>,
    pub mix: Mix,
    /// Makes idempotency keys unique to this run.
    pub run_id: String,
}

impl Workload for ShopWorkload {
    fn rows(&self) -> Vec<Row> {
        let total = f64::from(self.mix.total().max(1));
        let share = |ops: &[Op]| ops.iter().map(|op| f64::from(self.mix.0[*op as usize])).sum::<f64>() / total;
        let shares = [
            share(&[Op::Browse]),
            share(&[Op::Search]),
            share(&[Op::Cart, Op::Checkout]),
            share(&[Op::Checkout]),
            share(&[Op::Login]),
            share(&[Op::OrderHistory]),
        ];
        ROW_NAMES.iter().zip(shares).map(|(n, s)| Row { name: (*n).to_owned(), share: Some(s) }).collect()
    }

    fn op(&self, i: u64, steps: &mut Vec<Step>) {
        let s = &self.setup;
        let mut rng = SplitMix::for_request(s.seed, i);
        let op = self.mix.pick(rng.below(u64::from(self.mix.total().max(1))) as u32);
        let buyer = &s.buyers[(i % s.buyers.len() as u64) as usize];
        let product = s.products[rng.below(s.products.len() as u64) as usize];
        let step = |row: usize, request: Request, classify: Classify| Step { row, request: request.client(&buyer.client), classify };
        let auth = Some(&buyer.auth);
        let add = || Request::post("/cart/items", format!("{{\"product_id\":{product},\"quantity\":1}}")).token(auth);
        match op {
            Op::Browse => steps.push(step(PRODUCT, Request::get(format!("/products/{product}")), expect_200)),
            Op::Search => {
                let word = WORDS[rng.below(WORDS.len() as u64) as usize];
                steps.push(step(SEARCH, Request::get(format!("/products?q={word}&limit=20")), expect_200));
            }
            Op::Cart => steps.push(step(CART_ADD, add(), expect_201)),
            Op::Checkout => {
                steps.push(step(CART_ADD, add(), expect_201));
                let key = format!("load-{}-{i}", self.run_id);
                steps.push(step(CHECKOUT, Request::post("/checkout", Bytes::new()).token(auth).key(&key), |st, _| match st {
                    200 | 201 => Class::Ok,
                    _ => Class::Fail,
                }));
            }
            Op::Login => {
                let body = json!({"email": buyer.email, "password": s.password}).to_string();
                steps.push(step(LOGIN, Request::post("/login", body), expect_200));
            }
            Op::OrderHistory => steps.push(step(ORDERS, Request::get("/orders?limit=20").token(auth), expect_200)),
        }
    }
}

/// `GET path` against any server; a 2xx is a success.
pub struct Raw {
    path: String,
}

impl Raw {
    /// Refuses a path that is not an absolute path (and query) a request can carry.
    pub fn new(path: &str) -> Result<Raw, crate::Error> {
        match path.parse::<hyper::Uri>() {
            Ok(uri) if path.starts_with('/') && uri.authority().is_none() => Ok(Raw { path: path.to_owned() }),
            _ => Err(crate::Error::Url { url: path.to_owned(), why: "--path must be a path such as /products/1".into() }),
        }
    }
}

impl Workload for Raw {
    fn rows(&self) -> Vec<Row> {
        vec![Row { name: format!("GET {}", self.path), share: Some(1.0) }]
    }

    fn op(&self, _i: u64, steps: &mut Vec<Step>) {
        steps.push(Step {
            row: 0,
            request: Request::get(self.path.clone()),
            classify: |s, _| if (200..300).contains(&s) { Class::Ok } else { Class::Fail },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_are_checked() {
        assert!(Raw::new("/products/1?x=2").is_ok());
        assert!(Raw::new("products").is_err());
        assert!(Raw::new("/a b").is_err());
    }

    #[test]
    fn the_mix_is_kept() {
        let mix = Mix([55, 10, 10, 10, 5, 10]);
        let mut counts = [0u32; 6];
        for i in 0..100_000u64 {
            let mut rng = SplitMix::for_request(42, i);
            counts[mix.pick(rng.below(100) as u32) as usize] += 1;
        }
        for (got, want) in counts.iter().zip(mix.0) {
            let share = f64::from(*got) / 1000.0;
            assert!((share - f64::from(want)).abs() < 1.0, "{counts:?}");
        }
    }
}
