//! When a change reached the kernel, seen from nf_tables' own change events (what `nft monitor` shows)
//! in the node's namespace: the kernel announces every element it adds or deletes, then the commit's
//! new generation. Nothing is listed, so watching costs the same at any table size.
//!
//! A change is recognised by an address: an endpoint's address appears in the elements that send
//! traffic to it, a Service's ClusterIP in the elements that match it, whatever the layout. Each
//! sampled change waits for a commit in which that address's elements grew (it became reachable) or
//! shrank (it went away); elements rewritten in place (deleted and added in one commit, as a position
//! shift does) net to zero and do not count. The driver keeps at most one sampled change per address in
//! flight, so two changes to one address within one sync cannot cancel out.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNLGRP_NFTABLES: u32 = 7;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
/// Room for the events of a large sync between two reads (the kernel drops what does not fit).
const RECEIVE_BUFFER: libc::c_int = 256 * 1024 * 1024;

/// What a sampled change waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Elements with the address appear (net).
    Appears,
    /// Elements with the address go (net).
    Goes,
}

/// One sampled change in flight.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Its number among all samples, in the order they were made.
    pub number: u64,
    pub expect: Expect,
    /// When the driver was about to write it to the API server.
    pub sent: Instant,
    /// What the change was (`flip`, `add`…), for the report.
    pub op: &'static str,
}

/// What the watcher found.
#[derive(Debug, Default)]
pub struct Seen {
    /// (sample number, latency), in the order they reached the kernel.
    pub resolved: Vec<(u64, Duration)>,
    /// Commits seen in proxier's table.
    pub commits: u64,
}

/// The samples in flight, by address, shared by the driver and the watcher.
#[derive(Default)]
pub struct Pending {
    pub samples: Mutex<HashMap<u32, Sample>>,
    pub seen: Mutex<Seen>,
    /// Times the kernel dropped events because the buffer was full (samples may then stay unseen).
    pub overflows: AtomicU64,
}

impl Pending {
    /// Whether a sample for `ip` is in flight.
    pub fn busy(&self, ip: Ipv4Addr) -> bool {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&u32::from(ip))
    }

    /// Adds a sample for `ip`; false when one is already in flight.
    pub fn add(&self, ip: Ipv4Addr, sample: Sample) -> bool {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        match samples.entry(u32::from(ip)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(sample);
                true
            }
        }
    }

    /// Samples still in flight.
    pub fn in_flight(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The samples still in flight, described (`flip 10.128.0.5 goes`), oldest first.
    pub fn describe(&self) -> Vec<String> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<(&u32, &Sample)> = samples.iter().collect();
        list.sort_by_key(|(_, s)| s.number);
        list.iter()
            .map(|(ip, s)| {
                let expect = if s.expect == Expect::Appears { "appears" } else { "goes" };
                format!("{} {} {expect}", s.op, Ipv4Addr::from(**ip))
            })
            .collect()
    }
}

/// The watcher: a thread reading nf_tables events from a socket opened in the node's namespace.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Opens the event socket in the calling thread's network namespace (call it inside the node's).
pub fn open_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket calls on a descriptor this function owns; every pointer is to a local of
    // the size passed.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut address: libc::sockaddr_nl = std::mem::zeroed();
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let size = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        if libc::bind(fd.as_raw_fd(), (&raw const address).cast(), size) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let set = |level, option, value: libc::c_int| {
            let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::setsockopt(fd.as_raw_fd(), level, option, (&raw const value).cast(), size)
        };
        if set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER) != 0 {
            set(libc::SOL_SOCKET, libc::SO_RCVBUF, RECEIVE_BUFFER);
        }
        if set(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES as libc::c_int) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        let size = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const timeout).cast(), size);
        Ok(fd)
    }
}

impl Watcher {
    /// Starts reading `socket` (from [`open_socket`]) for commits to `table`, resolving `pending`.
    pub fn start(socket: OwnedFd, table: &str, pending: Arc<Pending>) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let table = table.to_owned();
        let thread = std::thread::spawn(move || watch(socket, &table, &pending, &flag));
        Watcher { stop, thread: Some(thread) }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(socket: OwnedFd, table: &str, pending: &Pending, stop: &AtomicBool) {
    let mut buf = vec![0u8; 4 << 20];
    // Net element count per address in the commit being read.
    let mut commit: HashMap<u32, i64> = HashMap::new();
    let mut ours = false;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: reads into a buffer of the length given.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENOBUFS) {
                pending.overflows.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let now = Instant::now();
        for (kind, payload) in messages(&buf[..n as usize]) {
            if kind >> 8 != NFNL_SUBSYS_NFTABLES {
                continue;
            }
            match kind & 0xff {
                message @ (NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM) => {
                    let sign = if message == NFT_MSG_NEWSETELEM { 1 } else { -1 };
                    if element_message(payload, table, sign, &mut commit) {
                        ours = true;
                    }
                }
                NFT_MSG_NEWGEN => {
                    if ours {
                        resolve(pending, &commit, now);
                    }
                    commit.clear();
                    ours = false;
                }
                _ => {}
            }
        }
    }
}

