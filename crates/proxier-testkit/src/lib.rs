//! proxier-testkit: the test support shared by proxier's crates and its fuzz targets (dev-only,
//! never published). One crate, so no test includes another crate's files by path:
//!
//! - the test bed (this page, below): a small Kubernetes-like cluster built from Linux network
//!   namespaces, with servers and probes, so tests can prove service-proxy rules with real traffic;
//! - [`Netns`]: the one network-namespace helper, also for kernel tests that need only an empty
//!   namespace ([`Netns::for_test`]);
//! - [`objects`]: proptest strategies for Services, EndpointSlices, Nodes and node configurations;
//! - [`counters`]: the per-Service counters as `nft -j list` shows them, to hold proxier's reading to;
//! - [`invariants`]: what a rendered transaction may contain, and a simulator of how the kernel
//!   applies one;
//! - [`docs`]: the messages the documentation's tables quote, for tests that compare them;
//! - [`fuzz`]: the fuzz targets' input builder and checks, run by `fuzz/` and by the smoke test;
//! - [`apiserver`]: a stand-in Kubernetes API server (list/watch of Services, EndpointSlices and
//!   Nodes) for `proxier run`'s tests and the churn driver;
//! - [`scenario`]: the test bed programmed by the real `proxier` binary, and Service and
//!   EndpointSlice builders, for the traffic tests.
//!
//! # The test bed
//!
//! Dev-only: tests need root, `ip` (iproute2) and `nft`. Nothing here touches the host's own
//! network namespace or ruleset: every interface is created directly inside a test namespace,
//! no namespace is connected to the host, and probes only go to addresses inside the bed.
//!
//! ## Topology
//!
//! ```text
//!                        switch  (bridge br0; 192.168.49.1/24, fd00:49::1/64: the
//!                          |      nodes' default gateway, which silently discards)
//!      +-------------------+--------------------+----------------------+
//!      | port node1        | port node2         | port client          |
//!      | eth0              | eth0               | eth0                 |
//!   node-a                node-b                client
//!   192.168.49.11         192.168.49.12         192.168.49.100
//!   fd00:49::11           fd00:49::12           fd00:49::100
//!   pods 10.244.1.0/24    pods 10.244.2.0/24    routes 10.96.0.0/16, fd00:10:96::/112,
//!        fd00:10:244:1::/64    fd00:10:244:2::/64   203.0.113.0/24, 198.51.100.0/24,
//!    | veth2   | veth3      | veth2                 2001:db8::/64 via node 1
//!    | eth0    | eth0       | eth0
//!   pod a1    pod a2      pod b1
//!   10.244.1.2 10.244.1.3 10.244.2.2
//!   fd00:10:244:1::2 …    fd00:10:244:2::2
//! ```
//!
//! Every box is its own namespace, named `pxt-<pid>-<n>-<role>` (e.g. `pxt-4242-7-node-a`),
//! so tests run in parallel, within and across processes. Interface names are short and
//! fixed because each lives in its own namespace.
//!
//! ## Addressing plan
//!
//! * Node network `192.168.49.0/24` + `fd00:49::/64` on the switch bridge. Node `i` (1-based,
//!   named `node-a`, `node-b`, …) is `192.168.49.(10+i)` and `fd00:49::(10+i)` written with the
//!   same decimal digits ([`node_ipv4`], [`node_ipv6`]: node 1 → `192.168.49.11`,
//!   `fd00:49::11`). The switch itself is `.1` / `::1`, the outside client `.100` / `::100`.
//! * Node `i` owns the pod CIDRs `10.244.i.0/24` and `fd00:10:244:i::/64`. Its pods get
//!   `.2`, `.3`, … / `::2`, `::3`, … in the order they are added.
//! * Pod wiring (point-to-point, no bridge): the pod has its address as /32 and /128 on `eth0`,
//!   an on-link route to its gateway `10.244.i.1` / `fd00:10:244:i::1` and a default route via
//!   it. The node side of each pod veth (`veth<k>` for pod address `.k`) carries that gateway
//!   address (the same on every pod veth) and the node has a host route per pod, with the node
//!   IP as preferred source, so node-originated traffic to pods shows the node IP.
//! * Nodes: `ip_forward=1`, `ipv6 forwarding=1`, routes to every other node's pod CIDRs via
//!   that node's IP (plain routing, no NAT, so pods keep their source across nodes), and a
//!   default route via the switch. Like a real node's default route, it gives locally generated
//!   traffic to a ClusterIP / LoadBalancer IP a route (so the proxy's output-hook DNAT can
//!   rewrite it) and a source address (the node IP). Anything a node sends "out" that the proxy
//!   did not capture reaches the switch, which neither forwards nor answers: such probes end in
//!   [`Outcome::Timeout`], never in an error.
//! * The outside client sits on the node network only. It has routes for the service CIDRs
//!   (`10.96.0.0/16`, `fd00:10:96::/112`) and the external/LoadBalancer ranges
//!   (`203.0.113.0/24`, `198.51.100.0/24`, `2001:db8::/64`) via node 1
//!   ([`TestBed::route_external_via`] moves them), and no route to pods (probing a pod IP from
//!   the client is refused at once with `NetworkUnreachable`).
//! * Every bed namespace gets `rp_filter=0`, no IPv6 DAD, and no ICMP redirects sent or
//!   accepted (a redirect would let the client bypass node 1 and change later probes).
//!
//! ## Writing a behaviour test
//!
//! ```no_run
//! use proxier_testkit::{Proto, TestBed, assert_reaches, assert_refused, netns_available};
//!
//! fn cluster_ip_reaches_both_pods() -> std::io::Result<()> {
//!     if !netns_available("cluster_ip_reaches_both_pods") {
//!         return Ok(());
//!     }
//!     let mut bed = TestBed::new(2)?;
//!     bed.add_pod(1, "web-a")?;
//!     bed.add_pod(2, "web-b")?;
//!     let _servers = [bed.pod("web-a").serve(Proto::Tcp, 8080)?, bed.pod("web-b").serve(Proto::Tcp, 8080)?];
//!     // … write Service/EndpointSlice YAML next to bed.nodes_yaml(), program each node's
//!     // namespace with proxier (bed.node(i).netns()) …
//!     let vip = "10.96.0.10:80".parse().unwrap();
//!     assert_reaches(bed.client(), Proto::Tcp, vip, 20, &["web-a", "web-b"]);
//!     assert_reaches(bed.pod("web-a"), Proto::Tcp, vip, 20, &["web-a", "web-b"]);
//!     assert_refused(bed.client(), Proto::Tcp, "10.96.0.10:81".parse().unwrap());
//!     Ok(())
//! }
//! ```
//!
//! Servers ([`serve`], [`Pod::serve`], [`Node::serve`]) answer every TCP/SCTP connection and
//! UDP datagram with one line `<name> <source-ip:port-it-saw>`; probes ([`probe`]) turn that
//! into [`Outcome::Answered`]. The assertion helpers come in pairs: `check_*` returns
//! `Result<_, String>`, `assert_*` panics with the same readable message.
//!
//! ## Skipping
//!
//! Start every kernel test with `if !proxier_testkit::netns_available("name") { return; }`.
//! Without root, `ip` or `nft` (or if a namespace cannot be created) it prints
//! `SKIP name: needs root and nft (…what is missing…)` to stderr and the test passes as a no-op.
//! With `PROXIER_REQUIRE_NETNS=1` in the environment it panics with that message instead, so CI
//! cannot silently skip. SCTP needs kernel support too: [`sctp_available`] skips the same way
//! (but never panics), and SCTP servers/probes fail with [`std::io::ErrorKind::Unsupported`].
//!
//! ## Cleanup
//!
//! Every namespace is deleted when its owner ([`Netns`], [`TestBed`]) is dropped, including
//! while a failing test unwinds. Namespaces of a killed test process are deleted by
//! [`sweep_stale`], which runs on the first [`Netns::new`] of every process.

