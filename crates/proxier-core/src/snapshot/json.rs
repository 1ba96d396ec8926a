//! The fast path for JSON texts (what `kubectl get … -o json` prints): the items of a List are cut out of the
//! text as raw slices in one pass, and parsed straight into their `k8s-openapi` types on the other cores
//! while that pass goes on ([`Early`]).
//!
//! The general path ([`super::parse_documents`] and [`super::Reader`]) builds a `serde_json::Value` tree of
//! the whole text first and deserializes each object from it: at 10k Services that tree is ~100 MB of small
//! allocations built, walked and freed again, on one core. This path gives the same result for every text it
//! accepts, and accepts only texts it is sure of; for anything else it answers `None` and the caller takes the
//! general path, which then produces exactly the messages it always has:
//!
//! - Every byte is still checked as strictly as building a `Value` checks it (string escapes, number ranges,
//!   nesting depth), including the fields `k8s-openapi` ignores: a text the general path refuses as a whole is
//!   never accepted here. Where in doubt (an item that is not a plain object, a duplicate `kind`, nesting deeper
//!   than [`MAX_DEPTH`]) the whole text goes the general way.
//! - Objects that load cleanly (a known kind, its apiVersion, a name, a typed parse that succeeds) are made
//!   here. Everything else about an object — an error to report, a skipped apiVersion, an Ingress, a nested
//!   List — is handed to [`super::Reader::object`] as the `Value` the general path would have made of it, in
//!   order, so diagnostics and their order are unchanged.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{KNOWN_KINDS, ListContext, Reader};
use crate::parallel;

/// Containers nested deeper than this (counting the text's own document and List) send the whole text the
/// general way. serde_json refuses more than 127 when it builds a `Value` of the whole text; an item parsed
/// on its own starts counting again from zero, so the limit is kept here, with room to spare.
const MAX_DEPTH: usize = 100;

/// Below this many objects the threads cost more than they save.
const PARALLEL_MIN_OBJECTS: usize = 256;

/// The containers around an item of a List document: the document and its `items`.
const ITEM_DEPTH: usize = 2;

/// A JSON text cut into its objects, each already parsed as far as this path can.
pub(super) struct Documents<'a> {
    lists: Vec<Option<ListContext>>,
    jobs: Vec<Job<'a>>,
    outcomes: Vec<Outcome>,
}

/// One object of the text: a document of its own, or an item of a List document.
struct Job<'a> {
    raw: &'a str,
    /// The List it is an item of (an index into [`Documents::lists`]), or `None` for a document.
    list: Option<usize>,
}

/// What became of one object.
enum Outcome {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Endpoints(Box<Endpoints>),
    Node(Box<Node>),
    /// A kind proxier does not read, counted under this name.
    Skip(String),
    /// Anything else: for the general path's [`Reader::object`], which reports it as it always has.
    General(Map<String, Value>),
    /// The text is not one this path is sure of.
    Abort,
}

impl<'a> Documents<'a> {
    /// The text's objects, or `None` when the text must take the general path: not a JSON object (or
    /// several), not valid JSON, holding no Kubernetes object, or anything unusual (see the module
    /// documentation).
    pub(super) fn parse(text: &'a str) -> Option<Documents<'a>> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let (sender, receiver) = mpsc::channel();
        let queue = Queue { receiver: Mutex::new(receiver), cancelled: AtomicBool::new(false) };
        let (cut, early) = std::thread::scope(|scope| {
            let mut early = Early { scope, queue: &queue, sender: Some(sender), run: Vec::new(), workers: Vec::new() };
            let cut = cut(text, &mut early);
            let early = early.finish(cut.is_some());
            (cut, early)
        });
        let Cut { lists, jobs, kubernetes } = cut?;
        // Empty texts and texts of some other tool: the general path tells which.
        if (jobs.is_empty() && lists.is_empty()) || !kubernetes {
            return None;
        }
        let outcomes = outcomes(&jobs, &lists, early)?;
        Some(Documents { lists, jobs, outcomes })
    }

