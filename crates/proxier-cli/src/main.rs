//! `proxier`: a Kubernetes service proxy on nftables — run on a node, or render, diff, apply, trace and
//! explain a node's rules from a snapshot.

mod cli;
mod exit;
mod flags;
mod input;
mod inspect;
mod notes;
mod run;
mod stats;
mod version;

use std::io::IsTerminal;

use clap::{CommandFactory, Parser};
use proxier_core::{Computation, Diagnostic, NodeConfig, RuleModel};
use proxier_nft::{Nft, NftError, Transaction, diff, refusal};

use proxier_cli::generator;

use crate::cli::{Cli, Color, Command};
use crate::exit::{Exit, Failure};
use crate::flags::{Input, Output};
use crate::notes::Notes;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `proxier run` sets up its own logging once its flags and file are read; the one-shot commands
    // report on stderr themselves and log only warnings.
    if !matches!(cli.command, Command::Run(_)) {
        run::logging::init(run::config::LogFormat::Text, "warn");
    }
    match run(cli.command) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("proxier: {:#}", failure.error());
            failure.exit().into()
        }
    }
}

fn run(command: Command) -> Result<Exit, Failure> {
    match command {
        Command::Render { input, output } => {
            let transaction = transaction(&input)?;
            let text = match output {
                Output::Nft => transaction.to_text(),
                _ => transaction.to_json(),
            };
            emit(&text)?;
            Ok(Exit::Success)
        }
        Command::Apply { input, check, allow_empty, netlink } => {
            let (model, spent) = model(&input)?;
            let nft = Nft::new(&input.node.nft.nft);
            let counters = !input.node.no_counters;
            if !check && !allow_empty && programs_nothing(&model) {
                refuse_to_empty(&nft, &input.node.nft.table)?;
            }
            if check {
                let transaction = Transaction::full_with(&model, &input.node.nft.table, counters);
                nft.check_json(&transaction.to_json_compact())
                    .map_err(|e| Failure::Nft(anyhow::Error::new(e).context("the kernel would refuse these rules")))?;
                println!("{}", checked(&model, &transaction));
                return Ok(Exit::Success);
            }
            let table = &input.node.nft.table;
            let carried = if counters { carried_counts(table) } else { Default::default() };
            let held = held_tables(table);
            // Each family's table emptied and refilled in place, counts carried over.
            let full = |model: &RuleModel| {
                Transaction::full_with(model, table, counters).with_carried_counts(carried.clone()).in_place_of(&held)
            };
            if netlink && apply_by_netlink(full(&model), spent)? {
                // Freed beside the exit, which does not wait for it.
                free_beside(model);
                return Ok(Exit::Success);
            }
            let refused = refusal::apply_full_with(&nft, &model, full).map_err(|e| {
                Failure::Nft(anyhow::Error::new(e).context("rules not applied; the previous ruleset is unchanged"))
            })?;
            if refused.is_empty() {
                return Ok(Exit::Success);
            }
            let count = refused.len();
            for (service, why) in refused {
                eprintln!("proxier: {}", Diagnostic::error(service, why));
            }
            eprintln!("proxier: applied, except {count} Service(s) whose rules the kernel refused");
            Ok(Exit::PartlyApplied)
        }
        Command::Diff { input, color } => {
            let transaction = transaction(&input)?;
            let difference = diff(&Nft::new(&input.node.nft.nft), &transaction).map_err(diff_failure)?;
            if difference.is_empty() {
                return Ok(Exit::Success);
            }
            let colored = match color {
                Color::Always => true,
                Color::Never => false,
                Color::Auto => {
                    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
                }
            };
            if colored {
                emit(&proxier_nft::diff::colorize(&difference.unified))?;
            } else {
                emit(&difference.unified)?;
            }
            Ok(Exit::Changed)
        }
        Command::Gen(args) => generate(&args),
        Command::Run(args) => Ok(run::main(&args)),
        Command::Trace(args) => inspect::run_trace(&args),
        Command::Explain(args) => inspect::run_explain(&args),
        Command::Stats(args) => stats::run(&args),
        Command::Delete { nft } => {
            let removed = Nft::new(&nft.nft).delete_tables(&nft.table).map_err(|e| Failure::Nft(e.into()))?;
            if removed.is_empty() {
                eprintln!("proxier: no table {} to delete", nft.table);
            }
            for family in removed {
                let family = if family == proxier_core::IpFamily::V4 { "ip" } else { "ip6" };
                eprintln!("proxier: deleted table {family} {}", nft.table);
            }
            Ok(Exit::Success)
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "proxier", &mut std::io::stdout().lock());
            Ok(Exit::Success)
        }
        Command::Man { command } => man(command.as_deref()),
        Command::Version { output, nft } => version::run(output, &nft),
    }
}

