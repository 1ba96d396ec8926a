//! A node in a network namespace of its own: loopback, a dummy interface holding the node address and
//! the local pods' addresses, servers on those addresses, and clients that connect from inside.
//! Everything stays inside the namespace; it is deleted on drop (also when a test fails).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proxier_testkit::Netns;

pub const NODE_IP: &str = "192.168.50.1";

/// Whether namespace tests can run here (the test bed's check: SKIP, or a failure under
/// PROXIER_REQUIRE_NETNS=1).
pub fn netns_available(test: &str) -> bool {
    proxier_testkit::netns_available(test)
}

/// A node namespace (a test-bed [`Netns`], so it is swept even if the test process is killed);
/// deleted on drop.
pub struct Node {
    pub netns: Netns,
    pub name: String,
}

impl Node {
    /// A namespace with `lo` up and `dummy0` holding the node address and `pod_ips` (as /32s).
    pub fn new(pod_ips: &[&str]) -> Node {
        let netns = Netns::new("run-node").expect("create namespace");
        let node = Node { name: netns.name().to_owned(), netns };
        node.exec_ok("ip", &["link", "set", "lo", "up"]);
        // A veth pair inside the namespace: a plain interface to hold addresses and routes (the dummy
        // module may be missing).
        node.exec_ok("ip", &["link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1"]);
        node.exec_ok("ip", &["link", "set", "dummy1", "up"]);
        node.exec_ok("ip", &["link", "set", "dummy0", "up"]);
        node.exec_ok("ip", &["addr", "add", &format!("{NODE_IP}/24"), "dev", "dummy0"]);
        for ip in pod_ips {
            node.exec_ok("ip", &["addr", "add", &format!("{ip}/32"), "dev", "dummy0"]);
        }
        // Service addresses are routed to the interface, as a default route would.
        node.exec_ok("ip", &["route", "add", "10.96.0.0/16", "dev", "dummy0"]);
        node
    }

