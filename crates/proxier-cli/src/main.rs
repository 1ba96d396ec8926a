//! `proxier`: render, apply, diff and delete nftables rules for Kubernetes Services.

mod cli;
mod input;

use std::process::ExitCode;

use clap::Parser;
use proxier_core::{RuleModel, Treatment, compute};
use proxier_nft::{Nft, Transaction, diff};

use crate::cli::{Cli, Command, Format, Input};

/// A failure, with the exit status it maps to.
enum Failure {
    Input(anyhow::Error),
    Nft(anyhow::Error),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(Failure::Input(error)) => {
            eprintln!("proxier: {error:#}");
            ExitCode::from(2)
        }
        Err(Failure::Nft(error)) => {
            eprintln!("proxier: {error:#}");
            ExitCode::from(3)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Render { input, format } => {
            let transaction = transaction(&input)?;
            let output = match format {
                Format::Json => transaction.to_json(),
                Format::Nft => transaction.to_text(),
            };
            print!("{output}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply { input } => {
            let transaction = transaction(&input)?;
            Nft::new(&input.node.nft.nft).apply_json(&transaction.to_json()).map_err(|e| {
                Failure::Nft(anyhow::Error::new(e).context("rules not applied; the previous ruleset is unchanged"))
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { input } => {
            let transaction = transaction(&input)?;
            let difference = diff(&Nft::new(&input.node.nft.nft), &transaction).map_err(|e| Failure::Nft(e.into()))?;
            if difference.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            print!("{}", difference.unified);
            Ok(ExitCode::from(1))
        }
        Command::Delete { nft } => {
            let removed = Nft::new(&nft.nft).delete_tables(&nft.table).map_err(|e| Failure::Nft(e.into()))?;
            if removed.is_empty() {
                eprintln!("proxier: no table {} to delete", nft.table);
            }
            for family in removed {
                let family = if family == proxier_core::IpFamily::V4 { "ip" } else { "ip6" };
                eprintln!("proxier: deleted table {family} {}", nft.table);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads the snapshot, computes the node's model, reports what it found, and builds the transaction.
fn transaction(input: &Input) -> Result<Transaction, Failure> {
    let (snapshot, report) = input::load_snapshot(&input.snapshot).map_err(|e| Failure::Input(e.into()))?;
    if let Some(note) = report.skipped_note() {
        eprintln!("proxier: note: {note}");
    }
    for diagnostic in &report.diagnostics {
        eprintln!("proxier: {diagnostic}");
    }
    let config = input.node.config().map_err(|e| Failure::Input(anyhow::anyhow!(e)))?;
    let model = compute(&snapshot, &config);
    report_model(&model);
    Ok(Transaction::full(&model, &input.node.nft.table))
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