/// Loads the full transaction over an nf_tables netlink socket in one batch: `Ok(true)` when the
/// kernel took it. `Ok(false)` leaves it to `nft` (which the caller runs then): the kernel refused it
/// (nothing of it applied; `nft` finds the Services to blame and applies the rest), no socket could be
/// opened, or the encoder does not carry it. An answer that leaves unknown whether it applied fails.
///
/// `spent` is freed beside the kernel's work on the batch.
fn apply_by_netlink(transaction: Transaction, spent: Spent) -> Result<bool, Failure> {
    use proxier_nft::netlink::{Batch, NetlinkError, NftSocket};
    let mut batch = match Batch::encode(&transaction) {
        Ok(batch) => batch,
        Err(_) => return Ok(false),
    };
    free_beside((transaction, spent));
    match NftSocket::open().and_then(|mut socket| socket.commit(&mut batch)) {
        Ok(()) => Ok(true),
        Err(NetlinkError::Refused { .. } | NetlinkError::Io { .. } | NetlinkError::TooLarge(_)) => Ok(false),
        Err(error @ NetlinkError::Protocol(_)) => {
            Err(Failure::Nft(anyhow::Error::new(error).context("rules sent over netlink")))
        }
    }
}

/// What `apply --check` says when the kernel accepts the rules.
fn checked(model: &RuleModel, transaction: &Transaction) -> String {
    let tables: Vec<String> = transaction
        .created_tables()
        .map(|table| {
            let elements: usize = table.sets.iter().map(|set| set.elements.len()).sum();
            let rules: usize = table.chains.iter().map(|chain| chain.rules.len()).sum();
            format!(
                "table {} {}: {} chains, {rules} rules, {} sets and maps, {elements} elements",
                if table.family == proxier_core::IpFamily::V4 { "ip" } else { "ip6" },
                transaction.table_name(),
                table.chains.len(),
                table.sets.len()
            )
        })
        .collect();
    format!(
        "check passed: the kernel accepts the rules for node {} ({} Services programmed; {}); nothing was changed",
        model.node,
        model.programmed_services().len(),
        tables.join("; ")
    )
}

/// `diff`'s errors; without the privileges it needs, says which and what to run instead.
fn diff_failure(error: NftError) -> Failure {
    let denied = match &error {
        NftError::Spawn { error, .. } => error.kind() == std::io::ErrorKind::PermissionDenied,
        NftError::Failed { message, .. } => message.contains("Operation not permitted"),
    };
    let error = anyhow::Error::new(error);
    if denied {
        return Failure::Nft(error.context(
            "diff needs root (CAP_SYS_ADMIN for a scratch network namespace, CAP_NET_ADMIN to list the live \
             tables); without it, `proxier render -o nft` prints the desired rules",
        ));
    }
    Failure::Nft(error)
}

/// `proxier man [COMMAND]`: the roff page of proxier, or of one command (`proxier-COMMAND`).
fn man(command: Option<&str>) -> Result<Exit, Failure> {
    let mut root = Cli::command();
    root.build();
    let page = match command {
        None => root,
        Some(name) => {
            let sub = root.find_subcommand(name).cloned().ok_or_else(|| {
                let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
                Failure::Input(anyhow::anyhow!("no command {name:?} (expected one of {})", names.join(", ")))
            })?;
            // The page is named `proxier-diff` as git names its pages; the name lives as long as the process.
            sub.name(&*String::leak(format!("proxier-{name}")))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out).map_err(|e| Failure::Input(e.into()))?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), &out).map_err(|e| Failure::Input(e.into()))?;
    Ok(Exit::Success)
}

/// `proxier gen`: writes the snapshot and says on stderr what is in it.
fn generate(args: &cli::GenArgs) -> Result<Exit, Failure> {
    let options = generator::Options {
        services: args.services,
        endpoints: args.endpoints,
        seed: args.seed,
        nodes: args.nodes,
        mix: args.mix,
        ports: args.ports,
        udp: args.udp,
        local: args.local,
        affinity: args.affinity,
        node_port_range: args.node_port_range,
    };
    let yaml_file = args.out.as_ref().and_then(|p| p.extension()).is_some_and(|e| e == "yaml" || e == "yml");
    let syntax = match args.output {
        Some(Output::Yaml) => generator::Syntax::Yaml,
        Some(_) => generator::Syntax::Json,
        None if yaml_file => generator::Syntax::Yaml,
        None => generator::Syntax::Json,
    };
    let (list, summary) = generator::generate(&options).map_err(|e| Failure::Input(e.into()))?;
    let written = match &args.out {
        Some(path) => std::fs::File::create(path).and_then(|file| {
            let mut out = std::io::BufWriter::new(file);
            generator::write(&list, syntax, &mut out)?;
            std::io::Write::flush(&mut out)
        }),
        None => generator::write(&list, syntax, &mut std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let target = args.out.as_ref().map_or("stdout".into(), |p| p.display().to_string());
    // A reader that went away (`proxier gen | head`) is not an error, as for any Unix filter.
    let written = written.or_else(|e| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) });
    written.map_err(|e| Failure::Input(anyhow::Error::new(e).context(format!("cannot write {target}"))))?;
    eprintln!("proxier: generated {summary}");
    Ok(Exit::Success)
}

/// Whether the model programs no Service at all: no destination and no ClusterIP in any family.
fn programs_nothing(model: &RuleModel) -> bool {
    model.families.iter().all(|family| family.destinations.is_empty() && family.cluster_ips.is_empty())
}

