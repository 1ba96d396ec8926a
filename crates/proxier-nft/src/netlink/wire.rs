//! Netlink framing: message headers, attributes and nests, as the kernel's nfnetlink reads them, and
//! the reading of the replies it sends (acks, errors, and the attributes of events).

// Netlink message types and flags (linux/netlink.h).
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
/// With NLM_F_CREATE on a new rule: append it to the chain (without, it is inserted first).
pub(crate) const NLM_F_APPEND: u16 = 0x800;
/// A dump: every object the request's attributes select (NLM_F_ROOT | NLM_F_MATCH).
pub(crate) const NLM_F_DUMP: u16 = 0x300;
/// In a dump's parts: what was dumped changed while it was read (the dump is inconsistent).
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
/// In an error message: extended-ack attributes follow the original header.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// In an error message: the original message was not copied, only its header.
const NLM_F_CAPPED: u16 = 0x100;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Builds a sequence of netlink messages into one buffer, as a batch is sent in one `send`.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    /// Starts a message; returns its offset, for [`Writer::end_message`].
    pub(crate) fn begin_message(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_message
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Closes the message started at `start`.
    pub(crate) fn end_message(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// An attribute with raw data, padded to 4 bytes.
    pub(crate) fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn attr_str(&mut self, kind: u16, text: &str) {
        let len = 4 + text.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// A big-endian u32 attribute (nf_tables' numbers are in network order).
    pub(crate) fn attr_u32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_be_bytes());
    }

    /// A big-endian u64 attribute.
    pub(crate) fn attr_u64(&mut self, kind: u16, value: u64) {
        self.attr(kind, &value.to_be_bytes());
    }

    /// Opens a nested attribute; returns its offset, for [`Writer::end_nest`].
    pub(crate) fn begin_nest(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Closes the nest opened at `start`. Netlink attribute lengths are 16 bits: a longer nest is
    /// reported as `false` (the caller keeps nests below the limit).
    pub(crate) fn end_nest(&mut self, start: usize) -> bool {
        let len = self.buf.len() - start;
        self.buf[start..start + 2].copy_from_slice(&(len.min(usize::from(u16::MAX)) as u16).to_ne_bytes());
        len <= usize::from(u16::MAX)
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// One message of a buffer the kernel sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) port: u32,
    /// Everything after the netlink header.
    pub(crate) payload: &'a [u8],
}

/// The messages of a received buffer; stops at the first malformed one.
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let message = Message {
            kind: u16::from_ne_bytes(buf[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(buf[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            port: u32::from_ne_bytes(buf[12..16].try_into().ok()?),
            payload: &buf[16..len],
        };
        buf = &buf[align(len).min(buf.len())..];
        Some(message)
    })
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The attributes in `buf`: (type without flags, data). Stops at the first malformed one.
pub(crate) fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let data = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, data))
    })
}

/// A NUL-terminated string attribute's text.
pub(crate) fn attr_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// What an `NLMSG_ERROR` message says about the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The request's sequence number.
    pub(crate) seq: u32,
    /// 0 for an ack, else the (positive) errno.
    pub(crate) errno: i32,
    /// The kernel's own message (extended ack), if any.
    pub(crate) message: Option<String>,
    /// Where in the request the offending attribute starts (extended ack), if said.
    pub(crate) offset: Option<u32>,
}

/// Reads an `NLMSG_ERROR` payload; `None` when it is too short to be one.
pub(crate) fn reply(message: &Message<'_>) -> Option<Reply> {
    let payload = message.payload;
    if payload.len() < 4 + 16 {
        return None;
    }
    let error = i32::from_ne_bytes(payload[0..4].try_into().ok()?);
    let original_len = u32::from_ne_bytes(payload[4..8].try_into().ok()?) as usize;
    let seq = u32::from_ne_bytes(payload[12..16].try_into().ok()?);
    let mut reply = Reply { seq, errno: -error, message: None, offset: None };
    if message.flags & NLM_F_ACK_TLVS != 0 {
        // Capped: only the original header was copied; otherwise the whole original message.
        let copied = if message.flags & NLM_F_CAPPED != 0 { 16 } else { align(original_len) };
        let tlvs = payload.get(4 + copied..).unwrap_or_default();
        for (kind, data) in attributes(tlvs) {
            match kind {
                NLMSGERR_ATTR_MSG => reply.message = Some(attr_string(data)),
                NLMSGERR_ATTR_OFFS => reply.offset = data.try_into().ok().map(u32::from_ne_bytes),
                _ => {}
            }
        }
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_attributes_read_back_what_was_written() {
        let mut writer = Writer::default();
        let start = writer.begin_message(0x0a00, NLM_F_REQUEST, 7, 2, 0);
        writer.attr_str(1, "proxier");
        let nest = writer.begin_nest(3);
        writer.attr_u32(1, 0xdead_beef);
        assert!(writer.end_nest(nest));
        writer.end_message(start);
        let all: Vec<_> = messages(&writer.buf).collect();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].kind, all[0].seq), (0x0a00, 7));
        let attrs: Vec<_> = attributes(&all[0].payload[4..]).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attr_string(attrs[0].1), "proxier");
        assert_eq!(attrs[1].0, 3, "the nested flag is masked off");
        assert_eq!(attributes(attrs[1].1).next(), Some((1, &0xdead_beef_u32.to_be_bytes()[..])));
    }

    #[test]
    fn truncated_input_ends_the_iteration() {
        let mut writer = Writer::default();
        let start = writer.begin_message(1, 0, 1, 0, 0);
        writer.attr_str(1, "x");
        writer.end_message(start);
        let cut = &writer.buf[..writer.buf.len() - 1];
        assert_eq!(messages(cut).count(), 0);
        assert_eq!(attributes(&[8, 0, 1, 0, 1]).count(), 0);
    }
}
