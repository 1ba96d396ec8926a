//! A drift signal that costs nothing while nobody touches proxier's tables: nf_tables announces every
//! change it commits to listeners of its multicast group (as `nft monitor` shows them), each naming
//! the table it concerns. [`TableWatch`] listens, and tells whether a change to proxier's tables came
//! from anyone but proxier since it was last asked. Only then is a full comparison worth its cost.
//!
//! proxier's own commits must not count. They are made with the watch paused
//! ([`TableWatch::own_commit`]): no events are queued for them (at 44k Services a full load would
//! announce over a million elements), and the ruleset generation read before and after tells whether
//! anyone else committed in between, in which case the result is [`Drift::Unknown`].

use std::collections::BTreeSet;

use netlink_sys::Socket;

use super::encode::NFT_MSG_NEWGEN;
use super::{NetlinkError, NftSocket, force_buffer, io_error, open_socket, receive, wire};

/// nf_tables' multicast group (`NFNLGRP_NFTABLES`).
const NFNLGRP_NFTABLES: u32 = 7;
/// The receive buffer asked for: room for the events of other tables between two polls.
const EVENT_BUFFER: usize = 4 * 1024 * 1024;

/// What the watch saw since it was last asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Nobody but proxier changed proxier's tables.
    Unchanged,
    /// Someone else changed them: which tables and what (`ip proxier: new element`, …), deduplicated.
    Changed(Vec<String>),
    /// Events may have been missed: compare in full to know.
    Unknown(String),
}

/// Watches nf_tables events in one network namespace for changes to proxier's tables.
#[derive(Debug)]
pub struct TableWatch {
    socket: Socket,
    table: String,
    /// Ports whose events are proxier's own (its commit sockets).
    own_ports: BTreeSet<u32>,
    changed: BTreeSet<String>,
    unknown: Option<String>,
    buf: Vec<u8>,
}

impl TableWatch {
    /// Starts watching, in the calling thread's network namespace, for changes to the tables named
    /// `table` (in the `ip` and `ip6` families).
    pub fn open(table: &str) -> Result<TableWatch, NetlinkError> {
        let (socket, _) = open_socket()?;
        // Events of other tables queue up between two checks. A larger buffer only lowers the chance
        // of overflow (reported as `Unknown`, never missed); without CAP_NET_ADMIN the kernel's
        // maximum is taken.
        if force_buffer(&socket, libc::SO_RCVBUFFORCE, EVENT_BUFFER).is_err() {
            let _ = socket.set_rx_buf_sz(EVENT_BUFFER);
        }
        socket.add_membership(NFNLGRP_NFTABLES).map_err(io_error("join the nf_tables event group"))?;
        Ok(TableWatch {
            socket,
            table: table.to_owned(),
            own_ports: BTreeSet::new(),
            changed: BTreeSet::new(),
            unknown: None,
            buf: Vec::new(),
        })
    }

    /// Treats events from `socket`'s commits as proxier's own, also outside [`Self::own_commit`].
    pub fn trust(&mut self, socket: &NftSocket) {
        self.own_ports.insert(socket.port());
    }

    /// What happened since the last call (reading only the events queued since), and starts afresh.
    pub fn take(&mut self) -> Drift {
        self.drain();
        let changed = std::mem::take(&mut self.changed);
        match self.unknown.take() {
            Some(reason) => Drift::Unknown(reason),
            None if changed.is_empty() => Drift::Unchanged,
            None => Drift::Changed(changed.into_iter().collect()),
        }
    }

    /// Runs `commit` (proxier's own change to its tables, by netlink or by `nft`) unwatched.
    /// `commits` is the number of commits it made (1 for a successful transaction, 0 for a refused
    /// one); any other commit in the namespace meanwhile makes the next [`Self::take`] `Unknown`.
    /// `socket` reads the generation, and is handed to `commit`.
    pub fn own_commit<R>(&mut self, socket: &mut NftSocket, commit: impl FnOnce(&mut NftSocket) -> (R, u32)) -> R {
        // The generation is read while still listening: a commit between this read and the pause is
        // both an event and counted, so it cannot go unseen.
        let before = socket.generation();
        self.drain();
        let paused = self.socket.drop_membership(NFNLGRP_NFTABLES);
        let (result, commits) = commit(socket);
        let resumed = self.socket.add_membership(NFNLGRP_NFTABLES);
        let after = socket.generation();
        let problem = match (before, paused, resumed, after) {
            (Ok(before), Ok(()), Ok(()), Ok(after)) => {
                let seen = after.wrapping_sub(before);
                (seen > commits).then(|| format!("{} other commits while proxier committed", seen - commits))
            }
            (Err(e), ..) | (.., Err(e)) => Some(e.to_string()),
            (_, Err(e), ..) | (_, _, Err(e), _) => Some(format!("cannot pause the event watch: {e}")),
        };
        if let Some(problem) = problem {
            self.unknown.get_or_insert(problem);
        }
        result
    }

    /// Reads every queued event.
    fn drain(&mut self) {
        loop {
            match receive(&self.socket, &mut self.buf) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.unknown.get_or_insert_with(|| "nf_tables events were lost (buffer full)".into());
                }
                Err(e) => {
                    self.unknown.get_or_insert_with(|| format!("cannot read nf_tables events: {e}"));
                    return;
                }
            }
            for message in wire::messages(&self.buf) {
                if message.kind >> 8 != 10 || message.kind & 0xff == NFT_MSG_NEWGEN {
                    continue;
                }
                if self.own_ports.contains(&message.port) {
                    continue;
                }
                let Some(&family) = message.payload.first() else { continue };
                let family = match family {
                    2 => "ip",
                    10 => "ip6",
                    _ => continue,
                };
                let table = wire::attributes(message.payload.get(4..).unwrap_or_default())
                    .find(|(kind, _)| *kind == 1)
                    .map(|(_, data)| wire::attr_string(data));
                if table.as_deref() == Some(self.table.as_str()) {
                    self.changed.insert(format!("{family} {}: {}", self.table, event_name(message.kind & 0xff)));
                }
            }
        }
    }
}

fn event_name(kind: u16) -> &'static str {
    match kind {
        0 => "new table",
        2 => "table deleted",
        3 => "new chain",
        5 => "chain deleted",
        6 => "new rule",
        8 => "rule deleted",
        9 => "new set",
        11 => "set deleted",
        12 => "new element",
        14 => "element deleted",
        _ => "other change",
    }
}
