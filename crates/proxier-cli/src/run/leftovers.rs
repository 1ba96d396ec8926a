//! kube-proxy's leftovers on a node proxier takes over: its nftables tables, its iptables chains
//! (through iptables-nft, or the legacy backend) and its IPVS interface. Two proxies answering for the
//! same Services give unpredictable results, so each is named at start with how to remove it; proxier
//! itself never touches them.

use std::path::Path;
use std::process::Command;

use proxier_nft::{Nft, TableNames};

/// One kind of leftover found, and how to remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// What was found, e.g. `table ip kube-proxy`.
    pub what: String,
    /// Shell commands (or advice) that remove it.
    pub remove: String,
}

/// kube-proxy's iptables chains all start with this.
const CHAIN_PREFIX: &str = "KUBE-";
/// The dummy interface kube-proxy's ipvs mode holds Service addresses on.
const IPVS_INTERFACE: &str = "kube-ipvs0";

/// The leftovers in the live nftables ruleset (kube-proxy's nftables tables; iptables-nft chains).
pub fn in_ruleset(tables: &[TableNames]) -> Vec<Leftover> {
    let mut found = Vec::new();
    let own: Vec<&TableNames> = tables.iter().filter(|t| t.name == "kube-proxy").collect();
    if !own.is_empty() {
        let names: Vec<String> = own.iter().map(|t| format!("table {} {}", t.family, t.name)).collect();
        let remove: Vec<String> = own.iter().map(|t| format!("nft delete table {} {}", t.family, t.name)).collect();
        found.push(Leftover {
            what: format!("kube-proxy's nftables mode rules ({})", names.join(", ")),
            remove: remove.join("; "),
        });
    }
    let chains: Vec<String> = tables
        .iter()
        .filter(|t| t.name != "kube-proxy")
        .flat_map(|t| {
            t.chains.iter().filter(|c| c.starts_with(CHAIN_PREFIX)).map(move |c| format!("{} {} {c}", t.family, t.name))
        })
        .collect();
    if !chains.is_empty() {
        found.push(Leftover {
            what: format!("kube-proxy's iptables mode chains, through iptables-nft ({})", summarise(&chains)),
            remove: "run `kube-proxy --cleanup` once on this node (kube-proxy's image, hostNetwork, privileged), \
                     or reboot it: iptables rules are not kept across boots"
                .into(),
        });
    }
    found
}

/// Names at most five items, then how many more.
fn summarise(items: &[String]) -> String {
    let mut text = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        text.push_str(&format!(" and {} more", items.len() - 5));
    }
    text
}

/// kube-proxy's chains in the legacy (x_tables) backend, read with `iptables-legacy-save` when the
/// kernel holds legacy tables in this namespace and the program is installed. The one process proxier
/// starts outside nft's and conntrack's runners: it only reads (nftables cannot see legacy tables), and
/// its failure only means no warning.
#[allow(clippy::disallowed_methods)]
fn in_legacy_iptables(proc: &Path) -> Vec<Leftover> {
    let mut chains = Vec::new();
    for (names, program) in
        [("net/ip_tables_names", "iptables-legacy-save"), ("net/ip6_tables_names", "ip6tables-legacy-save")]
    {
        // Reading the names file loads nothing; without legacy tables there is nothing to look for.
        let loaded = std::fs::read_to_string(proc.join(names)).unwrap_or_default();
        if loaded.trim().is_empty() {
            continue;
        }
        let Ok(output) = Command::new(program).output() else { continue };
        let text = String::from_utf8_lossy(&output.stdout);
        let mut table = String::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = name.to_owned();
            } else if let Some(chain) = line.strip_prefix(':').and_then(|l| l.split_whitespace().next())
                && chain.starts_with(CHAIN_PREFIX)
            {
                chains.push(format!("{program} {table} {chain}"));
            }
        }
    }
    if chains.is_empty() {
        return Vec::new();
    }
    vec![Leftover {
        what: format!("kube-proxy's iptables mode chains, legacy backend ({})", summarise(&chains)),
        remove: "run `kube-proxy --cleanup` once on this node (kube-proxy's image, hostNetwork, privileged), \
                 or reboot it: iptables rules are not kept across boots"
            .into(),
    }]
}

/// kube-proxy's ipvs mode interface.
fn in_ipvs(sys: &Path) -> Vec<Leftover> {
    if !sys.join("class/net").join(IPVS_INTERFACE).exists() {
        return Vec::new();
    }
    vec![Leftover {
        what: format!("kube-proxy's ipvs mode interface {IPVS_INTERFACE} (and, with it, IPVS virtual servers)"),
        remove: format!(
            "run `kube-proxy --cleanup` once on this node, or `ip link delete {IPVS_INTERFACE}` and `ipvsadm --clear`"
        ),
    }]
}

/// Looks for every kind of leftover and warns about each one found. A failure to look is logged at
/// debug level: the check is advice, not a precondition.
pub fn warn(nft: &Nft) -> Vec<Leftover> {
    let mut found = match nft.table_names() {
        Ok(tables) => in_ruleset(&tables),
        Err(error) => {
            tracing::debug!(%error, "cannot list the ruleset to look for kube-proxy's rules");
            Vec::new()
        }
    };
    found.extend(in_legacy_iptables(Path::new("/proc")));
    found.extend(in_ipvs(Path::new("/sys")));
    for leftover in &found {
        tracing::warn!(
            found = %leftover.what,
            remove = %leftover.remove,
            "kube-proxy's rules are still on this node: both proxies would handle Services; proxier leaves them alone"
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(family: &str, name: &str, chains: &[&str]) -> TableNames {
        TableNames { family: family.into(), name: name.into(), chains: chains.iter().map(|c| c.to_string()).collect() }
    }

    #[test]
    fn kube_proxy_tables_and_chains_are_named_with_how_to_remove_them() {
        let tables = [
            table("ip", "filter", &["FORWARD", "KUBE-FORWARD", "KUBE-SERVICES"]),
            table("ip", "kube-proxy", &["services"]),
            table("ip", "proxier", &["services"]),
            table("ip6", "kube-proxy", &[]),
        ];
        let found = in_ruleset(&tables);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].what, "kube-proxy's nftables mode rules (table ip kube-proxy, table ip6 kube-proxy)");
        assert_eq!(found[0].remove, "nft delete table ip kube-proxy; nft delete table ip6 kube-proxy");
        assert!(found[1].what.contains("ip filter KUBE-FORWARD, ip filter KUBE-SERVICES"), "{}", found[1].what);
        assert!(found[1].remove.contains("kube-proxy --cleanup"));
        assert!(in_ruleset(&[table("ip", "proxier", &["KUBE-LOOKALIKE"])]).len() == 1);
        assert!(in_ruleset(&[table("inet", "filter", &["input"])]).is_empty());
        let many: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
        assert_eq!(summarise(&many), "c0, c1, c2, c3, c4 and 2 more");
    }

    #[test]
    fn the_ipvs_interface() {
        let root = std::env::temp_dir().join(format!("proxier-leftovers-{}", std::process::id()));
        std::fs::create_dir_all(root.join("class/net/eth0")).unwrap();
        assert!(in_ipvs(&root).is_empty());
        std::fs::create_dir_all(root.join("class/net/kube-ipvs0")).unwrap();
        assert!(in_ipvs(&root)[0].remove.contains("ip link delete kube-ipvs0"));
        assert!(in_legacy_iptables(&root).is_empty(), "no legacy tables loaded");
        std::fs::remove_dir_all(root).unwrap();
    }
}
