//! A stand-in Kubernetes API server that speaks the list/watch protocol as kube-apiserver does, for
//! Services, EndpointSlices and Nodes. `proxier run`'s end-to-end tests and the churn driver both
//! watch it.
//!
//! - `GET /api/v1/services` (and `/apis/discovery.k8s.io/v1/endpointslices`, `/api/v1/nodes`): a
//!   typed List (`ServiceList`, items without kind, `metadata.resourceVersion`), with
//!   `labelSelector` (key or key=value, comma-separated), `fieldSelector` (`metadata.name=X`), and
//!   pagination by `limit`/`continue` (the server also caps pages at [`Options::page_size`], as it
//!   may). Every page of one list carries the first page's resourceVersion, as kube-apiserver's do, so
//!   a watch from it misses nothing that changed while the pages were read (it may replay changes a
//!   later page already showed, which a watcher takes as the same object again). A continue token
//!   older than the kept history, or one [`ApiServer::expire_next_continue`] marked, is answered with
//!   HTTP 410 and a Status (reason Expired).
//! - `?watch=true&resourceVersion=R`: a chunked stream of newline-delimited events
//!   `{"type":"ADDED|MODIFIED|DELETED","object":…}` after R, with `BOOKMARK` events every
//!   [`Options::bookmark_every`] when `allowWatchBookmarks=true`, closed after `timeoutSeconds`. A
//!   resourceVersion older than the kept history gets a single `ERROR` event carrying a 410 Expired
//!   Status.
//! - History: each kind's events are kept in resourceVersion order with their watch line already
//!   serialised, so a watch resumes with a binary search and a range read, and one write is
//!   serialised once whatever the number of watchers. At most [`Options::history`] events are kept per
//!   kind (kube-apiserver's watch cache is bounded too); older ones are compacted.
//! - Faults: [`ApiServer::drop_watches`] closes every open watch; [`ApiServer::set_down`] makes it
//!   drop every connection (as a dead server would); [`ApiServer::compact`] forgets history so that
//!   resuming watches get 410 Gone; [`ApiServer::expire_next_continue`].

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The kinds the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `/api/v1/services`
    Service,
    /// `/apis/discovery.k8s.io/v1/endpointslices`
    EndpointSlice,
    /// `/api/v1/nodes`
    Node,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];

    fn from_path(path: &str) -> Option<Kind> {
        match path {
            "/api/v1/services" => Some(Kind::Service),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Kind::EndpointSlice),
            "/api/v1/nodes" => Some(Kind::Node),
            _ => None,
        }
    }

    /// The kind an object says it is (`kind`); anything else is taken as a Service.
    pub fn of(object: &Value) -> Kind {
        match object["kind"].as_str() {
            Some("EndpointSlice") => Kind::EndpointSlice,
            Some("Node") => Kind::Node,
            _ => Kind::Service,
        }
    }

    /// The kind's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The kind's name (`Service`…).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most items one list page holds, whatever `limit` asks.
    pub page_size: usize,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_every: Duration,
    /// The most events kept per kind; older ones are compacted (a watch from before them gets 410).
    pub history: usize,
}

impl Default for Options {
    /// Small pages and frequent bookmarks, so tests exercise paging and bookmarks with a few objects.
    fn default() -> Self {
        Options { page_size: 2, bookmark_every: Duration::from_millis(500), history: 100_000 }
    }
}

/// (namespace, name)
type Name = (String, String);

/// An object as stored: the object, and its list item (without kind and apiVersion) serialised.
struct Stored {
    object: Value,
    item: Bytes,
}

/// What a selector looks at, kept with each event so a watch filters without the object.
struct Selectable {
    name: String,
    labels: BTreeMap<String, String>,
}

impl Selectable {
    fn of(object: &Value) -> Selectable {
        let meta = &object["metadata"];
        let labels = meta["labels"]
            .as_object()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
            .unwrap_or_default();
        Selectable { name: meta["name"].as_str().unwrap_or("").to_owned(), labels }
    }
}

struct HistoryEvent {
    rv: u64,
    selectable: Selectable,
    /// The whole watch line, newline included.
    line: Bytes,
}

#[derive(Default)]
struct History {
    /// In resourceVersion order.
    events: VecDeque<HistoryEvent>,
    /// A watch or continue from a resourceVersion older than this gets 410 Gone.
    compacted: u64,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: [BTreeMap<Name, Stored>; 3],
    history: [History; 3],
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
    options: Options,
}

