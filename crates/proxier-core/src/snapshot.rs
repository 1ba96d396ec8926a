//! Cluster state as read from kubectl output: Services, EndpointSlices, Nodes (and legacy Endpoints).
//!
//! [`Snapshot::add_text`] takes what `kubectl get svc,endpointslices,nodes -A -o yaml` (or `-o json`) prints,
//! as it is:
//!
//! - The text is JSON or YAML. YAML may hold any number of `---`-separated documents. A text whose first
//!   character is `{` or `[` is read as JSON (one or more concatenated values); if it is not valid JSON but is
//!   valid YAML (flow style), it is read as YAML.
//! - Each document is one object or a List: kind `List`, or a kind ending in `List` (`ServiceList`) that has
//!   `items`. Items of a typed List that lack `kind` (as the API server returns them) take `kind` and
//!   `apiVersion` from the List. Empty documents are ignored.
//! - Services, Nodes and Endpoints (`v1`) and EndpointSlices (`discovery.k8s.io/v1`, and
//!   `discovery.k8s.io/v1beta1` as Kubernetes 1.17–1.24 served them: their `topology` read as `v1`'s
//!   `nodeName` and `zone`) are loaded. Every other
//!   kind is counted in [`LoadReport::skipped_kinds`]. A known kind name from an API group proxier does not
//!   read (a Knative `serving.knative.dev/v1` Service) is another kind and is counted as `Service
//!   (serving.knative.dev/v1)`. A known group with another version (`discovery.k8s.io/v1alpha1`) is an error.
//! - Ingresses (`networking.k8s.io/v1`) are kept in [`Snapshot::ingresses`] for `proxier explain`, and still
//!   counted in [`LoadReport::skipped_kinds`]: no rule comes from them. An Ingress that does not deserialize is
//!   only counted, never an error.
//! - A namespaced object without `metadata.namespace` is placed in `default`, as `kubectl apply` would.
//! - A problem with one object becomes a [`Diagnostic`] and the rest of the text still loads.
//!
//! A text that cannot be read as a whole is refused, and nothing of it is loaded ([`TextError`]): a syntax
//! error anywhere in it (a truncated file, a YAML error, bytes that are not YAML), or a List document
//! without `kind` (kubectl prints `kind: List` after the items, so a cut-off `-o yaml` dump parses but has
//! lost it). Loading part of a broken text would program part of a cluster, and a node that trusted it
//! would drop every Service the text no longer shows: fail closed. Messages give the document's number and
//! the line and column in the whole text.
//!
//! [`Snapshot::add_text`] also says what the text held ([`TextContents`]): objects, nothing at all (an
//! empty file), or documents none of which has `kind` or `apiVersion` (a JSON file of some other tool
//! beside the dumps, as support bundles and must-gather trees have). What to do with the last two is the
//! caller's choice; nothing is loaded from them and no diagnostic is reported.
//!
//! After loading, every list in the [`Snapshot`] is sorted by namespace and name, so the same objects give the
//! same Snapshot whatever order the files were in. An object loaded twice (same kind, namespace and name) keeps
//! the later definition, with a warning naming both sources.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, ObjectRef, Severity};

mod json;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The label naming who manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// The [`MANAGED_BY_LABEL`] value of the slices [`Snapshot::legacy_endpoint_slices`] makes: messages about
/// such a slice name the Endpoints object it came from (which has the Service's name), not the slice.
pub const LEGACY_ENDPOINTS_MANAGER: &str = "proxier.legacy-endpoints";

/// How deep Lists may nest inside Lists (kubectl never nests them at all).
const MAX_LIST_DEPTH: usize = 4;

/// The `kind` used in diagnostics about a whole document (syntax errors, a document that is not an object).
/// The ObjectRef's name is the document's number in the text, counting from 1.
pub const DOCUMENT_KIND: &str = "document";

/// The `kind` used in diagnostics about an object whose `kind` is missing or not a string.
pub const UNKNOWN_KIND: &str = "object";

/// The kinds proxier reads, with the only apiVersion accepted for each.
const KNOWN_KINDS: [(&str, &str); 4] =
    [("Service", "v1"), ("Endpoints", "v1"), ("Node", "v1"), ("EndpointSlice", "discovery.k8s.io/v1")];

/// API groups of the known kinds (`""` is the core group). A known kind name with an apiVersion in any other
/// group is a different kind.
const KNOWN_GROUPS: [&str; 2] = ["", "discovery.k8s.io"];

/// The objects proxier reads, as the API server returns them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Services (`v1`).
    pub services: Vec<Service>,
    /// EndpointSlices (`discovery.k8s.io/v1`).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Legacy v1 Endpoints; used only for Services that have no EndpointSlice.
    pub endpoints: Vec<Endpoints>,
    /// Nodes (`v1`).
    pub nodes: Vec<Node>,
    /// Ingresses (`networking.k8s.io/v1`): read only by `explain`, which shows the routes to each Service.
    pub ingresses: Vec<Ingress>,
    /// Where each object came from (usually a file path), so that messages about it can say so.
    /// Embedders that build a Snapshot themselves may leave it empty.
    pub sources: BTreeMap<ObjectRef, String>,
}

/// What loading found besides the objects: problems, and the kinds it skipped.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Errors (an object or document was not loaded) and warnings (differing duplicates: an identical copy
    /// is one object), in input order.
    pub diagnostics: Vec<Diagnostic>,
    /// Objects of kinds proxier does not read, counted per kind.
    pub skipped_kinds: BTreeMap<String, usize>,
}

impl LoadReport {
    /// One line naming the skipped kinds, sorted by kind:
    /// `skipped 3 objects of other kinds: Ingress (2), Pod (1)`. `None` if nothing was skipped.
    pub fn skipped_note(&self) -> Option<String> {
        let total = self.skipped_kinds.values().fold(0usize, |sum, n| sum.saturating_add(*n));
        if total == 0 {
            return None;
        }
        let kinds: Vec<String> =
            self.skipped_kinds.iter().filter(|(_, n)| **n > 0).map(|(kind, n)| format!("{kind} ({n})")).collect();
        let noun = if total == 1 { "object" } else { "objects" };
        Some(format!("skipped {total} {noun} of other kinds: {}", kinds.join(", ")))
    }

    /// Whether any diagnostic is an error (something in the input was not loaded).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }
}

/// What a text held, when it could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextContents {
    /// This many Kubernetes objects (every kind, including those proxier skips and those reported as
    /// invalid; Lists count their items, not themselves).
    Objects(usize),
    /// No document at all: an empty text, or only blank lines, comments, `---` and nulls.
    Empty,
    /// Documents, none of which has a string `kind` or `apiVersion`: not Kubernetes objects.
    NotKubernetes,
}

