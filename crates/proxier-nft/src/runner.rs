//! The only code that runs `nft`. JSON goes in on stdin; stdout and stderr are captured so that nft's
//! own message reaches the user.

#![allow(clippy::disallowed_methods)] // This module is the one that runs `nft` (clippy.toml).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use proxier_core::IpFamily;

use crate::layout::{CLUSTER_IPS, SERVICE_IPS};
use crate::ruleset::family_name;

/// A failed `nft` run.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    // The reason is in the message and not a `source`: printed as a chain (`{:#}`), it would show twice.
    #[error("cannot run {program}: {error}")]
    /// The program could not be started.
    Spawn {
        /// The program's path.
        program: String,
        /// Why it could not be started.
        error: std::io::Error,
    },
    #[error("{program} {action} failed: {message}")]
    /// The program ran and failed; `message` is its own error output.
    Failed {
        /// The program's path.
        program: String,
        /// What it was asked to do, as the message names it.
        action: &'static str,
        /// Its error output.
        message: String,
    },
}

/// The `nft` program, by path (default: `nft` from `PATH`).
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
}

impl Default for Nft {
    fn default() -> Self {
        Nft { program: PathBuf::from("nft") }
    }
}

impl Nft {
    /// An `nft` at `program` (a path, or a name looked up in `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Nft {
        Nft { program: program.into() }
    }

    /// The program run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Applies a JSON transaction atomically: on failure nothing changes.
    pub fn apply_json(&self, document: &str) -> Result<(), NftError> {
        self.run(&["-j", "-f", "-"], Some(document), "apply").map(drop)
    }

    /// Checks a JSON transaction against the kernel without changing anything (`nft -c`).
    pub fn check_json(&self, document: &str) -> Result<(), NftError> {
        self.run(&["-c", "-j", "-f", "-"], Some(document), "check").map(drop)
    }

    /// What `nft --version` prints, e.g. `nftables v1.0.6 (Lester Gooch …)` (the release name after it).
    pub fn version(&self) -> Result<String, NftError> {
        self.run(&["--version"], None, "version").map(|text| text.trim().to_owned())
    }

    /// Applies a text script atomically.
    pub fn apply_text(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(script), "apply").map(drop)
    }

    /// The live table as nft prints it, or `None` when it does not exist.
    pub fn list_table(&self, family: IpFamily, name: &str) -> Result<Option<String>, NftError> {
        if !self.table_exists(family, name)? {
            return Ok(None);
        }
        self.run(&["list", "table", family_name(family), name], None, "list").map(Some)
    }

    /// What a read-only `nft` command prints (`-j list …`, `-t list …`).
    pub fn list(&self, args: &[&str]) -> Result<String, NftError> {
        self.run(args, None, "list")
    }

    /// Whether the table exists; reads only the list of table names.
    pub fn table_exists(&self, family: IpFamily, name: &str) -> Result<bool, NftError> {
        let tables = self.run(&["list", "tables", family_name(family)], None, "list tables")?;
        let wanted = format!("table {} {}", family_name(family), name);
        Ok(tables.lines().any(|line| line.trim() == wanted))
    }

    /// Runs `work` on a thread of its own inside a new, empty network namespace, so that every `nft`
    /// it starts sees a blank kernel ruleset; the namespace vanishes when `work` returns. Used to see a
    /// ruleset exactly as the kernel would hold it without touching the live one. Needs CAP_SYS_ADMIN.
    pub fn in_scratch_namespace<R: Send>(
        &self,
        work: impl FnOnce(&Nft) -> Result<R, NftError> + Send,
    ) -> Result<R, NftError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // Network namespaces are per thread: this changes only the thread about to run `work`.
                    // SAFETY: unshare(2) takes no pointers.
                    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                        return Err(NftError::Spawn {
                            program: "unshare(CLONE_NEWNET)".into(),
                            error: std::io::Error::last_os_error(),
                        });
                    }
                    work(self)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(NftError::Failed {
                        program: "scratch namespace".into(),
                        action: "run",
                        message: "panicked".into(),
                    })
                })
        })
    }

    fn run(&self, args: &[&str], stdin: Option<&str>, action: &'static str) -> Result<String, NftError> {
        let program = self.program.display().to_string();
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_error = |error| NftError::Spawn { program: program.clone(), error };
        let mut child = command.spawn().map_err(spawn_error)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error means nft exited early; its status and stderr say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        check_output(&program, action, output)
    }
}