impl Shared {
    /// The store; a panic elsewhere while it was held leaves it usable (it is only test data).
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running stand-in API server; stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    address: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn name_of(object: &Value) -> Name {
    let meta = &object["metadata"];
    (meta["namespace"].as_str().unwrap_or("").to_owned(), meta["name"].as_str().unwrap_or("").to_owned())
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut text = serde_json::to_string(&json!({"type": kind, "object": object})).unwrap_or_default();
    text.push('\n');
    Bytes::from(text)
}

fn list_item(object: &Value) -> Bytes {
    let mut item = object.clone();
    if let Some(map) = item.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    Bytes::from(serde_json::to_vec(&item).unwrap_or_default())
}

impl Store {
    fn record(&mut self, kind: Kind, rv: u64, event: &'static str, object: &Value, limit: usize) {
        let history = &mut self.history[kind.index()];
        history.events.push_back(HistoryEvent {
            rv,
            selectable: Selectable::of(object),
            line: watch_line(event, object),
        });
        while history.events.len() > limit.max(1) {
            if let Some(dropped) = history.events.pop_front() {
                history.compacted = dropped.rv;
            }
        }
    }
}

impl ApiServer {
    /// Serves on `listener` (bound wherever the caller chose, e.g. inside a network namespace) with the
    /// default [`Options`].
    pub fn start(listener: std::net::TcpListener) -> ApiServer {
        ApiServer::start_with(listener, Options::default())
    }

    /// Serves on `listener` with `options`. Panics if the listener or the server's runtime cannot be set
    /// up (test support: nothing to recover).
    pub fn start_with(listener: std::net::TcpListener, options: Options) -> ApiServer {
        let address = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store { rv: 1000, ..Store::default() }),
            changed: tokio::sync::watch::channel(0).0,
            epoch: tokio::sync::watch::channel(0).0,
            options,
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
                    if server.store().down {
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
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

    /// The address it serves on.
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// A kubeconfig file pointing at this server, written to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
            self.address
        );
        std::fs::write(path, text)
    }

