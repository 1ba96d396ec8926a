//! kube-proxy's node tuning at start: the conntrack table's size and timeouts, and the process's OOM
//! score. nf_conntrack_max (and the hash table size with it) is global to the host: it is set only
//! from the host's own network namespace (where kube-proxy's DaemonSet runs, with hostNetwork), never
//! from another namespace. The timeouts and be-liberal are per network namespace: they are set in the
//! namespace proxier runs in.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::ConntrackSettings;

/// What applying the settings did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `name=value` for each value written.
    pub set: Vec<String>,
    /// `name=value` for values already right.
    pub unchanged: Vec<String>,
    /// Values not written, with why (global values outside the host's namespace).
    pub skipped: Vec<String>,
    /// Values the kernel would not take because /proc/sys or /sys is read-only or not ours to write.
    pub read_only: Vec<String>,
    /// Values whose file does not exist yet: nf_conntrack is not loaded (proxier's rules load it).
    pub missing: Vec<String>,
    /// Other failures, with the error.
    pub failed: Vec<String>,
}

/// Where the kernel's knobs live; tests point this at a directory of their own.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `/proc` (holds `sys/net/netfilter/...`, `self/oom_score_adj`, `self/ns/net`, `1/ns/net`).
    pub proc: PathBuf,
    /// `/sys` (holds `module/nf_conntrack/parameters/hashsize`).
    pub sys: PathBuf,
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel { proc: PathBuf::from("/proc"), sys: PathBuf::from("/sys") }
    }
}

/// Online CPU cores, as kube-proxy counts them for nf_conntrack_max.
pub fn cores() -> usize {
    // SAFETY: sysconf takes no pointers.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).ok().filter(|&n| n > 0).unwrap_or(1)
}

impl Kernel {
    /// Whether this process is in the host's (PID 1's) network namespace.
    pub fn in_host_network_namespace(&self) -> bool {
        let inode = |path: PathBuf| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
        match (inode(self.proc.join("self/ns/net")), inode(self.proc.join("1/ns/net"))) {
            (Some(own), Some(host)) => own == host,
            // Unknown: treat as not the host's, so a global value is never set by mistake.
            _ => false,
        }
    }

    /// Applies the conntrack settings as kube-proxy does.
    pub fn apply_conntrack(&self, settings: &ConntrackSettings, cores: usize) -> Report {
        let mut report = Report::default();
        let netfilter = self.proc.join("sys/net/netfilter");
        if let Some(max) = settings.max(cores) {
            if self.in_host_network_namespace() {
                write(&mut report, &netfilter.join("nf_conntrack_max"), max, "nf_conntrack_max");
                // kube-proxy: the hash table gets at least a quarter of the maximum's buckets.
                let hashsize = self.sys.join("module/nf_conntrack/parameters/hashsize");
                match read(&hashsize) {
                    Ok(current) if current >= max / 4 => {}
                    Ok(_) => write(&mut report, &hashsize, max / 4, "nf_conntrack hashsize"),
                    Err(error) => classify(&mut report, "nf_conntrack hashsize", max / 4, &error),
                }
            } else {
                report.skipped.push(format!(
                    "nf_conntrack_max={max} (global to the host; not set from inside another network namespace)"
                ));
            }
        }
        let seconds = |d: Duration| d.as_secs().max(1);
        let timeouts = [
            ("nf_conntrack_tcp_timeout_established", settings.tcp_established_timeout),
            ("nf_conntrack_tcp_timeout_close_wait", settings.tcp_close_wait_timeout),
            ("nf_conntrack_udp_timeout", settings.udp_timeout),
            ("nf_conntrack_udp_timeout_stream", settings.udp_stream_timeout),
        ];
        for (name, value) in timeouts {
            if let Some(value) = value {
                write(&mut report, &netfilter.join(name), seconds(value), name);
            }
        }
        // kube-proxy only ever turns be-liberal on.
        if settings.tcp_be_liberal {
            write(&mut report, &netfilter.join("nf_conntrack_tcp_be_liberal"), 1, "nf_conntrack_tcp_be_liberal");
        }
        report
    }

