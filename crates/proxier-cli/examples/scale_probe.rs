//! Scale probe: the measurements `scripts/perf.sh` makes that the `proxier` binary cannot make itself.
//!
//! ```text
//! scale_probe sync   --snapshot FILE --node NAME [--cluster-cidr CIDR] [--changes K] [--table NAME] [--counters off]
//!                    [--backend nft|netlink|both] [--change endpoint|service] [--concurrent-reads on]
//!     cold load through the library, phase by phase, then K one-endpoint changes applied with
//!     Transaction::between, each phase timed; prints key=value lines. The changes go to the kernel by
//!     `nft -j -f` (default), by proxier's persistent netlink socket, or alternately by each (`both`:
//!     even changes by nft, odd ones by netlink, so that both see the same kernel and load).
//!     `--change service`: each change deletes a Service with its EndpointSlices (even changes) or adds
//!     it back (odd ones), reported as change.delete_… and change.add_… (`both` then alternates
//!     the backend per pair: changes 0–1 by nft, 2–3 by netlink, …).
//!     With `--concurrent-reads on`, another thread reads every counter over and over meanwhile (reads.…).
//! scale_probe live   --snapshot FILE --node NAME [--cluster-cidr CIDR] [--changes K] [--table NAME]
//!                    [--counters on|off]
//!     the same through the embeddable `Proxier` (what `proxier run` holds), then its RSS.
//! scale_probe churn  --snapshot FILE --node NAME [--cluster-cidr CIDR] [--events N] [--batches B] [--seed S]
//!                    [--table NAME] [--backend nft|netlink]
//!     the live `Proxier`'s full sync, then B batches (default 10) of N random endpoint events each
//!     (default 1,000: endpoints added, removed, readiness flipped, on random slices), one sync per
//!     batch; prints the median and maximum elements, commands and time per sync.
//! scale_probe cold   --snapshot FILE --node NAME [--cluster-cidr CIDR] [--repeat R] [--reference yes|no]
//!     compute, layout and JSON render of the full transaction, each R times (default 5), without the
//!     kernel; prints the median of each, and (unless --reference no) of the reference JSON path the
//!     render replaced, checking that both give the same bytes.
//! scale_probe formats --snapshot FILE --node NAME [--cluster-cidr CIDR]
//!     the full transaction rendered as pretty JSON (what `apply` sends), compact JSON and nft text,
//!     each timed and loaded into a fresh scratch namespace, timed.
//! scale_probe reapply --snapshot FILE --node NAME [--cluster-cidr CIDR] [--table NAME] [--repeat R]
//!                     [--compare-json no]
//!     a full replacement that carries counts, as `proxier apply` over live tables and the first sync
//!     after a restart make it, phase by phase: loads the full transaction (compact JSON, a cold load),
//!     gives every counted element a count, then R times (default 1): reads the counts (netlink),
//!     renders the replacement carrying them (nft text) and loads it, and checks that every count
//!     survived; then, for comparison (unless --compare-json no, which leaves the counted tables in
//!     place), the same replacement without counts (compact JSON).
//! scale_probe kube-proxy-layout --snapshot FILE --node NAME [--cluster-cidr CIDR]
//!     the same Services written in kube-proxy's nftables layout (a chain per Service port, picking an
//!     endpoint with `numgen random mod N vmap`, a chain per endpoint doing the DNAT, an `external-`
//!     chain per NodePort), loaded with one `nft -f` into a fresh scratch namespace, timed: the
//!     comparison series of docs/performance.md's cold-load chart. Built from proxier's model, so both
//!     layouts carry the same destinations and endpoints; it is loaded for timing only, not run.
//! scale_probe count  [--table NAME]            kernel objects in `table ip NAME`.
//! scale_probe serve  --listen ADDR:PORT        a TCP server answering one byte per connection.
//! scale_probe connect --to ADDR:PORT --seconds S
//!     new connections one at a time (connect, send a byte, read a byte, close with a reset).
//! ```
//!
//! Every `sync`, `live` and `churn` run changes the kernel of the network namespace it runs in: run it in a
//! namespace of its own (`ip netns exec …`), as `scripts/perf.sh` does.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxier_cli::generator::Rng;
use proxier_core::{ClusterState, NodeConfig, Snapshot, compute};
use proxier_nft::{Nft, Proxier, Transaction};

type Args = BTreeMap<String, String>;

fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let mut args = Args::new();
    while let Some(flag) = argv.next() {
        let Some(name) = flag.strip_prefix("--") else { fail(&format!("unexpected argument {flag:?}")) };
        args.insert(name.to_owned(), argv.next().unwrap_or_else(|| fail(&format!("--{name} needs a value"))));
    }
    match command.as_str() {
        "sync" => sync(&args),
        "live" => live(&args),
        "churn" => churn(&args),
        "count" => count(&args),
        "cold" => cold(&args),
        "formats" => formats(&args),
        "reapply" => reapply(&args),
        "kube-proxy-layout" => kube_proxy_layout(&args),
        "serve" => serve(&args),
        "connect" => connect(&args),
        _ => fail(
            "usage: scale_probe sync|live|churn|cold|formats|reapply|kube-proxy-layout|count|serve|connect [--flag value]...",
        ),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("scale_probe: {message}");
    std::process::exit(2)
}

fn arg<'a>(args: &'a Args, name: &str) -> &'a str {
    args.get(name).map_or_else(|| fail(&format!("--{name} is required")), String::as_str)
}

fn arg_or<'a>(args: &'a Args, name: &str, default: &'a str) -> &'a str {
    args.get(name).map_or(default, String::as_str)
}

fn number<T: std::str::FromStr>(args: &Args, name: &str, default: &str) -> T {
    arg_or(args, name, default).parse().unwrap_or_else(|_| fail(&format!("--{name} is not a number")))
}