    /// Loads the objects into `reader`, in the text's order.
    pub(super) fn load(self, reader: &mut Reader<'_>) {
        for (job, outcome) in self.jobs.iter().zip(self.outcomes) {
            let loaded = &mut reader.loaded;
            match outcome {
                Outcome::Service(o) => loaded.services.push(*o),
                Outcome::EndpointSlice(o) => loaded.endpoint_slices.push(*o),
                Outcome::Endpoints(o) => loaded.endpoints.push(*o),
                Outcome::Node(o) => loaded.nodes.push(*o),
                Outcome::Skip(kind) => reader.skip(kind),
                Outcome::General(map) => {
                    let list = job.list.and_then(|i| self.lists.get(i)).and_then(Option::as_ref);
                    // Counted by `object` itself.
                    reader.object(map, list, usize::from(job.list.is_some()));
                    continue;
                }
                // `outcomes` returns `None` for a text with any.
                Outcome::Abort => continue,
            }
            reader.objects = reader.objects.saturating_add(1);
        }
    }
}

/// A text cut into its objects.
struct Cut<'a> {
    lists: Vec<Option<ListContext>>,
    jobs: Vec<Job<'a>>,
    /// Whether any document has a `kind` or an `apiVersion`.
    kubernetes: bool,
}

/// Cuts `text` into its documents, and List documents into their items, checking every byte; `None` if it
/// is not a sequence of JSON objects (the general path then says what is wrong). The items of every
/// document go to `early` as they are cut.
fn cut<'a>(text: &'a str, early: &mut Early<'_, '_, 'a>) -> Option<Cut<'a>> {
    let mut cut = Cut { lists: Vec::new(), jobs: Vec::new(), kubernetes: false };
    let mut start = 0;
    loop {
        let rest = text.get(start..)?;
        // JSON's whitespace, as serde_json skips it between values.
        let trimmed = rest.trim_start_matches([' ', '\n', '\t', '\r']);
        if trimmed.is_empty() {
            break;
        }
        start = text.len() - trimmed.len();
        let mut deserializer = serde_json::Deserializer::from_str(trimmed);
        let head = HeadSeed { depth: 0, early: Some(&mut *early) }.deserialize(&mut deserializer).ok()?;
        let end = start.checked_add(deserializer.into_iter::<de::IgnoredAny>().byte_offset())?;
        let raw = text.get(start..end)?;
        start = end;
        cut.kubernetes |= head.kind.is_some() || head.api_version.is_some();
        let Some(kind) = head.kind.as_deref() else {
            // A List without `kind` (cut short) and objects without one: the general path says so.
            if head.items.is_some() {
                return None;
            }
            cut.jobs.push(Job { raw, list: None });
            continue;
        };
        let is_list = kind == "List" || (kind.ends_with("List") && head.items.is_some());
        if !is_list {
            cut.jobs.push(Job { raw, list: None });
            continue;
        }
        let items = match head.items {
            Some(Items::Seq(items)) => items,
            Some(Items::Null) | None => Vec::new(),
        };
        let context = match kind.strip_suffix("List") {
            Some(item_kind) if !item_kind.is_empty() => {
                Some(ListContext { item_kind: item_kind.to_owned(), api_version: head.api_version.clone() })
            }
            _ => None,
        };
        let list = Some(cut.lists.len());
        cut.lists.push(context);
        cut.jobs.extend(items.into_iter().map(|item| Job { raw: item.get(), list }));
    }
    Some(cut)
}

/// Parses the items of the text's documents on other threads while the text is still being cut: kubectl
/// prints a List's `kind` after its items, so an item is parsed before its List is known to be one. What
/// an item becomes depends on its List only when it has no `kind` of its own; such items, and items of
/// documents that turn out not to be Lists, are left to [`outcomes`], which reads them as always.
struct Early<'scope, 'env, 'a> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    queue: &'env Queue<'a>,
    sender: Option<mpsc::Sender<Vec<&'a str>>>,
    /// Items cut since the last run was sent.
    run: Vec<&'a str>,
    workers: Vec<std::thread::ScopedJoinHandle<'scope, Vec<(usize, Outcome)>>>,
}

/// The runs of items [`Early`] sends its workers.
struct Queue<'a> {
    receiver: Mutex<mpsc::Receiver<Vec<&'a str>>>,
    /// Set when the text turns out not to be one for this path: what is left is not worth parsing.
    cancelled: AtomicBool,
}

/// Items sent to the workers at a time. The first run starts them, so texts with fewer items start none.
const EARLY_RUN: usize = PARALLEL_MIN_OBJECTS;

