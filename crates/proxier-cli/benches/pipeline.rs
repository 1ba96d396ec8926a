//! The userspace pipeline at scale, on clusters from `proxier gen` (N Services × 10 endpoints, the
//! generator's default mix of types): snapshot text → Snapshot, Snapshot → model (`compute`), model →
//! JSON transaction (full), and one endpoint change (`Transaction::between` + JSON; the whole
//! recomputation live mode once did for it; and live mode's `Proxier`, recomputing only that Service).
//!
//! ```sh
//! cargo bench -p proxier-cli --bench pipeline                 # N = 1,000, 10,000 and 30,000
//! PROXIER_BENCH_SIZES=1000 cargo bench -p proxier-cli --bench pipeline
//! cargo test -p proxier-cli --benches                         # quick mode: each benchmark once (CI)
//! ```
//!
//! `PROXIER_BENCH_SIZES` (comma-separated numbers of Services) replaces the sizes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use divan::Bencher;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxier_cli::generator;
use proxier_core::{ClusterState, NodeConfig, RuleModel, Snapshot, compute};
use proxier_nft::ruleset::Table;
use proxier_nft::{Nft, Proxier, Transaction};

const SIZES: [usize; 3] = [1_000, 10_000, 30_000];
const ENDPOINTS: usize = 10;
const TABLE: &str = "proxier";

fn main() {
    divan::main();
}

/// Everything the benchmarks start from, for one cluster size.
struct Fixture {
    text: String,
    snapshot: Snapshot,
    config: NodeConfig,
    model: RuleModel,
    tables: Vec<Table>,
    /// The snapshot with one endpoint of one Service moved to another address.
    changed: Snapshot,
    /// The tables `changed` lays out as.
    changed_tables: Vec<Table>,
}

/// The sizes to run: [`SIZES`], or those `PROXIER_BENCH_SIZES` names.
fn sizes() -> Vec<usize> {
    match std::env::var("PROXIER_BENCH_SIZES") {
        Ok(sizes) => sizes.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn fixture(services: usize) -> Arc<Fixture> {
    static FIXTURES: OnceLock<Mutex<BTreeMap<usize, Arc<Fixture>>>> = OnceLock::new();
    let mut fixtures = FIXTURES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    fixtures.entry(services).or_insert_with(|| Arc::new(build(services))).clone()
}

fn build(services: usize) -> Fixture {
    let options = generator::Options { services, endpoints: ENDPOINTS, ..generator::Options::default() };
    let (text, _) = generator::generate_text(&options, generator::Syntax::Json).expect("generate");
    let (snapshot, report) = Snapshot::from_text("generated.json", &text);
    assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics.first());
    let config = NodeConfig {
        node_name: generator::node_name(0),
        cluster_cidrs: vec![generator::CLUSTER_CIDR.parse().expect("CIDR")],
        ..NodeConfig::default()
    };
    let model = compute(&snapshot, &config);
    let tables = Transaction::tables(&model);
    let mut changed = snapshot.clone();
    let slice = changed.endpoint_slices.iter_mut().find(|s| is_proxied(s)).expect("a proxied slice");
    slice.endpoints.as_mut().expect("endpoints")[0].addresses = vec!["10.254.0.1".into()];
    let changed_tables = Transaction::tables(&compute(&changed, &config));
    Fixture { text, snapshot, config, model, tables, changed, changed_tables }
}

fn is_proxied(slice: &EndpointSlice) -> bool {
    let headless = slice.metadata.labels.as_ref().is_some_and(|l| l.contains_key("service.kubernetes.io/headless"));
    !headless && slice.endpoints.as_ref().is_some_and(|e| !e.is_empty())
}

/// kubectl's JSON text → Snapshot.
#[divan::bench(args = sizes(), sample_count = 10, sample_size = 1)]
fn parse(bencher: Bencher, services: usize) {
    let fixture = fixture(services);
    bencher.bench(|| Snapshot::from_text("generated.json", &fixture.text));
}

/// Snapshot → RuleModel.
#[divan::bench(args = sizes(), sample_count = 10, sample_size = 1)]
fn compute_model(bencher: Bencher, services: usize) {
    let fixture = fixture(services);
    bencher.bench(|| compute(&fixture.snapshot, &fixture.config));
}

/// RuleModel → the full JSON transaction (layout, then rendering), as `proxier render` and `apply` do.
#[divan::bench(args = sizes(), sample_count = 10, sample_size = 1)]
fn render_full(bencher: Bencher, services: usize) {
    let fixture = fixture(services);
    bencher.bench(|| Transaction::full(&fixture.model, TABLE).to_json());
}

/// One endpoint change: the diff between committed and desired tables, rendered as JSON.
#[divan::bench(args = sizes(), sample_count = 10, sample_size = 1)]
fn incremental(bencher: Bencher, services: usize) {
    let fixture = fixture(services);
    bencher.bench(|| {
        let (transaction, _) = Transaction::between(&fixture.tables, &fixture.changed_tables, TABLE);
        transaction.to_json()
    });
}

/// One endpoint change as live mode handled it before `Proxier` kept per-Service shares: recompute the
/// model from the whole changed snapshot, lay it out, diff against the committed tables, render.
#[divan::bench(args = sizes(), sample_count = 10, sample_size = 1)]
fn incremental_recompute(bencher: Bencher, services: usize) {
    let fixture = fixture(services);
    bencher.bench(|| {
        let desired = Transaction::tables(&compute(&fixture.changed, &fixture.config));
        let (transaction, _) = Transaction::between(&fixture.tables, &desired, TABLE);
        transaction.to_json()
    });
}

/// One endpoint change as live mode handles it: `Proxier` recomputes the one Service, writes the
/// difference of its share and renders it. `nft` is replaced by `true`, so each sample includes
/// starting one process (about 1 ms) but no kernel work. Each sample moves the endpoint back and forth.
#[divan::bench(args = sizes(), sample_count = 10, sample_size = 1)]
fn incremental_live(bencher: Bencher, services: usize) {
    let fixture = fixture(services);
    let mut proxier = Proxier::new(ClusterState::new(fixture.config.clone()), TABLE, Nft::new("true"));
    proxier.state_mut().relist(&fixture.snapshot);
    proxier.sync().expect("full sync");
    let index = fixture.snapshot.endpoint_slices.iter().position(is_proxied).expect("a proxied slice");
    let states = [fixture.changed.endpoint_slices[index].clone(), fixture.snapshot.endpoint_slices[index].clone()];
    let mut next = 0;
    bencher.bench_local(|| {
        proxier.state_mut().apply_endpoint_slice(states[next % 2].clone());
        next += 1;
        let outcome = proxier.sync().expect("partial sync");
        assert!(outcome.changes > 0);
        outcome
    });
}
