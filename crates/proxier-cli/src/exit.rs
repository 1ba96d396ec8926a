//! The exit statuses of `proxier`, defined once: the commands return them, and `--help` lists them
//! from here. A leaf module: it uses nothing else of the binary.

use std::process::ExitCode;

/// Declares [`Exit`] with one line of documentation per status, and [`Exit::meaning`] returning that
/// same line, so the rustdoc and `--help` cannot disagree.
macro_rules! exit_statuses {
    ($($(#[doc = $doc:literal])+ $name:ident = $code:literal,)+) => {
        /// How `proxier` exits. Usage errors found by the argument parser also exit with 2
        /// ([`Exit::BadInput`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Exit {
            $($(#[doc = $doc])+ $name = $code,)+
        }

        impl Exit {
            /// Every status, in order.
            pub const ALL: &[Exit] = &[$(Exit::$name),+];

            /// What the status means (its documentation, as `--help` prints it).
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Exit::$name => concat!($($doc),+).trim(),)+
                }
            }
        }
    };
}

exit_statuses! {
    /// success (diff: no change; run: stopped by SIGTERM or SIGINT)
    Success = 0,
    /// diff: apply would change the kernel; run: could not start, or stopped on an error
    Changed = 1,
    /// bad arguments, settings or an unreadable snapshot, or apply refusing to empty live tables that program
    /// Services (without --allow-empty); nothing was changed
    BadInput = 2,
    /// nft failed (apply, delete, diff, run --cleanup, stats); the previous ruleset is unchanged
    NftFailed = 3,
    /// apply: applied, except the Services whose rules the kernel refused (each named on stderr)
    PartlyApplied = 4,
}

impl Exit {
    /// The status as a number.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// The "Exit status:" section of `proxier --help`. A meaning longer than a line is wrapped here, under
/// its own first word, before the help printer would wrap it at the left margin.
pub fn help() -> String {
    /// The help printer's width when stdout is not a terminal.
    const WIDTH: usize = 100;
    let mut text = String::from("Exit status:");
    for exit in Exit::ALL {
        let mut line = format!("  {}  ", exit.code());
        let indent = " ".repeat(line.len());
        let mut empty = true;
        for word in exit.meaning().split(' ') {
            if !empty && line.len() + 1 + word.len() > WIDTH {
                text.push('\n');
                text.push_str(&line);
                line = indent.clone();
                empty = true;
            }
            if !empty {
                line.push(' ');
            }
            line.push_str(word);
            empty = false;
        }
        text.push('\n');
        text.push_str(&line);
    }
    text
}

/// A failure of a command, with the exit status it maps to.
#[derive(Debug)]
pub enum Failure {
    /// [`Exit::BadInput`].
    Input(anyhow::Error),
    /// [`Exit::NftFailed`].
    Nft(anyhow::Error),
}

impl Failure {
    /// The exit status of this failure.
    pub fn exit(&self) -> Exit {
        match self {
            Failure::Input(_) => Exit::BadInput,
            Failure::Nft(_) => Exit::NftFailed,
        }
    }

    /// The error, for the one line printed on stderr.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Input(error) | Failure::Nft(error) => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_status_once_in_order() {
        let help = help();
        // A status starts a line with two spaces; a wrapped meaning goes on under five.
        let codes: Vec<u8> = help
            .lines()
            .skip(1)
            .filter(|line| !line.starts_with("     "))
            .map(|line| line.split_whitespace().next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
        assert!(help.lines().all(|line| line.len() <= 100), "{help}");
        assert!(help.contains("  4  apply: applied, except the Services whose rules the kernel refused"), "{help}");
        // The refusal to empty live tables exits 2 too; its one home is this status.
        assert!(
            help.contains(
                "  2  bad arguments, settings or an unreadable snapshot, or apply refusing to empty live tables that\n     \
                 program Services (without --allow-empty); nothing was changed"
            ),
            "{help}"
        );
    }
}