fn config(args: &Args) -> NodeConfig {
    let cluster_cidrs = args
        .get("cluster-cidr")
        .map(|c| c.split(',').map(|n| n.parse().unwrap_or_else(|_| fail(&format!("bad CIDR {n:?}")))).collect())
        .unwrap_or_default();
    NodeConfig { node_name: arg(args, "node").to_owned(), cluster_cidrs, ..NodeConfig::default() }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs `work`, returning its result and how long it took (wall clock). The CPU time it used, this
/// thread's plus that of the child processes (nft) it waited for, is then in [`last_cpu`]: on a shared
/// machine that is the steadier number.
fn timed<R>(work: impl FnOnce() -> R) -> (R, Duration) {
    let cpu = cpu_time();
    let start = Instant::now();
    let result = work();
    let wall = start.elapsed();
    LAST_CPU.set(cpu_time().saturating_sub(cpu));
    (result, wall)
}

thread_local! {
    static LAST_CPU: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

fn last_cpu() -> Duration {
    LAST_CPU.get()
}

/// User and system time of this thread and of the children waited for so far.
fn cpu_time() -> Duration {
    let usage = |who| {
        // SAFETY: getrusage writes one rusage struct into the zeroed one given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &raw mut usage) };
        let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        time(usage.ru_utime) + time(usage.ru_stime)
    };
    usage(libc::RUSAGE_THREAD) + usage(libc::RUSAGE_CHILDREN)
}

fn load(args: &Args) -> Snapshot {
    let path = arg(args, "snapshot");
    let (text, read) = timed(|| std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{path}: {e}"))));
    let ((snapshot, report), parse) = timed(|| Snapshot::from_text(path, &text));
    let parse_cpu = last_cpu();
    if report.has_errors() {
        fail(&format!("{path}: {} problems, first: {}", report.diagnostics.len(), report.diagnostics[0]));
    }
    println!("cold.bytes={}", text.len());
    println!("cold.read_ms={:.1}", ms(read));
    println!("cold.parse_ms={:.1}", ms(parse));
    println!("cold.parse_cpu_ms={:.1}", ms(parse_cpu));
    println!("services={}", snapshot.services.len());
    println!("endpoint_slices={}", snapshot.endpoint_slices.len());
    snapshot
}

/// The number of commands (add, delete, flush…) in a JSON transaction: its size as nft sees it.
fn commands(document: &str) -> usize {
    let value: serde_json::Value = serde_json::from_str(document).unwrap_or_default();
    value["nftables"].as_array().map_or(0, |objects| objects.iter().filter(|o| o.get("metainfo").is_none()).count())
}

/// A thread reading every counter of `table` over netlink, one read after another, until told to
/// stop; it returns how long each read took (ms).
fn concurrent_reads(table: &str) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<Vec<f64>>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, table) = (stop.clone(), table.to_owned());
    let reader = std::thread::spawn(move || {
        let mut times = Vec::new();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let started = Instant::now();
            proxier_nft::counters::read(&table).unwrap_or_else(|e| fail(&format!("concurrent read: {e}")));
            times.push(ms(started.elapsed()));
        }
        times
    });
    (stop, reader)
}

/// See the module docs: `scale_probe reapply`.
fn reapply(args: &Args) {
    use proxier_nft::counters;
    let config = config(args);
    let table = arg_or(args, "table", "proxier");
    let repeat: usize = number(args, "repeat", "1");
    let nft = Nft::default();
    let snapshot = load(args);
    let model = compute(&snapshot, &config);
    drop(snapshot);
    let (applied, time) = timed(|| nft.apply_json(&Transaction::full(&model, table).to_json_compact()));
    applied.unwrap_or_else(|e| fail(&format!("cold apply: {e}")));
    println!("reapply.cold_json_ms={:.1}", ms(time));
    println!("reapply.cold_json_cpu_ms={:.1}", ms(last_cpu()));
    // Every counted element gets a count of its own: the worst case, a node where every destination
    // has seen traffic.
    let elements = counters::read(table).unwrap_or_else(|e| fail(&format!("read: {e}")));
    let seeded: counters::Carried = elements
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.family, e.set.clone(), e.key.clone()), (i as u64 + 1, 60 * (i as u64 + 1))))
        .collect();
    let (applied, time) = timed(|| Transaction::full(&model, table).with_carried_counts(seeded.clone()).apply(&nft));
    applied.unwrap_or_else(|e| fail(&format!("seeding the counts: {e}")));
    println!("reapply.counted_elements={}", seeded.len());
    println!("reapply.seed_ms={:.1}", ms(time));
    for round in 0..repeat {
        let mut phases = Vec::new();
        let (elements, time) = timed(|| counters::read(table).unwrap_or_else(|e| fail(&format!("read: {e}"))));
        phases.push(("read", time, last_cpu()));
        let (carried, time) = timed(|| counters::carried(&elements));
        phases.push(("carried", time, last_cpu()));
        let (script, time) = timed(|| Transaction::full(&model, table).with_carried_counts(carried).to_text());
        phases.push(("render_text", time, last_cpu()));
        let (applied, time) = timed(|| nft.apply_text(&script));
        applied.unwrap_or_else(|e| fail(&format!("re-apply: {e}")));
        phases.push(("nft_text", time, last_cpu()));
        let total = phases.iter().fold((Duration::ZERO, Duration::ZERO), |(w, c), p| (w + p.1, c + p.2));
        phases.push(("total", total.0, total.1));
        for (name, wall, cpu) in phases {
            println!("reapply.{round}.{name}_ms={:.1}", ms(wall));
            println!("reapply.{round}.{name}_cpu_ms={:.1}", ms(cpu));
        }
        let after = counters::carried(&counters::read(table).unwrap_or_else(|e| fail(&format!("read: {e}"))));
        if after != seeded {
            fail(&format!("counts lost: {} carried, {} expected", after.len(), seeded.len()));
        }
    }
    // `--compare-json no`: leave the counted tables in place (to time `proxier apply` over them).
    if arg_or(args, "compare-json", "yes") == "no" {
        return;
    }
    let (applied, time) = timed(|| nft.apply_json(&Transaction::full(&model, table).to_json_compact()));
    applied.unwrap_or_else(|e| fail(&format!("re-apply without counts: {e}")));
    println!("reapply.json_replace_ms={:.1}", ms(time));
    println!("reapply.json_replace_cpu_ms={:.1}", ms(last_cpu()));
}

/// Slices whose change must reach the kernel: those of proxied (not headless) Services with endpoints.
fn changeable_slices(slices: &[EndpointSlice]) -> Vec<usize> {
    let headless = |s: &EndpointSlice| {
        s.metadata.labels.as_ref().is_some_and(|l| l.contains_key("service.kubernetes.io/headless"))
    };
    (0..slices.len())
        .filter(|&i| !headless(&slices[i]) && slices[i].endpoints.as_ref().is_some_and(|e| !e.is_empty()))
        .collect()
}