/// Why a whole text was refused. Nothing of such a text is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// A YAML or JSON syntax error; `message` has the line and column in the whole text.
    #[error("document {document}: {message}")]
    Syntax {
        /// The document's number in the text, counting from 1.
        document: usize,
        /// The parser's message.
        message: String,
    },
    /// A List document without `kind`.
    #[error("document {document}: {LIST_WITHOUT_KIND}")]
    ListWithoutKind {
        /// The document's number in the text, counting from 1.
        document: usize,
    },
}

const LIST_WITHOUT_KIND: &str = "a List (`apiVersion` and `items`) without `kind`; kubectl prints `kind` after the \
                                 items, so the text was probably cut short";

impl TextError {
    /// The number of the document at fault, counting from 1.
    pub fn document(&self) -> usize {
        match self {
            TextError::Syntax { document, .. } | TextError::ListWithoutKind { document } => *document,
        }
    }

    /// The message without the document number.
    pub fn message(&self) -> String {
        match self {
            TextError::Syntax { message, .. } => message.clone(),
            TextError::ListWithoutKind { .. } => LIST_WITHOUT_KIND.to_owned(),
        }
    }
}

impl Snapshot {
    /// Adds every object found in `text`; `source` names it in messages (usually the file path).
    ///
    /// A text that cannot be read as a whole (see the module documentation) is refused with a
    /// [`TextError`] and nothing of it is added. Otherwise problems with single objects go to `report`,
    /// every other object is loaded, and the result says what the text held.
    pub fn add_text(&mut self, source: &str, text: &str, report: &mut LoadReport) -> Result<TextContents, TextError> {
        let (loaded, objects) = match read_text(source, text, report)? {
            Ok(read) => read,
            Err(nothing) => return Ok(nothing),
        };

        // Duplicates are warned about kind by kind, each kind in document order.
        let sources = &mut self.sources;
        let mut services = Merger::new(&mut self.services);
        loaded.services.into_iter().for_each(|o| services.put(o, source, sources, report));
        let mut endpoint_slices = Merger::new(&mut self.endpoint_slices);
        loaded.endpoint_slices.into_iter().for_each(|o| endpoint_slices.put(o, source, sources, report));
        let mut endpoints = Merger::new(&mut self.endpoints);
        loaded.endpoints.into_iter().for_each(|o| endpoints.put(o, source, sources, report));
        let mut nodes = Merger::new(&mut self.nodes);
        loaded.nodes.into_iter().for_each(|o| nodes.put(o, source, sources, report));
        let mut ingresses = Merger::new(&mut self.ingresses);
        loaded.ingresses.into_iter().for_each(|o| ingresses.put(o, source, sources, report));
        self.sort();
        Ok(TextContents::Objects(objects))
    }

    /// Convenience: a Snapshot from one text.
    ///
    /// A text refused by [`Snapshot::add_text`] gives an empty Snapshot and one error in the report (the
    /// object is [`DOCUMENT_KIND`] and the document's number), so that the report is never silent about it.
    pub fn from_text(source: &str, text: &str) -> (Snapshot, LoadReport) {
        let mut snapshot = Snapshot::default();
        let mut report = LoadReport::default();
        if let Err(error) = snapshot.add_text(source, text, &mut report) {
            report.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                source: Some(source.to_owned()),
                object: ObjectRef::new(DOCUMENT_KIND, "", &error.document().to_string()),
                field: None,
                message: error.message(),
            });
        }
        (snapshot, report)
    }

    /// EndpointSlices converted from legacy v1 Endpoints, only for Services that have no EndpointSlice
    /// (matched by the `kubernetes.io/service-name` label and namespace). Returns the converted slices.
    ///
    /// Each subset becomes one slice per address family, named `<endpoints-name>-legacy-<n>` (n counts from 0
    /// over the Endpoints' slices, IPv4 before IPv6 within a subset) and labelled as managed by
    /// [`LEGACY_ENDPOINTS_MANAGER`]. The family is IPv6 if the address
    /// contains `:`, else IPv4; addresses are not validated here. `addresses` are ready and serving,
    /// `notReadyAddresses` neither; none are terminating. Hostname, nodeName, targetRef and the ports (name,
    /// port, protocol, appProtocol) are carried over. Endpoints are converted whether or not their Service is
    /// in the snapshot.
    pub fn legacy_endpoint_slices(&self) -> Vec<EndpointSlice> {
        // Most clusters have none: then the index of every slice's Service is not worth building.
        if self.endpoints.is_empty() {
            return Vec::new();
        }
        let covered: HashSet<(&str, &str)> = self
            .endpoint_slices
            .iter()
            .filter_map(|slice| {
                let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
                Some((slice.metadata.namespace.as_deref().unwrap_or(""), service.as_str()))
            })
            .collect();
        self.endpoints
            .iter()
            .filter(|e| !covered.contains(&namespace_and_name(&e.metadata)))
            .flat_map(slices_from_endpoints)
            .collect()
    }

    /// The Node called `name`, if the snapshot has it.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(name))
    }

    /// Sorts every list by namespace and name.
    fn sort(&mut self) {
        sort_by_name(&mut self.services);
        sort_by_name(&mut self.endpoint_slices);
        sort_by_name(&mut self.endpoints);
        sort_by_name(&mut self.nodes);
        sort_by_name(&mut self.ingresses);
    }
}

/// What one text held: its objects, each kind in document order, and how many objects there were (every
/// kind, as [`TextContents::Objects`] counts them); or, when there were none, what there was instead.
type Read = Result<(Snapshot, usize), TextContents>;

/// Reads one text. JSON objects take the fast path ([`json::Documents`]) when it is sure of them; every other
/// text, and every object it is not sure of, is read through a `Value` ([`read_general`]).
fn read_text(source: &str, text: &str, report: &mut LoadReport) -> Result<Read, TextError> {
    if let Some(documents) = json::Documents::parse(text) {
        let mut reader = Reader { source, report, loaded: Snapshot::default(), objects: 0 };
        documents.load(&mut reader);
        return Ok(Ok((reader.loaded, reader.objects)));
    }
    read_general(source, text, report)
}

