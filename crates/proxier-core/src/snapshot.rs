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
//! - Services, Nodes and Endpoints (`v1`) and EndpointSlices (`discovery.k8s.io/v1`) are loaded. Every other
//!   kind is counted in [`LoadReport::skipped_kinds`]. A known kind name from an API group proxier does not
//!   read (a Knative `serving.knative.dev/v1` Service) is another kind and is counted as `Service
//!   (serving.knative.dev/v1)`. A known group with the wrong version (`discovery.k8s.io/v1beta1`) is an error.
//! - Ingresses (`networking.k8s.io/v1`) are kept in [`Snapshot::ingresses`] for `proxier explain`, and still
//!   counted in [`LoadReport::skipped_kinds`]: no rule comes from them. An Ingress that does not deserialize is
//!   only counted, never an error.
//! - A namespaced object without `metadata.namespace` is placed in `default`, as `kubectl apply` would.
//! - Every problem becomes a [`Diagnostic`] and the rest of the text still loads.
//!
//! Syntax errors: the YAML parser (libyaml) cannot continue after a syntax error. So the text is first cut
//! before each `---` line that starts a new document (directive lines such as `%YAML 1.2` just before it go
//! with it), and each piece is parsed on its own: a syntax error costs only the document it is in (and any
//! documents after it in the same piece, which only `...` end markers can produce). Line numbers in the
//! messages are those of the whole text. In a JSON text, the values before the error load and the rest of the
//! text is lost. After [`MAX_SYNTAX_ERRORS`] syntax errors the rest of a text is not read.
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

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Syntax errors reported for one text before the rest of it is given up.
pub const MAX_SYNTAX_ERRORS: usize = 20;

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
    /// Errors (an object or document was not loaded) and warnings (duplicates), in input order.
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

impl Snapshot {
    /// Adds every object found in `text`; `source` names it in messages (usually the file path).
    ///
    /// Never fails: problems go to `report`, and everything else in the text is loaded.
    pub fn add_text(&mut self, source: &str, text: &str, report: &mut LoadReport) {
        let mut reader = Reader { source, report: &mut *report, loaded: Snapshot::default() };
        for (i, document) in parse_documents(text).into_iter().enumerate() {
            reader.document(i.saturating_add(1), document);
        }
        let loaded = reader.loaded;

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
    }

    /// Convenience: a Snapshot from one text.
    pub fn from_text(source: &str, text: &str) -> (Snapshot, LoadReport) {
        let mut snapshot = Snapshot::default();
        let mut report = LoadReport::default();
        snapshot.add_text(source, text, &mut report);
        (snapshot, report)
    }

    /// EndpointSlices converted from legacy v1 Endpoints, only for Services that have no EndpointSlice
    /// (matched by the `kubernetes.io/service-name` label and namespace). Returns the converted slices.
    ///
    /// Each subset becomes one slice per address family, named `<endpoints-name>-legacy-<n>` (n counts from 0
    /// over the Endpoints' slices, IPv4 before IPv6 within a subset). The family is IPv6 if the address
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

impl<'a, T: Resource + Metadata<Ty = ObjectMeta>> Merger<'a, T> {
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
        if let Some(slot) = self.items.get_mut(i) {
            *slot = object;
        }
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
                    labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_owned(), name.to_owned())])),
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

/// One document of a text: its value, or the syntax error that stopped it.
type Document = Result<Value, String>;

fn parse_documents(text: &str) -> Vec<Document> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !matches!(text.trim_start().chars().next(), Some('{' | '[')) {
        return parse_yaml(text);
    }
    let mut documents = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match value {
            Ok(value) => documents.push(Ok(value)),
            Err(json_error) => {
                // Flow-style YAML also starts with `{`: use YAML if it reads the whole text.
                let yaml = parse_yaml(text);
                if yaml.iter().all(Result::is_ok) {
                    return yaml;
                }
                documents.push(Err(json_error.to_string()));
                break;
            }
        }
    }
    documents
}

