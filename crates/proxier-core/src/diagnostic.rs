//! Problems found in the input, each naming the object and field it concerns.

use std::fmt;

/// A Kubernetes object, as named in messages: `Service default/web`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectRef {
    /// The object's kind: `Service`, `EndpointSlice`, `Node`, or [`crate::snapshot::DOCUMENT_KIND`] for a whole document.
    pub kind: String,
    /// Empty for cluster-scoped objects such as Nodes.
    pub namespace: String,
    /// The object's name (`metadata.name`).
    pub name: String,
}

impl ObjectRef {
    /// An object of `kind` named `namespace/name`.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef { kind: kind.to_owned(), namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

/// The `kind` of diagnostics about the snapshot as a whole (shown as just `snapshot`).
pub const SNAPSHOT_KIND: &str = "snapshot";

impl ObjectRef {
    /// The snapshot as a whole, for problems that concern no single object.
    pub fn snapshot() -> Self {
        ObjectRef::new(SNAPSHOT_KIND, "", "")
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == SNAPSHOT_KIND && self.name.is_empty() && self.namespace.is_empty() {
            return f.write_str(SNAPSHOT_KIND);
        }
        let name = if self.name.is_empty() { "<unnamed>" } else { &self.name };
        let (kind, name) = (printable(&self.kind), printable(name));
        if self.namespace.is_empty() {
            write!(f, "{kind} {name}")
        } else {
            write!(f, "{kind} {}/{name}", printable(&self.namespace))
        }
    }
}

/// The longest name a message quotes whole: Kubernetes names are at most 253 characters.
const MAX_NAME: usize = 253;

/// A name from the input as a message shows it: control characters escaped (`\n`), so that a hostile
/// name cannot forge message lines, and cut after [`MAX_NAME`] characters.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    // Nearly every name is short and clean: shown as it is, without a copy. (At most MAX_NAME bytes
    // means at most MAX_NAME characters, so nothing would be cut.)
    if text.len() <= MAX_NAME && !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_NAME {
            out.push_str(&format!("…({} characters)", text.chars().count()));
            break;
        }
        if c.is_control() { out.extend(c.escape_default()) } else { out.push(c) }
    }
    out.into()
}

/// Control characters escaped, so that a message stays on its line.
fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
    } else {
        text.into()
    }
}

/// How much of an object a problem cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing was lost: the input was tolerated or a default applied.
    Warning,
    /// Part or all of the object is not programmed.
    Error,
}

/// One problem with the input. The rest of the input is still programmed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Diagnostic {
    /// Whether the object was (partly) lost.
    pub severity: Severity,
    /// The file (or other source) the object came from, when known.
    pub source: Option<String>,
    /// The object at fault.
    pub object: ObjectRef,
    /// The field at fault, as a JSON path such as `spec.ports[1].protocol`.
    pub field: Option<String>,
    /// What is wrong, and what was done about it.
    pub message: String,
}

impl Diagnostic {
    /// A problem that cost (part of) `object`: what is wrong and what was done about it.
    pub fn error(object: ObjectRef, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, object, message)
    }

    /// A problem that cost nothing: the input was tolerated or a default applied.
    pub fn warning(object: ObjectRef, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, object, message)
    }

    /// A problem of `severity` in `object`, with no field and no source yet.
    pub fn new(severity: Severity, object: ObjectRef, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity, source: None, object, field: None, message: message.into() }
    }

    /// The same problem, located at `field` (a JSON path such as `spec.ports[1].protocol`).
    pub fn at(mut self, field: impl Into<String>) -> Diagnostic {
        self.field = Some(field.into());
        self
    }

    /// The same problem, found in `source` (a file name).
    pub fn from_source(mut self, source: impl Into<String>) -> Diagnostic {
        self.source = Some(source.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}: ")?;
        if let Some(source) = &self.source {
            write!(f, "{}: ", escaped(source))?;
        }
        write!(f, "{}", self.object)?;
        if let Some(field) = &self.field {
            write!(f, ": {}", escaped(field))?;
        }
        write!(f, ": {}", escaped(&self.message))
    }
}