impl<'scope, 'env: 'scope, 'a: 'env> Early<'scope, 'env, 'a> {
    /// Takes one item as it is cut.
    fn item(&mut self, raw: &'a str) {
        self.run.push(raw);
        if self.run.len() < EARLY_RUN {
            return;
        }
        if self.workers.is_empty() {
            // This thread goes on cutting: the others parse.
            let queue = self.queue;
            for _ in 1..parallel::cores() {
                self.workers.push(self.scope.spawn(move || queue.work()));
            }
            if self.workers.is_empty() {
                // One core: nothing to gain; [`outcomes`] parses every item after the cut.
                self.sender = None;
            }
        }
        let run = std::mem::take(&mut self.run);
        if let Some(sender) = &self.sender {
            // The workers hold the receiver until this side hangs up.
            let _ = sender.send(run);
        }
    }

    /// The outcomes of the items parsed early, by the address of their text, in the text's order. When
    /// the cut failed (`complete` false) the workers stop at their next run and nothing is returned.
    fn finish(mut self, complete: bool) -> Vec<(usize, Outcome)> {
        if !complete {
            self.queue.cancelled.store(true, Ordering::Relaxed);
        }
        if let Some(sender) = self.sender.take()
            && !self.workers.is_empty()
        {
            let _ = sender.send(std::mem::take(&mut self.run));
        }
        // Hung up: workers stop when the queue is empty, and this thread helps empty it.
        let mut early = if complete { self.queue.work() } else { Vec::new() };
        for worker in self.workers {
            // A worker cannot panic (parsing returns errors); if one did, its items are parsed again later.
            early.extend(worker.join().unwrap_or_default());
        }
        if !complete {
            return Vec::new();
        }
        early.sort_unstable_by_key(|(address, _)| *address);
        early
    }
}

impl Queue<'_> {
    /// Parses runs of items until the queue is empty and hung up, or cancelled.
    fn work(&self) -> Vec<(usize, Outcome)> {
        let mut done = Vec::new();
        loop {
            if self.cancelled.load(Ordering::Relaxed) {
                break;
            }
            let run = match self.receiver.lock() {
                Ok(receiver) => receiver.recv(),
                Err(_) => break,
            };
            let Ok(run) = run else { break };
            done.extend(run.into_iter().filter_map(|raw| Some((raw.as_ptr() as usize, early_outcome(raw)?))));
        }
        done
    }
}

/// What an item of a List becomes, if that does not depend on its List (it has its own `kind`).
fn early_outcome(raw: &str) -> Option<Outcome> {
    match Head::parse(raw, ITEM_DEPTH) {
        Ok(head) if head.kind.is_some() => Some(outcome_of(head, raw, None, ITEM_DEPTH)),
        Ok(_) => None,
        Err(_) => Some(Outcome::Abort),
    }
}

/// Each job's outcome: those parsed early, the rest on as many threads as there are cores; `None` if any
/// job aborts.
fn outcomes(jobs: &[Job<'_>], lists: &[Option<ListContext>], early: Vec<(usize, Outcome)>) -> Option<Vec<Outcome>> {
    // Both in the text's order: a merge. Early items of documents that are not Lists match no job.
    let mut early = early.into_iter().peekable();
    let mut found: Vec<Option<Outcome>> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let address = job.raw.as_ptr() as usize;
        if job.list.is_none() {
            found.push(None);
            continue;
        }
        while early.next_if(|(at, _)| *at < address).is_some() {}
        found.push(early.next_if(|(at, _)| *at == address).map(|(_, outcome)| outcome));
    }
    let missing: Vec<usize> = found.iter().enumerate().filter(|(_, o)| o.is_none()).map(|(i, _)| i).collect();
    let rest = parallel::map(&missing, PARALLEL_MIN_OBJECTS, |&i| {
        let job = jobs.get(i)?;
        let list = job.list.and_then(|i| lists.get(i)).and_then(Option::as_ref);
        Some(outcome(job.raw, list, if job.list.is_some() { ITEM_DEPTH } else { 0 }))
    });
    for (i, outcome) in missing.into_iter().zip(rest) {
        if let Some(slot) = found.get_mut(i) {
            *slot = outcome;
        }
    }
    let outcomes: Vec<Outcome> = found.into_iter().collect::<Option<_>>()?;
    (!outcomes.iter().any(|o| matches!(o, Outcome::Abort))).then_some(outcomes)
}

