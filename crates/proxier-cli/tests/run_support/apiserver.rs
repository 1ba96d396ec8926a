//! A fake Kubernetes API server that speaks the list/watch protocol as kube-apiserver does, for
//! Services, EndpointSlices and Nodes:
//!
//! - `GET /api/v1/services` (and `/apis/discovery.k8s.io/v1/endpointslices`, `/api/v1/nodes`): a
//!   typed List (`ServiceList`, items without kind, `metadata.resourceVersion`), with
//!   `labelSelector` (key or key=value), `fieldSelector` (`metadata.name=X`), and pagination by
//!   `limit`/`continue` (the server also caps pages at `page_size`, as it may). An expired continue
//!   token is answered with HTTP 410 and a Status (reason Expired).
//! - `?watch=true&resourceVersion=R`: a chunked stream of newline-delimited events
//!   `{"type":"ADDED|MODIFIED|DELETED","object":…}` after R, with `BOOKMARK` events every
//!   `bookmark_every` when `allowWatchBookmarks=true`, closed after `timeoutSeconds`. A resourceVersion
//!   older than the compaction point gets a single `ERROR` event carrying a 410 Expired Status.
//! - Faults: [`ApiServer::drop_watches`] closes every open watch; [`ApiServer::set_down`] makes it
//!   drop every connection (as a dead server would); [`ApiServer::compact`] forgets history so that
//!   resuming watches get 410 Gone; [`ApiServer::expire_next_continue`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    fn from_path(path: &str) -> Option<Kind> {
        match path {
            "/api/v1/services" => Some(Kind::Service),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Kind::EndpointSlice),
            "/api/v1/nodes" => Some(Kind::Node),
            _ => None,
        }
    }

    fn of(object: &Value) -> Kind {
        match object["kind"].as_str() {
            Some("EndpointSlice") => Kind::EndpointSlice,
            Some("Node") => Kind::Node,
            _ => Kind::Service,
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }
}

type Key = (Kind, String, String);

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// (resourceVersion, event type, object)
    events: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    compacted: u64,
    down: bool,
    expire_next_continue: bool,
    requests: Vec<String>,
}

struct Shared {
    store: Mutex<Store>,
    /// Bumped on every change (wakes watches).
    changed: tokio::sync::watch::Sender<u64>,
    /// Bumped to close every open watch.
    epoch: tokio::sync::watch::Sender<u64>,
    page_size: usize,
    bookmark_every: Duration,
}

/// A running fake API server; stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    address: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn key_of(object: &Value) -> Key {
    let meta = &object["metadata"];
    (
        Kind::of(object),
        meta["namespace"].as_str().unwrap_or("").to_owned(),
        meta["name"].as_str().unwrap_or("").to_owned(),
    )
}