/// [`read_text`] without the fast path: every text through a `Value` of it.
fn read_general(source: &str, text: &str, report: &mut LoadReport) -> Result<Read, TextError> {
    let documents = parse_documents(text)?;
    let mut present = 0usize;
    let mut kubernetes = false;
    for (i, document) in documents.iter().enumerate() {
        let Value::Object(map) = document else {
            present += usize::from(!document.is_null());
            continue;
        };
        present += 1;
        let has = |key: &str| matches!(map.get(key), Some(Value::String(_)));
        kubernetes |= has("kind") || has("apiVersion");
        // kubectl prints `apiVersion` and `items` first and `kind: List` last: a List without `kind`
        // is a dump that was cut short.
        if !has("kind") && map.contains_key("items") && has("apiVersion") {
            return Err(TextError::ListWithoutKind { document: i.saturating_add(1) });
        }
    }
    if present == 0 {
        return Ok(Err(TextContents::Empty));
    }
    if !kubernetes {
        return Ok(Err(TextContents::NotKubernetes));
    }
    let mut reader = Reader { source, report, loaded: Snapshot::default(), objects: 0 };
    for (i, document) in documents.into_iter().enumerate() {
        reader.document(i.saturating_add(1), document);
    }
    Ok(Ok((reader.loaded, reader.objects)))
}

fn namespace_and_name(meta: &ObjectMeta) -> (&str, &str) {
    (meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

fn sort_by_name<T: Metadata<Ty = ObjectMeta>>(items: &mut [T]) {
    items.sort_by(|a, b| namespace_and_name(a.metadata()).cmp(&namespace_and_name(b.metadata())));
}

fn object_ref<T: Resource + Metadata<Ty = ObjectMeta>>(object: &T) -> ObjectRef {
    let (namespace, name) = namespace_and_name(object.metadata());
    ObjectRef::new(T::KIND, namespace, name)
}

/// Adds objects to one of the Snapshot's lists, replacing an object with the same namespace and name.
struct Merger<'a, T> {
    items: &'a mut Vec<T>,
    index: HashMap<ObjectRef, usize>,
}

impl<'a, T: Resource + Metadata<Ty = ObjectMeta> + PartialEq> Merger<'a, T> {
    fn new(items: &'a mut Vec<T>) -> Self {
        let index = items.iter().enumerate().map(|(i, item)| (object_ref(item), i)).collect();
        Merger { items, index }
    }

    fn put(&mut self, object: T, source: &str, sources: &mut BTreeMap<ObjectRef, String>, report: &mut LoadReport) {
        let key = object_ref(&object);
        let previous_source = sources.insert(key.clone(), source.to_owned());
        let Some(&i) = self.index.get(&key) else {
            self.index.insert(key, self.items.len());
            self.items.push(object);
            return;
        };
        let Some(slot) = self.items.get_mut(i) else { return };
        // The same object twice (two dumps of one cluster, say `kubectl get nodes,services` taken before and
        // after a change) is one object: nothing is replaced, so there is nothing to warn about.
        if *slot == object {
            return;
        }
        *slot = object;
        let earlier = match previous_source {
            Some(earlier) if earlier == source => format!("earlier in {earlier}"),
            Some(earlier) => format!("from {earlier}"),
            None => "already in the snapshot".to_owned(),
        };
        report.diagnostics.push(
            Diagnostic::warning(key, format!("duplicate object: this definition replaces the one {earlier}"))
                .from_source(source),
        );
    }
}

fn slices_from_endpoints(endpoints: &Endpoints) -> Vec<EndpointSlice> {
    let (_, name) = namespace_and_name(&endpoints.metadata);
    let mut slices = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Option<Vec<EndpointPort>> = subset.ports.as_ref().map(|ports| {
            ports
                .iter()
                .map(|p| EndpointPort {
                    name: p.name.clone(),
                    port: Some(p.port),
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect()
        });
        let addresses = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| (a, false));
        let all: Vec<(&EndpointAddress, bool)> = addresses.chain(not_ready).collect();
        for family in ["IPv4", "IPv6"] {
            let members: Vec<Endpoint> = all
                .iter()
                .filter(|(address, _)| address_family(&address.ip) == family)
                .map(|(address, ready)| Endpoint {
                    addresses: vec![address.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*ready),
                        terminating: Some(false),
                    }),
                    hostname: address.hostname.clone(),
                    node_name: address.node_name.clone(),
                    target_ref: address.target_ref.clone(),
                    ..Endpoint::default()
                })
                .collect();
            if members.is_empty() {
                continue;
            }
            slices.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-legacy-{}", slices.len())),
                    namespace: endpoints.metadata.namespace.clone(),
                    labels: Some(BTreeMap::from([
                        (SERVICE_NAME_LABEL.to_owned(), name.to_owned()),
                        (MANAGED_BY_LABEL.to_owned(), LEGACY_ENDPOINTS_MANAGER.to_owned()),
                    ])),
                    ..ObjectMeta::default()
                },
                address_type: family.to_owned(),
                endpoints: Some(members),
                ports: ports.clone(),
            });
        }
    }
    slices
}

fn address_family(ip: &str) -> &'static str {
    if ip.contains(':') { "IPv6" } else { "IPv4" }
}

// ---------------------------------------------------------------------------------------------------------
// Text to documents.

/// The documents of a text, or the first syntax error in it.
fn parse_documents(text: &str) -> Result<Vec<Value>, TextError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !matches!(text.trim_start().chars().next(), Some('{' | '[')) {
        return parse_yaml(text);
    }
    let mut documents = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match value {
            Ok(value) => documents.push(value),
            Err(json_error) => {
                // Flow-style YAML also starts with `{`: use YAML if it reads the whole text.
                if let Ok(yaml) = parse_yaml(text) {
                    return Ok(yaml);
                }
                let document = documents.len().saturating_add(1);
                return Err(TextError::Syntax { document, message: json_error.to_string() });
            }
        }
    }
    Ok(documents)
}

fn parse_yaml(text: &str) -> Result<Vec<Value>, TextError> {
    let mut documents = Vec::new();
    // libyaml cannot go on after an error (the iterator would never end): the first one ends the text.
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        match Value::deserialize(document) {
            Ok(value) => documents.push(value),
            Err(error) => {
                let document = documents.len().saturating_add(1);
                return Err(TextError::Syntax { document, message: error.to_string() });
            }
        }
    }
    Ok(documents)
}

// ---------------------------------------------------------------------------------------------------------
// Documents to objects.

/// What the items of a typed List (`ServiceList`) inherit when they lack `kind`.
struct ListContext {
    item_kind: String,
    api_version: Option<String>,
}

struct Reader<'a> {
    source: &'a str,
    report: &'a mut LoadReport,
    /// The objects read from the text, each list in document order.
    loaded: Snapshot,
    /// Objects seen, of every kind (valid or not); Lists count their items.
    objects: usize,
}

