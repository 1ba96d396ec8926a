//! Probes (one connection or datagram from a namespace) and the assertions built on them.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::sock::{self, Proto, map_sctp_error};

/// Per-try timeout of the assertions that expect an answer ([`check_reached`] and friends).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`check_dropped`] waits for an answer that must not come.
pub const DROP_TIMEOUT: Duration = Duration::from_millis(400);
/// [`check_refused`] needs the refusal within this time (a RST or ICMP error takes well under
/// a millisecond here; anything slower, e.g. a failed neighbour lookup, is not "refused").
pub const REFUSED_WITHIN: Duration = Duration::from_millis(500);

/// What one probe observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A server answered: its name and the source address it saw us connect from.
    Answered { server: String, seen_source: IpAddr },
    /// Refused at once: TCP RST or SCTP ABORT (`ConnectionRefused`), an ICMP error
    /// (`ConnectionRefused` for port unreachable, `HostUnreachable`, `NetworkUnreachable`,
    /// `PermissionDenied` for ICMPv6 administratively prohibited), a reset after connecting
    /// (`ConnectionReset`), or no route in the probing namespace (`NetworkUnreachable`).
    Refused { kind: io::ErrorKind },
    /// Nothing came back within the timeout.
    Timeout,
    /// Anything else (a local error, or a reply that is not a server answer line).
    Error(String),
}

impl Outcome {
    pub fn is_answered(&self) -> bool {
        matches!(self, Outcome::Answered { .. })
    }

    pub fn is_refused(&self) -> bool {
        matches!(self, Outcome::Refused { .. })
    }