fn parse_yaml(text: &str) -> Vec<Document> {
    let mut documents = Vec::new();
    let mut errors = 0usize;
    for (first_line, piece) in yaml_pieces(text) {
        if errors >= MAX_SYNTAX_ERRORS {
            documents.push(Err(format!(
                "too many syntax errors; the text from line {} on was not read",
                first_line.saturating_add(1)
            )));
            break;
        }
        // libyaml keeps failing after an error (the iterator would never end): stop the piece at the first one.
        for document in serde_yaml_ng::Deserializer::from_str(piece) {
            match Value::deserialize(document) {
                Ok(value) => documents.push(Ok(value)),
                Err(error) => {
                    errors += 1;
                    documents.push(Err(yaml_error_message(first_line, piece, &error)));
                    break;
                }
            }
        }
    }
    documents
}

/// The message of a YAML error in a piece starting at line `first_line` (0-based) of the text, with line
/// numbers of the whole text: the piece is parsed again after as many empty lines. (Only done on errors, and at
/// most [`MAX_SYNTAX_ERRORS`] times per text.)
fn yaml_error_message(first_line: usize, piece: &str, error: &serde_yaml_ng::Error) -> String {
    if first_line == 0 {
        return error.to_string();
    }
    let mut padded = "\n".repeat(first_line);
    padded.push_str(piece);
    for document in serde_yaml_ng::Deserializer::from_str(&padded) {
        if let Err(error) = Value::deserialize(document) {
            return error.to_string();
        }
    }
    format!("{error} (in the document starting at line {})", first_line.saturating_add(1))
}

/// Cuts a YAML text before every `---` line that starts a new document, so that a syntax error in one document
/// does not stop the others. Returns each piece with the 0-based number of its first line.
///
/// A `---` line only cuts if the piece before it has content (not just blank lines, comments and directives),
/// and a run of blank, comment and directive lines just before it moves with it if the run has a directive.
/// Per the YAML spec a `---` at the start of a line cannot be inside a document's content, so cutting there
/// does not change what a valid text means.
fn yaml_pieces(text: &str) -> Vec<(usize, &str)> {
    let mut pieces = Vec::new();
    let mut piece_start = (0usize, 0usize); // (byte offset, line number)
    let mut has_content = false;
    // Start of the run of blank/comment/directive lines after the last content line, and whether it has a
    // directive.
    let mut run_start: Option<(usize, usize)> = None;
    let mut run_has_directive = false;
    let mut offset = 0usize;
    for (line_number, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let here = (offset, line_number);
        offset += line.len();
        if is_document_start(trimmed) {
            if has_content {
                let cut = match run_start {
                    Some(run) if run_has_directive => run,
                    _ => here,
                };
                if let Some(piece) = text.get(piece_start.0..cut.0) {
                    pieces.push((piece_start.1, piece));
                }
                piece_start = cut;
            }
            has_content = true;
            run_start = None;
            run_has_directive = false;
        } else if trimmed.starts_with('%') || trimmed.trim().is_empty() || trimmed.trim_start().starts_with('#') {
            run_start.get_or_insert(here);
            run_has_directive |= trimmed.starts_with('%');
        } else {
            has_content = true;
            run_start = None;
            run_has_directive = false;
        }
    }
    if let Some(piece) = text.get(piece_start.0..) {
        pieces.push((piece_start.1, piece));
    }
    pieces
}

fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
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

    fn document(&mut self, number: usize, document: Document) {
        let here = || ObjectRef::new(DOCUMENT_KIND, "", &number.to_string());
        match document {
            Err(message) => self.error(here(), None, message),
            Ok(Value::Null) => {}
            Ok(Value::Object(map)) => self.object(map, None, 0),
            Ok(other) => {
                self.error(here(), None, format!("expected a Kubernetes object or List, found {}", describe(&other)))
            }
        }
    }

    fn object(&mut self, mut map: Map<String, Value>, list: Option<&ListContext>, depth: usize) {
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
    fn objects_without_kind_api_version_or_name_are_reported() {
        let text = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, metadata: {name: nokind, namespace: a}}
- {apiVersion: discovery.k8s.io/v1beta1, kind: EndpointSlice, metadata: {name: old, namespace: a}}
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
                "error: f.yaml: EndpointSlice a/old: apiVersion: unsupported apiVersion `discovery.k8s.io/v1beta1` \
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
    fn a_document_that_is_not_an_object_is_reported() {
        let (_, report) = Snapshot::from_text("f.yaml", "- a\n- b\n---\njust text\n");
        assert_eq!(
            messages(&report),
            [
                "error: f.yaml: document 1: expected a Kubernetes object or List, found a sequence",
                "error: f.yaml: document 2: expected a Kubernetes object or List, found a string",
            ]
        );
    }

    #[test]
    fn a_yaml_syntax_error_costs_only_its_document() {
        let text = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n\
                    ---\napiVersion: v1\nkind: Node\nmetadata:\n  name: [broken\n\
                    ---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n3\n";
        let (snapshot, report) = Snapshot::from_text("s.yaml", text);
        assert_eq!(names(&snapshot.nodes), ["n1", "n3"]);
        assert_eq!(report.diagnostics.len(), 1);
        let d = &report.diagnostics[0];
        assert_eq!(d.object, ObjectRef::new("document", "", "2"));
        assert_eq!(d.field, None);
        // Line 10 of the whole text is the `---` after the broken flow sequence that starts on line 9.
        assert_eq!(
            d.message,
            "did not find expected ',' or ']' at line 10 column 1, while parsing a flow sequence at line 9 column 9"
        );
    }

    #[test]
    fn yaml_syntax_error_in_the_first_document_keeps_its_line() {
        let text = "a: b: c\n---\n{apiVersion: v1, kind: Node, metadata: {name: n}}\n";
        let (snapshot, report) = Snapshot::from_text("s.yaml", text);
        assert_eq!(names(&snapshot.nodes), ["n"]);
        assert_eq!(
            messages(&report),
            ["error: s.yaml: document 1: mapping values are not allowed in this context at line 1 column 5"]
        );
    }

    #[test]
    fn directives_stay_with_their_document() {
        let text = "%YAML 1.2\n---\napiVersion: v1\nkind: Node\nmetadata: {name: a}\n...\n\
                    %YAML 1.2\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\n";
        assert_eq!(names(&load_clean(text).nodes), ["a", "b"]);
        assert_eq!(yaml_pieces(text).iter().map(|(line, _)| *line).collect::<Vec<_>>(), [0, 6]);
    }

    #[test]
    fn a_json_syntax_error_keeps_earlier_values() {
        let text = "{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"n1\"}}\n{\"kind\": \"Node\",,}\n";
        let (snapshot, report) = Snapshot::from_text("s.json", text);
        assert_eq!(names(&snapshot.nodes), ["n1"]);
        assert_eq!(messages(&report), ["error: s.json: document 2: key must be a string at line 2 column 17"]);
    }

    #[test]
    fn too_many_syntax_errors_stop_the_text() {
        let text = "a: [\n---\n".repeat(MAX_SYNTAX_ERRORS + 5);
        let (_, report) = Snapshot::from_text("s.yaml", &text);
        assert_eq!(report.diagnostics.len(), MAX_SYNTAX_ERRORS + 1);
        let last = report.diagnostics.last().unwrap();
        assert_eq!(last.message, "too many syntax errors; the text from line 40 on was not read");
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
                "labels": {"kubernetes.io/service-name": "web"}
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
        snapshot.add_text("a.yaml", first, &mut report);
        snapshot.add_text("b.yaml", second, &mut report);
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
            reversed.add_text(&format!("{i}.yaml"), object, &mut report);
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
            let (snapshot, report) = Snapshot::from_text("x", input);
            // Each is reported (except the empty one), not dropped silently or panicked on.
            assert_eq!(report.diagnostics.is_empty(), input == "\r\n---\r\n\r\n", "{input:.40?}");
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
