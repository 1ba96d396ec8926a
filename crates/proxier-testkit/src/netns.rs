//! Named network namespaces (`ip netns`) with unique, sweepable names.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

/// Every namespace this crate creates is named `pxt-<pid>-<n>-<role>`.
pub const NAME_PREFIX: &str = "pxt-";

/// Where `ip netns` keeps its namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A named network namespace, created with `ip netns add` and deleted on drop.
///
/// The loopback interface is up. Nothing else is configured: no interfaces, no routes, an empty
/// nftables ruleset, kernel-default sysctls.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `pxt-<pid>-<n>-<role>`; `role` is only a readable hint (sanitised to `[a-z0-9-]`).
    ///
    /// The first call in a process also runs [`sweep_stale`].
    pub fn new(role: &str) -> io::Result<Netns> {
        SWEEP.call_once(|| {
            sweep_stale();
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{}-{n}-{}", std::process::id(), sanitize(role));
        run_checked(Command::new("ip").args(["netns", "add", &name]), None)
            .map_err(|e| context(e, &format!("ip netns add {name}")))?;
        // From here on, Drop removes the namespace even if the rest fails.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace for the kernel test `test`, or `None` when kernel tests cannot run here (after
    /// [`netns_available`](crate::netns_available) printed the `SKIP` line; under
    /// `PROXIER_REQUIRE_NETNS=1` it panics instead). Panics if the namespace cannot be created.
    pub fn for_test(test: &str) -> Option<Netns> {
        if !netns_available(test) {
            return None;
        }
        Some(Netns::new(test).unwrap_or_else(|e| panic!("{test}: cannot create a network namespace: {e}")))
    }

    /// The namespace name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: the handle `setns(2)` opens.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `program args…` inside the namespace (`ip netns exec`). Like [`Command::output`], a
    /// non-zero exit status is not an error: look at `Output::status`.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new("ip").args(["netns", "exec", &self.name]).arg(program).args(args).stdin(Stdio::null()).output()
    }

    /// Like [`Netns::exec`], with `input` fed to the program's stdin.
    pub fn exec_input<I, S>(&self, program: impl AsRef<OsStr>, args: I, input: &str) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A program that exits without reading all of its input is not an error here: its exit
        // status and stderr say what happened.
        let _ = pipe.write_all(input.as_bytes());
        drop(pipe);
        child.wait_with_output()
    }

    /// `ip -n <name> <args…>`; a non-zero exit is an error carrying ip's stderr. Returns stdout.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let out = run_checked(Command::new("ip").args(["-n", &self.name]).args(args), None)
            .map_err(|e| context(e, &format!("ip -n {} {}", self.name, args.join(" "))))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs several `ip` commands (one per line, without the leading `ip`) in one `ip -batch`.
    pub fn ip_batch(&self, commands: &str) -> io::Result<()> {
        run_checked(Command::new("ip").args(["-n", &self.name, "-batch", "-"]), Some(commands))
            .map(drop)
            .map_err(|e| context(e, &format!("ip -n {} -batch:\n{commands}", self.name)))
    }

    /// Feeds `script` to `nft -f -` inside the namespace and returns nft's stdout; a non-zero
    /// exit is an error carrying nft's stderr. Example: `ns.nft("list ruleset")` lists,
    /// `ns.nft("add table inet t")` changes.
    pub fn nft(&self, script: &str) -> io::Result<String> {
        let out = run_checked(Command::new("ip").args(["netns", "exec", &self.name, "nft", "-f", "-"]), Some(script))
            .map_err(|e| context(e, &format!("nft -f - in {}:\n{script}", self.name)))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `nft <args…>` inside the namespace, with `input` on stdin if given (for `-f -`);
    /// returns nft's stdout, or an error carrying nft's stderr.
    pub fn nft_args(&self, args: &[&str], input: Option<&str>) -> io::Result<String> {
        let out = run_checked(Command::new("ip").args(["netns", "exec", &self.name, "nft"]).args(args), input)
            .map_err(|e| context(e, &format!("nft {} in {}", args.join(" "), self.name)))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The whole ruleset of the namespace, made comparable by [`canonical_listing`].
    pub fn ruleset(&self) -> io::Result<serde_json::Value> {
        Ok(canonical_listing(&self.nft_args(&["-j", "list", "ruleset"], None)?))
    }

    /// Sets sysctls of this namespace, e.g. `[("net.ipv4.ip_forward", "1")]`, by writing
    /// `/proc/sys/…` from a thread inside the namespace (networking sysctls are per namespace).
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> io::Result<()> {
        self.run(|| {
            for (key, value) in settings {
                let path = format!("/proc/sys/{}", key.replace('.', "/"));
                std::fs::write(&path, value)
                    .map_err(|e| context(e, &format!("sysctl {key}={value} in {}", self.name)))?;
            }
            Ok(())
        })
    }

    /// Runs `f` on a fresh thread that has entered this namespace (`setns(CLONE_NEWNET)`), and
    /// returns its result. Sockets created inside `f` belong to this namespace for their whole
    /// life, whichever thread uses them later. A panic inside `f` is propagated.
    ///
    /// Panics if the namespace cannot be entered (it was deleted, or we lack privileges).
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let handle = File::open(self.path()).unwrap_or_else(|e| panic!("cannot open {}: {e}", self.path().display()));
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                // SAFETY: plain syscall on a valid fd; it only changes this thread's namespace.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    panic!("setns into {} failed: {}", self.name, io::Error::last_os_error());
                }
                drop(handle);
                f()
            });
            match thread.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A plain HTTP/1.1 GET from inside the namespace (proxier's health, metrics and health-check
    /// servers): `(status, body)`, or `None` when nothing answers within a few seconds.
    pub fn http_get(&self, address: SocketAddr, path: &str) -> Option<(u16, String)> {
        self.run(|| {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).ok()?;
            let status = text.split_whitespace().nth(1)?.parse().ok()?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
            Some((status, body))
        })
    }
}

