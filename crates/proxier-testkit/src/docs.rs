//! What the documentation quotes, read back so that tests can hold it to what the binary prints: a
//! table of messages in a Markdown page is only worth its place if it is exactly the text a user sees.

use std::path::Path;

/// The cells of `column` (0-based) of the `table`-th table (0-based) in the `## {heading}` section of
/// `document` (a path relative to the repository root) that are one code span each, without the
/// enclosing backticks (backticks inside are kept: the messages quote field names). Header and
/// separator rows, and cells that are prose (`none (…)`), are left out.
///
/// Panics (this is test support) when the document, the section or the table is missing.
pub fn quoted_cells(document: &str, heading: &str, table: usize, column: usize) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(document);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text
        .lines()
        .position(|line| line.strip_prefix("## ") == Some(heading))
        .unwrap_or_else(|| panic!("{document}: no section `## {heading}`"));
    let section = text.lines().skip(start + 1).take_while(|line| !line.starts_with("## "));
    // Tables are runs of lines starting with `|`; the first two lines of each are its header.
    let mut tables: Vec<Vec<&str>> = Vec::new();
    let mut in_table = false;
    for line in section {
        let row = line.starts_with('|');
        if row && !in_table {
            tables.push(Vec::new());
        }
        if row {
            tables.last_mut().expect("a table was started").push(line);
        }
        in_table = row;
    }
    let rows = tables.get(table).unwrap_or_else(|| panic!("{document}: `## {heading}` has no table {table}"));
    rows.iter()
        .skip(2)
        .filter_map(|row| {
            let cell = row.trim_matches('|').split(" | ").nth(column)?.trim();
            let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
            Some(inner.to_owned())
        })
        .collect()
}