fn resolve(pending: &Pending, commit: &HashMap<u32, i64>, now: Instant) {
    let mut resolved = Vec::new();
    {
        let mut samples = pending.samples.lock().unwrap_or_else(|p| p.into_inner());
        let done: Vec<u32> = if samples.len() < commit.len() {
            samples
                .iter()
                .filter(|&(ip, sample)| commit.get(ip).is_some_and(|&net| reached(sample.expect, net)))
                .map(|(&ip, _)| ip)
                .collect()
        } else {
            commit
                .iter()
                .filter(|&(ip, &net)| samples.get(ip).is_some_and(|sample| reached(sample.expect, net)))
                .map(|(&ip, _)| ip)
                .collect()
        };
        for ip in done {
            if let Some(sample) = samples.remove(&ip) {
                resolved.push((sample.number, now.saturating_duration_since(sample.sent)));
            }
        }
    }
    let mut seen = pending.seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.commits += 1;
    seen.resolved.extend(resolved);
}

fn reached(expect: Expect, net: i64) -> bool {
    match expect {
        Expect::Appears => net > 0,
        Expect::Goes => net < 0,
    }
}

/// Netlink messages in a datagram: (type, payload after the nfgenmsg header).
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
        if len < 16 || len > buf.len() {
            return None;
        }
        let payload = buf.get(20..len).unwrap_or(&[]);
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, payload))
    })
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Netlink attributes: (type without flags, payload).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, payload))
    })
}

/// Counts the addresses of a NEWSETELEM/DELSETELEM message's elements into `commit` (each address
/// once per element); false when the message is about another table.
fn element_message(payload: &[u8], table: &str, sign: i64, commit: &mut HashMap<u32, i64>) -> bool {
    let mut elements = None;
    let mut ours = false;
    for (kind, value) in attributes(payload) {
        match kind {
            NFTA_SET_ELEM_LIST_TABLE => ours = value.split(|b| *b == 0).next() == Some(table.as_bytes()),
            NFTA_SET_ELEM_LIST_ELEMENTS => elements = Some(value),
            _ => {}
        }
    }
    let (true, Some(elements)) = (ours, elements) else {
        return false;
    };
    let mut addresses: Vec<u32> = Vec::new();
    for (_, element) in attributes(elements).filter(|(k, _)| *k == NFTA_LIST_ELEM) {
        addresses.clear();
        for (_, data) in attributes(element).filter(|(k, _)| matches!(*k, NFTA_SET_ELEM_KEY | NFTA_SET_ELEM_DATA)) {
            for (_, value) in attributes(data).filter(|(k, _)| *k == NFTA_DATA_VALUE) {
                // Concatenated keys and data are 4-byte aligned fields; an address is one of them.
                addresses.extend(value.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])));
            }
        }
        addresses.sort_unstable();
        addresses.dedup();
        for address in &addresses {
            *commit.entry(*address).or_insert(0) += sign;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((payload.len() + 4) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    #[test]
    fn an_element_counts_each_address_once_and_other_tables_not_at_all() {
        let key = attr(NFTA_SET_ELEM_KEY, &attr(NFTA_DATA_VALUE, &[10, 0, 0, 1, 0, 80, 0, 0]));
        let data = attr(NFTA_SET_ELEM_DATA, &attr(NFTA_DATA_VALUE, &[10, 0, 0, 1]));
        let element = attr(NFTA_LIST_ELEM, &[key, data].concat());
        let message = |table: &str| {
            [
                attr(NFTA_SET_ELEM_LIST_TABLE, format!("{table}\0").as_bytes()),
                attr(NFTA_SET_ELEM_LIST_ELEMENTS, &element),
            ]
            .concat()
        };
        let mut commit = HashMap::new();
        assert!(element_message(&message("proxier"), "proxier", 1, &mut commit));
        assert_eq!(commit.get(&u32::from(Ipv4Addr::new(10, 0, 0, 1))), Some(&1));
        assert!(!element_message(&message("other"), "proxier", 1, &mut commit));
        assert!(element_message(&message("proxier"), "proxier", -1, &mut commit));
        assert_eq!(commit.get(&u32::from(Ipv4Addr::new(10, 0, 0, 1))), Some(&0));
        assert!(!reached(Expect::Appears, 0) && !reached(Expect::Goes, 0));
    }
}
