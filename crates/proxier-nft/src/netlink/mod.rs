//! Talking to nf_tables directly over netlink, without an `nft` process.
//!
//! [`NftSocket`] is one persistent nf_tables socket in the network namespace it was opened in: it
//! sends a [`Transaction`] — a full load or a change — as one atomic batch ([`Batch`]), reads the
//! kernel's answers, and names the object (and Service) a refusal concerns
//! ([`NetlinkError::Refused`]). Why: an `nft` run costs about 16 ms whatever the change (process start,
//! then waiting in `close()` for the kernel's deferred cleanup), the same change on a socket that stays
//! open well under a millisecond; a full load skips `nft`'s parsing, evaluation and its heap, about
//! three quarters of an `nft -j -f` load. What the encoder does not carry stays with `nft -j -f`
//! ([`Unsupported`]).
//!
//! [`NftSocket::sets`] and [`NftSocket::elements`] read sets back from the kernel (netlink dumps): the
//! per-Service counters are read this way, in a fraction of what `nft -j list` costs.
//!
//! [`TableWatch`] listens to nf_tables' change events and says whether anyone else touched proxier's
//! tables since it was last asked: a drift check that costs nothing while nobody did.

mod dump;
mod encode;
mod expr;
mod monitor;
mod wire;

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

pub use dump::{SetElement, SetInfo};
pub use encode::{Batch, Unsupported};
pub use monitor::{Drift, TableWatch};

use crate::transaction::Transaction;
use encode::{NFT_MSG_GETGEN, NFT_MSG_NEWGEN};
use wire::{NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, Writer};

/// The largest reply or event proxier reads in one `recv`.
const RECEIVE_BUFFER: usize = 256 * 1024;

/// A failure on the nf_tables socket.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    // The reason is in the message and not a `source`: printed as a chain it would show twice.
    /// A socket call failed.
    #[error("nf_tables netlink: cannot {action}: {error}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        error: io::Error,
    },
    /// The batch is larger than the socket may send at once; nothing was sent.
    #[error("nf_tables netlink: a batch of {0} bytes is too large for one send")]
    TooLarge(usize),
    /// The kernel refused the batch; nothing of it was applied.
    #[error("the kernel refused {action}{}{}: {reason}",
        element.as_ref().map(|e| format!(" (element {e})")).unwrap_or_default(),
        service.as_ref().map(|s| format!(" of Service port {s}")).unwrap_or_default())]
    Refused {
        /// What the refused message did: `adding to map ip proxier service-ips`.
        action: String,
        /// The element the kernel pointed at, as nft prints it, when it said which.
        element: Option<String>,
        /// The Service port that element belongs to (`namespace/name:port/protocol`), when known.
        service: Option<String>,
        /// The kernel's reason (errno text, and its own message if it gave one).
        reason: String,
        /// The errno.
        errno: i32,
    },
    /// The kernel's answer did not account for every message: whether the batch applied is unknown.
    #[error("nf_tables netlink: {0}")]
    Protocol(String),
}

fn io_error(action: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |error| NetlinkError::Io { action, error }
}

/// Opens a netlink socket of nfnetlink in the calling thread's network namespace, bound to a port
/// the kernel picks.
fn open_socket() -> Result<(Socket, u32), NetlinkError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io_error("open a socket"))?;
    let address = socket.bind_auto().map_err(io_error("bind the socket"))?;
    // Errors carry only the header of the refused message, plus the kernel's pointer into it.
    socket.set_cap_ack(true).map_err(io_error("set NETLINK_CAP_ACK"))?;
    socket.set_ext_ack(true).map_err(io_error("set NETLINK_EXT_ACK"))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io_error("connect to the kernel"))?;
    Ok((socket, address.port_number()))
}