#![allow(clippy::disallowed_methods)] // Test support runs `ip` and `nft` in its namespaces (clippy.toml).

pub mod apiserver;
mod bed;
pub mod counters;
pub mod docs;
pub mod fuzz;
pub mod invariants;
mod netns;
pub mod objects;
mod probe;
pub mod scenario;
mod server;
mod sock;

use std::sync::OnceLock;

use netns::decide;

pub use bed::{
    CLIENT_IPV4, CLIENT_IPV6, CLUSTER_CIDR_V4, CLUSTER_CIDR_V6, EXTERNAL_CIDRS_V4, EXTERNAL_CIDRS_V6, GATEWAY_IPV4,
    GATEWAY_IPV6, MAX_NODES, NODE_NET_V4, NODE_NET_V6, Node, Pod, SERVICE_CIDR_V4, SERVICE_CIDR_V6, TestBed,
    TestBedBuilder, node_ipv4, node_ipv6, node_name, pod_cidrs,
};
pub use netns::{NAME_PREFIX, Netns, REQUIRE_ENV, canonical_listing, netns_available, sweep_stale};
pub use probe::{
    ANSWER_TIMEOUT, DROP_TIMEOUT, Outcome, REFUSED_WITHIN, assert_dropped, assert_reaches, assert_refused,
    assert_source_seen, assert_sticky, check_dropped, check_reached, check_reaches, check_refused, check_source_seen,
    check_sticky, probe, reached,
};
pub use server::{Server, serve};
pub use sock::Proto;

/// Whether this kernel supports SCTP sockets; if not, prints `SKIP <test_name>: needs SCTP
/// (…)` and returns false. Never panics: SCTP is a kernel build/module choice, not a setup
/// mistake. Call it after [`netns_available`].
pub fn sctp_available(test_name: &str) -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        sock::socket(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_SCTP)
            .map(drop)
            .map_err(|e| format!("socket(AF_INET6, SOCK_STREAM, IPPROTO_SCTP): {e}"))
    });
    decide(test_name, check, false, "needs SCTP")
}
