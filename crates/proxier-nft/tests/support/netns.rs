//! A throwaway network namespace for kernel tests (`ip netns add`), deleted on drop — also when a test
//! panics. Without root, `ip` or `nft` the test is skipped with a `SKIP` line, unless
//! `PROXIER_REQUIRE_NETNS=1`, which turns a skip into a failure. Shared by the robustness tests of
//! proxier-nft and proxier-cli (included by path).

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace, or `None` (after printing why) when kernel tests cannot run here.
    pub fn create(test: &str) -> Option<Netns> {
        let missing = if unsafe_free_is_root() {
            ["ip", "nft"].into_iter().find(|tool| !on_path(tool)).map(|tool| format!("`{tool}` not found"))
        } else {
            Some("not root".to_owned())
        };
        if let Some(reason) = missing {
            skip(test, &reason);
            return None;
        }
        let name = format!("pxr-rb-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let output = Command::new("ip").args(["netns", "add", &name]).output().expect("run ip");
        if !output.status.success() {
            skip(test, &format!("ip netns add failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
            return None;
        }
        Some(Netns { name })
    }

    /// Runs `program args…` inside the namespace, with `stdin` fed to it.
    pub fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]).args(args);
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn ip netns exec");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(input.as_bytes());
        }
        child.wait_with_output().expect("wait for ip netns exec")
    }

    /// `nft args…` in the namespace; panics with nft's message when it fails.
    pub fn nft(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.run("nft", args, stdin);
        assert!(output.status.success(), "nft {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("nft prints UTF-8")
    }

    /// `nft -c -j -f -` on a document: `Err(nft's message)` when nft refuses it.
    pub fn check_json(&self, document: &str) -> Result<(), String> {
        let output = self.run("nft", &["-c", "-j", "-f", "-"], Some(document));
        if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
    }

    /// Runs `work` on a thread that has entered the namespace; sockets opened there belong to it for
    /// their whole life, whichever thread uses them later.
    pub fn enter<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        use std::os::fd::AsRawFd;
        let handle = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open the namespace handle");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: a plain syscall on a valid descriptor; it changes only this thread.
                    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    work()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The whole ruleset as JSON, canonical: no handles, elements sorted, objects sorted.
    pub fn ruleset(&self) -> serde_json::Value {
        canonical_listing(&self.nft(&["-j", "list", "ruleset"], None))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// `nft -j list …` output made comparable: handles dropped, `elem` arrays and the object list sorted.
pub fn canonical_listing(listing: &str) -> serde_json::Value {
    use serde_json::Value;
    fn clean(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("handle");
                map.values_mut().for_each(clean);
                if let Some(Value::Array(elements)) = map.get_mut("elem") {
                    elements.sort_by_key(|e| e.to_string());
                }
            }
            Value::Array(items) => items.iter_mut().for_each(clean),
            _ => {}
        }
    }
    let mut value: Value = serde_json::from_str(listing).expect("nft -j prints JSON");
    clean(&mut value);
    if let Some(Value::Array(objects)) = value.get_mut("nftables") {
        objects.retain(|o| o.get("metainfo").is_none());
        // Rules keep their order within a chain: sort only by kind and name, stably.
        objects.sort_by_key(|o| {
            let (kind, body) = o.as_object().and_then(|m| m.iter().next()).map(|(k, v)| (k.clone(), v)).unwrap();
            let rule = kind == "rule";
            let name = if rule { &body["chain"] } else { &body["name"] };
            (body["family"].to_string(), body["table"].to_string(), rule, name.to_string())
        });
    }
    value
}

fn unsafe_free_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        || ["/usr/sbin", "/sbin"].iter().any(|dir| std::path::Path::new(dir).join(tool).is_file())
}

fn skip(test: &str, reason: &str) {
    if std::env::var("PROXIER_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test}: kernel test cannot run ({reason}) and PROXIER_REQUIRE_NETNS=1");
    }
    eprintln!("SKIP {test}: {reason} (set PROXIER_REQUIRE_NETNS=1 to fail instead)");
}

/// A listing without the emptied chains and sets that `desired` does not have.
pub fn without_stale_listing(
    mut listing: serde_json::Value,
    desired: &[proxier_nft::ruleset::Table],
) -> serde_json::Value {
    let wanted = |family: &str, kind: &str, name: &str| {
        desired.iter().any(|t| {
            proxier_nft::layout::family_name(t.family) == family
                && match kind {
                    "chain" => t.chains.iter().any(|c| c.name == name),
                    _ => t.sets.iter().any(|s| s.name == name),
                }
        })
    };
    let objects = listing["nftables"].as_array().cloned().unwrap_or_default();
    let has_rules = |family: &str, chain: &str| {
        objects.iter().any(|o| o["rule"]["family"] == family && o["rule"]["chain"] == chain)
    };
    let kept: Vec<serde_json::Value> = objects
        .iter()
        .filter(|o| {
            let Some((kind, body)) = o.as_object().and_then(|m| m.iter().next()) else { return true };
            let (family, name) = (body["family"].as_str().unwrap_or(""), body["name"].as_str().unwrap_or(""));
            match kind.as_str() {
                "chain" => wanted(family, kind, name) || has_rules(family, name),
                "set" | "map" => wanted(family, kind, name) || body.get("elem").is_some(),
                _ => true,
            }
        })
        .cloned()
        .collect();
    listing["nftables"] = serde_json::Value::Array(kept);
    listing
}