/// Reads what the kernel has queued on `socket` without waiting; `Ok(false)` when nothing is.
fn receive(socket: &Socket, buf: &mut Vec<u8>) -> Result<bool, io::Error> {
    buf.clear();
    buf.reserve(RECEIVE_BUFFER);
    match socket.recv(buf, libc::MSG_DONTWAIT) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// A persistent nf_tables netlink socket in one network namespace (the one of the thread that
/// opened it, for its whole life).
#[derive(Debug)]
pub struct NftSocket {
    socket: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
    /// The send buffer asked for so far (0: the kernel's default).
    send_buffer: usize,
}

impl NftSocket {
    /// Opens a socket in the calling thread's network namespace. Needs CAP_NET_ADMIN there to commit.
    pub fn open() -> Result<NftSocket, NetlinkError> {
        let (socket, port) = open_socket()?;
        Ok(NftSocket { socket, port, seq: 1, buf: Vec::new(), send_buffer: 0 })
    }

    /// The socket's netlink port id, which the kernel puts on the events of its commits.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Applies `transaction` atomically as one batch, or says why netlink does not carry it
    /// (`Ok(Err(_))`, nothing sent: apply it with `nft`).
    pub fn apply(&mut self, transaction: &Transaction) -> Result<Result<(), Unsupported>, NetlinkError> {
        match Batch::encode(transaction) {
            Ok(mut batch) => self.commit(&mut batch).map(Ok),
            Err(unsupported) => Ok(Err(unsupported)),
        }
    }

    /// Sends `batch` and reads the kernel's answer to each of its messages. All or nothing: on error
    /// the kernel applied none of it (except [`NetlinkError::Protocol`], when that is unknown).
    pub fn commit(&mut self, batch: &mut Batch) -> Result<(), NetlinkError> {
        let begin = self.seq;
        self.seq = batch.number(begin);
        // Replies from an earlier batch cannot be left over (each commit reads all of its own), but a
        // stray one must not be taken for this batch's.
        while receive(&self.socket, &mut self.buf).map_err(io_error("read stale replies"))? {}
        // A batch goes in one `send`, which the socket's send buffer bounds (208 KiB by default; a
        // busy second of endpoint changes is several MiB).
        if batch.len() > DEFAULT_SEND_BUFFER && batch.len() > self.send_buffer {
            let wanted = (batch.len() + 64 * 1024).next_power_of_two();
            if force_buffer(&self.socket, libc::SO_SNDBUFFORCE, wanted).is_ok() {
                self.send_buffer = wanted;
            }
        }
        match self.socket.send(&batch.bytes, 0) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => return Err(NetlinkError::TooLarge(batch.len())),
            Err(e) => return Err(NetlinkError::Io { action: "send the batch", error: e }),
        }
        // nfnetlink processes a batch inside `send`: every answer is queued by the time it returns.
        // Refused messages are answered with their errno; of the others only the last asks for an
        // acknowledgement (see [`Batch::encode`]); a failed commit is answered on the end message.
        let first = begin.wrapping_add(1);
        let count = batch.requests.len();
        let end = first.wrapping_add(count as u32);
        let mut acknowledged = count == 0;
        let mut refusals: Vec<(usize, wire::Reply)> = Vec::new();
        let mut batch_error = None;
        loop {
            match receive(&self.socket, &mut self.buf) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(NetlinkError::Protocol(
                        "answers to the batch were lost (receive buffer full): whether it applied is unknown".into(),
                    ));
                }
                Err(e) => return Err(NetlinkError::Io { action: "read the answers", error: e }),
            }
            for message in wire::messages(&self.buf) {
                if message.kind != NLMSG_ERROR {
                    continue;
                }
                let Some(reply) = wire::reply(&message) else { continue };
                if reply.seq == begin || reply.seq == end {
                    // The batch as a whole: refused before any message was read, or its commit failed.
                    if reply.errno != 0 {
                        batch_error.get_or_insert(reply);
                    }
                    continue;
                }
                let index = reply.seq.wrapping_sub(first) as usize;
                if index < count {
                    if index + 1 == count {
                        acknowledged = true;
                    }
                    if reply.errno != 0 {
                        refusals.push((index, reply));
                    }
                }
            }
        }
        if let Some((index, reply)) = refusals.into_iter().min_by_key(|(index, _)| *index) {
            return Err(refused(batch, Some(index), &reply));
        }
        if let Some(reply) = batch_error {
            return Err(refused(batch, None, &reply));
        }
        if acknowledged {
            Ok(())
        } else {
            Err(NetlinkError::Protocol(format!(
                "the last of {count} messages was not answered: whether the batch applied is unknown"
            )))
        }
    }

    /// The ruleset generation of this namespace: the kernel counts every nf_tables commit in it.
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut writer = Writer::default();
        let start = writer.begin_message((10 << 8) | NFT_MSG_GETGEN, NLM_F_REQUEST, seq, 0, 0);
        writer.end_message(start);
        self.socket.send(&writer.buf, 0).map_err(io_error("ask for the generation"))?;
        loop {
            if !receive(&self.socket, &mut self.buf).map_err(io_error("read the generation"))? {
                return Err(NetlinkError::Protocol("no answer to the generation request".into()));
            }
            for message in wire::messages(&self.buf) {
                if message.seq != seq {
                    continue;
                }
                match message.kind {
                    kind if kind == (10 << 8) | NFT_MSG_NEWGEN => {
                        let id = wire::attributes(message.payload.get(4..).unwrap_or_default())
                            .find(|(kind, _)| *kind == 1)
                            .and_then(|(_, data)| data.try_into().ok())
                            .map(u32::from_be_bytes);
                        return id.ok_or_else(|| NetlinkError::Protocol("generation without an id".into()));
                    }
                    NLMSG_ERROR => {
                        if let Some(reply) = wire::reply(&message).filter(|r| r.errno != 0) {
                            return Err(NetlinkError::Io {
                                action: "read the generation",
                                error: io::Error::from_raw_os_error(reply.errno),
                            });
                        }
                    }
                    NLMSG_DONE => {}
                    _ => {}
                }
            }
        }
    }
}