/// Change `k`: the first endpoint of one slice (a different slice each time) gets a new address, as
/// when a pod is replaced.
fn change_endpoint(slice: &mut EndpointSlice, k: usize) {
    let address = format!("10.254.{}.{}", k / 250, k % 250 + 1);
    if let Some(endpoint) = slice.endpoints.as_mut().and_then(|e| e.first_mut()) {
        endpoint.addresses = vec![address];
    }
}

fn pick(candidates: &[usize], k: usize) -> usize {
    candidates[(k.wrapping_mul(7919) + candidates.len() / 2) % candidates.len()]
}

/// Median and maximum of each named series, printed as `prefix.name_ms=median` and `…_max_ms=max`.
fn report_series(prefix: &str, series: &BTreeMap<String, Vec<f64>>) {
    for (name, values) in series {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            continue;
        }
        println!("{prefix}.{name}={:.2}", sorted[sorted.len() / 2]);
        println!("{prefix}.{name}_max={:.2}", sorted[sorted.len() - 1]);
    }
}

fn sync(args: &Args) {
    let config = config(args);
    let table = arg_or(args, "table", "proxier");
    let changes: usize = number(args, "changes", "20");
    // `--counters off`: the layout without per-destination counters, for side-by-side figures.
    let counters = arg_or(args, "counters", "on") != "off";
    let nft = Nft::default();
    let mut snapshot = load(args);
    let baseline = resident();
    println!("mem.snapshot_kib={}", baseline);

    let (model, compute_time) = timed(|| compute(&snapshot, &config));
    let compute_cpu = last_cpu();
    let (tables, layout_time) = timed(|| Transaction::tables_with(&model, counters));
    let layout_cpu = last_cpu();
    let (document, render_time) = timed(|| Transaction::replacing(tables.clone(), table).to_json_compact());
    let render_cpu = last_cpu();
    let (applied, nft_time) = timed(|| nft.apply_json(&document));
    let nft_cpu = last_cpu();
    applied.unwrap_or_else(|e| fail(&format!("cold apply: {e}")));
    let elements: usize = tables.iter().flat_map(|t| &t.sets).map(|s| s.elements.len()).sum();
    let (json_bytes, json_commands) = (document.len(), commands(&document));
    drop(document);
    let with_tables = resident();
    let model_alone = {
        let copy = model.clone();
        let before = resident();
        drop(copy);
        before - resident()
    };
    println!("mem.model_kib={model_alone}");
    println!("mem.snapshot_model_tables_kib={with_tables}");
    for (name, wall, cpu) in [
        ("compute", compute_time, compute_cpu),
        ("layout", layout_time, layout_cpu),
        ("render", render_time, render_cpu),
        ("compute_render", compute_time + layout_time + render_time, compute_cpu + layout_cpu + render_cpu),
        ("nft", nft_time, nft_cpu),
    ] {
        println!("cold.{name}_ms={:.1}", ms(wall));
        println!("cold.{name}_cpu_ms={:.1}", ms(cpu));
    }
    // What cloning every EndpointSlice costs (compute once started with that clone; it reads them by
    // reference now):
    let (slices, clone_time) = timed(|| snapshot.endpoint_slices.clone());
    drop(slices);
    println!("cold.slices_clone_ms={:.1}", ms(clone_time));
    println!("cold.json_bytes={json_bytes}");
    println!("cold.commands={json_commands}");
    println!("cold.elements={elements}");

    let candidates = changeable_slices(&snapshot.endpoint_slices);
    if candidates.is_empty() || changes == 0 {
        return;
    }
    let backend = arg_or(args, "backend", "nft");
    if !["nft", "netlink", "both"].contains(&backend) {
        fail("--backend is nft, netlink or both");
    }
    let mut socket = (backend != "nft")
        .then(|| proxier_nft::netlink::NftSocket::open().unwrap_or_else(|e| fail(&format!("netlink socket: {e}"))));
    let services = match arg_or(args, "change", "endpoint") {
        "endpoint" => false,
        "service" => true,
        _ => fail("--change is endpoint or service"),
    };
    let mut committed = tables;
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut sizes = Vec::new();
    // `--concurrent-reads on`: every counter read again and again (as scrapes would, without their
    // 5 s pause) while the changes are made, to show whether reading delays them.
    let reader = (arg_or(args, "concurrent-reads", "off") == "on").then(|| concurrent_reads(table));
    // A Service taken out by a `--change service` delete, with its slices, until it is added back.
    let mut removed: Option<(Service, Vec<EndpointSlice>)> = None;
    for k in 0..changes {
        let started = Instant::now();
        let kind = if !services {
            change_endpoint(&mut snapshot.endpoint_slices[pick(&candidates, k)], k);
            ""
        } else if let Some((service, slices)) = removed.take() {
            snapshot.services.push(service);
            snapshot.endpoint_slices.extend(slices);
            "add_"
        } else {
            let slice = &snapshot.endpoint_slices[pick(&candidates, k / 2)];
            let owner = slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned();
            let namespace = slice.metadata.namespace.clone();
            let position = snapshot
                .services
                .iter()
                .position(|s| s.metadata.name == owner && s.metadata.namespace == namespace)
                .unwrap_or_else(|| fail("a changeable slice without its Service"));
            let service = snapshot.services.remove(position);
            let (slices, kept) = std::mem::take(&mut snapshot.endpoint_slices).into_iter().partition(|s| {
                s.metadata.namespace == namespace
                    && s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) == owner.as_ref()
            });
            snapshot.endpoint_slices = kept;
            removed = Some((service, slices));
            "delete_"
        };
        let netlink_turn = if services { (k / 2) % 2 == 1 } else { k % 2 == 1 };
        let mut phases = Vec::new();
        let (model, time) = timed(|| compute(&snapshot, &config));
        phases.push(("compute", time, last_cpu()));
        let (desired, time) = timed(|| Transaction::tables_with(&model, counters));
        phases.push(("layout", time, last_cpu()));
        let ((transaction, after), time) = timed(|| Transaction::between(&committed, &desired, table));
        phases.push(("between", time, last_cpu()));
        // As the syncer does: counts of elements the change re-creates are read and carried over.
        let (transaction, time) = timed(|| {
            if counters { proxier_nft::counters::carry_into(socket.as_mut(), transaction, false) } else { transaction }
        });
        phases.push(("carry", time, last_cpu()));
        let (document, time) = timed(|| transaction.to_json_compact());
        phases.push(("render", time, last_cpu()));
        let userspace = phases.iter().fold((Duration::ZERO, Duration::ZERO), |(w, c), p| (w + p.1, c + p.2));
        phases.push(("userspace", userspace.0, userspace.1));
        let by_netlink = backend == "netlink" || (backend == "both" && netlink_turn);
        let apply_cpu = match socket.as_mut().filter(|_| by_netlink) {
            Some(socket) => {
                let (batch, time) = timed(|| proxier_nft::netlink::Batch::encode(&transaction));
                let encode_cpu = last_cpu();
                phases.push(("netlink_encode", time, encode_cpu));
                let mut batch = batch.unwrap_or_else(|e| fail(&format!("change {k}: netlink cannot carry it: {e}")));
                let (applied, time) = timed(|| socket.commit(&mut batch));
                phases.push(("netlink", time, last_cpu()));
                applied.unwrap_or_else(|e| fail(&format!("change {k}: {e}")));
                encode_cpu + last_cpu()
            }
            None => {
                let (applied, time) = timed(|| transaction.apply(&nft));
                phases.push(("nft", time, last_cpu()));
                applied.unwrap_or_else(|e| fail(&format!("change {k}: {e}")));
                last_cpu()
            }
        };
        phases.push(("total", started.elapsed(), userspace.1 + apply_cpu));
        committed = after;
        sizes.push((commands(&document), document.len()));
        // The same change computed for the changed Service alone: what an incremental compute and layout
        // (only the Services whose objects changed) would cost.
        let (_, time) = timed(|| {
            if services {
                return Vec::new();
            }
            let slice = &snapshot.endpoint_slices[pick(&candidates, k)];
            let service = slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name"));
            let alone = Snapshot {
                services: snapshot
                    .services
                    .iter()
                    .filter(|s| s.metadata.name.as_ref() == service && s.metadata.namespace == slice.metadata.namespace)
                    .cloned()
                    .collect(),
                endpoint_slices: vec![slice.clone()],
                nodes: snapshot.node(&config.node_name).cloned().into_iter().collect(),
                ..Snapshot::default()
            };
            Transaction::tables(&compute(&alone, &config))
        });
        phases.push(("one_service_compute_layout", time, last_cpu()));
        for (name, wall, cpu) in phases {
            series.entry(format!("{kind}{name}_ms")).or_default().push(ms(wall));
            series.entry(format!("{kind}{name}_cpu_ms")).or_default().push(ms(cpu));
        }
    }
    report_series("change", &series);
    if let Some((stop, reader)) = reader {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let times = reader.join().unwrap_or_default();
        println!("reads.count={}", times.len());
        report_series("reads", &BTreeMap::from([("read_ms".to_owned(), times)]));
    }
    if let Some(socket) = socket.as_mut() {
        drift_check(socket, table);
    }
    sizes.sort_unstable();
    println!("change.commands_min={}", sizes[0].0);
    println!("change.commands_max={}", sizes[sizes.len() - 1].0);
    println!("change.json_bytes_max={}", sizes.iter().map(|s| s.1).max().unwrap_or(0));
}