impl Reader<'_> {
    fn error(&mut self, object: ObjectRef, field: Option<&str>, message: String) {
        let diagnostic = Diagnostic::error(object, message).from_source(self.source);
        self.report.diagnostics.push(match field {
            Some(field) => diagnostic.at(field),
            None => diagnostic,
        });
    }

    fn skip(&mut self, kind: String) {
        let count = self.report.skipped_kinds.entry(kind).or_insert(0);
        *count = count.saturating_add(1);
    }

    fn document(&mut self, number: usize, document: Value) {
        let here = || ObjectRef::new(DOCUMENT_KIND, "", &number.to_string());
        match document {
            Value::Null => {}
            Value::Object(map) => self.object(map, None, 0),
            other => {
                self.error(here(), None, format!("expected a Kubernetes object or List, found {}", describe(&other)))
            }
        }
    }

    fn object(&mut self, mut map: Map<String, Value>, list: Option<&ListContext>, depth: usize) {
        // Counted here whatever becomes of it; a List takes itself off again (only its items count).
        self.objects = self.objects.saturating_add(1);
        if let Some(list) = list
            && matches!(map.get("kind"), None | Some(Value::Null))
        {
            map.insert("kind".to_owned(), Value::String(list.item_kind.clone()));
            if let (None | Some(Value::Null), Some(api_version)) = (map.get("apiVersion"), &list.api_version) {
                map.insert("apiVersion".to_owned(), Value::String(api_version.clone()));
            }
        }
        let (namespace, name) = metadata_names(&map);
        let kind = match map.get("kind") {
            Some(Value::String(kind)) if !kind.is_empty() => kind.clone(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                let object = ObjectRef::new(UNKNOWN_KIND, &namespace, &name);
                return self.error(object, Some("kind"), "missing `kind`".to_owned());
            }
            Some(other) => {
                let object = ObjectRef::new(UNKNOWN_KIND, &namespace, &name);
                let message = format!("`kind` must be a string, found {}", describe(other));
                return self.error(object, Some("kind"), message);
            }
        };
        let api_version = match map.get("apiVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.clone()),
            Some(other) => {
                let object = ObjectRef::new(&kind, &namespace, &name);
                let message = format!("`apiVersion` must be a string, found {}", describe(other));
                return self.error(object, Some("apiVersion"), message);
            }
        };

        if kind == "List" || (kind.ends_with("List") && map.contains_key("items")) {
            return self.list(kind, api_version, map, depth);
        }
        let Some(&(_, expected)) = KNOWN_KINDS.iter().find(|(known, _)| *known == kind) else {
            if kind == "Ingress" && api_version.as_deref() == Some("networking.k8s.io/v1") && !name.is_empty() {
                self.ingress(map, namespace);
            }
            return self.skip(kind);
        };

        let namespace = if namespace.is_empty() && kind != "Node" { "default".to_owned() } else { namespace };
        let object = ObjectRef::new(&kind, &namespace, &name);
        match api_version.as_deref() {
            Some(v) if v == expected => {}
            Some(crate::snapshot_v1beta1::API_VERSION) if kind == "EndpointSlice" => {
                if let Err((field, message)) = crate::snapshot_v1beta1::to_v1(&mut map) {
                    return self.error(object, Some(&field), message);
                }
            }
            Some(v) if !KNOWN_GROUPS.contains(&api_group(v)) => return self.skip(format!("{kind} ({v})")),
            Some(v) => {
                let message = format!("unsupported apiVersion `{v}` for {kind} (expected `{expected}`)");
                return self.error(object, Some("apiVersion"), message);
            }
            None => {
                let message = format!("missing `apiVersion` (expected `{expected}`)");
                return self.error(object, Some("apiVersion"), message);
            }
        }
        if name.is_empty() {
            return self.error(object, Some("metadata.name"), "missing `metadata.name`".to_owned());
        }

        let value = Value::Object(map);
        let namespace = Some(namespace);
        match kind.as_str() {
            "Service" => {
                if let Some(mut o) = self.typed::<Service>(value, object) {
                    o.metadata.namespace = namespace;
                    self.loaded.services.push(o);
                }
            }
            "EndpointSlice" => {
                if let Some(mut o) = self.typed::<EndpointSlice>(value, object) {
                    o.metadata.namespace = namespace;
                    self.loaded.endpoint_slices.push(o);
                }
            }
            "Endpoints" => {
                if let Some(mut o) = self.typed::<Endpoints>(value, object) {
                    o.metadata.namespace = namespace;
                    self.loaded.endpoints.push(o);
                }
            }
            _ => {
                if let Some(o) = self.typed::<Node>(value, object) {
                    self.loaded.nodes.push(o);
                }
            }
        }
    }

    fn list(&mut self, kind: String, api_version: Option<String>, mut map: Map<String, Value>, depth: usize) {
        self.objects = self.objects.saturating_sub(1);
        let (namespace, name) = metadata_names(&map);
        let object = || ObjectRef::new(&kind, &namespace, &name);
        if depth >= MAX_LIST_DEPTH {
            let message = format!("Lists nested more than {MAX_LIST_DEPTH} deep");
            return self.error(object(), None, message);
        }
        let items = match map.remove("items") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                let message = format!("expected a sequence of objects, found {}", describe(&other));
                return self.error(object(), Some("items"), message);
            }
        };
        let context = match kind.strip_suffix("List") {
            Some(item_kind) if !item_kind.is_empty() => {
                Some(ListContext { item_kind: item_kind.to_owned(), api_version })
            }
            _ => None,
        };
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Value::Object(item) => self.object(item, context.as_ref(), depth.saturating_add(1)),
                Value::Null => {}
                other => {
                    let message = format!("expected an object, found {}", describe(&other));
                    self.error(object(), Some(&format!("items[{i}]")), message);
                }
            }
        }
    }

    /// Keeps an Ingress for `explain`; one that does not deserialize is left out silently (it is counted as
    /// skipped either way, as no rule depends on it).
    fn ingress(&mut self, map: Map<String, Value>, namespace: String) {
        if let Ok(mut ingress) = serde_json::from_value::<Ingress>(Value::Object(map)) {
            ingress.metadata.namespace = Some(if namespace.is_empty() { "default".to_owned() } else { namespace });
            self.loaded.ingresses.push(ingress);
        }
    }

    /// Deserializes a known kind, reporting the failing field's path.
    fn typed<T: DeserializeOwned>(&mut self, value: Value, object: ObjectRef) -> Option<T> {
        match serde_path_to_error::deserialize(value) {
            Ok(typed) => Some(typed),
            Err(error) => {
                let path = error.path().to_string();
                let field = (path != ".").then_some(path);
                self.error(object, field.as_deref(), error.into_inner().to_string());
                None
            }
        }
    }
}

/// `metadata.namespace` and `metadata.name` of a raw object, empty where absent or not strings.
fn metadata_names(map: &Map<String, Value>) -> (String, String) {
    let metadata = map.get("metadata");
    let field = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str).unwrap_or_default().to_owned();
    (field("namespace"), field("name"))
}