    /// Sets this process's OOM score adjustment.
    pub fn apply_oom_score_adj(&self, value: i32) -> Report {
        let mut report = Report::default();
        let path = self.proc.join("self/oom_score_adj");
        match std::fs::read_to_string(&path).map(|t| t.trim().parse::<i32>()) {
            Ok(Ok(current)) if current == value => report.unchanged.push(format!("oom_score_adj={value}")),
            // Not a /proc/sys value: lowering it needs CAP_SYS_RESOURCE, so a refusal is a plain failure.
            _ => match std::fs::write(&path, value.to_string()) {
                Ok(()) => report.set.push(format!("oom_score_adj={value}")),
                Err(error) => report.failed.push(format!("oom_score_adj={value}: {error}")),
            },
        }
        report
    }
}

fn read(path: &Path) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|e| std::io::Error::new(ErrorKind::InvalidData, format!("{text:?}: {e}")))
}

/// Writes `value` unless the file already holds it.
fn write(report: &mut Report, path: &Path, value: u64, name: &str) {
    match read(path) {
        Ok(current) if current == value => report.unchanged.push(format!("{name}={value}")),
        Ok(_) => match std::fs::write(path, value.to_string()) {
            Ok(()) => report.set.push(format!("{name}={value}")),
            Err(error) => classify(report, name, value, &error),
        },
        Err(error) => classify(report, name, value, &error),
    }
}

fn classify(report: &mut Report, name: &str, value: impl std::fmt::Display, error: &std::io::Error) {
    let entry = format!("{name}={value}");
    match error.kind() {
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => report.read_only.push(entry),
        ErrorKind::NotFound => report.missing.push(entry),
        _ => report.failed.push(format!("{entry}: {error}")),
    }
}

