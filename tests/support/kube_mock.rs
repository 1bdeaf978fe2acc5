//! `MockKubeApi`: a **mock** of the Kubernetes API server, because no real one can run on
//! these machines (no kube-apiserver, k3s or kind node image is obtainable here). It
//! serves the few calls scalectl makes (server-side apply, get, delete, `/version`) over
//! plain HTTP on loopback, records every request so tests can assert exactly what was
//! sent, and plays the controllers just enough for readiness: a Deployment's pods become
//! available, a Job succeeds, a CloudNativePG Cluster becomes healthy and its Pooler gets
//! its Deployment. Tests can make a Deployment never become available, or have another
//! field manager own a field so that a non-forced apply conflicts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub body: Option<Value>,
}

#[derive(Default)]
struct World {
    /// Objects by path (`/apis/apps/v1/namespaces/ns/deployments/shop`).
    objects: BTreeMap<String, Value>,
    seen: Vec<Seen>,
    /// Deployments (by name) whose pods never become available.
    stuck: BTreeSet<String>,
    /// Objects (by path) whose fields another manager owns: (manager, field).
    owned: BTreeMap<String, (String, String)>,
}

pub struct MockKubeApi {
    pub addr: SocketAddr,
    world: Arc<Mutex<World>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MockKubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

fn ok(body: &Value) -> Response {
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

impl MockKubeApi {
    pub fn start() -> MockKubeApi {
        let world = Arc::new(Mutex::new(World::default()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let w = world.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let w = w.clone();
                    async move { handle(&w, method, uri, headers, body) }
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        MockKubeApi { addr, world, stop: Some(tx), thread: Some(thread) }
    }

    /// A kubeconfig with `contexts`, all pointing at this mock; the first is current.
    pub fn kubeconfig(&self, dir: &Path, contexts: &[&str]) -> PathBuf {
        let list: Vec<String> = contexts.iter().map(|c| format!("- name: {c}\n  context:\n    cluster: mock\n    user: mock\n")).collect();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: http://{}\nusers:\n- name: mock\n  user:\n    token: mock-token\ncontexts:\n{}current-context: {}\n",
            self.addr,
            list.concat(),
            contexts[0]
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.world.lock().unwrap().seen.clone()
    }

    pub fn forget_requests(&self) {
        self.world.lock().unwrap().seen.clear();
    }

    /// The object at `path`, if the mock holds one.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.world.lock().unwrap().objects.get(path).cloned()
    }

    pub fn paths(&self) -> Vec<String> {
        self.world.lock().unwrap().objects.keys().cloned().collect()
    }

    /// Puts `object` at `path`, as if someone had created it (an installed CRD, say).
    pub fn put(&self, path: &str, object: Value) {
        self.world.lock().unwrap().objects.insert(path.to_string(), object);
    }

    /// Deletes the object at `path`, as someone else would.
    pub fn remove(&self, path: &str) {
        self.world.lock().unwrap().objects.remove(path);
    }

    /// The Deployment `name`'s pods will never become available.
    pub fn never_available(&self, name: &str) {
        self.world.lock().unwrap().stuck.insert(name.to_string());
    }

    /// Another field manager owns `field` of the object at `path` (which it creates).
    pub fn owned_by(&self, path: &str, manager: &str, field: &str, object: Value) {
        let mut w = self.world.lock().unwrap();
        w.objects.insert(path.to_string(), object);
        w.owned.insert(path.to_string(), (manager.to_string(), field.to_string()));
    }
}

fn handle(world: &Mutex<World>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut w = world.lock().unwrap();
    w.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        body: parsed.clone(),
    });
    if path == "/version" {
        return ok(&json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}));
    }
    if method == Method::GET && path.ends_with("/log") {
        let pod = path.trim_end_matches("/log");
        return match w.objects.get(pod) {
            Some(_) => {
                (StatusCode::OK, [("content-type", "text/plain")], format!("log of {}\n", pod.rsplit('/').next().unwrap_or_default())).into_response()
            }
            None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{pod} not found")),
        };
    }
    match method {
        Method::GET => match w.objects.get(&path) {
            Some(o) => ok(o),
            None if is_collection(&path) => {
                let selector = query.get("labelSelector").map(|s| decode(s)).unwrap_or_default();
                let prefix = format!("{path}/");
                let items: Vec<Value> = w
                    .objects
                    .iter()
                    .filter(|(p, o)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/') && matches(o, &selector))
                    .map(|(_, o)| o.clone())
                    .collect();
                ok(&json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}))
            }
            None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{path} not found")),
        },
        Method::DELETE => {
            if w.objects.remove(&path).is_none() {
                return status(StatusCode::NOT_FOUND, "NotFound", &format!("{path} not found"));
            }
            // A namespace takes what lives in it along.
            if let Some(ns) = path.strip_prefix("/api/v1/namespaces/") {
                let inside = format!("/namespaces/{ns}/");
                w.objects.retain(|p, _| !p.contains(&inside));
            }
            ok(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}))
        }
        Method::PATCH => {
            if content_type != "application/apply-patch+yaml" {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!("the mock takes server-side apply only, not {content_type}"),
                );
            }
            let Some(mut object) = parsed else { return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not JSON") };
            if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "fieldManager is required for apply requests");
            }
            let force = query.get("force").is_some_and(|f| f == "true");
            if let Some((manager, field)) = w.owned.get(&path).cloned() {
                if !force {
                    let message = format!("Apply failed with 1 conflict: conflict with \"{manager}\" using apps/v1: {field}");
                    return status(StatusCode::CONFLICT, "Conflict", &message);
                }
                w.owned.remove(&path);
            }
            let old = w.objects.get(&path).cloned();
            let generation = match &old {
                Some(o) if o["spec"] == object["spec"] => o["metadata"]["generation"].as_i64().unwrap_or(1),
                Some(o) => o["metadata"]["generation"].as_i64().unwrap_or(1) + 1,
                None => 1,
            };
            object["metadata"]["generation"] = json!(generation);
            object["metadata"]["managedFields"] = json!([{"manager": query["fieldManager"], "operation": "Apply"}]);
            object["metadata"]["uid"] = json!(format!("uid-{}", path.len()));
            let stuck = w.stuck.contains(object["metadata"]["name"].as_str().unwrap_or_default());
            let extra = play_controllers(&mut object, stuck);
            if !query.contains_key("dryRun") {
                w.objects.insert(path.clone(), object.clone());
                for (p, o) in extra {
                    w.objects.insert(p, o);
                }
            }
            ok(&object)
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not served by the mock"),
    }
}