impl AsRef<Netns> for Netns {
    fn as_ref(&self) -> &Netns {
        self
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failing test unwinds.
        match Command::new("ip").args(["netns", "del", &self.name]).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "proxier-testkit: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("proxier-testkit: ip netns del {} failed: {e}", self.name),
        }
    }
}

/// `nft -j list …` output made comparable: handles and metainfo dropped, `elem` arrays sorted, and
/// objects sorted by family, table, kind and name (rules keep their order within a chain).
///
/// Panics if `listing` is not JSON (nft printed something else).
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

/// Deletes namespaces named `pxt-<pid>-…` whose process no longer exists (left behind by a test
/// process that was killed before its destructors ran). Returns the names it deleted.
///
/// Runs automatically once per process, on the first [`Netns::new`]. Namespaces of live
/// processes (including this one) are never touched. Liveness is checked with `kill(pid, 0)`,
/// so this assumes every user of `/run/netns` shares our PID namespace.
pub fn sweep_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| owner_pid(name).is_some_and(|pid| !process_alive(pid)))
        .collect();
    names.sort();
    names.retain(|name| {
        Command::new("ip")
            .args(["netns", "del", name])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    names
}

/// The pid encoded in a `pxt-<pid>-…` namespace name.
fn owner_pid(name: &str) -> Option<libc::pid_t> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok().filter(|&p: &libc::pid_t| p > 0)
}

fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn sanitize(role: &str) -> String {
    let s: String = role
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(40)
        .collect();
    if s.is_empty() { "ns".to_string() } else { s }
}

/// Runs a command (optionally feeding stdin); a non-zero exit becomes an error with its stderr.
pub(crate) fn run_checked(cmd: &mut Command, stdin: Option<&str>) -> io::Result<Output> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!("exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())))
    }
}

pub(crate) fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The environment variable that turns a skip into a failure.
pub const REQUIRE_ENV: &str = "PROXIER_REQUIRE_NETNS";

/// Whether kernel tests can run here (root, `ip`, `nft`, and a namespace can be created with a
/// working nft inside). If not, prints `SKIP <test_name>: needs root and nft (…)` to stderr and
/// returns false, or panics with that message when `PROXIER_REQUIRE_NETNS=1`.
///
/// The check itself runs once per process.
#[track_caller]
pub fn netns_available(test_name: &str) -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(check_netns);
    decide(test_name, check, std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1"), "needs root and nft")
}

/// Whether a check passed; if not, prints `SKIP <test_name>: <needs> (<why>)`, or panics with it
/// when `require` is set.
#[track_caller]
pub(crate) fn decide(test_name: &str, check: &Result<(), String>, require: bool, needs: &str) -> bool {
    match check {
        Ok(()) => true,
        Err(why) => {
            let msg = format!("SKIP {test_name}: {needs} ({why})");
            if require {
                panic!("{msg}; {REQUIRE_ENV}=1 forbids skipping");
            }
            eprintln!("{msg}");
            false
        }
    }
}

fn check_netns() -> Result<(), String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        missing.push(format!("not root: euid {euid}"));
    }
    for (tool, arg, what) in [("ip", "-V", "`ip` (iproute2)"), ("nft", "--version", "`nft`")] {
        match Command::new(tool).arg(arg).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => missing.push(format!("{what} fails: {}", out.status)),
            Err(e) => missing.push(format!("{what} not found: {e}")),
        }
    }
    if !missing.is_empty() {
        return Err(missing.join("; "));
    }
    let ns = Netns::new("check").map_err(|e| format!("cannot create a network namespace: {e}"))?;
    ns.nft("list ruleset").map_err(|e| format!("nft does not work in a network namespace: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_or_panic() {
        assert!(decide("t", &Ok(()), true, "needs x"));
        assert!(!decide("t", &Err("no".into()), false, "needs x"));
        let panic = std::panic::catch_unwind(|| decide("t", &Err("no root".into()), true, "needs root and nft"))
            .expect_err("must panic when required");
        let msg = panic.downcast_ref::<String>().expect("string panic");
        assert!(msg.starts_with("SKIP t: needs root and nft (no root)"), "{msg}");
    }

    #[test]
    fn names_encode_the_pid() {
        assert_eq!(owner_pid("pxt-123-4-node-a"), Some(123));
        assert_eq!(owner_pid("pxt-x-4-node-a"), None);
        assert_eq!(owner_pid("other-123-4"), None);
        assert_eq!(owner_pid("pxt-0-1-a"), None);
    }

    #[test]
    fn roles_are_sanitised() {
        assert_eq!(sanitize("Pod a_1"), "pod-a-1");
        assert_eq!(sanitize(""), "ns");
    }
}