    /// The answering server's name, if any.
    pub fn server(&self) -> Option<&str> {
        match self {
            Outcome::Answered { server, .. } => Some(server),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answered { server, seen_source } => {
                write!(f, "answered by {server} (it saw source {seen_source})")
            }
            Outcome::Refused { kind } => write!(f, "refused ({kind})"),
            Outcome::Timeout => f.write_str("no answer (timeout)"),
            Outcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Sends one probe from namespace `from` to `target` and waits at most `timeout` (> 0).
///
/// TCP/SCTP: connect, read the answer line, close with SO_LINGER 0 (RST/ABORT, no TIME_WAIT).
/// UDP: a connected socket with IP(V6)_RECVERR sends one datagram and reads the answer; ICMP
/// errors show up as `Refused`, answers from another address than `target` are ignored (as
/// a connected socket does), which ends in `Timeout`.
pub fn probe(from: &(impl AsRef<Netns> + ?Sized), proto: Proto, target: SocketAddr, timeout: Duration) -> Outcome {
    assert!(!timeout.is_zero(), "probe timeout must be positive");
    from.as_ref().run(move || probe_here(proto, target, timeout))
}

/// [`probe`] from the calling thread's own namespace.
fn probe_here(proto: Proto, target: SocketAddr, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let result = match proto {
        Proto::Tcp => TcpStream::connect_timeout(&target, timeout).and_then(|s| {
            sock::set_linger_zero(&s)?;
            read_answer(s, deadline)
        }),
        Proto::Sctp => connect_sctp(target, timeout).and_then(|s| read_answer(s, deadline)),
        Proto::Udp => probe_udp(target, timeout),
    };
    match result {
        Ok(answer) => parse_answer(&answer),
        Err(e) => classify(e),
    }
}

fn connect_sctp(target: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let domain = if target.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let fd = sock::socket(domain, libc::SOCK_STREAM, libc::IPPROTO_SCTP).map_err(|e| map_sctp_error(Proto::Sctp, e))?;
    sock::set_linger_zero(&fd)?;
    sock::connect_timeout(&fd, target, timeout)?;
    // An SCTP one-to-one socket reads and writes like a TCP one.
    Ok(TcpStream::from(fd))
}

/// Reads until newline or EOF, or fails with TimedOut at the deadline.
fn read_answer(mut s: TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(answer)
}

fn probe_udp(target: SocketAddr, timeout: Duration) -> io::Result<Vec<u8>> {
    let socket = if target.is_ipv4() {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock::set_int(&s, libc::IPPROTO_IP, libc::IP_RECVERR, 1)?;
        s
    } else {
        let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
        sock::set_int(&s, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
        s
    };
    socket.connect(target)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(b"probe\n")?;
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// Parses a server's `<name> <address:port>` line.
fn parse_answer(answer: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Outcome::Error("the connection closed without an answer".to_string());
    }
    match line.rsplit_once(' ') {
        Some((server, addr)) => match addr.parse::<SocketAddr>() {
            Ok(addr) => Outcome::Answered { server: server.to_string(), seen_source: addr.ip() },
            Err(_) => Outcome::Error(format!("unexpected answer {line:?}")),
        },
        None => Outcome::Error(format!("unexpected answer {line:?}")),
    }
}

fn classify(e: io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED | libc::ECONNRESET | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES) => {
            Outcome::Refused { kind: e.kind() }
        }
        Some(libc::EAGAIN | libc::ETIMEDOUT) => Outcome::Timeout,
        _ if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => Outcome::Timeout,
        _ => Outcome::Error(e.to_string()),
    }
}

fn describe(from: &Netns, proto: Proto, target: SocketAddr) -> String {
    format!("{proto} {} -> {target}", from.name())
}

/// The set of servers that answered `tries` probes; fails (listing every outcome) unless every
/// probe was answered. With `k` equally likely backends, `tries` probes all miss a given one
/// with probability `((k-1)/k)^tries`: 20 tries for 2 backends is about 1e-6.
pub fn check_reached(
    from: &(impl AsRef<Netns> + ?Sized),
    proto: Proto,
    target: SocketAddr,
    tries: usize,
) -> Result<BTreeSet<String>, String> {
    let from = from.as_ref();
    let outcomes: Vec<Outcome> = (0..tries).map(|_| probe(from, proto, target, ANSWER_TIMEOUT)).collect();
    if outcomes.iter().all(Outcome::is_answered) {
        return Ok(outcomes.iter().filter_map(|o| o.server().map(str::to_string)).collect());
    }
    let list: Vec<String> = outcomes.iter().enumerate().map(|(i, o)| format!("  try {}: {o}", i + 1)).collect();
    Err(format!("{}: expected every try to be answered, got:\n{}", describe(from, proto, target), list.join("\n")))
}

/// [`check_reached`], panicking on failure.
#[track_caller]
pub fn reached(
    from: &(impl AsRef<Netns> + ?Sized),
    proto: Proto,
    target: SocketAddr,
    tries: usize,
) -> BTreeSet<String> {
    match check_reached(from, proto, target, tries) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Every one of `tries` probes is answered, and the answering servers are exactly `expected`.
pub fn check_reaches(
    from: &(impl AsRef<Netns> + ?Sized),
    proto: Proto,
    target: SocketAddr,
    tries: usize,
    expected: &[&str],
) -> Result<(), String> {
    let got = check_reached(from, proto, target, tries)?;
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{}: expected {tries} tries to reach exactly {want:?}, reached {got:?}",
            describe(from.as_ref(), proto, target)
        ))
    }
}

