//! Watches with kube-runtime: Services, EndpointSlices (those with a `kubernetes.io/service-name`
//! label) and this node's own Node. Each watcher lists, then watches from the list's resourceVersion;
//! on a dropped connection it resumes, on 410 Gone it lists again, and on errors it backs off
//! (`default_backoff`). Events go to the sync loop over one channel.

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

/// Starts the three watches; they run until the receiver is dropped.
pub fn start(client: Client, node: &str, sender: mpsc::Sender<Update>) {
    let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default());
    spawn("services", services, sender.clone(), Update::Service);
    let slices = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(proxier_core::snapshot::SERVICE_NAME_LABEL),
    );
    spawn("endpointslices", slices, sender.clone(), Update::Slice);
    let nodes = watcher(Api::<Node>::all(client), watcher::Config::default().fields(&format!("metadata.name={node}")));
    spawn("nodes", nodes, sender, Update::Node);
}

fn spawn<K, S>(what: &'static str, stream: S, sender: mpsc::Sender<Update>, wrap: fn(Box<Event<K>>) -> Update)
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if matches!(event, Event::Init) {
                        tracing::info!(what, "listing");
                    }
                    if sender.send(wrap(Box::new(event))).await.is_err() {
                        return;
                    }
                }
                // The rules stay as they are; the watcher retries with backoff (and relists after 410 Gone).
                Err(error) => tracing::warn!(what, %error, "watch failed; retrying with backoff"),
            }
        }
    });
}
