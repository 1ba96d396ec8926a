//! The few socket operations std does not offer: SCTP sockets, dual-stack binding, SO_LINGER,
//! IP(V6)_RECVERR, and UDP with IPV6_PKTINFO (reply from the address the client used); and [`Proto`],
//! the transport protocol servers and probes speak.

use std::fmt;
use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Transport protocol of a server or probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// As Kubernetes spells it: `TCP`, `UDP`, `SCTP`.
    pub fn k8s_name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    pub(crate) fn socket_type(self) -> (libc::c_int, libc::c_int) {
        match self {
            Proto::Tcp => (libc::SOCK_STREAM, libc::IPPROTO_TCP),
            Proto::Udp => (libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            Proto::Sctp => (libc::SOCK_STREAM, libc::IPPROTO_SCTP),
        }
    }
}

/// As nft spells it: `tcp`, `udp`, `sctp`.
impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

/// The error for SCTP on a kernel without SCTP.
pub(crate) fn sctp_unsupported(e: io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("SCTP is not supported by this kernel (socket(IPPROTO_SCTP): {e})"),
    )
}

/// `e`, or the [`sctp_unsupported`] error when it says the kernel has no SCTP.
pub(crate) fn map_sctp_error(proto: Proto, e: io::Error) -> io::Error {
    if proto == Proto::Sctp
        && matches!(e.raw_os_error(), Some(libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT | libc::EAFNOSUPPORT))
    {
        sctp_unsupported(e)
    } else {
        e
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// `socket(2)` with close-on-exec.
pub(crate) fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success we own the new fd.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points to a live T of the given size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub(crate) fn set_int(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// SO_LINGER {on, 0}: close() sends a RST (TCP) or ABORT (SCTP) and leaves no TIME_WAIT.
pub(crate) fn set_linger_zero(fd: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

pub(crate) fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let mut value: libc::c_int = on.into();
    // SAFETY: FIONBIO reads one int.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &mut value) }).map(drop)
}

fn socket_error(fd: &impl AsRawFd) -> io::Result<libc::c_int> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err/len describe a valid int buffer.
    cvt(unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR, (&raw mut err).cast(), &mut len)
    })?;
    Ok(err)
}

pub(crate) fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

pub(crate) fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d` (what a dual-stack socket reports for an IPv4 peer).
pub(crate) fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

pub(crate) fn bind(fd: &impl AsRawFd, addr: SocketAddr) -> io::Result<()> {
    let (sa, len) = to_sockaddr(addr);
    // SAFETY: sa/len describe a valid sockaddr.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) }).map(drop)
}

pub(crate) fn listen(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) }).map(drop)
}

pub(crate) fn local_addr(fd: &impl AsRawFd) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage; len matches its size.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    cvt(unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len) })?;
    from_sockaddr(&storage).ok_or_else(|| io::Error::other("getsockname: not an inet address"))
}

/// Milliseconds for poll(2), rounded up so a short remaining time does not become a busy loop.
pub(crate) fn poll_ms(left: Duration) -> libc::c_int {
    left.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int
}

/// poll(2), retried on EINTR. Returns the number of ready descriptors.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: fds is a valid, writable array of pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub(crate) fn pollfd(fd: &impl AsRawFd) -> libc::pollfd {
    libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }
}

/// Non-blocking connect with a deadline; leaves the socket blocking again on success.
pub(crate) fn connect_timeout(fd: &OwnedFd, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    set_nonblocking(fd, true)?;
    let (sa, len) = to_sockaddr(addr);
    // SAFETY: sa/len describe a valid sockaddr.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 }];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if poll(&mut pfd, poll_ms(left))? > 0 {
                break;
            }
        }
        match socket_error(fd)? {
            0 => {}
            err => return Err(io::Error::from_raw_os_error(err)),
        }
    }
    set_nonblocking(fd, false)
}

/// One datagram received by [`recv_with_dst`].
pub(crate) struct Datagram {
    /// The sender, as the socket reports it (v4-mapped on a dual-stack socket).
    pub from: SocketAddr,
    /// The destination address the datagram was sent to, from IPV6_PKTINFO / IP_PKTINFO.
    pub to: Option<IpAddr>,
}

/// recvmsg(2) that also returns the datagram's destination address (needs IPV6_RECVPKTINFO).
pub(crate) fn recv_with_dst(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: all-zero is valid for these plain C structs.
    let mut from: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [MaybeUninit::<u64>::zeroed(); 32];
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut to = None;
    // SAFETY: the kernel filled msg_control; the CMSG_* helpers walk it within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            if level == libc::IPPROTO_IPV6 && ty == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>().read_unaligned();
                to = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            } else if level == libc::IPPROTO_IP && ty == libc::IP_PKTINFO && to.is_none() {
                let info: libc::in_pktinfo = libc::CMSG_DATA(c).cast::<libc::in_pktinfo>().read_unaligned();
                to = Some(IpAddr::V4(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes())));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = from_sockaddr(&from).ok_or_else(|| io::Error::other("recvmsg: not an inet sender"))?;
    Ok(Datagram { from, to })
}

/// sendmsg(2) on an AF_INET6 socket to `to`, with source address `src` (IPV6_PKTINFO; an IPv4
/// source is passed v4-mapped, which the kernel accepts for v4-mapped destinations).
pub(crate) fn send_from(fd: &impl AsRawFd, buf: &[u8], to: SocketAddr, src: Option<IpAddr>) -> io::Result<()> {
    let (mut name, namelen) = to_sockaddr(to);
    let mut iov = libc::iovec { iov_base: buf.as_ptr().cast_mut().cast(), iov_len: buf.len() };
    let mut control = [MaybeUninit::<u64>::zeroed(); 16];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = namelen;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some(src) = src {
        let addr = match src {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: addr.octets() }, ipi6_ifindex: 0 };
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation; control has room for it (16 * 8 bytes).
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::in6_pktinfo>() as u32) } as usize;
        // SAFETY: msg_control points at a zeroed buffer of msg_controllen bytes.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
            libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>().write_unaligned(info);
        }
    }
    // SAFETY: msg points at live buffers of the stated sizes.
    cvt(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) } as libc::c_int).map(drop)
}