fn check_output(program: &str, action: &'static str, output: Output) -> Result<String, NftError> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut message = stderr.trim().to_owned();
    if message.is_empty() {
        message = stdout.trim().to_owned();
    }
    if message.is_empty() {
        message = format!("exited with {}", output.status);
    }
    Err(NftError::Failed { program: program.to_owned(), action, message })
}

/// One table of the live ruleset, by name, with its chains' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// The family as nft spells it (`ip`, `ip6`, `inet`, ...).
    pub family: String,
    /// The table's name.
    pub name: String,
    /// Its chains' names, sorted.
    pub chains: Vec<String>,
}

impl Nft {
    /// Every table of every family, with its chains' names: what `nft -j list tables` and `nft -j list
    /// chains` print. Reads names only; changes nothing.
    pub fn table_names(&self) -> Result<Vec<TableNames>, NftError> {
        let parse = |text: &str, action: &'static str| -> Result<Vec<serde_json::Value>, NftError> {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| NftError::Failed {
                program: self.program.display().to_string(),
                action,
                message: format!("unreadable JSON: {e}"),
            })?;
            Ok(value.get("nftables").and_then(|v| v.as_array()).cloned().unwrap_or_default())
        };
        let field =
            |object: &serde_json::Value, name: &str| object.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let mut tables: Vec<TableNames> = Vec::new();
        for item in parse(&self.run(&["-j", "list", "tables"], None, "list tables")?, "list tables")? {
            if let Some(table) = item.get("table")
                && let (Some(family), Some(name)) = (field(table, "family"), field(table, "name"))
            {
                tables.push(TableNames { family, name, chains: Vec::new() });
            }
        }
        for item in parse(&self.run(&["-j", "list", "chains"], None, "list chains")?, "list chains")? {
            let Some(chain) = item.get("chain") else { continue };
            let (Some(family), Some(table), Some(name)) =
                (field(chain, "family"), field(chain, "table"), field(chain, "name"))
            else {
                continue;
            };
            if let Some(entry) = tables.iter_mut().find(|t| t.family == family && t.name == table) {
                entry.chains.push(name);
            }
        }
        for table in &mut tables {
            table.chains.sort();
        }
        tables.sort_by(|a, b| (&a.family, &a.name).cmp(&(&b.family, &b.name)));
        Ok(tables)
    }

    /// Deletes proxier's table `name` in every family where it exists, in one transaction, and says
    /// which existed. No other table is read or touched.
    pub fn delete_tables(&self, name: &str) -> Result<Vec<IpFamily>, NftError> {
        let mut existing = Vec::new();
        for family in IpFamily::ALL {
            if self.table_exists(family, name)? {
                existing.push(family);
            }
        }
        if !existing.is_empty() {
            let script: String =
                existing.iter().map(|&family| format!("delete table {} {name}\n", family_name(family))).collect();
            self.apply_text(&script)?;
        }
        Ok(existing)
    }
}

impl Nft {
    /// How many Service destinations and ClusterIPs proxier's live table `name` holds, over both families
    /// (elements of its `service-ips` map and `cluster-ips` set); 0 when the table does not exist. Read
    /// before replacing the rules with a model that holds none, which would cut every Service on the node.
    pub fn live_service_elements(&self, name: &str) -> Result<usize, NftError> {
        let mut total = 0usize;
        for family in IpFamily::ALL {
            if !self.table_exists(family, name)? {
                continue;
            }
            let listing = self.run(&["-j", "list", "table", family_name(family), name], None, "list")?;
            let document: serde_json::Value = serde_json::from_str(&listing).map_err(|e| NftError::Failed {
                program: self.program.display().to_string(),
                action: "list",
                message: format!("unreadable JSON listing: {e}"),
            })?;
            let objects = document.get("nftables").and_then(serde_json::Value::as_array).into_iter().flatten();
            for object in objects {
                let set = object.get("map").or_else(|| object.get("set"));
                let Some(set) = set.filter(|s| {
                    matches!(s.get("name").and_then(serde_json::Value::as_str), Some(SERVICE_IPS | CLUSTER_IPS))
                }) else {
                    continue;
                };
                let elements = set.get("elem").and_then(serde_json::Value::as_array).map_or(0, Vec::len);
                total = total.saturating_add(elements);
            }
        }
        Ok(total)
    }
}