/// The API group of an apiVersion: `discovery.k8s.io` for `discovery.k8s.io/v1`, `""` (core) for `v1`.
fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<T: Metadata<Ty = ObjectMeta>>(items: &[T]) -> Vec<String> {
        items
            .iter()
            .map(|i| {
                let (namespace, name) = namespace_and_name(i.metadata());
                if namespace.is_empty() { name.to_owned() } else { format!("{namespace}/{name}") }
            })
            .collect()
    }

    fn messages(report: &LoadReport) -> Vec<String> {
        report.diagnostics.iter().map(ToString::to_string).collect()
    }

    /// Asserts the text loaded without any diagnostic.
    fn load_clean(text: &str) -> Snapshot {
        let (snapshot, report) = Snapshot::from_text("snap.yaml", text);
        assert_eq!(messages(&report), Vec::<String>::new());
        snapshot
    }

    const YAML_LIST: &str = r#"apiVersion: v1
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: default
  spec:
    clusterIP: 10.96.0.10
    ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
    type: ClusterIP
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-abcde
    namespace: default
    labels:
      kubernetes.io/service-name: web
  addressType: IPv4
  endpoints:
  - addresses:
    - 10.244.1.5
    conditions:
      ready: true
    nodeName: node-a
  ports:
  - name: http
    port: 8080
    protocol: TCP
- apiVersion: v1
  kind: Node
  metadata:
    name: node-a
  status:
    addresses:
    - address: 192.168.1.10
      type: InternalIP
kind: List
metadata:
  resourceVersion: ""
"#;

    #[test]
    fn yaml_list_loads_every_kind() {
        let snapshot = load_clean(YAML_LIST);
        assert_eq!(names(&snapshot.services), ["default/web"]);
        assert_eq!(names(&snapshot.endpoint_slices), ["default/web-abcde"]);
        assert_eq!(names(&snapshot.nodes), ["node-a"]);
        let service = &snapshot.services[0];
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.ports.as_ref().unwrap()[0].port, 80);
        let slice = &snapshot.endpoint_slices[0];
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints.as_ref().unwrap()[0].addresses, ["10.244.1.5"]);
        assert_eq!(slice.endpoints.as_ref().unwrap()[0].node_name.as_deref(), Some("node-a"));
        let node = snapshot.node("node-a").unwrap();
        let address = &node.status.as_ref().unwrap().addresses.as_ref().unwrap()[0];
        assert_eq!(address.address, "192.168.1.10");
        assert!(snapshot.node("node-b").is_none());
    }

    #[test]
    fn json_list_loads() {
        let text = r#"{
    "apiVersion": "v1",
    "items": [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "dns-1", "namespace": "kube-system",
                         "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00::5"]}]
        }
    ],
    "kind": "List",
    "metadata": {"resourceVersion": ""}
}
"#;
        let snapshot = load_clean(text);
        assert_eq!(names(&snapshot.services), ["kube-system/dns"]);
        assert_eq!(names(&snapshot.endpoint_slices), ["kube-system/dns-1"]);
        assert_eq!(snapshot.endpoint_slices[0].address_type, "IPv6");
        let port = &snapshot.services[0].spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("UDP"));
    }

    #[test]
    fn concatenated_json_values_load() {
        let text = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"b"}}
{"apiVersion":"v1","kind":"Node","metadata":{"name":"a"}}"#;
        assert_eq!(names(&load_clean(text).nodes), ["a", "b"]);
    }

    #[test]
    fn flow_yaml_starting_with_a_brace_loads() {
        let text = "{apiVersion: v1, kind: Node, metadata: {name: n1}}\n";
        assert_eq!(names(&load_clean(text).nodes), ["n1"]);
    }

    #[test]
    fn multi_document_yaml_loads_and_skips_empty_documents() {
        let text = "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n2\n---\n# nothing here\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: ns\n---\n...\n---\n\
                    apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n";
        let snapshot = load_clean(text);
        assert_eq!(names(&snapshot.nodes), ["n1", "n2"]);
        assert_eq!(names(&snapshot.services), ["ns/s"]);
    }

    #[test]
    fn single_object_loads_and_gets_the_default_namespace() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
        let snapshot = load_clean(text);
        assert_eq!(names(&snapshot.services), ["default/web"]);
        assert_eq!(snapshot.services[0].metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn empty_texts_load_nothing() {
        for text in ["", "\n\n", "# only a comment\n", "---\n", "null\n", "\u{feff}"] {
            let snapshot = load_clean(text);
            assert!(snapshot.services.is_empty() && snapshot.nodes.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn typed_list_items_inherit_kind_and_api_version() {
        // As `kubectl get --raw /api/v1/services` returns it: the items have no kind.
        let text = r#"{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[
            {"metadata":{"name":"b","namespace":"x"},"spec":{"ports":[{"port":1}]}},
            {"metadata":{"name":"a","namespace":"x"},"spec":{"ports":[{"port":2}]}}]}"#;
        let snapshot = load_clean(text);
        assert_eq!(names(&snapshot.services), ["x/a", "x/b"]);

        let text = "kind: EndpointSliceList\napiVersion: discovery.k8s.io/v1\nitems:\n\
                    - metadata: {name: s1, namespace: x}\n  addressType: IPv4\n";
        assert_eq!(names(&load_clean(text).endpoint_slices), ["x/s1"]);

        let text = "kind: NodeList\napiVersion: v1\nitems: []\n";
        assert!(load_clean(text).nodes.is_empty());
    }

    #[test]
    fn other_kinds_are_skipped_and_counted() {
        let text = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: d}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress, metadata: {name: i1, namespace: d}}
- {apiVersion: networking.k8s.io/v1, kind: Ingress, metadata: {name: i2, namespace: d}}
- {apiVersion: v1, kind: Node, metadata: {name: n}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: k, namespace: d}
"#;
        let (snapshot, report) = Snapshot::from_text("all.yaml", text);
        assert_eq!(messages(&report), Vec::<String>::new());
        assert_eq!(names(&snapshot.nodes), ["n"]);
        assert!(snapshot.services.is_empty());
        assert_eq!(
            report.skipped_note().as_deref(),
            Some("skipped 4 objects of other kinds: Ingress (2), Pod (1), Service (serving.knative.dev/v1) (1)")
        );
        let (_, report) = Snapshot::from_text("one.yaml", "{apiVersion: v1, kind: Pod}");
        assert_eq!(report.skipped_note().as_deref(), Some("skipped 1 object of other kinds: Pod (1)"));
        assert_eq!(LoadReport::default().skipped_note(), None);
    }

    #[test]
    fn a_malformed_object_is_reported_and_the_others_load() {
        let text = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: good, namespace: default}
  spec: {ports: [{port: 80}]}
