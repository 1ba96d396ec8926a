//! `proxier run`'s settings: command-line flags, a KubeProxyConfiguration-style `--config` file, and
//! the defaults kube-proxy uses. A flag given on the command line wins over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use proxier_core::NodeConfig;
use serde_json::Value;

use crate::flags::{DetectLocalMode, NodeArgs, interface_name};

pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);
pub const DEFAULT_MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTHZ: &str = "0.0.0.0:10256";
pub const DEFAULT_METRICS: &str = "127.0.0.1:10249";

/// `proxier run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Kubeconfig file; without it, the usual inference (KUBECONFIG, ~/.kube/config, then the in-cluster
    /// service account when running in a pod).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// A KubeProxyConfiguration-style YAML file for the options proxier supports (flags win over it).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The Node name to use instead of --node (kube-proxy's spelling).
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// How often the kernel's tables are checked against the committed state and repaired (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub sync_period: Option<Duration>,
    /// The least time between two syncs: bursts of changes are coalesced into one (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub min_sync_period: Option<Duration>,
    /// Where /healthz and /livez are served (default 0.0.0.0:10256; empty disables).
    #[arg(long, value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// Where /metrics is served (default 127.0.0.1:10249; empty disables).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// The conntrack program, for deleting stale UDP entries; `none` disables the cleanup.
    #[arg(long, default_value = "conntrack", value_name = "PATH")]
    pub conntrack: PathBuf,
}

/// Everything `proxier run` needs, flags and file merged.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: NodeConfig,
    pub table: String,
    pub nft: PathBuf,
    pub conntrack: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    pub healthz: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// Per-destination counters in the tables, exported as metrics (off with --no-counters).
    pub counters: bool,
}

/// The supported part of a KubeProxyConfiguration file.
#[derive(Debug, Default, PartialEq)]
pub struct FileConfig {
    pub hostname_override: Option<String>,
    pub cluster_cidrs: Vec<IpNet>,
    pub nodeport_addresses: Vec<IpNet>,
    pub masquerade_all: bool,
    pub sync_period: Option<Duration>,
    pub min_sync_period: Option<Duration>,
    pub healthz: Option<String>,
    pub metrics: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub detect_local_mode: Option<DetectLocalMode>,
    /// `detectLocal.bridgeInterface`.
    pub bridge_interface: Option<String>,
    /// `detectLocal.interfaceNamePrefix`.
    pub interface_name_prefix: Option<String>,
    /// Fields proxier does not know or support, as dotted paths.
    pub ignored: Vec<String>,
}

impl RunArgs {
    /// Merges the flags with `--config` (warning about fields it ignores) and the defaults.
    pub fn settings(&self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => read_config(path)?,
            None => FileConfig::default(),
        };
        for field in &file.ignored {
            tracing::warn!(file = %self.config.as_deref().unwrap_or(Path::new("")).display(), field, "unknown or unsupported configuration field ignored");
        }
        let mut node = self.node.config()?;
        if let Some(name) = self.hostname_override.clone().or(file.hostname_override.clone()) {
            node.node_name = name;
        }
        if node.cluster_cidrs.is_empty() {
            node.cluster_cidrs = file.cluster_cidrs.clone();
        }
        if self.node.nodeport_addresses.is_empty() {
            node.nodeport_addresses = file.nodeport_addresses.clone();
        }
        node.masquerade_all |= file.masquerade_all;
        if self.node.detect_local_mode.is_none()
            && let Some(mode) = file.detect_local_mode
        {
            let bridge = self.node.pod_bridge_interface.clone().or(file.bridge_interface.clone());
            let prefix = self.node.pod_interface_name_prefix.clone().or(file.interface_name_prefix.clone());
            node.detect_local = mode.detector(bridge, prefix)?;
        }
        let address = |flag: &Option<String>, file: &Option<String>, default: &str| {
            let text = flag.clone().or(file.clone()).unwrap_or_else(|| default.to_owned());
            bind_address(&text)
        };
        let sync_period = self.sync_period.or(file.sync_period).unwrap_or(DEFAULT_SYNC_PERIOD);
        let min_sync_period = self.min_sync_period.or(file.min_sync_period).unwrap_or(DEFAULT_MIN_SYNC_PERIOD);
        if sync_period.is_zero() {
            return Err("--sync-period must be greater than 0".into());
        }
        Ok(Settings {
            node,
            counters: !self.node.no_counters,
            table: self.node.nft.table.clone(),
            nft: self.node.nft.nft.clone(),
            conntrack: (self.conntrack != Path::new("none")).then(|| self.conntrack.clone()),
            kubeconfig: self.kubeconfig.clone().or(file.kubeconfig),
            sync_period,
            min_sync_period,
            healthz: address(&self.healthz_bind_address, &file.healthz, DEFAULT_HEALTHZ)?,
            metrics: address(&self.metrics_bind_address, &file.metrics, DEFAULT_METRICS)?,
        })
    }
}

