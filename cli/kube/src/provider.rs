//! [`KubeProvider`]: the engine's provider for Kubernetes. Every component is applied with
//! server-side apply (field manager `scalectl`, `application/apply-patch+yaml`) object by
//! object, waited for the way kubectl waits (a Deployment's rollout, a Job's completion,
//! a CloudNativePG Cluster's ready instances), and deleted in reverse order.
//!
//! kube-rs is async and its client must live on the runtime that made it, while the
//! engine's runtime is short-lived and some calls (`observe`) are plain: so the provider
//! owns a small runtime of its own, runs every API call there, and the engine awaits the
//! results from wherever it is.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use scalectl_core::plan::{Action, Observed};
use scalectl_core::{Applied, Call, Check, ErrorKind, Graph, Provider, ProviderError, Readiness, Resource, ResourceKind, Target};
use serde_json::{Value, json};

use crate::graph::KubeSpec;
use crate::meta;

/// How `up` treats fields another field manager owns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Take them over (`--force-conflicts`), as `kubectl apply --server-side
    /// --force-conflicts` does; without it a conflict stops `up` and names the manager.
    pub force_conflicts: bool,
}

pub struct KubeProvider {
    env_dir: PathBuf,
    options: Options,
    graph: Graph,
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    /// One client per kubeconfig context (`None`: the current context), made on first use.
    clients: Mutex<BTreeMap<Option<String>, Client>>,
    /// The environment's live objects by `Kind/name`, read on the first `observe` with one
    /// list per kind (not one read per object: a plan of level 6 costs a dozen requests).
    live: Mutex<Option<BTreeMap<String, Value>>>,
}

impl Drop for KubeProvider {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn failed(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::Failed, message)
}

/// What a failed API call means for the engine, with what to do about it.
fn api_error(what: &str, e: kube::Error) -> ProviderError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => ProviderError::new(
            ErrorKind::Conflict,
            format!(
                "{what}: {}; another field manager owns these fields: run `scalectl up --force-conflicts` to take them over, or give them back with that manager",
                s.message
            ),
        ),
        kube::Error::Api(s) if s.code == 404 => ProviderError::new(ErrorKind::NotFound, format!("{what}: {}", s.message)),
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => ProviderError::transient(format!("{what}: {} ({})", s.message, s.code)),
        kube::Error::Api(s) => failed(format!("{what}: {} ({} {})", s.message, s.code, s.reason)),
        kube::Error::HyperError(_) | kube::Error::Service(_) => ProviderError::transient(format!("{what}: the API server did not answer: {e}")),
        _ => failed(format!("{what}: {e}")),
    }
}

/// The API endpoint of an object from its `apiVersion` and `kind`.
fn api_resource(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap_or_default()))
}

fn api_for(client: &Client, object: &Value) -> Api<DynamicObject> {
    let ar = api_resource(object);
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn label(object: &Value) -> String {
    format!("{}/{}", object["kind"].as_str().unwrap_or("?"), object["metadata"]["name"].as_str().unwrap_or("?"))
}

/// The live object, or `None` when there is none.
async fn get(client: &Client, object: &Value) -> Result<Option<Value>, ProviderError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match api_for(client, object).get_opt(name).await {
        Ok(found) => Ok(found.map(|o| serde_json::to_value(o).expect("an object serializes"))),
        Err(e) => Err(api_error(&label(object), e)),
    }
}

/// Server-side apply of one object.
async fn apply_one(client: &Client, object: &Value, force: bool) -> Result<(), ProviderError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    // Strict: a field the server does not know (an older CRD without `failoverQuorum`,
    // say) is an error, not silently dropped.
    let mut params = PatchParams::apply(meta::MANAGER).validation_strict();
    params.force = force;
    api_for(client, object).patch(name, &params, &Patch::Apply(object)).await.map(|_| ()).map_err(|e| api_error(&label(object), e))
}

/// Deletes one object (a missing one is already deleted), its dependents in the
/// background as `kubectl delete` does.
async fn delete_one(client: &Client, object: &Value) -> Result<(), ProviderError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match api_for(client, object).delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        // Gone already, or being deleted (a terminating namespace answers 409).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(api_error(&label(object), e)),
    }
}

