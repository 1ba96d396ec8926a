//! Watches with kube-runtime: Services, EndpointSlices (those with a `kubernetes.io/service-name`
//! label) and this node's own Node. Each watcher lists, then watches from the list's resourceVersion;
//! on a dropped connection it resumes, on 410 Gone it lists again, and on errors it backs off
//! (`default_backoff`). Events go to the sync loop over one channel.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

/// One watch event, by kind.
#[derive(Debug)]
pub enum Update {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
    Node(Box<Event<Node>>),
}

/// Starts the three watches; they run until the receiver is dropped. `server` names the API server in
/// error lines.
pub fn start(client: Client, node: &str, server: &str, sender: mpsc::Sender<Update>) {
    let errors = Arc::new(ErrorLog { server: server.to_owned(), last: Mutex::new(None) });
    let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default());
    spawn("services", services, sender.clone(), Update::Service, errors.clone());
    let slices = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(proxier_core::snapshot::SERVICE_NAME_LABEL),
    );
    spawn("endpointslices", slices, sender.clone(), Update::Slice, errors.clone());
    let nodes = watcher(Api::<Node>::all(client), watcher::Config::default().fields(&format!("metadata.name={node}")));
    spawn("nodes", nodes, sender, Update::Node, errors);
}

/// The error and its causes on one line, each cause once.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The three watches fail together when the API server is unreachable, each on its own backoff: the
/// failure is logged once per step of one shared backoff (as kube-runtime's default: 800 ms doubling
/// to 30 s), not once per watch and retry; recovery is logged once.
struct ErrorLog {
    server: String,
    last: Mutex<Option<Logged>>,
}

struct Logged {
    at: std::time::Instant,
    step: std::time::Duration,
}

const FIRST_STEP: std::time::Duration = std::time::Duration::from_millis(800);
const LAST_STEP: std::time::Duration = std::time::Duration::from_secs(30);

impl ErrorLog {
    fn report(&self, what: &str, error: &watcher::Error) {
        let cause = causes(error);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let step = match last.as_ref() {
            // The watches' causes differ in wording (reset, closed, refused) for one outage: any failure
            // within the current step is the same one.
            Some(logged) if now.duration_since(logged.at) < logged.step => {
                tracing::debug!(watch = what, server = %self.server, %cause, "watch failed");
                return;
            }
            Some(logged) => (logged.step * 2).min(LAST_STEP),
            None => FIRST_STEP,
        };
        *last = Some(Logged { at: now, step });
        tracing::warn!(server = %self.server, %cause, watch = what, "API server request failed; the rules stay as they are, retrying with backoff");
    }

    fn recovered(&self) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.take().is_some() {
            tracing::info!(server = %self.server, "API server reachable again");
        }
    }
}

fn spawn<K, S>(
    what: &'static str,
    stream: S,
    sender: mpsc::Sender<Update>,
    wrap: fn(Box<Event<K>>) -> Update,
    errors: Arc<ErrorLog>,
) where
    K: Send + 'static,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    // Init only announces a list; anything after it came from the API server.
                    if !matches!(event, Event::Init) {
                        errors.recovered();
                    }
                    if matches!(event, Event::Init) {
                        tracing::info!(what, "listing");
                    }
                    if sender.send(wrap(Box::new(event))).await.is_err() {
                        return;
                    }
                }
                // The rules stay as they are; the watcher retries with backoff (and relists after 410 Gone).
                Err(error) => errors.report(what, &error),
            }
        }
    });
}