impl Report {
    /// Logs the report: what was set (info), one warning for read-only files, one per failure.
    pub fn log(&self) {
        if !self.set.is_empty() {
            tracing::info!(set = %self.set.join(" "), "node tuning applied");
        }
        if !self.unchanged.is_empty() {
            tracing::debug!(values = %self.unchanged.join(" "), "node tuning already in place");
        }
        for skipped in &self.skipped {
            tracing::info!("node tuning: left {skipped}");
        }
        if !self.read_only.is_empty() {
            tracing::warn!(
                not_set = %self.read_only.join(" "),
                "node tuning: /proc/sys or /sys is read-only here (a container without the host's /proc/sys?); \
                 these values keep the kernel's settings"
            );
        }
        for failed in &self.failed {
            tracing::warn!("node tuning: cannot set {failed}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc and /sys with the files kube-proxy's tuning touches.
    fn fake(name: &str, host_namespace: bool) -> (Kernel, PathBuf) {
        let root = std::env::temp_dir().join(format!("proxier-tuning-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let netfilter = root.join("proc/sys/net/netfilter");
        std::fs::create_dir_all(&netfilter).unwrap();
        for (file, value) in [
            ("nf_conntrack_max", "65536"),
            ("nf_conntrack_tcp_timeout_established", "432000"),
            ("nf_conntrack_tcp_timeout_close_wait", "3600"),
            ("nf_conntrack_tcp_be_liberal", "0"),
            ("nf_conntrack_udp_timeout", "30"),
            ("nf_conntrack_udp_timeout_stream", "120"),
        ] {
            std::fs::write(netfilter.join(file), value).unwrap();
        }
        std::fs::create_dir_all(root.join("sys/module/nf_conntrack/parameters")).unwrap();
        std::fs::write(root.join("sys/module/nf_conntrack/parameters/hashsize"), "16384").unwrap();
        for dir in ["proc/self/ns", "proc/1/ns"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("proc/self/ns/net"), "").unwrap();
        if host_namespace {
            std::fs::hard_link(root.join("proc/self/ns/net"), root.join("proc/1/ns/net")).unwrap();
        } else {
            std::fs::write(root.join("proc/1/ns/net"), "").unwrap();
        }
        std::fs::write(root.join("proc/self/oom_score_adj"), "0").unwrap();
        (Kernel { proc: root.join("proc"), sys: root.join("sys") }, root)
    }

    fn value(root: &Path, file: &str) -> String {
        std::fs::read_to_string(root.join(file)).unwrap()
    }

    fn defaults() -> ConntrackSettings {
        ConntrackSettings {
            max_per_core: 32_768,
            min: 131_072,
            tcp_established_timeout: Some(Duration::from_secs(86_400)),
            tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
            ..Default::default()
        }
    }

    #[test]
    fn kube_proxy_defaults_in_the_host_namespace() {
        let (kernel, root) = fake("host", true);
        assert!(kernel.in_host_network_namespace());
        let report = kernel.apply_conntrack(&defaults(), 8);
        assert_eq!(
            report.set,
            ["nf_conntrack_max=262144", "nf_conntrack hashsize=65536", "nf_conntrack_tcp_timeout_established=86400"]
        );
        assert_eq!(report.unchanged, ["nf_conntrack_tcp_timeout_close_wait=3600"]);
        assert_eq!(value(&root, "proc/sys/net/netfilter/nf_conntrack_max"), "262144");
        assert_eq!(value(&root, "sys/module/nf_conntrack/parameters/hashsize"), "65536");
        assert_eq!(value(&root, "proc/sys/net/netfilter/nf_conntrack_udp_timeout"), "30", "0 leaves it");
        assert_eq!(value(&root, "proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"), "0");
        // Set again: nothing to do.
        let again = kernel.apply_conntrack(&defaults(), 8);
        assert!(again.set.is_empty(), "{again:?}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn global_values_are_left_alone_outside_the_host_namespace() {
        let (kernel, root) = fake("netns", false);
        assert!(!kernel.in_host_network_namespace());
        let settings = ConntrackSettings {
            tcp_be_liberal: true,
            udp_timeout: Some(Duration::from_secs(60)),
            udp_stream_timeout: Some(Duration::from_secs(300)),
            ..defaults()
        };
        let report = kernel.apply_conntrack(&settings, 2);
        assert_eq!(value(&root, "proc/sys/net/netfilter/nf_conntrack_max"), "65536");
        assert_eq!(value(&root, "sys/module/nf_conntrack/parameters/hashsize"), "16384");
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0].starts_with("nf_conntrack_max=131072"), "{report:?}");
        assert_eq!(value(&root, "proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"), "1");
        assert_eq!(value(&root, "proc/sys/net/netfilter/nf_conntrack_udp_timeout"), "60");
        assert_eq!(value(&root, "proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream"), "300");
        // maxPerCore 0: nothing global is even considered.
        let report = kernel.apply_conntrack(&ConntrackSettings { max_per_core: 0, ..defaults() }, 2);
        assert!(report.skipped.is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_missing_module_and_the_oom_score() {
        let (kernel, root) = fake("missing", false);
        std::fs::remove_file(root.join("proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait")).unwrap();
        let report = kernel.apply_conntrack(&defaults(), 2);
        assert_eq!(report.missing, ["nf_conntrack_tcp_timeout_close_wait=3600"]);
        let report = kernel.apply_oom_score_adj(-999);
        assert_eq!(report.set, ["oom_score_adj=-999"]);
        assert_eq!(value(&root, "proc/self/oom_score_adj"), "-999");
        assert_eq!(kernel.apply_oom_score_adj(-999).unchanged, ["oom_score_adj=-999"]);
        std::fs::remove_dir_all(root).unwrap();
    }
}