/// One object: `raw` is its text, `list` the List it is an item of, `depth` the containers around it.
fn outcome(raw: &str, list: Option<&ListContext>, depth: usize) -> Outcome {
    match Head::parse(raw, depth) {
        Ok(head) => outcome_of(head, raw, list, depth),
        Err(_) => Outcome::Abort,
    }
}

/// [`outcome`] of an object whose head is read.
fn outcome_of(head: Head<'_>, raw: &str, list: Option<&ListContext>, depth: usize) -> Outcome {
    let (mut kind, mut api_version) = (head.kind, head.api_version);
    if let Some(list) = list
        && kind.is_none()
    {
        kind = Some(list.item_kind.clone());
        if api_version.is_none() {
            api_version.clone_from(&list.api_version);
        }
    }
    let Some(kind) = kind.filter(|kind| !kind.is_empty()) else { return general(raw) };
    if kind == "List" || (kind.ends_with("List") && head.items.is_some()) {
        return general(raw);
    }
    // Values `k8s-openapi` would skip unchecked: checked as the general path's `Value` would.
    if let Some(Items::Seq(items)) = &head.items
        && !items.iter().all(|item| valid(item.get(), depth.saturating_add(2)))
    {
        return Outcome::Abort;
    }
    let name_missing = head.name.as_deref().is_none_or(str::is_empty);
    let Some(&(_, expected)) = KNOWN_KINDS.iter().find(|(known, _)| *known == kind) else {
        let ingress = kind == "Ingress" && api_version.as_deref() == Some("networking.k8s.io/v1") && !name_missing;
        return if ingress { general(raw) } else { Outcome::Skip(kind) };
    };
    if api_version.as_deref() != Some(expected) || name_missing {
        return general(raw);
    }
    let namespace = match head.namespace {
        Some(namespace) if !namespace.is_empty() => namespace,
        _ => "default".to_owned(),
    };
    let typed = match kind.as_str() {
        "Service" => typed::<Service>(raw).map(|mut o| {
            o.metadata.namespace = Some(namespace);
            Outcome::Service(Box::new(o))
        }),
        "EndpointSlice" => typed::<EndpointSlice>(raw).map(|mut o| {
            o.metadata.namespace = Some(namespace);
            Outcome::EndpointSlice(Box::new(o))
        }),
        "Endpoints" => typed::<Endpoints>(raw).map(|mut o| {
            o.metadata.namespace = Some(namespace);
            Outcome::Endpoints(Box::new(o))
        }),
        _ => typed::<Node>(raw).map(|o| Outcome::Node(Box::new(o))),
    };
    typed.unwrap_or_else(|| general(raw))
}

fn typed<T: DeserializeOwned>(raw: &str) -> Option<T> {
    serde_json::from_str(raw).ok()
}

/// The object as the general path holds it, for [`Reader::object`].
fn general(raw: &str) -> Outcome {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Outcome::General(map),
        _ => Outcome::Abort,
    }
}

/// Whether `raw` is a JSON value the general path would read, `depth` containers deep.
fn valid(raw: &str, depth: usize) -> bool {
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    Valid { depth }.deserialize(&mut deserializer).and_then(|()| deserializer.end()).is_ok()
}

// ---------------------------------------------------------------------------------------------------------
// Heads: what decides where an object goes, read while checking the rest.

/// The fields of an object that decide where it goes; every other value in it is checked ([`Valid`]) and
/// dropped. A field given twice, or a `kind`, `apiVersion`, name or namespace that is not a string or
/// null, is an error (the general path decides about such objects).
struct Head<'a> {
    kind: Option<String>,
    api_version: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    items: Option<Items<'a>>,
}

/// A List's `items`.
enum Items<'a> {
    Null,
    Seq(Vec<&'a RawValue>),
}