impl ApiServer {
    /// Serves on `listener` (bound wherever the caller chose, e.g. inside a network namespace).
    pub fn start(listener: std::net::TcpListener) -> ApiServer {
        let address = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store { rv: 1000, ..Store::default() }),
            changed: tokio::sync::watch::channel(0).0,
            epoch: tokio::sync::watch::channel(0).0,
            page_size: 2,
            bookmark_every: Duration::from_millis(500),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let server = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    if server.store.lock().unwrap().down {
                        drop(stream);
                        continue;
                    }
                    let server = server.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| handle(server.clone(), request));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        ApiServer { shared, address, stop: Some(stop), thread: Some(thread) }
    }

    /// A kubeconfig file pointing at this server, written to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
            self.address
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// Creates or updates an object (its `kind` says which); returns its new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let rv = {
            let mut store = self.shared.store.lock().unwrap();
            store.rv += 1;
            let rv = store.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = key_of(&object);
            let kind = if store.objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
            store.objects.insert(key, object.clone());
            store.events.push((rv, kind, object));
            rv
        };
        self.shared.changed.send_replace(rv);
        rv
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let rv = {
            let mut store = self.shared.store.lock().unwrap();
            let Some(mut object) = store.objects.remove(&(kind, namespace.to_owned(), name.to_owned())) else {
                return false;
            };
            store.rv += 1;
            let rv = store.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            store.events.push((rv, "DELETED", object));
            rv
        };
        self.shared.changed.send_replace(rv);
        true
    }

    /// Closes every open watch (clients resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Down: every new connection is dropped at once and open watches close. Up: serves again.
    pub fn set_down(&self, down: bool) {
        self.shared.store.lock().unwrap().down = down;
        if down {
            self.drop_watches();
        }
    }

    /// Forgets all history up to now: a watch resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut store = self.shared.store.lock().unwrap();
        store.compacted = store.rv;
        store.events.clear();
    }

    /// The next list request carrying a continue token is answered 410 Expired.
    pub fn expire_next_continue(&self) {
        self.shared.store.lock().unwrap().expire_next_continue = true;
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().unwrap().requests.clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.drop_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn query(request: &Request<Incoming>) -> BTreeMap<String, String> {
    let raw = request.uri().query().unwrap_or("");
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn matches(object: &Value, params: &BTreeMap<String, String>) -> bool {
    if let Some(selector) = params.get("labelSelector").filter(|s| !s.is_empty()) {
        for term in selector.split(',') {
            let labels = &object["metadata"]["labels"];
            let ok = match term.split_once('=') {
                Some((k, v)) => labels[k].as_str() == Some(v),
                None => labels.get(term).is_some(),
            };
            if !ok {
                return false;
            }
        }
    }
    if let Some(selector) = params.get("fieldSelector").filter(|s| !s.is_empty()) {
        for term in selector.split(',') {
            if let Some(("metadata.name", name)) = term.split_once('=')
                && object["metadata"]["name"].as_str() != Some(name)
            {
                return false;
            }
        }
    }
    true
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    if shared.store.lock().unwrap().down {
        // A dead server: the connection is closed without an answer (also kept-alive ones).
        return Err(std::io::Error::other("down"));
    }
    let params = query(&request);
    shared.store.lock().unwrap().requests.push(format!(
        "{}?{}",
        request.uri().path(),
        request.uri().query().unwrap_or("")
    ));
    let Some(kind) = Kind::from_path(request.uri().path()) else {
        return Ok(full(
            StatusCode::NOT_FOUND,
            status(404, "NotFound", "the server could not find the requested resource"),
        ));
    };
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Ok(watch(shared, kind, params));
    }
    Ok(list(&shared, kind, &params))
}

fn list(shared: &Shared, kind: Kind, params: &BTreeMap<String, String>) -> Response<Body> {
    let mut store = shared.store.lock().unwrap();
    let offset = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            if std::mem::take(&mut store.expire_next_continue) {
                return full(
                    StatusCode::GONE,
                    status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                );
            }
            token.parse::<usize>().unwrap_or(0)
        }
        None => 0,
    };
    let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page = limit.min(shared.page_size);
    let all: Vec<&Value> =
        store.objects.iter().filter(|((k, _, _), o)| *k == kind && matches(o, params)).map(|(_, o)| o).collect();
    let items: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(page)
        .map(|o| {
            let mut o = (*o).clone();
            if let Some(map) = o.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            o
        })
        .collect();
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    if offset + page < all.len() {
        metadata["continue"] = json!((offset + page).to_string());
        metadata["remainingItemCount"] = json!(all.len() - offset - page);
    }
    full(
        StatusCode::OK,
        json!({"kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(), "metadata": metadata, "items": items}),
    )
}

fn watch(shared: Arc<Shared>, kind: Kind, params: BTreeMap<String, String>) -> Response<Body> {
    let since: u64 = params.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let bookmarks = params.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = params.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
    let line = |v: Value| Bytes::from(format!("{v}\n"));
    tokio::spawn(async move {
        let mut changed = shared.changed.subscribe();
        let mut epoch = shared.epoch.subscribe();
        epoch.borrow_and_update();
        let deadline = tokio::time::Instant::now() + timeout.unwrap_or(Duration::from_secs(3600));
        let mut last = since;
        let gone = {
            let store = shared.store.lock().unwrap();
            if since == 0 {
                last = store.rv;
            }
            (since != 0 && since < store.compacted)
                .then(|| status(410, "Expired", &format!("too old resource version: {since} ({})", store.compacted)))
        };
        if let Some(gone) = gone {
            let _ = sender.send(line(json!({"type": "ERROR", "object": gone}))).await;
            return;
        }
        let mut tick = tokio::time::interval(shared.bookmark_every);
        loop {
            let pending: Vec<Value> = {
                let store = shared.store.lock().unwrap();
                let events: Vec<Value> = store
                    .events
                    .iter()
                    .filter(|(rv, _, o)| *rv > last && Kind::of(o) == kind && matches(o, &params))
                    .map(|(_, t, o)| json!({"type": t, "object": o}))
                    .collect();
                last = last.max(store.rv);
                events
            };
            for event in pending {
                if sender.send(line(event)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = epoch.changed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick(), if bookmarks => {
                    let bookmark = json!({"type": "BOOKMARK", "object": {"kind": kind.name(), "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": last.to_string(), "annotations": {"k8s.io/initial-events-end": "false"}}}});
                    if sender.send(line(bookmark)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), receiver))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())));
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}