- apiVersion: v1
  kind: Service
  metadata: {name: bad, namespace: prod}
  spec:
    ports:
    - port: 80
    - port: eighty
- apiVersion: v1
  kind: Node
  metadata: {name: n1}
"#;
        let (snapshot, report) = Snapshot::from_text("cluster.yaml", text);
        assert_eq!(names(&snapshot.services), ["default/good"]);
        assert_eq!(names(&snapshot.nodes), ["n1"]);
        assert_eq!(report.diagnostics.len(), 1);
        let d = &report.diagnostics[0];
        assert_eq!(d.severity, Severity::Error);
        assert_eq!(d.source.as_deref(), Some("cluster.yaml"));
        assert_eq!(d.object, ObjectRef::new("Service", "prod", "bad"));
        assert_eq!(d.field.as_deref(), Some("spec.ports[1].port"));
        assert_eq!(d.message, r#"invalid type: string "eighty", expected i32"#);
        assert_eq!(
            d.to_string(),
            r#"error: cluster.yaml: Service prod/bad: spec.ports[1].port: invalid type: string "eighty", expected i32"#
        );
        assert!(report.has_errors());
    }

    #[test]
    fn v1beta1_endpoint_slices_are_read_as_v1_and_bad_ones_refused() {
        let text = r#"apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1beta1
  kind: EndpointSlice
  metadata: {name: web-1, namespace: a, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints:
  - addresses: [10.244.1.5]
    conditions: {ready: true}
    topology: {kubernetes.io/hostname: node-a, topology.kubernetes.io/zone: zone-1}
- apiVersion: discovery.k8s.io/v1beta1
  kind: EndpointSlice
  metadata: {name: bad-1, namespace: a}
  addressType: IPv4
  endpoints: [{addresses: [10.244.1.6], topology: node-a}]
- apiVersion: discovery.k8s.io/v1beta1
  kind: EndpointSlice
  metadata: {name: bad-2, namespace: a}
  addressType: IPv4
  endpoints: [{addresses: 10.244.1.7}]
"#;
        let (snapshot, report) = Snapshot::from_text("f.yaml", text);
        assert_eq!(names(&snapshot.endpoint_slices), ["a/web-1"]);
        let endpoint = &snapshot.endpoint_slices[0].endpoints.as_deref().unwrap_or_default()[0];
        assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
        assert_eq!(endpoint.zone.as_deref(), Some("zone-1"));
        assert_eq!(endpoint.conditions.as_ref().and_then(|c| c.ready), Some(true));
        let messages = messages(&report);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(
            messages[0],
            "error: f.yaml: EndpointSlice a/bad-1: endpoints[0].topology: expected a mapping of strings"
        );
        assert!(
            messages[1].starts_with("error: f.yaml: EndpointSlice a/bad-2: endpoints[0].addresses: "),
            "{messages:?}"
        );
    }

    #[test]
    fn objects_without_kind_api_version_or_name_are_reported() {
        let text = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, metadata: {name: nokind, namespace: a}}
- {apiVersion: discovery.k8s.io/v1alpha1, kind: EndpointSlice, metadata: {name: old, namespace: a}}
- {apiVersion: v1, kind: EndpointSlice, metadata: {name: core, namespace: a}}
- {kind: Service, metadata: {name: noversion, namespace: a}}
- {apiVersion: v1, kind: Service, metadata: {namespace: a}}
- {apiVersion: v1, kind: Node, metadata: {}}
- {apiVersion: v1, kind: 7}
- 42
- {apiVersion: v1, kind: Node, metadata: {name: fine}}
"#;
        let (snapshot, report) = Snapshot::from_text("f.yaml", text);
        assert_eq!(names(&snapshot.nodes), ["fine"]);
        assert_eq!(
            messages(&report),
            [
                "error: f.yaml: object a/nokind: kind: missing `kind`",
                "error: f.yaml: EndpointSlice a/old: apiVersion: unsupported apiVersion `discovery.k8s.io/v1alpha1` \
                 for EndpointSlice (expected `discovery.k8s.io/v1`)",
                "error: f.yaml: EndpointSlice a/core: apiVersion: unsupported apiVersion `v1` for EndpointSlice \
                 (expected `discovery.k8s.io/v1`)",
                "error: f.yaml: Service a/noversion: apiVersion: missing `apiVersion` (expected `v1`)",
                "error: f.yaml: Service a/<unnamed>: metadata.name: missing `metadata.name`",
                "error: f.yaml: Node <unnamed>: metadata.name: missing `metadata.name`",
                "error: f.yaml: object <unnamed>: kind: `kind` must be a string, found a number",
                "error: f.yaml: List <unnamed>: items[7]: expected an object, found a number",
            ]
        );
    }

    #[test]
    fn a_document_that_is_not_an_object_is_reported_among_objects() {
        let (_, report) = Snapshot::from_text("f.yaml", "- a\n- b\n---\njust text\n---\n{apiVersion: v1, kind: Pod}\n");
        assert_eq!(
            messages(&report),
            [
                "error: f.yaml: document 1: expected a Kubernetes object or List, found a sequence",
                "error: f.yaml: document 2: expected a Kubernetes object or List, found a string",
            ]
        );
    }

    #[test]
    fn texts_without_kubernetes_objects_are_told_apart_and_load_nothing() {
        let contents = |text: &str| {
            let mut snapshot = Snapshot::default();
            let mut report = LoadReport::default();
            let contents = snapshot.add_text("f", text, &mut report).unwrap();
            assert!(report.diagnostics.is_empty() && snapshot.services.is_empty());
            contents
        };
        for text in ["", "\n\n", "# only a comment\n", "---\n", "null\n", "\u{feff}", "---\n...\n---\n"] {
            assert_eq!(contents(text), TextContents::Empty, "{text:?}");
        }
        // A support bundle's version file, a list of permissions, a map of errors, a scalar.
        for text in [
            "{\"info\": {\"major\": \"1\"}, \"string\": \"v1.33.4\"}",
            "[{\"verbs\": [\"*\"]}]",
            "{\"default\": \"the server could not find the requested resource\"}",
            "just text\n",
        ] {
            assert_eq!(contents(text), TextContents::NotKubernetes, "{text:?}");
        }
        let text = "{apiVersion: v1, kind: List, items: [{apiVersion: v1, kind: Pod}, {apiVersion: v1, kind: Node, \
                    metadata: {name: n}}]}";
        assert_eq!(contents(text), TextContents::Objects(2));
    }

    /// Refuses `text` (nothing is loaded) and returns the error.
    fn refused(text: &str) -> TextError {
        let mut snapshot = Snapshot::default();
        let mut report = LoadReport::default();
        let error = snapshot.add_text("s", text, &mut report).unwrap_err();
        assert!(report.diagnostics.is_empty() && snapshot.nodes.is_empty() && snapshot.services.is_empty());
        error
    }

    #[test]
    fn a_yaml_syntax_error_refuses_the_whole_text() {
        let text = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n\
                    ---\napiVersion: v1\nkind: Node\nmetadata:\n  name: [broken\n\
                    ---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n3\n";
        // Line 10 of the whole text is the `---` after the broken flow sequence that starts on line 9.
        assert_eq!(
            refused(text),
            TextError::Syntax {
                document: 2,
                message: "did not find expected ',' or ']' at line 10 column 1, while parsing a flow sequence at \
                          line 9 column 9"
                    .to_owned()
            }
        );
        let (snapshot, report) = Snapshot::from_text("s.yaml", text);
        assert!(snapshot.nodes.is_empty());
        assert_eq!(
            messages(&report),
            ["error: s.yaml: document 2: did not find expected ',' or ']' at line 10 column 1, while parsing a flow \
              sequence at line 9 column 9"]
        );
    }

    #[test]
    fn a_truncated_dump_is_refused() {
        let dump = "apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: a\n\
                    - apiVersion: v1\n  kind: Node\n  metadata:\n    name: b\nkind: List\nmetadata:\n  resourceVersion: \"\"\n";
        assert_eq!(names(&load_clean(dump).nodes), ["a", "b"]);
        // Cut inside a quoted string: a syntax error at the cut.
        let error = refused(&dump[..dump.find("\"\"").unwrap() + 1]);
        assert!(matches!(&error, TextError::Syntax { document: 1, message } if message.contains("line 13")), "{error}");
        // Cut at the end of a line: valid YAML, but the List has lost its `kind`.
        let cut = &dump[..dump.find("kind: List").unwrap()];
        assert_eq!(refused(cut), TextError::ListWithoutKind { document: 1 });
        assert_eq!(
            refused(cut).to_string(),
            "document 1: a List (`apiVersion` and `items`) without `kind`; kubectl prints `kind` after the items, \
             so the text was probably cut short"
        );
        // JSON cut anywhere is a syntax error.
        let json = "{\"apiVersion\": \"v1\", \"items\": [{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"a\"}}";
        assert_eq!(
            refused(json),
            TextError::Syntax { document: 1, message: "EOF while parsing a list at line 1 column 94".to_owned() }
        );
    }

    #[test]
    fn directives_stay_with_their_document() {
        let text = "%YAML 1.2\n---\napiVersion: v1\nkind: Node\nmetadata: {name: a}\n...\n\
                    %YAML 1.2\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\n";
        assert_eq!(names(&load_clean(text).nodes), ["a", "b"]);
    }

    #[test]
    fn a_json_syntax_error_refuses_earlier_values_too() {
        let text = "{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"n1\"}}\n{\"kind\": \"Node\",,}\n";
        assert_eq!(
            refused(text),
            TextError::Syntax { document: 2, message: "key must be a string at line 2 column 17".to_owned() }
        );
    }

    #[test]
    fn legacy_endpoints_are_converted_only_for_services_without_slices() {
        let text = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Endpoints
  metadata: {name: web, namespace: default}
  subsets:
  - addresses:
    - ip: 10.0.0.1
      nodeName: node-a
      hostname: web-0
      targetRef: {kind: Pod, name: web-0, namespace: default}
    - ip: fd00::1
    notReadyAddresses:
    - ip: 10.0.0.2
    ports:
    - {name: http, port: 8080, protocol: TCP, appProtocol: http}
- apiVersion: v1
  kind: Endpoints
  metadata: {name: api, namespace: default}
  subsets:
  - addresses: [{ip: 10.0.0.9}]
    ports: [{port: 443}]
- apiVersion: v1
  kind: Endpoints
  metadata: {name: web, namespace: other}
  subsets:
  - addresses: [{ip: 10.0.1.1}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: api-xyz
    namespace: default
    labels: {kubernetes.io/service-name: api}
  addressType: IPv4
"#;
        let snapshot = load_clean(text);
        let slices = snapshot.legacy_endpoint_slices();
        assert_eq!(names(&slices), ["default/web-legacy-0", "default/web-legacy-1", "other/web-legacy-0"]);

        let expected_v4 = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-legacy-0",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "web",
                    "endpointslice.kubernetes.io/managed-by": "proxier.legacy-endpoints"
                }
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": ["10.0.0.1"],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "hostname": "web-0",
                    "nodeName": "node-a",
                    "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "default"}
                },
                {
                    "addresses": ["10.0.0.2"],
                    "conditions": {"ready": false, "serving": false, "terminating": false}
                }
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
        });
        assert_eq!(serde_json::to_value(&slices[0]).unwrap(), expected_v4);
        assert_eq!(slices[1].address_type, "IPv6");
        assert_eq!(slices[1].endpoints.as_ref().unwrap()[0].addresses, ["fd00::1"]);
        assert_eq!(slices[2].ports, None);
    }

    #[test]
    fn duplicates_keep_the_later_object_and_warn() {
        let first = "{apiVersion: v1, kind: Service, metadata: {name: web, namespace: d}, spec: {clusterIP: 10.0.0.1}}";
        let second =
            "{apiVersion: v1, kind: Service, metadata: {name: web, namespace: d}, spec: {clusterIP: 10.0.0.2}}";
        let mut snapshot = Snapshot::default();
        let mut report = LoadReport::default();
        snapshot.add_text("a.yaml", first, &mut report).unwrap();
        snapshot.add_text("b.yaml", second, &mut report).unwrap();
        assert_eq!(snapshot.services.len(), 1);
        assert_eq!(snapshot.services[0].spec.as_ref().unwrap().cluster_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(
            messages(&report),
            ["warning: b.yaml: Service d/web: duplicate object: this definition replaces the one from a.yaml"]
        );
        assert!(!report.has_errors());

        let (snapshot, report) = Snapshot::from_text("c.yaml", &format!("{first}\n---\n{second}\n"));
        assert_eq!(snapshot.services[0].spec.as_ref().unwrap().cluster_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(
            messages(&report),
            ["warning: c.yaml: Service d/web: duplicate object: this definition replaces the one earlier in c.yaml"]
        );

        // An identical copy (the same object in two dumps of one cluster) is one object, silently.
        let mut report = LoadReport::default();
        let mut snapshot = Snapshot::default();
        snapshot.add_text("a.yaml", first, &mut report).unwrap();
        snapshot.add_text("e.yaml", first, &mut report).unwrap();
        assert_eq!(snapshot.services.len(), 1);
        assert!(report.diagnostics.is_empty(), "{:?}", messages(&report));

        // A Node and a Service of the same name are not duplicates.
        let (snapshot, report) = Snapshot::from_text(
            "d.yaml",
            "{apiVersion: v1, kind: Node, metadata: {name: x}}\n---\n\
             {apiVersion: v1, kind: Service, metadata: {name: x, namespace: default}}\n",
        );
        assert_eq!((snapshot.nodes.len(), snapshot.services.len()), (1, 1));
        assert!(report.diagnostics.is_empty());
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let objects = [
            "{apiVersion: v1, kind: Service, metadata: {name: b, namespace: y}}",
            "{apiVersion: v1, kind: Service, metadata: {name: a, namespace: y}}",
            "{apiVersion: v1, kind: Service, metadata: {name: z, namespace: x}}",
            "{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s2, namespace: x}, addressType: IPv4}",
            "{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s1, namespace: x}, addressType: IPv4}",
            "{apiVersion: v1, kind: Endpoints, metadata: {name: e2, namespace: a}}",
            "{apiVersion: v1, kind: Endpoints, metadata: {name: e1, namespace: b}}",
            "{apiVersion: v1, kind: Node, metadata: {name: n2}}",
            "{apiVersion: v1, kind: Node, metadata: {name: n1}}",
        ];
        let forward = load_clean(&objects.join("\n---\n"));
        let mut reversed = Snapshot::default();
        let mut report = LoadReport::default();
        for (i, object) in objects.iter().rev().enumerate() {
            reversed.add_text(&format!("{i}.yaml"), object, &mut report).unwrap();
        }
        assert!(report.diagnostics.is_empty());
        assert_eq!(names(&forward.services), ["x/z", "y/a", "y/b"]);
        assert_eq!(names(&forward.endpoint_slices), ["x/s1", "x/s2"]);
        assert_eq!(names(&forward.endpoints), ["a/e2", "b/e1"]);
        assert_eq!(names(&forward.nodes), ["n1", "n2"]);
        assert_eq!(forward.services, reversed.services);
        assert_eq!(forward.endpoint_slices, reversed.endpoint_slices);
        assert_eq!(forward.endpoints, reversed.endpoints);
        assert_eq!(forward.nodes, reversed.nodes);
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let deep_json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_yaml = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_list = format!(
            "{}{{apiVersion: v1, kind: Node, metadata: {{name: n}}}}{}",
            "{kind: List, items: [".repeat(10),
            "]}".repeat(10)
        );
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
                      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\nkind: Node\n";
        let inputs = [
            deep_json.as_str(),
            deep_yaml.as_str(),
            deep_list.as_str(),
            laughs,
            "\0\u{1}",
            "{",
            "[",
            "*unknown",
            "!!binary aGVsbG8=",
            "? [a]\n: b\n",
            "{1: 2}",
            "--- |\n  ---\n",
            "kind: List\nitems: {a: 1}\n",
            "kind: Service\napiVersion: v1\nmetadata: 5\n",
            "kind: Service\napiVersion: v1\nmetadata: {name: x}\nspec: {ports: [{port: 1e400}]}\n",
            "\r\n---\r\n\r\n",
            "---\u{e9}\n---\n",
        ];
        for input in inputs {
            let mut snapshot = Snapshot::default();
            let mut report = LoadReport::default();
            // Each is refused, reported, or said to hold nothing of Kubernetes: never loaded or panicked on.
            match snapshot.add_text("x", input, &mut report) {
                Err(_) => assert!(report.diagnostics.is_empty(), "{input:.40?}"),
                Ok(TextContents::Objects(_)) => assert!(report.has_errors(), "{input:.40?}"),
                Ok(TextContents::Empty | TextContents::NotKubernetes) => {
                    assert!(report.diagnostics.is_empty(), "{input:.40?}")
                }
            }
            assert!(snapshot.nodes.is_empty() && snapshot.services.is_empty(), "{input:.40?}");
        }
        let (_, report) = Snapshot::from_text("x", &deep_list);
        assert_eq!(messages(&report), ["error: x: List <unnamed>: Lists nested more than 4 deep"]);
        let (_, report) = Snapshot::from_text("x", &deep_json);
        assert_eq!(report.diagnostics.len(), 1);
        assert_eq!(report.diagnostics[0].object.kind, DOCUMENT_KIND);
    }
    // The project's kubectl fixtures (testdata/README.md), compiled in: real `-o yaml` / `-o json` output.
    const SINGLE_STACK: &str = include_str!("../../../testdata/clusters/single-stack.yaml");
    const DUAL_STACK: &str = include_str!("../../../testdata/clusters/dual-stack.json");
    const MALFORMED: &str = include_str!("../../../testdata/clusters/malformed.yaml");

    #[test]
    fn kubectl_fixtures_load_as_they_are() {
        for (source, text) in [("single-stack.yaml", SINGLE_STACK), ("dual-stack.json", DUAL_STACK)] {
            let (snapshot, report) = Snapshot::from_text(source, text);
            assert_eq!(messages(&report), Vec::<String>::new(), "{source}");
            assert_eq!(report.skipped_note(), None, "{source}");
            assert!(names(&snapshot.services).contains(&"default/kubernetes".to_owned()), "{source}");
            assert!(names(&snapshot.services).contains(&"kube-system/kube-dns".to_owned()), "{source}");
            assert_eq!(names(&snapshot.nodes), ["node-a", "node-b"], "{source}");
            assert!(snapshot.legacy_endpoint_slices().is_empty(), "{source}");
        }
    }

    #[test]
    fn malformed_fixture_reports_each_broken_object_and_loads_the_rest() {
        let (snapshot, report) = Snapshot::from_text("malformed.yaml", MALFORMED);
        assert_eq!(
            messages(&report),
            [
                r#"error: malformed.yaml: Service bad/ports-is-a-string: spec.ports: invalid type: string "eighty", expected a sequence"#,
                "error: malformed.yaml: Service bad/<unnamed>: metadata.name: missing `metadata.name`",
            ]
        );
        assert_eq!(report.skipped_note().as_deref(), Some("skipped 1 object of other kinds: Ingress (1)"));
        let services = names(&snapshot.services);
        assert!(services.contains(&"good/web".to_owned()) && services.contains(&"good/legacy".to_owned()));
        assert_eq!(names(&snapshot.nodes), ["node-a"]);
        // Only `good/legacy` has no slice; the stale Endpoints of `good/web` is ignored.
        assert_eq!(names(&snapshot.legacy_endpoint_slices()), ["good/legacy-legacy-0"]);
    }
}