impl<'a> Head<'a> {
    /// The head of an object nested `depth` containers deep.
    fn parse(raw: &'a str, depth: usize) -> serde_json::Result<Head<'a>> {
        let mut deserializer = serde_json::Deserializer::from_str(raw);
        let head = HeadSeed { depth, early: None }.deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(head)
    }
}

/// Reads a [`Head`]; a document's head hands its items to `early` as they are read.
struct HeadSeed<'e, 'scope, 'env, 'de> {
    /// Containers around the object.
    depth: usize,
    early: Option<&'e mut Early<'scope, 'env, 'de>>,
}

impl<'de> DeserializeSeed<'de> for HeadSeed<'_, '_, '_, 'de> {
    type Value = Head<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Head<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeadSeed<'_, '_, '_, 'de> {
    type Value = Head<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Head<'de>, A::Error> {
        let inner = Valid { depth: self.depth }.deeper::<A::Error>()?;
        let mut head = Head { kind: None, api_version: None, name: None, namespace: None, items: None };
        let (mut kind, mut api_version, mut metadata) = (false, false, false);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Kind => head.kind = once::<_, A::Error>(&mut kind, map.next_value::<Option<String>>()?)?,
                Key::ApiVersion => {
                    head.api_version = once::<_, A::Error>(&mut api_version, map.next_value::<Option<String>>()?)?
                }
                Key::Metadata => {
                    let names = map.next_value_seed(NamesSeed { depth: inner.depth })?;
                    once::<_, A::Error>(&mut metadata, ())?;
                    (head.name, head.namespace) = names;
                }
                Key::Items => {
                    if head.items.is_some() {
                        return Err(de::Error::custom("duplicate `items`"));
                    }
                    head.items = Some(map.next_value_seed(ItemsSeed { early: self.early.as_deref_mut() })?);
                }
                Key::Other => map.next_value_seed(inner)?,
            }
        }
        Ok(head)
    }
}

/// `value` if `seen` was not yet set (and sets it); an error for a field given twice.
fn once<T, E: de::Error>(seen: &mut bool, value: T) -> Result<T, E> {
    if std::mem::replace(seen, true) { Err(E::custom("duplicate field")) } else { Ok(value) }
}

/// The keys a head reads; any other is [`Key::Other`]. Read without allocating.
enum Key {
    Kind,
    ApiVersion,
    Metadata,
    Items,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "kind" => Key::Kind,
            "apiVersion" => Key::ApiVersion,
            "metadata" => Key::Metadata,
            "items" => Key::Items,
            _ => Key::Other,
        })
    }
}

/// `metadata`: its name and namespace, every other value checked.
struct NamesSeed {
    /// Containers around `metadata`.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for NamesSeed {
    type Value = (Option<String>, Option<String>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NamesSeed {
    type Value = (Option<String>, Option<String>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("object metadata")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let inner = Valid { depth: self.depth }.deeper::<A::Error>()?;
        let (mut name, mut namespace) = (None, None);
        let (mut seen_name, mut seen_namespace) = (false, false);
        while let Some(key) = map.next_key::<MetaKey>()? {
            match key {
                MetaKey::Name => name = once::<_, A::Error>(&mut seen_name, map.next_value::<Option<String>>()?)?,
                MetaKey::Namespace => {
                    namespace = once::<_, A::Error>(&mut seen_namespace, map.next_value::<Option<String>>()?)?
                }
                MetaKey::Other => map.next_value_seed(inner)?,
            }
        }
        Ok((name, namespace))
    }
}

/// The keys of `metadata` a head reads.
enum MetaKey {
    Name,
    Namespace,
    Other,
}

impl<'de> de::Deserialize<'de> for MetaKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MetaKey, D::Error> {
        deserializer.deserialize_str(MetaKeyVisitor)
    }
}

struct MetaKeyVisitor;

impl Visitor<'_> for MetaKeyVisitor {
    type Value = MetaKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<MetaKey, E> {
        Ok(match key {
            "name" => MetaKey::Name,
            "namespace" => MetaKey::Namespace,
            _ => MetaKey::Other,
        })
    }
}

/// `items`: null, or a sequence whose elements are kept as raw text (each is checked as an object of its own),
/// and handed to `early` as they are read.
struct ItemsSeed<'e, 'scope, 'env, 'de> {
    early: Option<&'e mut Early<'scope, 'env, 'de>>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_, '_, '_, 'de> {
    type Value = Items<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Items<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_, '_, '_, 'de> {
    type Value = Items<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence of objects or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Items<'de>, E> {
        Ok(Items::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Items<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if let Some(early) = self.early.as_deref_mut() {
                early.item(item.get());
            }
            items.push(item);
        }
        Ok(Items::Seq(items))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Checking without keeping.

/// Reads any JSON value and keeps nothing, failing exactly where building a `Value` fails (it asks the
/// parser for the same things: every string decoded, every number converted), and for nesting deeper than
/// [`MAX_DEPTH`]. `serde_json`'s own skipping (`IgnoredAny`) checks less: it lets through escapes that
/// decode to no character and numbers out of range, which the general path refuses.
#[derive(Clone, Copy)]
struct Valid {
    /// Containers around the value.
    depth: usize,
}

impl Valid {
    /// The seed for the values inside a container at this depth.
    fn deeper<E: de::Error>(self) -> Result<Valid, E> {
        let depth = self.depth.saturating_add(1);
        if depth > MAX_DEPTH { Err(E::custom("nested too deep for the fast path")) } else { Ok(Valid { depth }) }
    }
}

impl<'de> DeserializeSeed<'de> for Valid {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LoadReport, read_general, read_text};
    use super::super::{Read, TextError};
    use super::Documents;

