//! `proxier`: render, apply, diff and delete nftables rules for Kubernetes Services.

mod cli;
mod exit;
mod flags;
mod generator;
mod input;
mod inspect;
mod run;

use clap::Parser;
use proxier_core::{Diagnostic, RuleModel, Treatment, compute};
use proxier_nft::{Nft, Transaction, diff, refusal};

use crate::cli::{Cli, Command, Format};
use crate::exit::{Exit, Failure};
use crate::flags::Input;

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
        Command::Render { input, format } => {
            let transaction = transaction(&input)?;
            let output = match format {
                Format::Json => transaction.to_json(),
                Format::Nft => transaction.to_text(),
            };
            emit(&output)?;
            Ok(Exit::Success)
        }
        Command::Apply { input, check, allow_empty } => {
            let model = model(&input)?;
            let nft = Nft::new(&input.node.nft.nft);
            if !check && !allow_empty && programs_nothing(&model) {
                refuse_to_empty(&nft, &input.node.nft.table)?;
            }
            if check {
                let transaction = Transaction::full(&model, &input.node.nft.table);
                nft.check_json(&transaction.to_json_compact())
                    .map_err(|e| Failure::Nft(anyhow::Error::new(e).context("the kernel would refuse these rules")))?;
                return Ok(Exit::Success);
            }
            let refused = refusal::apply_full(&nft, &model, &input.node.nft.table).map_err(|e| {
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
        Command::Diff { input } => {
            let transaction = transaction(&input)?;
            let difference = diff(&Nft::new(&input.node.nft.nft), &transaction).map_err(|e| Failure::Nft(e.into()))?;
            if difference.is_empty() {
                return Ok(Exit::Success);
            }
            emit(&difference.unified)?;
            Ok(Exit::Changed)
        }
        Command::Gen(args) => generate(&args),
        Command::Run(args) => Ok(run::main(&args)),
        Command::Trace(args) => inspect::run_trace(&args),
        Command::Explain(args) => inspect::run_explain(&args),
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
    }
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
    let syntax = match args.format {
        Some(cli::GenFormat::Yaml) => generator::Syntax::Yaml,
        Some(cli::GenFormat::Json) => generator::Syntax::Json,
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
    Ok(Transaction::full(&model(input)?, &input.node.nft.table))
}

/// Reads the snapshot, computes the node's model and reports what it found.
fn model(input: &Input) -> Result<RuleModel, Failure> {
    let loaded = input::load_snapshot(&input.snapshot).map_err(|e| Failure::Input(e.into()))?;
    loaded.print();
    let snapshot = loaded.snapshot;
    let mut config = input.node.config().map_err(|e| Failure::Input(anyhow::anyhow!(e)))?;
    // `primary` beside CIDRs: the Node's primary addresses are served too (the snapshot's Node is the
    // only node there is here: no local addresses).
    let primary = input.node.nodeport_addresses.iter().any(Option::is_none);
    if primary && !config.nodeport_addresses.is_empty() {
        let cidrs = config.nodeport_addresses.clone();
        config = run::addresses::resolve(&config, true, &cidrs, snapshot.node(&config.node_name), &[]);
    }
    let model = compute(&snapshot, &config);
    report_model(&model);
    Ok(model)
}

fn report_model(model: &RuleModel) {
    for summary in &model.services {
        let what = match &summary.treatment {
            Treatment::Headless => "is headless: no proxy rules (DNS returns the pod IPs)".to_owned(),
            Treatment::ExternalName { target } => {
                format!("is an ExternalName for {target:?}: no proxy rules (DNS returns a CNAME)")
            }
            Treatment::NotProxied { reason } => format!("is not proxied: {reason}"),
            Treatment::Proxied { .. } | Treatment::Invalid => continue,
        };
        eprintln!("proxier: note: {} {what}", summary.service);
    }
    for diagnostic in &model.diagnostics {
        eprintln!("proxier: {diagnostic}");
    }
}