/// What the periodic drift check costs with the event watch when nobody touched the tables (the
/// tables are loaded: the cost must not depend on their size), and when someone did: one outside
/// commit to the table is seen.
fn drift_check(socket: &mut proxier_nft::netlink::NftSocket, table: &str) {
    use proxier_nft::netlink::{Drift, TableWatch};
    let mut watch = TableWatch::open(table).unwrap_or_else(|e| fail(&format!("event watch: {e}")));
    let rounds = 1000;
    let started = Instant::now();
    let cpu = cpu_time();
    for _ in 0..rounds {
        if watch.take() != Drift::Unchanged {
            fail("drift where nothing changed");
        }
    }
    println!("drift.check_unchanged_us={:.2}", started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds));
    println!("drift.check_unchanged_cpu_us={:.2}", (cpu_time() - cpu).as_secs_f64() * 1e6 / f64::from(rounds));
    // An own commit, unwatched, then an outside one: only the second is drift.
    let generation = socket.generation().unwrap_or_else(|e| fail(&format!("generation: {e}")));
    println!("drift.generation={generation}");
    let nft = Nft::default();
    watch
        .own_commit(socket, |_| {
            let result = nft.apply_text(&format!("add chain ip {table} probe-own\n"));
            let commits = u32::from(result.is_ok());
            (result, commits)
        })
        .unwrap_or_else(|e| fail(&format!("own commit: {e}")));
    if watch.take() != Drift::Unchanged {
        fail("an own commit taken for drift");
    }
    nft.apply_text(&format!("delete chain ip {table} probe-own\n")).unwrap_or_else(|e| fail(&format!("{e}")));
    let (drift, time) = timed(|| watch.take());
    match drift {
        Drift::Changed(_) => println!("drift.check_changed_us={:.2}", time.as_secs_f64() * 1e6),
        other => fail(&format!("an outside commit not seen: {other:?}")),
    }
}

/// Resident memory after handing freed heap back to the kernel, in KiB.
fn resident() -> u64 {
    // SAFETY: malloc_trim takes no pointers and only releases free memory.
    unsafe { libc::malloc_trim(0) };
    memory().0
}

/// Resident and peak memory of this process, in KiB, from /proc/self/status.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// KiB allocated (not resident) on the heap, by glibc's counters.
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's counters.
    let heap = unsafe { libc::mallinfo2() };
    (heap.uordblks + heap.hblkhd) / 1024
}