    type Reading = fn(&str, &str, &mut LoadReport) -> Result<Read, TextError>;

    /// What a text reads as (objects, diagnostics, skipped kinds, or the refusal), through `read`.
    fn outcome(text: &str, read: Reading) -> String {
        let mut report = LoadReport::default();
        let result = read("t.json", text, &mut report);
        format!("{result:#?}\n{report:#?}")
    }

    /// Asserts the fast path reads `text` exactly as the general path does; returns whether it took it.
    fn same(text: &str) -> bool {
        assert_eq!(outcome(text, read_text), outcome(text, read_general), "{text}");
        Documents::parse(text).is_some()
    }

    fn list(items: &[&str]) -> String {
        format!(
            r#"{{"apiVersion": "v1", "items": [{}], "kind": "List", "metadata": {{"resourceVersion": ""}}}}"#,
            items.join(",")
        )
    }

    const SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "ns",
        "annotations": {"a": "b"}, "labels": {"app": "web"}}, "spec": {"clusterIP": "10.0.0.1",
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": "http"}]}}"#;
    const SLICE: &str = r#"{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-1",
        "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4", "endpoints": [{"addresses":
        ["10.1.0.1"], "conditions": {"ready": true}}], "ports": [{"port": 8080}]}"#;
    const NODE: &str = r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "odd"}}"#;
    const ENDPOINTS: &str = r#"{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "old"},
        "subsets": [{"addresses": [{"ip": "10.1.0.2"}], "ports": [{"port": 80}]}]}"#;

    #[test]
    fn clean_lists_and_documents_take_the_fast_path_and_read_alike() {
        let many: Vec<String> = (0..600)
            .map(|i| SERVICE.replace("\"web\", \"namespace\"", &format!("\"web-{i}\", \"namespace\"")))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for text in [
            list(&[SERVICE, SLICE, NODE, ENDPOINTS]),
            // Enough items for the threads.
            list(&many),
            // Concatenated documents, with a BOM and a List among them.
            format!("\u{feff}{SERVICE}\n{NODE}\n{}", list(&[SLICE])),
            // Typed Lists: items without kind (and apiVersion) take the List's.
            r#"{"apiVersion": "v1", "kind": "ServiceList", "items": [{"metadata": {"name": "a"}}, {"kind": "Service", "metadata": {"name": "b"}}]}"#.to_owned(),
            // Other kinds are counted; Ingresses are kept.
            list(&[r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "items": [1, {"a": []}]}"#,
                r#"{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"}}"#,
                r#"{"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "k"}}"#]),
            // Duplicates: an identical one, and one that differs.
            list(&[SERVICE, SERVICE, &SERVICE.replace("10.0.0.1", "10.0.0.2")]),
            // Empty Lists.
            list(&[]),
            r#"{"apiVersion": "v1", "kind": "List", "items": null}"#.to_owned(),
        ] {
            assert!(same(&text), "took the general path: {text}");
        }
    }

    #[test]
    fn problems_with_single_objects_are_reported_as_the_general_path_reports_them() {
        for item in [
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"}, "spec": {"ports": [{"port": "80"}]}}"#,
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "ns"}}"#,
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": ""}}"#,
            r#"{"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice", "metadata": {"name": "s"}}"#,
            r#"{"kind": "Service", "metadata": {"name": "s"}}"#,
            r#"{"apiVersion": "v1", "metadata": {"name": "s"}}"#,
            r#"{"apiVersion": "v1", "kind": "", "metadata": {"name": "s"}}"#,
            r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "nested"}}]}"#,
            r#"{"apiVersion": "v1", "kind": "ServiceList", "items": null}"#,
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "typed"}, "spec": {"ports": [{"port": 80}, 7]}}"#,
            r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"a": 1}}}"#,
        ] {
            assert!(same(&list(&[SERVICE, item, NODE])), "took the general path: {item}");
        }
    }

    #[test]
    fn texts_the_fast_path_is_not_sure_of_take_the_general_path() {
        for text in [
            // Not checked by serde_json's skipping, refused by the general path: must never load.
            list(&[r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "x": "\ud800"}"#]),
            list(&[r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "x": 1e400}"#]),
            list(&[r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "x": [1e999]}}"#]),
            list(&[r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "items": ["\udfff"]}"#]),
            r#"{"apiVersion": "v1", "kind": "List", "items": [], "metadata": {"x": "\ud800"}}"#.to_owned(),
            // Nested deeper than the general path allows.
            list(&[&format!(
                r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p"}}, "x": {}1{}}}"#,
                "[".repeat(126),
                "]".repeat(126)
            )]),
            // Items that are not objects, fields given twice, kinds that are not strings.
            list(&[SERVICE, "null", "3"]),
            list(&[r#"{"apiVersion": "v1", "kind": "Service", "kind": "Node", "metadata": {"name": "s"}}"#]),
            list(&[r#"{"apiVersion": "v1", "kind": 7, "metadata": {"name": "s"}}"#]),
            list(&[r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": 7}}"#]),
            // Cut short; without kind; syntax errors; flow-style YAML; not Kubernetes; empty.
            list(&[SERVICE]).trim_end_matches('}').to_owned(),
            r#"{"apiVersion": "v1", "items": []}"#.to_owned(),
            r#"{"apiVersion": "v1", "kind": "List", "items": [,]}"#.to_owned(),
            "{kind: Node, apiVersion: v1, metadata: {name: yaml}}".to_owned(),
            r#"{"major": "1"}"#.to_owned(),
            "[]".to_owned(),
            "null".to_owned(),
            String::new(),
        ] {
            assert!(!same(&text), "took the fast path: {text}");
        }
        // Deep, but within what both accept: read alike.
        let deep = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p"}}, "x": {}1{}}}"#,
            "[".repeat(90),
            "]".repeat(90)
        );
        assert!(same(&list(&[&deep])));
    }

    /// Enough items to start the workers that parse items while the text is still being cut.
    fn services(count: usize, kind: bool) -> Vec<String> {
        (0..count)
            .map(|i| {
                let service = SERVICE.replace("\"web\", \"namespace\"", &format!("\"web-{i}\", \"namespace\""));
                if kind { service } else { service.replace(r#""apiVersion": "v1", "kind": "Service", "#, "") }
            })
            .collect()
    }

    #[test]
    fn items_parsed_before_their_list_is_known_read_alike() {
        let with_kind = services(700, true);
        let without_kind = services(700, false);
        let mixed: Vec<&str> =
            with_kind.iter().zip(&without_kind).flat_map(|(a, b)| [a.as_str(), b.as_str()]).collect();
        // A typed List: items without `kind` take the List's, which comes after them.
        let typed = format!(r#"{{"apiVersion": "v1", "items": [{}], "kind": "ServiceList"}}"#, mixed.join(","));
        assert!(same(&typed));
        // Items of documents that are not Lists are not objects of the text; bad ones make it go the
        // general way, as the general path refuses them.
        let pod = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p"}}, "items": [{}]}}"#,
            with_kind.join(",")
        );
        assert!(same(&format!("{pod}\n{}", list(&[SERVICE]))));
        assert!(!same(&pod.replace(r#""name": "web-500""#, r#""name": "\udfff""#)));
        // A List of many items that is cut short, or has one bad item late in it.
        let long = list(&with_kind.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!same(&long[..long.len() - 40]));
        assert!(!same(&long.replace(r#""name": "web-650""#, r#""name": 7"#)));
    }

    /// Every JSON file of the repository's test data reads alike both ways.
    #[test]
    fn test_data_reads_alike() {
        fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, files);
                } else if path.extension().is_some_and(|e| e == "json") {
                    files.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata"), &mut files);
        assert!(files.len() >= 5, "{files:?}");
        let mut fast = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            fast += usize::from(same(&text));
        }
        assert!(fast >= 5, "only {fast} files took the fast path");
    }
}