/// [`check_reaches`], panicking on failure.
#[track_caller]
pub fn assert_reaches(
    from: &(impl AsRef<Netns> + ?Sized),
    proto: Proto,
    target: SocketAddr,
    tries: usize,
    expected: &[&str],
) {
    match check_reaches(from, proto, target, tries, expected) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// One probe is refused (see [`Outcome::Refused`]) within [`REFUSED_WITHIN`]. Returns the
/// error kind seen, e.g. `ConnectionRefused` for a TCP RST or ICMP port unreachable.
pub fn check_refused(
    from: &(impl AsRef<Netns> + ?Sized),
    proto: Proto,
    target: SocketAddr,
) -> Result<io::ErrorKind, String> {
    let from = from.as_ref();
    let start = Instant::now();
    let outcome = probe(from, proto, target, REFUSED_WITHIN);
    let took = start.elapsed();
    match outcome {
        Outcome::Refused { kind } if took <= REFUSED_WITHIN => Ok(kind),
        other => Err(format!(
            "{}: expected refused within {} ms, got {other} after {} ms",
            describe(from, proto, target),
            REFUSED_WITHIN.as_millis(),
            took.as_millis()
        )),
    }
}

/// [`check_refused`], panicking on failure.
#[track_caller]
pub fn assert_refused(from: &(impl AsRef<Netns> + ?Sized), proto: Proto, target: SocketAddr) -> io::ErrorKind {
    match check_refused(from, proto, target) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// One probe gets no answer and no error within [`DROP_TIMEOUT`].
pub fn check_dropped(from: &(impl AsRef<Netns> + ?Sized), proto: Proto, target: SocketAddr) -> Result<(), String> {
    let from = from.as_ref();
    match probe(from, proto, target, DROP_TIMEOUT) {
        Outcome::Timeout => Ok(()),
        other => Err(format!(
            "{}: expected no answer within {} ms (dropped), got {other}",
            describe(from, proto, target),
            DROP_TIMEOUT.as_millis()
        )),
    }
}

/// [`check_dropped`], panicking on failure.
#[track_caller]
pub fn assert_dropped(from: &(impl AsRef<Netns> + ?Sized), proto: Proto, target: SocketAddr) {
    match check_dropped(from, proto, target) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// One probe is answered, and the server saw `expected` as the source address. Returns the
/// server's name.
pub fn check_source_seen(
    from: &(impl AsRef<Netns> + ?Sized),
    proto: Proto,
    target: SocketAddr,
    expected: IpAddr,
) -> Result<String, String> {
    let from = from.as_ref();
    match probe(from, proto, target, ANSWER_TIMEOUT) {
        Outcome::Answered { server, seen_source } if seen_source == expected => Ok(server),
        other => Err(format!(
            "{}: expected an answer from a server that saw source {expected}, got {other}",
            describe(from, proto, target)
        )),
    }
}

/// [`check_source_seen`], panicking on failure.
#[track_caller]
pub fn assert_source_seen(
    from: &(impl AsRef<Netns> + ?Sized),
    proto: Proto,
    target: SocketAddr,
    expected: IpAddr,
) -> String {
    match check_source_seen(from, proto, target, expected) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// All `tries` probes are answered by one and the same server (session affinity). Returns it.
pub fn check_sticky(
    from: &(impl AsRef<Netns> + ?Sized),
    proto: Proto,
    target: SocketAddr,
    tries: usize,
) -> Result<String, String> {
    let got = check_reached(from, proto, target, tries)?;
    let mut servers = got.iter();
    match (servers.next(), servers.next()) {
        (Some(only), None) => Ok(only.clone()),
        _ => Err(format!(
            "{}: expected all {tries} tries to hit one server, they hit {got:?}",
            describe(from.as_ref(), proto, target)
        )),
    }
}

/// [`check_sticky`], panicking on failure.
#[track_caller]
pub fn assert_sticky(from: &(impl AsRef<Netns> + ?Sized), proto: Proto, target: SocketAddr, tries: usize) -> String {
    match check_sticky(from, proto, target, tries) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(
            parse_answer(b"pod-a1 10.244.1.2:40000\n"),
            Outcome::Answered { server: "pod-a1".into(), seen_source: "10.244.1.2".parse().unwrap() }
        );
        assert_eq!(parse_answer(b"b [fd00:10:244:2::2]:5\n").server(), Some("b"));
        assert!(matches!(parse_answer(b""), Outcome::Error(_)));
        assert!(matches!(parse_answer(b"garbage\n"), Outcome::Error(_)));
    }

    #[test]
    fn errors_classify() {
        let refused = classify(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(refused, Outcome::Refused { kind: io::ErrorKind::ConnectionRefused });
        assert_eq!(classify(io::Error::from_raw_os_error(libc::EAGAIN)), Outcome::Timeout);
        assert_eq!(classify(io::ErrorKind::TimedOut.into()), Outcome::Timeout);
        assert!(matches!(classify(io::Error::from_raw_os_error(libc::EPERM)), Outcome::Error(_)));
    }
}
