//! `proxier`: render, apply, diff and delete nftables rules for Kubernetes Services.

mod cli;
mod exit;
mod flags;
mod generator;
mod input;
mod inspect;
mod run;
mod stats;

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
            print!("{output}");
            Ok(Exit::Success)
        }
        Command::Apply { input, check } => {
            let model = model(&input)?;
            let nft = Nft::new(&input.node.nft.nft);
            let counters = !input.node.no_counters;
            if check {
                let transaction = Transaction::full_with(&model, &input.node.nft.table, counters);
                nft.check_json(&transaction.to_json_compact())
                    .map_err(|e| Failure::Nft(anyhow::Error::new(e).context("the kernel would refuse these rules")))?;
                return Ok(Exit::Success);
            }
            let carried = if counters { carried_counts(&nft, &input.node.nft.table) } else { Default::default() };
            let refused =
                refusal::apply_full_with(&nft, &model, &input.node.nft.table, counters, &carried).map_err(|e| {
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
            print!("{}", difference.unified);
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
    written.map_err(|e| Failure::Input(anyhow::Error::new(e).context(format!("cannot write {target}"))))?;
    eprintln!("proxier: generated {summary}");
    Ok(Exit::Success)
}

/// Reads the snapshot, computes the node's model, reports what it found, and builds the transaction.
fn transaction(input: &Input) -> Result<Transaction, Failure> {
    Ok(Transaction::full_with(&model(input)?, &input.node.nft.table, !input.node.no_counters))
}

/// The counts of the live tables, to carry into their replacement. Unreadable counts are not a
/// reason to leave the rules stale: the apply goes on, with a warning that they start again.
fn carried_counts(nft: &Nft, table: &str) -> proxier_nft::counters::Carried {
    match proxier_nft::counters::read(nft, table) {
        Ok(elements) => proxier_nft::counters::carried(&elements),
        Err(error) => {
            eprintln!("proxier: warning: the counters start again from zero: {error}");
            Default::default()
        }
    }
}

/// Reads the snapshot, computes the node's model and reports what it found.
fn model(input: &Input) -> Result<RuleModel, Failure> {
    let (snapshot, report) = input::load_snapshot(&input.snapshot).map_err(|e| Failure::Input(e.into()))?;
    if let Some(note) = report.skipped_note() {
        eprintln!("proxier: note: {note}");
    }
    for diagnostic in &report.diagnostics {
        eprintln!("proxier: {diagnostic}");
    }
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