    /// Creates or updates an object (its `kind` says which); returns its new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind = Kind::of(&object);
        let rv = {
            let mut store = self.shared.store();
            store.rv += 1;
            let rv = store.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let name = name_of(&object);
            let item = list_item(&object);
            let objects = &mut store.objects[kind.index()];
            let event = if objects.contains_key(&name) { "MODIFIED" } else { "ADDED" };
            store.record(kind, rv, event, &object, self.shared.options.history);
            store.objects[kind.index()].insert(name, Stored { object, item });
            rv
        };
        self.shared.changed.send_replace(rv);
        rv
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let rv = {
            let mut store = self.shared.store();
            let Some(Stored { mut object, .. }) =
                store.objects[kind.index()].remove(&(namespace.to_owned(), name.to_owned()))
            else {
                return false;
            };
            store.rv += 1;
            let rv = store.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            store.record(kind, rv, "DELETED", &object, self.shared.options.history);
            rv
        };
        self.shared.changed.send_replace(rv);
        true
    }

    /// Every object now stored, as one `v1` List (kind and apiVersion on each item), in the order
    /// `kubectl get svc,endpointslices,nodes -A -o json` prints them.
    pub fn snapshot(&self) -> Value {
        let store = self.shared.store();
        let items: Vec<Value> =
            Kind::ALL.iter().flat_map(|k| store.objects[k.index()].values().map(|s| s.object.clone())).collect();
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv
    }

    /// Closes every open watch (clients resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Down: every new connection is dropped at once and open watches close. Up: serves again.
    pub fn set_down(&self, down: bool) {
        self.shared.store().down = down;
        if down {
            self.drop_watches();
        }
    }

    /// Forgets all history up to now: a watch resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut store = self.shared.store();
        let rv = store.rv;
        for history in &mut store.history {
            history.compacted = rv;
            history.events.clear();
        }
    }

    /// The next list request carrying a continue token is answered 410 Expired.
    pub fn expire_next_continue(&self) {
        self.shared.store().expire_next_continue = true;
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.store().requests.clone()
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

fn full(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn gone(message: &str) -> Response<Body> {
    full(StatusCode::GONE, Bytes::from(status(410, "Expired", message).to_string()))
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

/// A request's label and field selectors.
#[derive(Default)]
struct Selector {
    /// (key, Some(value)) for key=value, (key, None) for "has key".
    labels: Vec<(String, Option<String>)>,
    name: Option<String>,
}

impl Selector {
    fn of(params: &BTreeMap<String, String>) -> Selector {
        let labels = params
            .get("labelSelector")
            .map(|s| {
                s.split(',')
                    .filter(|t| !t.is_empty())
                    .map(|term| match term.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (term.to_owned(), None),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let name = params.get("fieldSelector").and_then(|s| {
            s.split(',')
                .find_map(|t| t.split_once('=').filter(|(k, _)| *k == "metadata.name").map(|(_, v)| v.to_owned()))
        });
        Selector { labels, name }
    }

    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.name.is_none()
    }

    fn matches(&self, object: &Selectable) -> bool {
        self.name.as_ref().is_none_or(|n| *n == object.name)
            && self.labels.iter().all(|(k, v)| match (object.labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
    }
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    {
        let mut store = shared.store();
        if store.down {
            // A dead server: the connection is closed without an answer (also kept-alive ones).
            return Err(std::io::Error::other("down"));
        }
        store.requests.push(format!("{}?{}", request.uri().path(), request.uri().query().unwrap_or("")));
    }
    let params = query(&request);
    let Some(kind) = Kind::from_path(request.uri().path()) else {
        let body = status(404, "NotFound", "the server could not find the requested resource");
        return Ok(full(StatusCode::NOT_FOUND, Bytes::from(body.to_string())));
    };
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Ok(watch(shared, kind, &params));
    }
    Ok(list(&shared, kind, &params))
}

/// A continue token: the list's resourceVersion and the last name served.
fn parse_continue(token: &str) -> Option<(u64, Name)> {
    let (rv, rest) = token.split_once('/')?;
    let (namespace, name) = rest.split_once('/')?;
    Some((rv.parse().ok()?, (namespace.to_owned(), name.to_owned())))
}

fn list(shared: &Shared, kind: Kind, params: &BTreeMap<String, String>) -> Response<Body> {
    let selector = Selector::of(params);
    let mut store = shared.store();
    let (list_rv, after) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let expired = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";
            if std::mem::take(&mut store.expire_next_continue) {
                return gone(expired);
            }
            let Some((rv, after)) = parse_continue(token) else {
                let body = status(400, "BadRequest", "invalid continue token");
                return full(StatusCode::BAD_REQUEST, Bytes::from(body.to_string()));
            };
            if rv < store.history[kind.index()].compacted {
                return gone(expired);
            }
            (rv, Some(after))
        }
        None => (store.rv, None),
    };
    let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page = limit.min(shared.options.page_size.max(1));
    let objects = &store.objects[kind.index()];
    let start = match &after {
        Some(name) => Bound::Excluded(name),
        None => Bound::Unbounded,
    };
    let mut remaining = objects
        .range::<Name, _>((start, Bound::Unbounded))
        .filter(|(_, s)| selector.is_empty() || selector.matches(&Selectable::of(&s.object)));
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"kind\":\"");
    body.extend_from_slice(kind.name().as_bytes());
    body.extend_from_slice(b"List\",\"apiVersion\":\"");
    body.extend_from_slice(kind.api_version().as_bytes());
    body.extend_from_slice(b"\",\"items\":[");
    let mut last = None;
    for (i, (name, stored)) in remaining.by_ref().take(page).enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&stored.item);
        last = Some(name);
    }
    body.extend_from_slice(b"],\"metadata\":");
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    let left = if selector.is_empty() { remaining.count() } else { remaining.take(1).count() };
    if let (Some((namespace, name)), true) = (last, left > 0) {
        metadata["continue"] = json!(format!("{list_rv}/{namespace}/{name}"));
        // kube-apiserver counts what is left only for lists without selectors.
        if selector.is_empty() {
            metadata["remainingItemCount"] = json!(left);
        }
    }
    body.extend_from_slice(metadata.to_string().as_bytes());
    body.push(b'}');
    full(StatusCode::OK, Bytes::from(body))
}

/// The most bytes of events one watch chunk carries.
const CHUNK: usize = 256 * 1024;

fn watch(shared: Arc<Shared>, kind: Kind, params: &BTreeMap<String, String>) -> Response<Body> {
    let since: u64 = params.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let bookmarks = params.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = params.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs);
    let selector = Selector::of(params);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut changed = shared.changed.subscribe();
        let mut epoch = shared.epoch.subscribe();
        epoch.borrow_and_update();
        let deadline = tokio::time::Instant::now() + timeout.unwrap_or(Duration::from_secs(3600));
        let mut last = since;
        let gone = {
            let store = shared.store();
            let compacted = store.history[kind.index()].compacted;
            if since == 0 {
                last = store.rv;
            }
            (since != 0 && since < compacted)
                .then(|| status(410, "Expired", &format!("too old resource version: {since} ({compacted})")))
        };
        if let Some(gone) = gone {
            let _ = sender.send(Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": gone})))).await;
            return;
        }
        let mut tick = tokio::time::interval(shared.options.bookmark_every);
        loop {
            changed.borrow_and_update();
            // Everything after `last`, found by binary search in this kind's history; sent in chunks.
            let (chunks, expired) = {
                let store = shared.store();
                let history = &store.history[kind.index()];
                if last < history.compacted {
                    // This watch fell behind the kept history (it was too slow): as kube-apiserver, end it
                    // with 410 so the client relists.
                    (Vec::new(), Some(history.compacted))
                } else {
                    let start = history.events.partition_point(|e| e.rv <= last);
                    let mut chunks: Vec<Bytes> = Vec::new();
                    let mut chunk: Vec<u8> = Vec::new();
                    for event in history.events.range(start..) {
                        if selector.is_empty() || selector.matches(&event.selectable) {
                            chunk.extend_from_slice(&event.line);
                            if chunk.len() >= CHUNK {
                                chunks.push(Bytes::from(std::mem::take(&mut chunk)));
                            }
                        }
                    }
                    if !chunk.is_empty() {
                        chunks.push(Bytes::from(chunk));
                    }
                    // Under the lock every change up to store.rv is in the history.
                    last = last.max(store.rv);
                    (chunks, None)
                }
            };
            if let Some(compacted) = expired {
                let gone = status(410, "Expired", &format!("too old resource version: {last} ({compacted})"));
                let _ = sender.send(Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": gone})))).await;
                return;
            }
            for chunk in chunks {
                if sender.send(chunk).await.is_err() {
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
                    if sender.send(Bytes::from(format!("{bookmark}\n"))).await.is_err() {
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
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}
