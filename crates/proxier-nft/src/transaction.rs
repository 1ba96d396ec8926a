//! Atomic nft transactions: one document, applied all or nothing by one `nft` run.

use proxier_core::{IpFamily, RuleModel};

use crate::layout::family_table;
use crate::ruleset::Table;
use crate::{compat, json, text};

/// A transaction that makes proxier's tables exactly what a model says: each family's table is
/// removed and re-created, and a family the model does not program has its table removed.
///
/// ```
/// use proxier_core::{NodeConfig, Snapshot, compute};
/// use proxier_nft::Transaction;
/// let model = compute(&Snapshot::default(), &NodeConfig { node_name: "n".into(), ..Default::default() });
/// let transaction = Transaction::full(&model, "proxier");
/// assert!(transaction.to_text().contains("delete table ip proxier"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    table_name: String,
    tables: Vec<Table>,
}

impl Transaction {
    /// The full replacement of table `table_name` (in both families) by `model`.
    pub fn full(model: &RuleModel, table_name: &str) -> Transaction {
        let tables = model.families.iter().map(|rules| family_table(rules, table_name)).collect();
        Transaction { table_name: table_name.to_owned(), tables }
    }

    /// The tables this transaction creates.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    fn table(&self, family: IpFamily) -> Option<&Table> {
        self.tables.iter().find(|t| t.family == family)
    }

    /// The transaction as the JSON document `nft -j -f -` reads.
    pub fn to_json_value(&self) -> serde_json::Value {
        let mut objects = Vec::new();
        for family in IpFamily::ALL {
            objects.extend(json::remove_table_commands(family, &self.table_name));
            if let Some(table) = self.table(family) {
                objects.extend(json::create_table_commands(table));
            }
        }
        let document = nftables::schema::Nftables { objects: objects.into() };
        // Serialising plain data types cannot fail.
        let mut value = serde_json::to_value(&document).unwrap_or_default();
        compat::mend(&mut value);
        value
    }

    /// [`Self::to_json_value`], pretty-printed: byte-identical for identical input.
    pub fn to_json(&self) -> String {
        let mut out = serde_json::to_string_pretty(&self.to_json_value()).unwrap_or_default();
        out.push('\n');
        out
    }

    /// The same transaction in nft's text syntax, loadable with `nft -f -`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for family in IpFamily::ALL {
            text::remove_table(&mut out, family, &self.table_name);
            if let Some(table) = self.table(family) {
                text::table_block(&mut out, table);
            }
        }
        out
    }
}