/// Below this, a batch fits the kernel's default send buffer.
const DEFAULT_SEND_BUFFER: usize = 200 * 1024;

/// Raises the socket's send (`SO_SNDBUFFORCE`) or receive (`SO_RCVBUFFORCE`) buffer beyond
/// `net.core.wmem_max` / `rmem_max`; needs CAP_NET_ADMIN, as committing does. netlink-sys has no call
/// for it.
fn force_buffer(socket: &Socket, option: libc::c_int, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to a live local `c_int`, on a
    // descriptor the socket owns for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Names what the kernel refused: the message, and the element it pointed at if it did.
fn refused(batch: &Batch, index: Option<usize>, reply: &wire::Reply) -> NetlinkError {
    let mut reason = io::Error::from_raw_os_error(reply.errno).to_string();
    if let Some(cut) = reason.find(" (os error") {
        reason.truncate(cut);
    }
    if let Some(message) = reply.message.as_ref().filter(|m| !m.is_empty()) {
        reason = format!("{reason} ({message})");
    }
    let Some(request) = index.and_then(|i| batch.requests.get(i)) else {
        return NetlinkError::Refused {
            action: "the batch".into(),
            element: None,
            service: None,
            reason,
            errno: reply.errno,
        };
    };
    let element = reply
        .offset
        .and_then(|offset| request.elements.iter().rev().find(|(start, _)| *start <= offset))
        .or(match request.elements.as_slice() {
            [only] => Some(only),
            _ => None,
        })
        .map(|(_, element)| element);
    NetlinkError::Refused {
        action: request.action.clone(),
        element: element.map(encode::describe),
        // Element comments are `namespace/name:port/protocol (kind)`.
        service: element.and_then(|e| e.comment.as_deref()).map(|c| c.split(" (").next().unwrap_or(c).to_owned()),
        reason,
        errno: reply.errno,
    }
}