/// A path that names a kind of object rather than one object: an even number of
/// segments after `/api/v1` or `/apis/group/version`.
fn is_collection(path: &str) -> bool {
    let rest = path.strip_prefix("/api/v1").or_else(|| path.strip_prefix("/apis/").map(|r| r.splitn(3, '/').nth(2).unwrap_or(""))).unwrap_or("");
    let n = rest.split('/').filter(|s| !s.is_empty()).count();
    n % 2 == 1
}

/// Percent-decoding of a query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality-based label selectors (`a=b,c=d`), the kind scalectl sends.
fn matches(o: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        o["metadata"]["labels"][k] == v
    })
}

/// Sets the status the controllers would reach, and returns objects they would create.
fn play_controllers(o: &mut Value, stuck: bool) -> Vec<(String, Value)> {
    let generation = o["metadata"]["generation"].clone();
    match o["kind"].as_str().unwrap_or_default() {
        "Namespace" => o["status"] = json!({"phase": "Active"}),
        "Deployment" => {
            let r = o["spec"]["replicas"].as_i64().unwrap_or(1);
            let available = if stuck { 0 } else { r };
            o["status"] = json!({"observedGeneration": generation, "replicas": r, "updatedReplicas": r, "readyReplicas": available, "availableReplicas": available});
            if stuck {
                o["status"]["conditions"] = json!([{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."}]);
            }
            // One pod of the newest template, as the ReplicaSet would make.
            let ns = o["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let name = format!("{}-g{}", o["metadata"]["name"].as_str().unwrap_or_default(), generation);
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": o["spec"]["template"]["metadata"]["labels"].clone(), "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", generation.as_i64().unwrap_or(0) % 60)},
                "status": {"phase": "Running"}});
            return vec![(format!("/api/v1/namespaces/{ns}/pods/{name}"), pod)];
        }
        "Job" => o["status"] = json!({"succeeded": 1}),
        "Cluster" => {
            o["status"] = json!({"readyInstances": o["spec"]["instances"], "instances": o["spec"]["instances"], "phase": "Cluster in healthy state"})
        }
        "Pooler" => {
            let name = o["metadata"]["name"].clone();
            let ns = o["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let r = o["spec"]["instances"].as_i64().unwrap_or(1);
            let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns, "generation": 1},
                "spec": {"replicas": r},
                "status": {"observedGeneration": 1, "replicas": r, "updatedReplicas": r, "readyReplicas": r, "availableReplicas": r}});
            return vec![(format!("/apis/apps/v1/namespaces/{ns}/deployments/{}", name.as_str().unwrap_or_default()), deployment)];
        }
        _ => {}
    }
    Vec::new()
}
