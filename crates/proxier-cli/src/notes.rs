//! What the commands say on stderr about the input: quiet by default, loud when it matters. Errors
//! (something is not programmed) are all printed; notes and warnings of one kind are printed for the
//! first few objects, then counted — 2,000 headless Services make four lines, not 2,000. `-v` prints all.

use std::collections::BTreeMap;

use proxier_core::{Diagnostic, RuleModel, Severity, Treatment};

/// How many lines of one kind are printed before the rest are counted.
pub const FIRST_FEW: usize = 3;

/// Lines with their kind, printed in the order they were added (the rest of each kind counted at the end).
#[derive(Debug, Default)]
pub struct Notes {
    kinds: Vec<Kind>,
    index: BTreeMap<String, usize>,
    /// (kind, line), in order.
    lines: Vec<(usize, String)>,
}

#[derive(Debug)]
struct Kind {
    /// Ends "… and N more {what}".
    what: String,
    /// Errors are never summarised.
    summarise: bool,
    count: usize,
}

impl Notes {
    /// Adds `line` (printed after `proxier: `) to the kind `key`, described as `what` in the summary.
    pub fn push(&mut self, key: String, what: impl Into<String>, summarise: bool, line: String) {
        let next = self.kinds.len();
        let index = *self.index.entry(key).or_insert(next);
        if index == next {
            self.kinds.push(Kind { what: what.into(), summarise, count: 0 });
        }
        self.kinds[index].count += 1;
        self.lines.push((index, line));
    }

    /// Adds diagnostics; warnings of one kind are those with the same field (indices aside) and message.
    pub fn diagnostics(&mut self, diagnostics: &[Diagnostic]) {
        for diagnostic in diagnostics {
            let field: String =
                diagnostic.field.as_deref().unwrap_or("").chars().filter(|c| !c.is_ascii_digit()).collect();
            let error = diagnostic.severity == Severity::Error;
            let key = format!("{:?}\0{}\0{field}\0{}", diagnostic.severity, diagnostic.object.kind, diagnostic.message);
            self.push(key, "warnings like it", !error, diagnostic.to_string());
        }
    }

    /// Adds a note per Service the model programs nothing for (headless, ExternalName, not proxied).
    pub fn model(&mut self, model: &RuleModel) {
        for summary in &model.services {
            let (key, what, text) = match &summary.treatment {
                Treatment::Headless => (
                    "headless".to_owned(),
                    "headless Services".to_owned(),
                    "is headless: no proxy rules (DNS returns its endpoints' addresses)".to_owned(),
                ),
                Treatment::ExternalName { target } => (
                    "externalname".to_owned(),
                    "ExternalName Services".to_owned(),
                    format!("is an ExternalName for {target:?}: no proxy rules (DNS returns a CNAME)"),
                ),
                Treatment::NotProxied { reason } => (
                    format!("not proxied\0{reason}"),
                    "Services not proxied for that reason".to_owned(),
                    format!("is not proxied: {reason}"),
                ),
                Treatment::Proxied { .. } | Treatment::Invalid => continue,
            };
            self.push(key, what, true, format!("note: {} {text}", summary.service));
        }
        self.diagnostics(&model.diagnostics);
    }

    /// The lines to print (without `proxier: `), in order: every line with `verbose`, else the first few of
    /// each kind, and then a count of the rest of each kind.
    pub fn lines(&self, verbose: bool) -> Vec<String> {
        let mut shown = vec![0usize; self.kinds.len()];
        let mut out = Vec::new();
        for (kind, line) in &self.lines {
            if verbose || !self.kinds[*kind].summarise || shown[*kind] < FIRST_FEW {
                shown[*kind] += 1;
                out.push(line.clone());
            }
        }
        for (kind, shown) in self.kinds.iter().zip(shown) {
            let rest = kind.count - shown;
            if rest > 0 {
                out.push(format!("note: … and {rest} more {} (-v prints every one)", kind.what));
            }
        }
        out
    }

    /// Prints [`Notes::lines`] on stderr.
    pub fn print(&self, verbose: u8) {
        for line in self.lines(verbose > 0) {
            eprintln!("proxier: {line}");
        }
    }
}

/// Prints diagnostics on stderr, summarised unless `verbose`.
pub fn print_diagnostics(diagnostics: &[Diagnostic], verbose: u8) {
    let mut notes = Notes::default();
    notes.diagnostics(diagnostics);
    notes.print(verbose);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_of_one_kind_are_counted_after_the_first_few_and_errors_never() {
        let mut notes = Notes::default();
        for i in 0..10 {
            notes.push("headless".into(), "headless Services", true, format!("note: s{i}"));
            notes.push("error".into(), "errors", false, format!("error: e{i}"));
        }
        notes.push("other".into(), "others", true, "note: other".into());
        let lines = notes.lines(false);
        // In the order added; errors all kept.
        assert_eq!(lines[..6], ["note: s0", "error: e0", "note: s1", "error: e1", "note: s2", "error: e2"]);
        assert_eq!(
            lines[6..13],
            ["error: e3", "error: e4", "error: e5", "error: e6", "error: e7", "error: e8", "error: e9"]
        );
        assert_eq!(lines[13..], ["note: other", "note: … and 7 more headless Services (-v prints every one)"]);
        assert_eq!(notes.lines(true).len(), 21);
    }
}
