//! Servers that answer every TCP/SCTP connection and UDP datagram with one line
//! `<name> <source-address:port-it-saw>`.

use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{Netns, context};
use crate::sock::{self, Proto, map_sctp_error};

/// How long a server keeps an answered connection open waiting for the client to close it.
const LINGER: Duration = Duration::from_secs(5);

/// A running server; stops (and closes its sockets) on drop.
///
/// It listens on `[::]:port` with `IPV6_V6ONLY` off, so it takes IPv4 and IPv6 alike. TCP and
/// SCTP: on each accepted connection it writes the answer line, then half-closes and waits for
/// the client to close. UDP: it answers each datagram, from the address the datagram was sent to
/// (IPV6_PKTINFO), so connected UDP clients and conntrack see the reply they expect.
#[derive(Debug)]
pub struct Server {
    name: String,
    proto: Proto,
    port: u16,
    netns: String,
    answered: Arc<AtomicUsize>,
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a server in namespace `ns` that answers as `name` on `proto` port `port` (0 = any free
/// port; see [`Server::port`]).
///
/// SCTP on a kernel without SCTP support fails with [`io::ErrorKind::Unsupported`].
pub fn serve(ns: &(impl AsRef<Netns> + ?Sized), name: &str, proto: Proto, port: u16) -> io::Result<Server> {
    let ns = ns.as_ref();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("server name {name:?} must be non-empty without whitespace"),
        ));
    }
    let fd = ns
        .run(|| bind_any(proto, port))
        .map_err(|e| context(e, &format!("{proto} server {name} on port {port} in {}", ns.name())))?;
    let port = sock::local_addr(&fd)?.port();
    let (stop, stop_rx) = UnixStream::pair()?;
    let answered = Arc::new(AtomicUsize::new(0));
    let thread = {
        let line_name = name.to_string();
        let answered = answered.clone();
        std::thread::Builder::new().name(format!("pxt-{proto}-{port}-{name}")).spawn(move || match proto {
            Proto::Udp => serve_udp(fd, stop_rx, &line_name, &answered),
            Proto::Tcp | Proto::Sctp => serve_stream(fd, stop_rx, &line_name, &answered),
        })?
    };
    Ok(Server {
        name: name.to_string(),
        proto,
        port,
        netns: ns.name().to_string(),
        answered,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Server {
    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The port it listens on (the kernel's choice if 0 was asked for).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// How many connections / datagrams it has answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing our end of the pair wakes the server's poll().
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A non-blocking dual-stack socket bound to `[::]:port` (listening, for TCP/SCTP).
fn bind_any(proto: Proto, port: u16) -> io::Result<OwnedFd> {
    let (ty, protocol) = proto.socket_type();
    let fd = sock::socket(libc::AF_INET6, ty, protocol).map_err(|e| map_sctp_error(proto, e))?;
    sock::set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    sock::set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if proto == Proto::Udp {
        sock::set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
    }
    sock::bind(&fd, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))?;
    if proto != Proto::Udp {
        sock::listen(&fd)?;
    }
    sock::set_nonblocking(&fd, true)?;
    Ok(fd)
}

pub(crate) fn answer_line(name: &str, peer: SocketAddr) -> String {
    format!("{name} {}\n", sock::unmap(peer))
}

fn serve_stream(fd: OwnedFd, stop: UnixStream, name: &str, answered: &AtomicUsize) {
    // An SCTP one-to-one socket behaves like a TCP one for accept/read/write/shutdown.
    let listener = TcpListener::from(fd);
    let mut conns: Vec<(TcpStream, Instant)> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let mut fds = vec![sock::pollfd(&stop), sock::pollfd(&listener)];
        fds.extend(conns.iter().map(|(s, _)| sock::pollfd(s)));
        let timeout = conns
            .iter()
            .map(|(_, deadline)| sock::poll_ms(deadline.saturating_duration_since(Instant::now())))
            .min()
            .unwrap_or(-1);
        if sock::poll(&mut fds, timeout).is_err() {
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        // Drain finished connections: the client closed (EOF / reset) or took too long.
        let now = Instant::now();
        let mut keep = Vec::with_capacity(conns.len());
        for ((mut s, deadline), pfd) in conns.drain(..).zip(&fds[2..]) {
            let open = if pfd.revents != 0 {
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break false,
                    }
                }
            } else {
                true
            };
            if open && now < deadline {
                keep.push((s, deadline));
            }
        }
        conns = keep;
        if fds[1].revents != 0 {
            loop {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        // The accepted socket is blocking; the line fits the empty send buffer.
                        if s.write_all(answer_line(name, peer).as_bytes()).is_ok() {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = s.shutdown(Shutdown::Write);
                        if s.set_nonblocking(true).is_ok() {
                            conns.push((s, Instant::now() + LINGER));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // ECONNABORTED and friends: that client is gone; keep serving.
                    Err(_) => break,
                }
            }
        }
    }
}

fn serve_udp(fd: OwnedFd, stop: UnixStream, name: &str, answered: &AtomicUsize) {
    let socket = UdpSocket::from(fd);
    let mut buf = [0u8; 2048];
    loop {
        let mut fds = [sock::pollfd(&stop), sock::pollfd(&socket)];
        if sock::poll(&mut fds, -1).is_err() || fds[0].revents != 0 {
            return;
        }
        loop {
            match sock::recv_with_dst(&socket, &mut buf) {
                Ok(d) => {
                    let line = answer_line(name, d.from);
                    if sock::send_from(&socket, line.as_bytes(), d.from, d.to).is_ok() {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Anything else (e.g. a queued ICMP error): poll again.
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_lines_unmap_ipv4() {
        let peer: SocketAddr = "[::ffff:10.0.0.1]:7".parse().unwrap();
        assert_eq!(answer_line("x", peer), "x 10.0.0.1:7\n");
    }
}