    /// Runs a program inside the namespace and returns its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip").args(["netns", "exec", &self.name, program]).args(args).output().expect("ip netns exec")
    }

    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nft list table ip proxier`, or None.
    pub fn table(&self) -> Option<String> {
        let out = self.exec("nft", &["list", "table", "ip", "proxier"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread inside the namespace (sockets made there stay in it).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.netns.run(f)
    }

    /// Starts `proxier run` in the namespace with the test's usual flags plus `extra`.
    pub fn proxier_run(&self, kubeconfig: &std::path::Path, extra: &[&str]) -> Proxier {
        let mut args = vec!["run", "--node", "node-a", "--kubeconfig", kubeconfig.to_str().unwrap()];
        args.extend(["--cluster-cidr", "10.244.0.0/16", "--min-sync-period", "100ms", "--sync-period", "3s"]);
        args.extend(["--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249"]);
        args.extend_from_slice(extra);
        self.proxier(&args, Some("info"))
    }

    /// Starts `proxier` with exactly `args` in the namespace; `rust_log` sets RUST_LOG (`None`: unset,
    /// so proxier's own default applies).
    pub fn proxier(&self, args: &[&str], rust_log: Option<&str>) -> Proxier {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_proxier")]).args(args);
        match rust_log {
            Some(level) => command.env("RUST_LOG", level),
            None => command.env_remove("RUST_LOG"),
        };
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start proxier run");
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[proxier] {line}");
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        Proxier { child: Some(child), log }
    }

    /// An HTTP GET from inside the namespace: (status, body).
    pub fn http_get(&self, address: &str, path: &str) -> Option<(u16, String)> {
        self.netns.http_get(address.parse().unwrap(), path)
    }

    /// One TCP connection to `address`: the first line the server sends, or the error.
    pub fn tcp_probe(&self, address: &str) -> Result<String, String> {
        tcp_probe_in(&self.netns, address)
    }

    /// A TCP connection kept open (see [`Conversation`]).
    pub fn tcp_connect(&self, address: &str) -> Conversation {
        tcp_connect_in(&self.netns, address)
    }

    /// A UDP socket inside the namespace, bound to a fixed source port and connected to `address`.
    pub fn udp_client(&self, address: &str) -> UdpSocket {
        let address: SocketAddr = address.parse().unwrap();
        let socket = self.run(|| {
            let socket = UdpSocket::bind(format!("{NODE_IP}:0")).expect("bind udp client");
            socket.connect(address).expect("connect udp");
            socket
        });
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        socket
    }

    /// Starts TCP and UDP echo servers named `name` on `ip:port` inside the namespace.
    pub fn serve(&self, name: &str, ip: &str, port: u16) -> Servers {
        serve_in(&self.netns, name, ip, port)
    }
}

/// One TCP connection from inside `netns` to `address`: the first line the server sends, or the error.
pub fn tcp_probe_in(netns: &Netns, address: &str) -> Result<String, String> {
    let address: SocketAddr = address.parse().unwrap();
    netns.run(|| {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).map_err(|e| e.to_string())?;
        Ok(line.trim().to_owned())
    })
}

/// A TCP connection from inside `netns`, kept open (see [`Conversation`]).
pub fn tcp_connect_in(netns: &Netns, address: &str) -> Conversation {
    let address: SocketAddr = address.parse().unwrap();
    let stream = netns.run(|| TcpStream::connect_timeout(&address, Duration::from_secs(2))).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut hello = String::new();
    reader.read_line(&mut hello).expect("greeting");
    Conversation { stream, reader, server: hello.trim().to_owned() }
}

/// Starts TCP and UDP echo servers named `name` on `ip:port` inside `netns`.
pub fn serve_in(netns: &Netns, name: &str, ip: &str, port: u16) -> Servers {
    let address: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let (tcp, udp) =
        netns.run(|| (TcpListener::bind(address).expect("bind tcp"), UdpSocket::bind(address).expect("bind udp")));
    let stop = Arc::new(AtomicBool::new(false));
    tcp.set_nonblocking(true).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (name_tcp, stop_tcp) = (name.to_owned(), stop.clone());
    std::thread::spawn(move || {
        while !stop_tcp.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((stream, _)) => {
                    let name = name_tcp.clone();
                    std::thread::spawn(move || echo(stream, &name));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let (name_udp, stop_udp) = (name.to_owned(), stop.clone());
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while !stop_udp.load(Ordering::Relaxed) {
            if let Ok((_, from)) = udp.recv_from(&mut buffer) {
                let _ = udp.send_to(name_udp.as_bytes(), from);
            }
        }
    });
    Servers { stop }
}

fn echo(stream: TcpStream, name: &str) {
    let mut writer = stream.try_clone().unwrap();
    if writeln!(writer, "{name}").is_err() {
        return;
    }
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        if writeln!(writer, "{name} {line}").is_err() {
            return;
        }
    }
}

/// Echo servers; stopped on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An open TCP connection to an echo server.
pub struct Conversation {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The server's greeting: its name.
    pub server: String,
}

impl Conversation {
    /// Sends a line and returns the answer.
    pub fn say(&mut self, text: &str) -> std::io::Result<String> {
        writeln!(self.stream, "{text}")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line.trim().to_owned())
    }
}

/// Sends one datagram on `socket` and returns the answer, or the error (e.g. refused).
pub fn udp_ask(socket: &UdpSocket) -> Result<String, String> {
    socket.send(b"ping").map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 512];
    let n = socket.recv(&mut buffer).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// A running `proxier run`; killed on drop.
pub struct Proxier {
    child: Option<Child>,
    pub log: Arc<std::sync::Mutex<String>>,
}

impl Proxier {
    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // `ip netns exec` execs proxier: the pid is proxier's.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "proxier did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) for proxier to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader thread drain what is left of stderr.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("proxier did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proxier {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}
