//! Log output: text (colour only on a terminal, and never with `NO_COLOR` set) or one JSON object per
//! event; kube-proxy's `-v` levels mapped onto tracing's. `RUST_LOG`, when set, wins.

use tracing_subscriber::EnvFilter;

use super::config::LogFormat;

/// The filter for kube-proxy's verbosity `level`: proxier's own events at info (0-2), debug (3-4) or
/// trace (5 and more); other crates' (the Kubernetes client, HTTP) at warn. The client's own error line
/// for each failed request is left out: proxier logs the failure once per backoff step, with the
/// server and the cause.
pub fn filter(level: u8) -> String {
    let own = match level {
        0..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    };
    format!("warn,kube_client::client::builder=off,proxier={own},proxier_nft={own},proxier_core={own}")
}

/// Whether text output may be coloured: on a terminal, unless NO_COLOR is set to anything non-empty
/// (no-color.org).
pub fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Installs the global subscriber, writing to stderr. `default` is the filter when RUST_LOG is unset.
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (only possible in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_levels() {
        assert_eq!(filter(0), "warn,kube_client::client::builder=off,proxier=info,proxier_nft=info,proxier_core=info");
        assert_eq!(filter(2), filter(0));
        assert!(filter(4).contains("proxier=debug"));
        assert!(filter(9).contains("proxier=trace"));
    }
}