/// A `Proxier` fed the snapshot's objects one at a time as they are parsed, as a watch's list pages
/// arrive in `proxier run` (which keeps only their names until the list completes), not yet synced;
/// with up to `keep` of the slices whose change must reach the kernel, kept to change later.
fn live_proxier(args: &Args, keep: usize) -> (Proxier, Vec<EndpointSlice>) {
    let config = config(args);
    let table = arg_or(args, "table", "proxier");
    let path = arg(args, "snapshot");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let counters = match arg_or(args, "counters", "on") {
        "on" => true,
        "off" => false,
        _ => fail("--counters is on or off"),
    };
    let mut proxier = Proxier::new(ClusterState::new(config), table, Nft::default()).with_counters(counters);
    let mut candidates = Vec::new();
    let mut counts = (0, 0);
    let (_, feed) = timed(|| {
        for_each_item(&text, |item| match item.get("kind").and_then(|k| k.as_str()) {
            Some("Service") => {
                counts.0 += 1;
                proxier
                    .state_mut()
                    .apply_service(serde_json::from_value(item).unwrap_or_else(|e| fail(&format!("Service: {e}"))));
            }
            Some("EndpointSlice") => {
                counts.1 += 1;
                let slice: EndpointSlice =
                    serde_json::from_value(item).unwrap_or_else(|e| fail(&format!("EndpointSlice: {e}")));
                if candidates.len() < keep && changeable_slices(std::slice::from_ref(&slice)) == [0] {
                    candidates.push(slice.clone());
                }
                proxier.state_mut().apply_endpoint_slice(slice);
            }
            Some("Node") => {
                proxier
                    .state_mut()
                    .apply_node(serde_json::from_value(item).unwrap_or_else(|e| fail(&format!("Node: {e}"))));
            }
            _ => {}
        })
    });
    drop(text);
    println!("services={} endpoint_slices={}", counts.0, counts.1);
    println!("live.feed_ms={:.1}", ms(feed));
    (proxier, candidates)
}

fn live(args: &Args) {
    let changes: usize = number(args, "changes", "20");
    let (mut proxier, candidates) = live_proxier(args, 4 * changes);
    let indices: Vec<usize> = (0..candidates.len()).collect();
    let mut changed: Vec<EndpointSlice> =
        (0..changes.min(candidates.len())).map(|k| candidates[pick(&indices, k)].clone()).collect();
    drop(candidates);
    let (outcome, _) = timed(|| proxier.sync().unwrap_or_else(|e| fail(&format!("full sync: {e}"))));
    println!("live.full_sync_ms={:.1}", ms(outcome.duration));
    println!("live.full_sync_cpu_ms={:.1}", ms(last_cpu()));
    // The full transaction is the caller's; a node agent drops it, and so does this one.
    drop(outcome);
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut sizes = Vec::new();
    for (k, slice) in changed.iter_mut().enumerate() {
        change_endpoint(slice, k);
        let started = Instant::now();
        proxier.state_mut().apply_endpoint_slice(slice.clone());
        let (outcome, _) = timed(|| proxier.sync().unwrap_or_else(|e| fail(&format!("change {k}: {e}"))));
        series.entry("total_ms".into()).or_default().push(ms(started.elapsed()));
        series.entry("total_cpu_ms".into()).or_default().push(ms(last_cpu()));
        sizes.push((outcome.changes, outcome.elements));
    }
    report_series("live.change", &series);
    // Every change's end-to-end time in order: the churn plot of docs/performance.md is drawn from it.
    let each: Vec<String> = series.get("total_ms").into_iter().flatten().map(|v| format!("{v:.2}")).collect();
    println!("live.change.each_ms={}", each.join(","));
    if let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max()) {
        println!("live.change.steps_min={} live.change.elements_min={}", min.0, min.1);
        println!("live.change.steps_max={} live.change.elements_max={}", max.0, max.1);
    }
    drop(changed);
    // Hand freed heap back to the kernel so that RSS shows what is held, not what parsing once used.
    // SAFETY: malloc_trim takes no pointers and only releases free memory.
    unsafe { libc::malloc_trim(0) };
    let (rss, peak) = memory();
    println!("live.rss_kib={rss}");
    println!("live.peak_rss_kib={peak}");
    // What is allocated, as opposed to resident: the difference is heap fragmentation.
    println!("live.heap_in_use_kib={}", heap_in_use());
    // Still holding everything here: keep `proxier` alive until after the measurement.
    drop(proxier);
}

fn endpoint_event(slice: &mut EndpointSlice, random: &mut Rng, k: usize) {
    let Some(endpoints) = slice.endpoints.as_mut().filter(|e| !e.is_empty()) else { return };
    let set_ready = |endpoint: &mut k8s_openapi::api::discovery::v1::Endpoint, ready: bool| {
        let conditions = endpoint.conditions.get_or_insert_with(Default::default);
        (conditions.ready, conditions.serving, conditions.terminating) = (Some(ready), Some(ready), Some(false));
    };
    match random.below(3) {
        0 => {
            let mut endpoint = endpoints[0].clone();
            endpoint.addresses = vec![format!("10.253.{}.{}", k / 250 % 256, k % 250 + 1)];
            set_ready(&mut endpoint, true);
            endpoints.push(endpoint);
        }
        1 if endpoints.len() > 1 => {
            let i = random.below(endpoints.len());
            endpoints.remove(i);
        }
        _ => {
            let i = random.below(endpoints.len());
            let ready = endpoints[i].conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            set_ready(&mut endpoints[i], !ready);
        }
    }
}

/// Endpoint churn through the live `Proxier`: after the full sync, `--batches` batches of `--events`
/// random endpoint events (adds, removals, readiness flips) on random slices, one sync per batch, as
/// `proxier run` with `--min-sync-period 1s` sees `--events` events per second.
fn churn(args: &Args) {
    let events: usize = number(args, "events", "1000");
    let batches: usize = number(args, "batches", "10");
    let mut random = Rng(number(args, "seed", "1"));
    let (mut proxier, mut slices) = live_proxier(args, usize::MAX);
    if slices.is_empty() {
        fail("no slice with endpoints to change");
    }
    match arg_or(args, "backend", "nft") {
        "nft" => {}
        "netlink" => {
            let socket = proxier_nft::netlink::NftSocket::open().unwrap_or_else(|e| fail(&format!("netlink: {e}")));
            let watch = proxier_nft::netlink::TableWatch::open(proxier.table_name())
                .unwrap_or_else(|e| fail(&format!("event watch: {e}")));
            proxier = proxier.with_netlink(socket, watch);
        }
        _ => fail("--backend is nft or netlink"),
    }
    let (outcome, _) = timed(|| proxier.sync().unwrap_or_else(|e| fail(&format!("full sync: {e}"))));
    println!("churn.full_sync_ms={:.1}", ms(outcome.duration));
    drop(outcome);
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut k = 0;
    for batch in 0..batches {
        for _ in 0..events {
            let i = random.below(slices.len());
            endpoint_event(&mut slices[i], &mut random, k);
            k += 1;
            proxier.state_mut().apply_endpoint_slice(slices[i].clone());
        }
        let (outcome, _) = timed(|| proxier.sync().unwrap_or_else(|e| fail(&format!("batch {batch}: {e}"))));
        for (name, value) in [
            ("sync_ms", ms(outcome.duration)),
            ("sync_cpu_ms", ms(last_cpu())),
            ("elements", outcome.elements as f64),
            ("commands", outcome.changes as f64),
        ] {
            series.entry(name.into()).or_default().push(value);
        }
    }
    report_series("churn", &series);
    let each: Vec<String> = series.get("elements").into_iter().flatten().map(|v| format!("{v}")).collect();
    println!("churn.each_elements={}", each.join(","));
}