/// `IP:PORT`; empty disables. kube-proxy also takes a bare IP (port 0 there means "default"); here a
/// bare IP is refused to keep the meaning plain.
fn bind_address(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| format!("{text:?} is not IP:PORT: {e}"))
}

/// A Go duration as kube-proxy's flags and files take it: `30s`, `1m0s`, `500ms`, `1h30m`, `0`.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 1m0s or 500ms");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(number * scale).map_err(|_| bad())?;
        rest = tail;
    }
    Ok(total)
}

/// Reads a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1 or v1alpha2) file.
pub fn read_config(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_config(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_config(text: &str) -> Result<FileConfig, String> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let Value::Object(fields) = value else { return Err("not a KubeProxyConfiguration object".into()) };
    let mut config = FileConfig::default();
    let string = |v: &Value, name: &str| -> Result<String, String> {
        v.as_str().map(str::to_owned).ok_or_else(|| format!("{name}: expected a string"))
    };
    let duration = |v: &Value, name: &str| -> Result<Duration, String> {
        go_duration(&string(v, name)?).map_err(|e| format!("{name}: {e}"))
    };
    let cidrs = |v: &Value, name: &str| -> Result<Vec<IpNet>, String> {
        let items: Vec<String> = match v {
            Value::String(s) => s.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            Value::Array(items) => items.iter().map(|i| string(i, name)).collect::<Result<_, _>>()?,
            Value::Null => Vec::new(),
            _ => return Err(format!("{name}: expected a list of CIDRs")),
        };
        items
            .iter()
            .filter(|s| s.as_str() != "primary")
            .map(|s| s.parse().map_err(|e| format!("{name}: {s:?}: {e}")))
            .collect()
    };
    let sync_fields = |fields: &serde_json::Map<String, Value>, prefix: &str, config: &mut FileConfig| {
        let mut ignored = Vec::new();
        for (key, v) in fields {
            let name = format!("{prefix}{key}");
            match key.as_str() {
                "syncPeriod" => config.sync_period = Some(duration(v, &name)?),
                "minSyncPeriod" => config.min_sync_period = Some(duration(v, &name)?),
                "masqueradeAll" => config.masquerade_all |= v.as_bool().unwrap_or(false),
                _ => ignored.push(name),
            }
        }
        Ok::<_, String>(ignored)
    };
    for (key, v) in &fields {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "mode" if v.as_str().is_none_or(|m| m.is_empty() || m == "nftables") => {}
            "hostnameOverride" => config.hostname_override = Some(string(v, key)?).filter(|s| !s.is_empty()),
            "clusterCIDR" => config.cluster_cidrs = cidrs(v, key)?,
            "nodePortAddresses" => config.nodeport_addresses = cidrs(v, key)?,
            "healthzBindAddress" => config.healthz = Some(string(v, key)?),
            "metricsBindAddress" => config.metrics = Some(string(v, key)?),
            "syncPeriod" | "minSyncPeriod" | "masqueradeAll" => {
                let single = serde_json::Map::from_iter([(key.clone(), v.clone())]);
                let ignored = sync_fields(&single, "", &mut config)?;
                config.ignored.extend(ignored);
            }
            "nftables" => match v {
                Value::Object(inner) => {
                    let ignored = sync_fields(inner, "nftables.", &mut config)?;
                    config.ignored.extend(ignored);
                }
                _ => config.ignored.push(key.clone()),
            },
            "detectLocalMode" => {
                let mode = string(v, key)?;
                if !mode.is_empty() {
                    let mode = clap::ValueEnum::from_str(&mode, false).map_err(|_| {
                        format!("{key}: {mode:?} is not ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix")
                    })?;
                    config.detect_local_mode = Some(mode);
                }
            }
            "detectLocal" => {
                let Value::Object(inner) = v else { return Err(format!("{key}: expected an object")) };
                for (field, v) in inner {
                    let name = format!("{key}.{field}");
                    let interface =
                        |v| string(v, &name).and_then(|s| interface_name(&s).map_err(|e| format!("{name}: {e}")));
                    match field.as_str() {
                        "bridgeInterface" => config.bridge_interface = Some(interface(v)?),
                        "interfaceNamePrefix" => config.interface_name_prefix = Some(interface(v)?),
                        _ => config.ignored.push(name),
                    }
                }
            }
            "clientConnection" => match v.get("kubeconfig").and_then(Value::as_str) {
                Some(path) if !path.is_empty() => config.kubeconfig = Some(PathBuf::from(path)),
                _ => {}
            },
            _ => config.ignored.push(key.clone()),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use proxier_core::DetectLocal;

    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(go_duration("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert!(go_duration("5").is_err());
        assert!(go_duration("s").is_err());
        assert!(go_duration("").is_err());
    }

    #[test]
    fn kube_proxy_configuration_files() {
        let config = parse_config(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n\
             clusterCIDR: 10.244.0.0/16,fd00::/56\nhostnameOverride: node-x\nhealthzBindAddress: 0.0.0.0:10256\n\
             metricsBindAddress: 127.0.0.1:10249\nnodePortAddresses: [primary, 192.168.0.0/16]\n\
             nftables: {syncPeriod: 1m0s, minSyncPeriod: 2s, masqueradeAll: true, masqueradeBit: 14}\n\
             clientConnection: {kubeconfig: /etc/kube.conf}\nconntrack: {maxPerCore: 0}\n",
        )
        .unwrap();
        assert_eq!(config.hostname_override.as_deref(), Some("node-x"));
        assert_eq!(config.cluster_cidrs.len(), 2);
        assert_eq!(config.nodeport_addresses, vec!["192.168.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(config.sync_period, Some(Duration::from_secs(60)));
        assert_eq!(config.min_sync_period, Some(Duration::from_secs(2)));
        assert!(config.masquerade_all);
        assert_eq!(config.kubeconfig, Some(PathBuf::from("/etc/kube.conf")));
        assert_eq!(config.ignored, vec!["conntrack".to_owned(), "nftables.masqueradeBit".to_owned()]);
        // Another mode is not ours to honour: warned.
        assert_eq!(parse_config("mode: iptables\n").unwrap().ignored, vec!["mode".to_owned()]);
        assert!(parse_config("syncPeriod: soon\n").is_err());
    }

    #[test]
    fn detect_local_mode_from_the_file_unless_a_flag_says_otherwise() {
        let file =
            "detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0, interfaceNamePrefix: veth}\n";
        let config = parse_config(file).unwrap();
        assert_eq!(config.detect_local_mode, Some(DetectLocalMode::BridgeInterface));
        assert_eq!(config.bridge_interface.as_deref(), Some("cbr0"));
        assert_eq!(config.interface_name_prefix.as_deref(), Some("veth"));
        assert!(config.ignored.is_empty());
        let err = parse_config("detectLocalMode: Pods\n").unwrap_err();
        assert_eq!(
            err,
            "detectLocalMode: \"Pods\" is not ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix"
        );
        assert!(
            parse_config("detectLocal: {bridgeInterface: \"br0; drop\"}\n")
                .unwrap_err()
                .starts_with("detectLocal.bridgeInterface: ")
        );

        let dir = std::env::temp_dir().join(format!("proxier-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, file).unwrap();
        let settings = |flags: &[&str]| {
            use clap::Parser;
            #[derive(Parser)]
            struct Run {
                #[command(flatten)]
                args: RunArgs,
            }
            let mut argv = vec!["run", "--node", "n", "--config", path.to_str().unwrap()];
            argv.extend_from_slice(flags);
            Run::parse_from(argv).args.settings().map(|s| s.node.detect_local)
        };
        assert_eq!(settings(&[]), Ok(DetectLocal::BridgeInterface("cbr0".into())));
        assert_eq!(settings(&["--pod-bridge-interface", "br1"]), Ok(DetectLocal::BridgeInterface("br1".into())));
        assert_eq!(settings(&["--detect-local-mode", "NodeCIDR"]), Ok(DetectLocal::NodeCidr));
        std::fs::write(&path, "detectLocalMode: InterfaceNamePrefix\n").unwrap();
        assert!(settings(&[]).unwrap_err().contains("needs an interface name prefix"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