/// Waits until `object` is gone, up to `limit`.
async fn gone(client: &Client, object: &Value, limit: Duration) -> Result<(), ProviderError> {
    let deadline = tokio::time::Instant::now() + limit;
    while get(client, object).await?.is_some() {
        if tokio::time::Instant::now() >= deadline {
            return Err(ProviderError::transient(format!("{} is still being deleted after {} s", label(object), limit.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Whether a live object (if any) is scalectl's for the same environment as `wanted`:
/// none yet counts as ours (we are about to make it).
fn ours(live: &Option<Value>, wanted: &Value) -> bool {
    live.as_ref().is_none_or(|l| l["metadata"]["labels"][meta::ENV_LABEL] == wanted["metadata"]["labels"][meta::ENV_LABEL])
}

/// Whether scalectl applied (some of) `o`: its managed fields name our manager with an
/// `Apply`. Labels alone are not proof: an operator may copy them onto what it makes.
fn applied_by_us(o: &Value) -> bool {
    o["metadata"]["managedFields"].as_array().is_some_and(|m| m.iter().any(|f| f["manager"] == meta::MANAGER && f["operation"] == "Apply"))
}

/// The kinds of object a component of `kind` may hold beside its main one; a component
/// that no longer wants one (a budget when its pool shrinks to one pod, the network rules
/// when the data tier opens) finds it among these.
fn prunable(kind: ResourceKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        ResourceKind::Namespace => &[("v1", "Secret"), ("networking.k8s.io/v1", "NetworkPolicy")],
        ResourceKind::Shop => &[("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget")],
        ResourceKind::Redis => &[("v1", "Service")],
        _ => &[],
    }
}

/// Deletes the objects of the component's prunable kinds that scalectl made for this
/// environment and the component no longer wants; returns them as `Kind/name`. Only
/// objects labelled as this environment's and applied by scalectl (its managed fields)
/// are ever touched: in the namespace component all of them, elsewhere the one named
/// like the component.
async fn prune(client: &Client, kind: ResourceKind, component: &str, spec: &KubeSpec) -> Result<Vec<String>, ProviderError> {
    let Some(env) = spec.objects.values().find_map(|o| o["metadata"]["labels"][meta::ENV_LABEL].as_str()) else { return Ok(Vec::new()) };
    let selector = format!("app.kubernetes.io/managed-by={},{}={env}", meta::MANAGER, meta::ENV_LABEL);
    let mut pruned = Vec::new();
    for (api_version, k) in prunable(kind) {
        let probe = json!({"apiVersion": api_version, "kind": k, "metadata": {"namespace": spec.namespace, "name": component}});
        let live: Vec<Value> = if kind == ResourceKind::Namespace {
            let list =
                api_for(client, &probe).list(&ListParams::default().labels(&selector)).await.map_err(|e| api_error(&format!("listing {k}s"), e))?;
            list.items.into_iter().map(|o| serde_json::to_value(o).expect("an object serializes")).collect()
        } else {
            get(client, &probe).await?.into_iter().filter(|o| o["metadata"]["labels"][meta::ENV_LABEL] == env).collect()
        };
        for o in live {
            let mut o = o;
            o["apiVersion"] = json!(api_version);
            o["kind"] = json!(k);
            let key = label(&o);
            if !spec.objects.contains_key(&key) && applied_by_us(&o) {
                delete_one(client, &o).await?;
                pruned.push(key);
            }
        }
    }
    Ok(pruned)
}

impl KubeProvider {
    pub fn new(env_dir: &Path, graph: Graph, options: Options) -> Result<Self, ProviderError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("scalectl-kube")
            .enable_all()
            .build()
            .map_err(|e| failed(format!("starting the Kubernetes client's runtime: {e}")))?;
        Ok(KubeProvider {
            env_dir: env_dir.to_path_buf(),
            options,
            graph,
            rt: Some(rt),
            clients: Mutex::new(BTreeMap::new()),
            live: Mutex::new(None),
        })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime lives as long as the provider")
    }

    /// Runs `work` on the provider's runtime; the returned future may be awaited anywhere.
    fn on_rt<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> impl Future<Output = T> + Send + 'static {
        let handle = self.rt().spawn(work);
        async move { handle.await.expect("a Kubernetes call does not panic") }
    }

    /// The client for `context`, made on first use.
    async fn client(&self, context: &Option<String>) -> Result<Client, ProviderError> {
        if let Some(c) = self.clients.lock().unwrap().get(context) {
            return Ok(c.clone());
        }
        let ctx = context.clone();
        let client = self.on_rt(async move { connect(ctx.as_deref()).await }).await?;
        self.clients.lock().unwrap().insert(context.clone(), client.clone());
        Ok(client)
    }

    fn spec(&self, r: &Resource) -> Result<KubeSpec, ProviderError> {
        KubeSpec::of(r).map_err(|e| failed(e.to_string()))
    }

    /// The generated password in `secrets/<name>` (0600), made once.
    fn secret(&self, name: &str) -> Result<String, ProviderError> {
        use rand::Rng;
        if let Ok(existing) = std::fs::read_to_string(self.env_dir.join("secrets").join(name)) {
            return Ok(existing.trim().to_string());
        }
        let password: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect();
        self.remember_secret(name, &password)?;
        self.secret(name)
    }

    /// Writes `password` to `secrets/<name>` (0600) unless one is there; the first to land wins.
    fn remember_secret(&self, name: &str, password: &str) -> Result<(), ProviderError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.env_dir.join("secrets");
        let path = dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| failed(format!("creating {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| failed(format!("writing {}: {e}", tmp.display())))?;
        f.write_all(password.as_bytes()).map_err(|e| failed(e.to_string()))?;
        // A password already there (another `up` meanwhile, or the cluster's) stays.
        let _ = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        Ok(())
    }

    /// The object as it is applied: a rendered Secret gets its generated value.
    fn with_secrets(&self, object: &Value) -> Result<Value, ProviderError> {
        let mut o = object.clone();
        if o["kind"] == "Secret" && o["metadata"]["name"] == meta::REDIS_SECRET {
            o["stringData"] = json!({ "password": self.secret(meta::REDIS_SECRET)? });
        }
        Ok(o)
    }

    async fn apply_component(&self, r: &Resource, action: &Action) -> Result<Applied, ProviderError> {
        let spec = self.spec(r)?;
        let client = self.client(&spec.context).await?;
        if r.kind == ResourceKind::Namespace {
            self.adopt_live_secret(&client, &spec).await?;
        }
        let objects: Vec<Value> = spec.in_order().into_iter().map(|o| self.with_secrets(o)).collect::<Result<_, _>>()?;
        let force = self.options.force_conflicts;
        let rerun = r.kind == ResourceKind::Migration && *action != Action::Create;
        let (kind, name) = (r.kind, r.id.split_once('/').map_or(r.id.clone(), |(_, n)| n.to_string()));
        // The snapshot `observe` took is about to be out of date (`endpoints` reads it after `up`).
        *self.live.lock().unwrap() = None;
        self.on_rt(async move {
            let mut notes = Vec::new();
            for o in &objects {
                if o["kind"] == "Namespace" && !ours(&get(&client, o).await?, o) {
                    // Someone else's namespace: use it, never label it as ours (nor delete it).
                    notes.push(format!("namespace {} was not made by scalectl: used as it is, and kept by `down`", o["metadata"]["name"]));
                    continue;
                }
                // A Job's template cannot change: running it again, or with another
                // template, means a new Job.
                if o["kind"] == "Job"
                    && let Some(live) = get(&client, o).await?
                    && (rerun || !crate::drift::changes("Job", &json!({"spec": {"template": o["spec"]["template"]}}), &live).is_empty())
                {
                    delete_one(&client, o).await?;
                    gone(&client, o, Duration::from_secs(60)).await?;
                }
                apply_one(&client, o, force).await?;
            }
            let pruned = prune(&client, kind, &name, &spec).await?;
            if !pruned.is_empty() {
                notes.push(format!("pruned {}", pruned.join(", ")));
            }
            Ok(Applied { note: (!notes.is_empty()).then(|| notes.join("; ")), ..Default::default() })
        })
        .await
    }

    /// Takes the password the cluster already has (another machine's `up`, a lost home)
    /// into `secrets/`, so that applying the Secret never replaces it under a running Redis.
    async fn adopt_live_secret(&self, client: &Client, spec: &KubeSpec) -> Result<(), ProviderError> {
        let Some(secret) = spec.objects.get(&format!("Secret/{}", meta::REDIS_SECRET)).cloned() else { return Ok(()) };
        let c = client.clone();
        let live = self.on_rt(async move { get(&c, &secret).await }).await?;
        let encoded = live.as_ref().and_then(|l| l["data"]["password"].as_str().map(str::to_string));
        if let Some(encoded) = encoded {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| failed(format!("the live Secret {}: {e}", meta::REDIS_SECRET)))?;
            let password = String::from_utf8(bytes).map_err(|e| failed(format!("the live Secret {}: {e}", meta::REDIS_SECRET)))?;
            self.remember_secret(meta::REDIS_SECRET, &password)?;
        }
        Ok(())
    }

    /// The live objects of every kind the graph holds, labelled as this environment's.
    fn live_objects(&self) -> Result<BTreeMap<String, Value>, ProviderError> {
        if let Some(live) = self.live.lock().unwrap().as_ref() {
            return Ok(live.clone());
        }
        // One list per (context, namespace, apiVersion, kind), by label.
        let mut kinds: BTreeMap<(Option<String>, String, String, String), String> = BTreeMap::new();
        for r in &self.graph.resources {
            let Ok(spec) = KubeSpec::of(r) else { continue };
            for o in spec.objects.values() {
                let Some(env) = o["metadata"]["labels"][meta::ENV_LABEL].as_str() else { continue };
                let namespaced = o["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
                let key = (
                    spec.context.clone(),
                    namespaced,
                    o["apiVersion"].as_str().unwrap_or("v1").to_string(),
                    o["kind"].as_str().unwrap_or_default().to_string(),
                );
                kinds.insert(key, env.to_string());
            }
        }
        let look = async {
            let mut live = BTreeMap::new();
            for ((context, namespace, api_version, kind), env) in kinds {
                let client = self.client(&context).await?;
                let selector = format!("app.kubernetes.io/managed-by={},{}={env}", meta::MANAGER, meta::ENV_LABEL);
                let mut probe = json!({"apiVersion": api_version, "kind": kind, "metadata": {}});
                if !namespace.is_empty() {
                    probe["metadata"]["namespace"] = json!(namespace);
                }
                let what = format!("listing {kind}s");
                let items = self
                    .on_rt(
                        async move { api_for(&client, &probe).list(&ListParams::default().labels(&selector)).await.map_err(|e| api_error(&what, e)) },
                    )
                    .await?;
                for o in items.items {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    // A list's items need not say their kind; the list does.
                    let mut v = serde_json::to_value(o).expect("an object serializes");
                    v["kind"] = json!(kind);
                    live.insert(format!("{kind}/{name}"), v);
                }
            }
            Ok::<_, ProviderError>(live)
        };
        let live = self.rt().block_on(look)?;
        *self.live.lock().unwrap() = Some(live.clone());
        Ok(live)
    }

    async fn readiness_of(&self, r: &Resource) -> Result<Readiness, ProviderError> {
        let spec = self.spec(r)?;
        let client = self.client(&spec.context).await?;
        let main = spec.in_order().into_iter().find(|o| o["kind"] != "Secret" && o["kind"] != "Service").cloned();
        let Some(main) = main else { return Ok(Readiness::Ready) };
        let kind = r.kind;
        self.on_rt(async move {
            // CloudNativePG runs each Pooler as a Deployment of the same name.
            let watched = if kind == ResourceKind::Pgbouncer {
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": main["metadata"].clone()})
            } else {
                main.clone()
            };
            Ok(match get(&client, &watched).await? {
                None if kind == ResourceKind::Pgbouncer => Readiness::Pending("the operator has not made the pooler's pods yet".into()),
                None => Readiness::Pending(format!("{} is not on the cluster yet", label(&watched))),
                Some(live) => crate::ready::of(&live),
            })
        })
        .await
    }

    async fn destroy_component(&self, r: &Resource, keep_data: bool) -> Result<(), ProviderError> {
        let spec = self.spec(r)?;
        let client = self.client(&spec.context).await?;
        let mut objects: Vec<Value> = spec.in_order().into_iter().cloned().collect();
        objects.reverse();
        // The database's volumes go with its Cluster (and everything with the namespace):
        // `--keep-data` keeps both, and the rules that keep the data private.
        if keep_data && matches!(r.kind, ResourceKind::Postgres | ResourceKind::Namespace) {
            return Ok(());
        }
        self.on_rt(async move {
            let mut kept = Vec::new();
            for o in &objects {
                // A namespace scalectl did not make is someone else's to delete.
                if o["kind"] == "Namespace" && !ours(&get(&client, o).await?, o) {
                    kept.push(o.clone());
                    continue;
                }
                delete_one(&client, o).await?;
            }
            objects.retain(|o| !kept.contains(o));
            for o in &objects {
                gone(&client, o, Duration::from_secs(300)).await?;
            }
            Ok(())
        })
        .await
    }
}

/// A client for kubeconfig `context` (`None`: the current one), reading the kubeconfig
/// as kubectl does (`KUBECONFIG`, else `~/.kube/config`). Must run on the runtime that
/// will use the client.
pub async fn connect(context: Option<&str>) -> Result<Client, ProviderError> {
    let options = KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = Config::from_kubeconfig(&options).await.map_err(|e| failed(kubeconfig_advice(context, &e.to_string())))?;
    Client::try_from(config).map_err(|e| failed(format!("connecting to the cluster: {e}")))
}

/// The label selector of a component's pods: its Deployment's, a Job's, the database
/// cluster's primary (CloudNativePG's labels), a pooler's.
fn pod_selector(r: &Resource, spec: &KubeSpec) -> Option<String> {
    let name = r.id.split_once('/').map_or(r.id.as_str(), |(_, n)| n);
    match r.kind {
        ResourceKind::Postgres => Some(format!("cnpg.io/cluster={name},cnpg.io/instanceRole=primary")),
        ResourceKind::Pgbouncer => Some(format!("cnpg.io/poolerName={name}")),
        ResourceKind::Migration => Some(format!("job-name={name}")),
        ResourceKind::Shop | ResourceKind::Worker | ResourceKind::Redis => {
            let d = spec.objects.get(&format!("Deployment/{name}"))?;
            let labels = d["spec"]["selector"]["matchLabels"].as_object()?;
            Some(labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
        }
        _ => None,
    }
}

/// Why a kubeconfig could not be read, and what to do.
fn kubeconfig_advice(context: Option<&str>, error: &str) -> String {
    let contexts = Kubeconfig::read().map(|k| k.contexts.into_iter().map(|c| c.name).collect::<Vec<_>>()).unwrap_or_default();
    let known = if contexts.is_empty() { "no contexts".to_string() } else { format!("contexts: {}", contexts.join(", ")) };
    match context {
        Some(c) => format!(
            "cannot use kubeconfig context `{c}` ({error}; {known}); create the cluster (for kind: `kind create cluster --name {}`) or name another context in `spec.targets.kubernetes.contexts`",
            c.strip_prefix("kind-").unwrap_or(c)
        ),
        None => format!("cannot read the kubeconfig ({error}; {known}); set KUBECONFIG or `spec.targets.kubernetes.contexts`"),
    }
}

impl Provider for KubeProvider {
    fn target(&self) -> Target {
        Target::Kubernetes
    }

    fn supports(&self, kind: ResourceKind) -> bool {
        use ResourceKind::*;
        matches!(kind, Namespace | Postgres | Pgbouncer | Redis | Migration | Shop | Worker | Ingress)
    }

    fn observe(&self, r: &Resource) -> Observed {
        let Ok(spec) = self.spec(r) else { return Observed::Unknown };
        let live = match self.live_objects() {
            Ok(live) => live,
            Err(e) => return Observed::Down { reason: e.message },
        };
        if r.kind.one_shot() {
            // Done is done, but a Job someone deleted (or a TTL controller did) is run
            // again, or `up` would wait for it forever.
            return match spec.objects.keys().all(|k| live.contains_key(k)) {
                true => Observed::Unknown,
                false => Observed::Down { reason: "its Job is no longer on the cluster".into() },
            };
        }
        let mut changes = Vec::new();
        let mut present = 0;
        for (key, want) in &spec.objects {
            match live.get(key) {
                Some(have) => {
                    present += 1;
                    changes.extend(crate::drift::changes(key, want, have));
                }
                None => changes.push(scalectl_core::plan::Change { field: key.clone(), from: None, to: Some("present".into()) }),
            }
        }
        match (present, changes.is_empty()) {
            (0, _) => Observed::Down { reason: "not on the cluster".into() },
            (_, true) => Observed::Running { pid: None },
            (_, false) => Observed::Drifted { changes },
        }
    }

    fn apply<'a>(&'a self, r: &'a Resource, action: &'a Action) -> Call<'a, Applied> {
        Box::pin(self.apply_component(r, action))
    }

    fn readiness<'a>(&'a self, r: &'a Resource) -> Check<'a> {
        Box::pin(async move {
            match self.readiness_of(r).await {
                Ok(ready) => ready,
                // The API server being away for a moment is a reason to wait, not to fail.
                Err(e) if e.kind == ErrorKind::Transient => Readiness::Pending(e.message),
                Err(e) => Readiness::Failed(e.message),
            }
        })
    }

    fn ready_within(&self, r: &Resource) -> Option<Duration> {
        // Pulling PostgreSQL's image and cloning replicas takes minutes on a fresh node.
        (r.kind == ResourceKind::Postgres).then(|| Duration::from_secs(900))
    }

    fn destroy<'a>(&'a self, r: &'a Resource, keep_data: bool) -> Call<'a, ()> {
        Box::pin(self.destroy_component(r, keep_data))
    }

    fn logs(&self, r: &Resource, lines: usize) -> Result<String, ProviderError> {
        let spec = self.spec(r)?;
        let selector =
            pod_selector(r, &spec).ok_or_else(|| failed(format!("{} runs no pods; its objects are in namespace {}", r.id, spec.namespace)))?;
        let namespace = spec.namespace.clone();
        let id = r.id.clone();
        let look = async {
            let client = self.client(&spec.context).await?;
            self.on_rt(async move {
                let pods: Api<Pod> = Api::namespaced(client, &namespace);
                let list =
                    pods.list(&ListParams::default().labels(&selector)).await.map_err(|e| api_error(&format!("listing the pods of {id}"), e))?;
                // The newest pod: the one a rollout or a re-run made last.
                let newest = list.items.into_iter().max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
                let Some(name) = newest.and_then(|p| p.metadata.name) else {
                    return Err(failed(format!("{id} has no pods yet (selector {selector})")));
                };
                let params = LogParams { tail_lines: Some(lines as i64), ..Default::default() };
                pods.logs(&name, &params)
                    .await
                    .map(|text| format!("pod {name}:\n{text}"))
                    .map_err(|e| api_error(&format!("reading the log of pod {name}"), e))
            })
            .await
        };
        self.rt().block_on(look)
    }

    fn config_files(&self, _r: &Resource) -> Result<Vec<(String, String)>, ProviderError> {
        // The objects are the definition (the spec); there are no files beside them.
        Ok(Vec::new())
    }

    /// `shop` is a URL (`load` and `chaos` send traffic to it) only when the Ingress has
    /// an address; otherwise `shop-access` says how to reach the shop.
    fn endpoints(&self) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::new();
        let namespace = self.graph.resources.iter().find_map(|r| KubeSpec::of(r).ok().map(|s| s.namespace)).unwrap_or_default();
        let ingress = self.live_objects().ok().and_then(|live| live.get("Ingress/shop").cloned());
        let address = ingress.as_ref().and_then(|i| {
            let lb = &i["status"]["loadBalancer"]["ingress"][0];
            lb["hostname"].as_str().or(lb["ip"].as_str()).map(str::to_string)
        });
        match address {
            Some(a) => {
                out.insert("shop", format!("http://{a}"));
            }
            None => {
                let how = if ingress.is_some() { "the Ingress has no address yet; meanwhile " } else { "" };
                out.insert(
                    "shop-access",
                    format!("{how}`kubectl -n {namespace} port-forward svc/shop {0}`, then --url http://127.0.0.1:{0}", meta::SHOP_PORT),
                );
            }
        }
        if let Some(db) = self.graph.resources.iter().find(|r| r.kind == ResourceKind::Postgres) {
            out.insert("database", format!("postgres://shop@{}-rw.{namespace}.svc:{}/shop", db.id.trim_start_matches("postgres/"), meta::PG_PORT));
        }
        out
    }
}