/// Calls `each` with every item of a kubectl `List` document, one at a time, without building the list.
fn for_each_item(text: &str, each: impl FnMut(serde_json::Value)) {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct List<F>(F);
    struct Items<'a, F>(&'a mut F);
    impl<'de, F: FnMut(serde_json::Value)> Visitor<'de> for List<F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a List")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "items" {
                    map.next_value_seed(Items(&mut self.0))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    impl<'de, F: FnMut(serde_json::Value)> DeserializeSeed<'de> for Items<'_, F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_seq(self)
        }
    }
    impl<'de, F: FnMut(serde_json::Value)> Visitor<'de> for Items<'_, F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(item) = seq.next_element::<serde_json::Value>()? {
                (self.0)(item);
            }
            Ok(())
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.deserialize_map(List(each)).unwrap_or_else(|e| fail(&format!("not a List: {e}")));
}

fn median(samples: &[Duration]) -> Duration {
    let mut samples = samples.to_vec();
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn cold(args: &Args) {
    let config = config(args);
    let table = arg_or(args, "table", "proxier");
    let repeat: usize = number(args, "repeat", "5");
    let snapshot = load(args);
    // Wall and CPU time of each phase; on a shared machine CPU time is the steadier one.
    let mut phases: BTreeMap<&str, (Vec<Duration>, Vec<Duration>)> = BTreeMap::new();
    let record = |phases: &mut BTreeMap<&'static str, (Vec<Duration>, Vec<Duration>)>, name, wall| {
        let samples = phases.entry(name).or_default();
        samples.0.push(wall);
        samples.1.push(last_cpu());
    };
    let mut bytes = 0;
    for _ in 0..repeat.max(1) {
        let (model, time) = timed(|| compute(&snapshot, &config));
        record(&mut phases, "compute", time);
        let (tables, time) = timed(|| Transaction::tables(&model));
        record(&mut phases, "layout", time);
        // Only the writing is timed: building the transaction moves the tables, and dropping it is
        // the same for both renders.
        let transaction = Transaction::replacing(tables, table);
        let (document, time) = timed(|| transaction.to_json());
        record(&mut phases, "render", time);
        bytes = document.len();
        if arg_or(args, "reference", "yes") == "no" {
            continue;
        }
        // The path `to_json` replaced, kept as its specification: nftables-crate objects, a
        // serde_json::Value, compat::mend, pretty-printing.
        let (reference, time) = timed(|| {
            let mut out = serde_json::to_string_pretty(&transaction.to_json_value()).unwrap_or_default();
            out.push('\n');
            out
        });
        record(&mut phases, "render_reference", time);
        if document != reference {
            fail("the JSON writer and the reference path differ");
        }
    }
    let total = |cpu: bool| -> Duration {
        ["compute", "layout", "render"].iter().map(|p| median(if cpu { &phases[p].1 } else { &phases[p].0 })).sum()
    };
    println!("cold.compute_render_ms={:.1}", ms(total(false)));
    println!("cold.compute_render_cpu_ms={:.1}", ms(total(true)));
    for (name, (wall, cpu)) in &phases {
        println!("cold.{name}_ms={:.1}", ms(median(wall)));
        println!("cold.{name}_cpu_ms={:.1}", ms(median(cpu)));
    }
    println!("cold.json_bytes={bytes}");
}

fn formats(args: &Args) {
    let config = config(args);
    let table = arg_or(args, "table", "proxier");
    let snapshot = load(args);
    let model = compute(&snapshot, &config);
    let transaction = Transaction::full(&model, table);
    let (value, value_time) = timed(|| transaction.to_json_value());
    let (pretty, pretty_time) = timed(|| serde_json::to_string_pretty(&value).unwrap_or_default());
    let (compact, compact_time) = timed(|| serde_json::to_string(&value).unwrap_or_default());
    let (text, text_time) = timed(|| transaction.to_text());
    println!("formats.json_value_ms={:.1}", ms(value_time));
    // What writing the elements straight to text (no intermediate nftables-crate objects, no
    // serde_json::Value tree, no mending pass) would cost: the bound for a streaming JSON renderer.
    let tables = Transaction::tables(&model);
    let (direct, direct_time) = timed(|| direct_elements(&tables, table));
    println!("formats.direct_elements_ms={:.1}", ms(direct_time));
    println!("formats.direct_elements_bytes={}", direct.len());
    let nft = Nft::default();
    for (name, render, document, apply) in [
        ("json_pretty", value_time + pretty_time, &pretty, Nft::apply_json as fn(&Nft, &str) -> _),
        ("json_compact", value_time + compact_time, &compact, Nft::apply_json),
        ("text", text_time, &text, Nft::apply_text),
    ] {
        let (applied, nft_time) = timed(|| nft.in_scratch_namespace(|nft| apply(nft, document)));
        applied.unwrap_or_else(|e| fail(&format!("{name}: {e}")));
        println!("formats.{name}.render_ms={:.1}", ms(render));
        println!("formats.{name}.bytes={}", document.len());
        println!("formats.{name}.nft_ms={:.1}", ms(nft_time));
        println!("formats.{name}.nft_cpu_ms={:.1}", ms(last_cpu()));
    }

    // Layout experiments: fewer elements, same chains. These tables are measured for load time only;
    // they are not a working ruleset.
    let local: std::collections::HashSet<String> = snapshot
        .endpoint_slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.node_name.as_deref() == Some(config.node_name.as_str()))
        .flat_map(|e| e.addresses.first().cloned())
        .collect();
    let mut local_hairpin = Transaction::tables(&model);
    for set in local_hairpin.iter_mut().flat_map(|t| &mut t.sets).filter(|s| s.name == "hairpin") {
        set.elements
            .retain(|e| matches!(&e.key[0], proxier_nft::ruleset::Value::Addr(ip) if local.contains(&ip.to_string())));
    }
    let mut one_port_map = local_hairpin.clone();
    for set in one_port_map.iter_mut().flat_map(|t| &mut t.sets) {
        if set.name.starts_with("backend-") && set.name.ends_with("-port") && set.name != "backend-0-port" {
            set.elements.clear();
        }
    }
    for (name, tables) in [("local_hairpin", local_hairpin), ("local_hairpin_one_port_map", one_port_map)] {
        let elements: usize = tables.iter().flat_map(|t| &t.sets).map(|s| s.elements.len()).sum();
        let document =
            serde_json::to_string(&Transaction::replacing(tables, table).to_json_value()).unwrap_or_default();
        let (applied, nft_time) = timed(|| nft.in_scratch_namespace(|nft| nft.apply_json(&document)));
        applied.unwrap_or_else(|e| fail(&format!("{name}: {e}")));
        println!("formats.experiment.{name}.elements={elements}");
        println!("formats.experiment.{name}.nft_ms={:.1}", ms(nft_time));
        println!("formats.experiment.{name}.nft_cpu_ms={:.1}", ms(last_cpu()));
    }
}

