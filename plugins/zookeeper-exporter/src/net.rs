//! What the client needs from its surroundings: a clock, a way to open a
//! TCP stream, and a log. The component implements it with wasi:sockets
//! (`wasm.rs`); host tests use `StdEnv` and `std::net`.
//!
//! Deadlines are absolute, in nanoseconds of the environment's monotonic
//! clock, so one deadline can span several reads.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// An open byte stream to one server. Errors are short descriptions
/// ("connection reset by peer", "i/o timeout"); the client adds the
/// server's address.
pub trait Conn {
    fn write_all(&mut self, buf: &[u8], deadline_ns: u64) -> Result<(), String>;
    fn read_exact(&mut self, buf: &mut [u8], deadline_ns: u64) -> Result<(), String>;
}

pub trait Env {
    type Conn: Conn;
    fn now_ns(&self) -> u64;
    /// Resolves and connects to "HOST:PORT" before the deadline.
    fn connect(&self, server: &str, deadline_ns: u64) -> Result<Self::Conn, String>;
    fn log(&self, level: Level, message: &str);
}

/// Splits "host:port" / "[v6]:port" (already validated by the config).
pub fn split_server(server: &str) -> Result<(&str, u16), String> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| "missing port in address".to_string())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("invalid port \"{port}\""))?;
    Ok((host, port))
}

#[cfg(not(target_arch = "wasm32"))]
pub use std_env::{StdConn, StdEnv};

#[cfg(not(target_arch = "wasm32"))]
mod std_env {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use super::{split_server, Conn, Env, Level};

    /// `std::net` for host tests.
    #[derive(Debug, Clone, Default)]
    pub struct StdEnv;

    #[derive(Debug)]
    pub struct StdConn(pub TcpStream);

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn now_ns() -> u64 {
        u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time left before the deadline, or a timeout error.
    fn left(deadline_ns: u64) -> Result<Duration, String> {
        let now = now_ns();
        if now >= deadline_ns {
            return Err("i/o timeout".into());
        }
        Ok(Duration::from_nanos(deadline_ns - now))
    }

    fn describe(e: &std::io::Error) -> String {
        match e.kind() {
            ErrorKind::ConnectionRefused => "connection refused".into(),
            ErrorKind::ConnectionReset => "connection reset by peer".into(),
            ErrorKind::TimedOut | ErrorKind::WouldBlock => "i/o timeout".into(),
            ErrorKind::UnexpectedEof => "connection closed by server".into(),
            _ => e.to_string(),
        }
    }

    impl Env for StdEnv {
        type Conn = StdConn;

        fn now_ns(&self) -> u64 {
            now_ns()
        }

        fn connect(&self, server: &str, deadline_ns: u64) -> Result<StdConn, String> {
            let (host, port) = split_server(server)?;
            let addrs = (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("lookup {host}: {e}"))?;
            let mut last = format!("lookup {host}: no such host");
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, left(deadline_ns)?) {
                    Ok(s) => {
                        // Requests are small and pipelined by hand: no Nagle.
                        let _ = s.set_nodelay(true);
                        return Ok(StdConn(s));
                    }
                    Err(e) => last = describe(&e),
                }
            }
            Err(last)
        }

        fn log(&self, level: Level, message: &str) {
            eprintln!("[{level:?}] {message}");
        }
    }

    impl Conn for StdConn {
        fn write_all(&mut self, buf: &[u8], deadline_ns: u64) -> Result<(), String> {
            self.0
                .set_write_timeout(Some(left(deadline_ns)?))
                .map_err(|e| describe(&e))?;
            self.0.write_all(buf).map_err(|e| describe(&e))
        }

        fn read_exact(&mut self, buf: &mut [u8], deadline_ns: u64) -> Result<(), String> {
            let mut at = 0;
            while at < buf.len() {
                self.0
                    .set_read_timeout(Some(left(deadline_ns)?))
                    .map_err(|e| describe(&e))?;
                match self.0.read(&mut buf[at..]) {
                    Ok(0) => return Err("connection closed by server".into()),
                    Ok(n) => at += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(describe(&e)),
                }
            }
            Ok(())
        }
    }
}