/// Refuses (exit 2) to replace live rules that hold Services with a model that holds none: a snapshot that
/// yields no Service for this node is far more often the wrong file than a cluster without Services.
fn refuse_to_empty(nft: &Nft, table: &str) -> Result<(), Failure> {
    let live = nft.live_service_elements(table).map_err(|e| Failure::Nft(e.into()))?;
    if live == 0 {
        return Ok(());
    }
    Err(Failure::Input(anyhow::anyhow!(
        "refusing to apply: the snapshot gives this node no Services, but the live table {table} programs \
         Services ({live} entries in service-ips and cluster-ips); nothing changed (pass --allow-empty to remove \
         them all)"
    )))
}

/// Writes `text` to stdout. A closed pipe (`proxier render … | head -1`) ends the output quietly, as it does
/// for other Unix tools; Rust ignores SIGPIPE, so without this `print!` would panic.
pub(crate) fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::Input(anyhow::Error::new(e).context("cannot write stdout")))
        }
        _ => Ok(()),
    }
}

/// Reads the snapshot, computes the node's model, reports what it found, and builds the transaction.
fn transaction(input: &Input) -> Result<Transaction, Failure> {
    Ok(Transaction::full_with(&model(input)?.0, &input.node.nft.table, !input.node.no_counters))
}

/// The counts of the live tables, to carry into their replacement. Unreadable counts are not a
/// reason to leave the rules stale: the apply goes on, with a warning that they start again.
fn carried_counts(table: &str) -> proxier_nft::counters::Carried {
    match proxier_nft::counters::read(table) {
        Ok(elements) => proxier_nft::counters::carried(&elements),
        Err(error) => {
            eprintln!("proxier: warning: the counters start again from zero: {error}");
            Default::default()
        }
    }
}

/// What proxier's tables hold now, for a full load made in place of them
/// ([`Transaction::in_place_of`]); when that cannot be read, the load removes and re-creates them
/// (atomic all the same, but new connections may miss a Service during the commit).
fn held_tables(table: &str) -> Vec<proxier_nft::transaction::Outline> {
    use proxier_nft::netlink::NftSocket;
    NftSocket::open().and_then(|mut socket| socket.outline(table)).unwrap_or_else(|error| {
        eprintln!("proxier: warning: proxier's tables not read, so they are removed and re-created: {error}");
        Vec::new()
    })
}

/// `--nodeport-addresses localhost` is accepted, as kube-proxy's keyword, and said to serve nothing.
pub(crate) fn warn_localhost_nodeports(nodeport: &flags::NodePortAddresses) {
    if nodeport.localhost {
        eprintln!("proxier: warning: --nodeport-addresses localhost: {}", flags::LOCALHOST_NODEPORTS);
    }
}

/// The node configuration of `node`'s flags for a snapshot (`render`, `apply`, `diff`, `trace`): with
/// `primary` beside `--nodeport-addresses` CIDRs, the snapshot's Node's primary addresses are served too
/// (that Node is the only node there is here: no local addresses).
pub(crate) fn node_config(node: &flags::NodeArgs, snapshot: &proxier_core::Snapshot) -> Result<NodeConfig, String> {
    let config = node.config()?;
    let nodeport = node.nodeport();
    warn_localhost_nodeports(&nodeport);
    if nodeport.primary && !nodeport.cidrs.is_empty() {
        return Ok(run::addresses::resolve(&config, true, &nodeport.cidrs, snapshot.node(&config.node_name), &[]));
    }
    Ok(config)
}

/// What a model was made from (the snapshot, the endpoint index), kept to be freed where that costs least
/// ([`free_beside`]).
type Spent = Box<dyn Send>;

/// Reads the snapshot, computes the node's model and reports what it found; returns the model and what
/// it was made from.
fn model(input: &Input) -> Result<(RuleModel, Spent), Failure> {
    let loaded = input::load_snapshot(&input.snapshot.paths).map_err(|e| Failure::Input(e.into()))?;
    loaded.print_skipped();
    let (snapshot, report) = (loaded.snapshot, loaded.report);
    let config = node_config(&input.node, &snapshot).map_err(|e| Failure::Input(anyhow::anyhow!(e)))?;
    let Computation { model, node, endpoints } = Computation::new(&snapshot, &config);
    let mut notes = Notes::default();
    notes.diagnostics(&report.diagnostics);
    notes.model(&model);
    notes.print(input.snapshot.verbose);
    Ok((model, Box::new((snapshot, report, node, endpoints))))
}

/// Drops `value` on a thread of its own; at exit the process ends without waiting for it. Freeing a
/// 44k-Service snapshot, model or transaction takes a few tenths of a second each, which another core
/// can spend while the kernel works on the rules (single-threaded, in this thread's `send`). Not while
/// this thread allocates: glibc's arena locks would slow both.
fn free_beside<T: Send + 'static>(value: T) {
    // Without a thread, where it is.
    let _ = std::thread::Builder::new().name("free".into()).spawn(move || drop(value));
}