fn kube_proxy_layout(args: &Args) {
    let config = config(args);
    let snapshot = load(args);
    let model = compute(&snapshot, &config);
    let text = kube_proxy_ruleset(&model, &config.cluster_cidrs);
    let chains = text.matches("\n\tchain ").count();
    let nft = Nft::default();
    let (applied, nft_time) = timed(|| nft.in_scratch_namespace(|nft| nft.apply_text(&text)));
    applied.unwrap_or_else(|e| fail(&format!("kube-proxy's layout: {e}")));
    println!("kube_proxy_layout.chains={chains}");
    println!("kube_proxy_layout.bytes={}", text.len());
    println!("kube_proxy_layout.nft_ms={:.1}", ms(nft_time));
    println!("kube_proxy_layout.nft_cpu_ms={:.1}", ms(last_cpu()));
}

/// The IPv4 rules of `model` as kube-proxy's nftables mode lays them out (pkg/proxy/nftables): the
/// `service-ips` and `service-nodeports` verdict maps send each destination to a chain of its Service
/// port (`service-…`; NodePorts through an `external-…` chain that marks for masquerade first), which
/// masquerades non-pod sources and picks an endpoint chain with `numgen random mod N vmap`; each
/// endpoint chain (`endpoint-…`) masquerades hairpin traffic and DNATs. Services without a usable
/// endpoint go to `reject-chain` (kube-proxy: its `no-endpoint-services` map). Chain names follow
/// kube-proxy's `KIND-HASH-NAMESPACE/NAME/PROTOCOL/PORT` shape.
fn kube_proxy_ruleset(model: &proxier_core::RuleModel, cluster_cidrs: &[ipnet::IpNet]) -> String {
    use proxier_core::{Action, DestinationKind, IpFamily};
    use std::fmt::Write as _;
    let pods: Vec<String> = cluster_cidrs.iter().filter(|c| c.addr().is_ipv4()).map(ToString::to_string).collect();
    let not_pod = if pods.is_empty() { String::new() } else { format!(" ip saddr != {{ {} }}", pods.join(", ")) };
    let mut out = String::with_capacity(64 << 20);
    out.push_str("table ip kube-proxy-layout {\n");
    out.push_str("\tchain mark-for-masquerade {\n\t\tmeta mark set meta mark or 0x4000\n\t}\n");
    out.push_str("\tchain reject-chain {\n\t\treject\n\t}\n");
    let Some(family) = model.family(IpFamily::V4) else {
        out.push_str("}\n");
        return out;
    };
    let (mut service_ips, mut node_ports, mut chains) = (Vec::new(), Vec::new(), String::new());
    let mut service_chains: BTreeMap<String, String> = BTreeMap::new();
    for destination in &family.destinations {
        let port = &destination.service_port;
        let protocol = format!("{:?}", port.protocol).to_lowercase();
        let backends = match &destination.action {
            Action::Balance { backends, .. } => Some(backends),
            Action::BySource { pods, .. } => match pods.as_ref() {
                Action::Balance { backends, .. } => Some(backends),
                _ => None,
            },
            Action::Reject | Action::Drop => None,
        };
        let verdict = match backends {
            None if matches!(destination.action, Action::Drop) => "drop".to_owned(),
            None => "goto reject-chain".to_owned(),
            Some(backends) => {
                let key = format!("{}/{}/{protocol}/{}", port.namespace, port.name, port.port);
                let next = service_chains.len();
                let service = service_chains.entry(key.clone()).or_insert_with(|| {
                    let name = format!("service-{:08X}-{key}", next);
                    let mut vmap = Vec::new();
                    for (i, backend) in backends.iter().enumerate() {
                        let endpoint = format!("endpoint-{next:08X}{i:04X}-{key}__{}/{}", backend.ip, backend.port);
                        let _ = write!(
                            chains,
                            "\tchain {endpoint} {{\n\t\tip saddr {} jump mark-for-masquerade\n\t\tmeta l4proto {protocol} dnat to {backend}\n\t}}\n",
                            backend.ip
                        );
                        vmap.push(format!("{i} : goto {endpoint}"));
                    }
                    let _ = write!(
                        chains,
                        "\tchain {name} {{\n\t\tip daddr {} {protocol} dport {}{not_pod} jump mark-for-masquerade\n\t\tnumgen random mod {} vmap {{ {} }}\n\t}}\n",
                        destination.ip,
                        destination.port,
                        backends.len(),
                        vmap.join(", ")
                    );
                    name
                });
                if destination.kind == DestinationKind::ClusterIp {
                    format!("goto {service}")
                } else {
                    let external = format!("external-{:08X}-{key}", service_ips.len() + node_ports.len());
                    let _ = write!(
                        chains,
                        "\tchain {external} {{\n\t\tjump mark-for-masquerade\n\t\tgoto {service}\n\t}}\n"
                    );
                    format!("goto {external}")
                }
            }
        };
        if destination.kind == DestinationKind::NodePort {
            node_ports.push(format!("{protocol} . {} : {verdict}", destination.port));
        } else {
            service_ips.push(format!("{} . {protocol} . {} : {verdict}", destination.ip, destination.port));
        }
    }
    node_ports.sort();
    node_ports.dedup();
    out.push_str(&chains);
    for (name, key, elements) in [
        ("service-ips", "ipv4_addr . inet_proto . inet_service", service_ips),
        ("service-nodeports", "inet_proto . inet_service", node_ports),
    ] {
        let _ = write!(out, "\tmap {name} {{\n\t\ttype {key} : verdict\n");
        if !elements.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(",\n\t\t\t"));
        }
        out.push_str("\t}\n");
    }
    out.push_str(
        "\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t\t\
         fib daddr type local meta l4proto . th dport vmap @service-nodeports\n\t}\n\
         \tchain nat-prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tjump services\n\t}\n\
         \tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n}\n",
    );
    out
}

