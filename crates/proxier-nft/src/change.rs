//! [`Change`]: one step of a transaction. Its own module, below both the transaction that holds a list
//! of them and the renderers ([`crate::json`], [`crate::json_writer`], [`crate::text`]) that write them.

use proxier_core::IpFamily;

use crate::ruleset::{Element, Hook, Rule, Set, Table};

/// One step of a transaction, on proxier's table of one family. Steps run in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Removes the table if it exists.
    RemoveTable(IpFamily),
    /// Creates a table with everything in it.
    CreateTable(Table),
    /// Adds an empty chain (a base chain when `hook` is set).
    AddChain {
        /// The table's family.
        family: IpFamily,
        /// The chain's name.
        name: String,
        /// Where it is attached, for a base chain.
        hook: Option<Hook>,
    },
    /// Adds an empty set or map.
    AddSet {
        /// The table's family.
        family: IpFamily,
        /// The set or map.
        set: Set,
    },
    /// Adds elements to a set or map.
    AddElements {
        /// The table's family.
        family: IpFamily,
        /// The set's name.
        set: String,
        /// The elements.
        elements: Vec<Element>,
    },
    /// Deletes elements by key.
    DeleteElements {
        /// The table's family.
        family: IpFamily,
        /// The set's name.
        set: String,
        /// The elements (only their keys matter).
        elements: Vec<Element>,
    },
    /// Removes every element of a set or map.
    FlushSet {
        /// The table's family.
        family: IpFamily,
        /// The set's name.
        set: String,
        /// Whether it is a map.
        map: bool,
    },
    /// Removes every rule of a chain.
    FlushChain {
        /// The table's family.
        family: IpFamily,
        /// The chain's name.
        chain: String,
    },
    /// Appends rules to a chain.
    AddRules {
        /// The table's family.
        family: IpFamily,
        /// The chain's name.
        chain: String,
        /// The rules, in order.
        rules: Vec<Rule>,
    },
    /// Deletes a chain.
    DeleteChain {
        /// The table's family.
        family: IpFamily,
        /// The chain's name.
        chain: String,
    },
    /// Deletes a set or map.
    DeleteSet {
        /// The table's family.
        family: IpFamily,
        /// The set's name.
        set: String,
        /// Whether it is a map (nft deletes sets and maps with different commands).
        map: bool,
    },
}