/// Every set element of `tables` (of table `name`) as compact nft JSON, written directly into one string.
fn direct_elements(tables: &[proxier_nft::ruleset::Table], name: &str) -> String {
    use proxier_nft::ruleset::{Value, Verdict};
    use std::fmt::Write as _;
    fn value(out: &mut String, value: &Value) {
        let _ = match value {
            Value::Addr(ip) => write!(out, "\"{ip}\""),
            Value::Prefix(net) => {
                write!(out, "{{\"prefix\":{{\"addr\":\"{}\",\"len\":{}}}}}", net.network(), net.prefix_len())
            }
            Value::Proto(protocol) => write!(out, "\"{}\"", protocol.name()),
            Value::Port(port) => write!(out, "{port}"),
            Value::Verdict(Verdict::Goto(target)) => write!(out, "{{\"goto\":{{\"target\":\"{target}\"}}}}"),
            Value::Verdict(Verdict::Jump(target)) => write!(out, "{{\"jump\":{{\"target\":\"{target}\"}}}}"),
            Value::Verdict(Verdict::Drop) => write!(out, "{{\"drop\":null}}"),
            Value::Verdict(Verdict::Return) => write!(out, "{{\"return\":null}}"),
        };
    }
    let mut out = String::with_capacity(1 << 20);
    for table in tables {
        for set in &table.sets {
            let _ = write!(
                out,
                "{{\"add\":{{\"element\":{{\"family\":\"ip\",\"table\":\"{}\",\"name\":\"{}\",\"elem\":[",
                name, set.name
            );
            for (i, element) in set.elements.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if element.data.is_some() {
                    out.push('[');
                }
                if let Some(comment) = &element.comment {
                    let _ = write!(out, "{{\"elem\":{{\"comment\":\"{comment}\",\"val\":");
                }
                if let [single] = element.key.as_slice() {
                    value(&mut out, single);
                } else {
                    out.push_str("{\"concat\":[");
                    for (j, part) in element.key.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        value(&mut out, part);
                    }
                    out.push_str("]}");
                }
                if element.comment.is_some() {
                    out.push_str("}}");
                }
                if let Some(data) = &element.data {
                    out.push(',');
                    value(&mut out, data);
                    out.push(']');
                }
            }
            out.push_str("]}}},\n");
        }
    }
    out
}

fn count(args: &Args) {
    let table = arg_or(args, "table", "proxier");
    let output = std::process::Command::new("nft")
        .args(["-j", "list", "table", "ip", table])
        .output()
        .unwrap_or_else(|e| fail(&format!("nft: {e}")));
    if !output.status.success() {
        fail(&format!("nft list table ip {table}: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let (mut chains, mut rules, mut sets, mut maps, mut elements) = (0, 0, 0, 0, 0);
    for object in value["nftables"].as_array().into_iter().flatten() {
        if object.get("chain").is_some() {
            chains += 1;
        } else if object.get("rule").is_some() {
            rules += 1;
        } else if let Some(set) = object.get("set") {
            sets += 1;
            elements += set["elem"].as_array().map_or(0, Vec::len);
        } else if let Some(map) = object.get("map") {
            maps += 1;
            elements += map["elem"].as_array().map_or(0, Vec::len);
        }
    }
    println!("kernel.chains={chains}");
    println!("kernel.rules={rules}");
    println!("kernel.sets={sets}");
    println!("kernel.maps={maps}");
    println!("kernel.elements={elements}");
}

fn serve(args: &Args) {
    let listen: SocketAddr = arg(args, "listen").parse().unwrap_or_else(|_| fail("bad --listen"));
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| fail(&format!("bind {listen}: {e}")));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut byte = [0u8; 1];
        if stream.read_exact(&mut byte).is_ok() && stream.write_all(&byte).is_ok() {
            // Wait for the client's reset (or close), so the client always closes first.
            let _ = stream.read(&mut byte);
        }
    }
}

/// Closes with a reset: SO_LINGER with a zero timeout, so no TIME_WAIT is left behind.
fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a pointer to a linger struct that outlives the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn connect(args: &Args) {
    let to: SocketAddr = arg(args, "to").parse().unwrap_or_else(|_| fail("bad --to"));
    let seconds: f64 = number(args, "seconds", "5");
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut latencies = Vec::new();
    while start.elapsed() < deadline {
        let began = Instant::now();
        let done = TcpStream::connect_timeout(&to, Duration::from_secs(1)).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            set_linger_zero(&stream);
            stream.write_all(b"x")?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte)
        });
        match done {
            Ok(()) => {
                ok += 1;
                latencies.push(began.elapsed().as_secs_f64() * 1e6);
            }
            Err(_) => failed += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0.0);
    println!(
        "rate={:.0} ok={ok} failed={failed} p50_us={:.1} p99_us={:.1}",
        ok as f64 / elapsed,
        percentile(0.5),
        percentile(0.99)
    );
}
