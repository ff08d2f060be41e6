//! A minimal ZooKeeper client: one connection, one session, requests sent
//! in pipelined rounds and their replies read back in order.
//!
//! The session outlives connections: after a broken stream the next
//! `ensure_connected` presents the same session id and password, and only
//! when the server says the session has expired does it open a new one
//! (and report `Connected::NewSession`, so the caller re-creates its
//! ephemeral nodes).

use crate::jute::{
    self, code, header_only_frame, op, xid, ConnectRequest, ConnectResponse, Reader, ReplyHeader,
    Request, Response, Writer,
};
use crate::net::{Conn, Env, Level};

/// How many requests go out before their replies are read. Bounded so
/// neither side's socket buffer fills while the other is not reading (the
/// server stops reading a connection with too many requests outstanding,
/// and we would both wait forever).
const WINDOW: usize = 128;

/// Replies above this are refused rather than allocated (the server's own
/// default `jute.maxbuffer` is about 1 MiB).
const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No server could be reached or would open a session.
    Unreachable(String),
    /// The connection broke, timed out or carried garbage; the session may
    /// survive it, so a retry reconnects and resumes.
    Conn(String),
    /// The session expired; the next connect opens a new one.
    SessionExpired(String),
    /// The server refused a request with an error the caller does not
    /// handle.
    Zk {
        server: String,
        path: String,
        code: i32,
    },
}

impl Error {
    /// Worth one immediate reconnect-and-retry: the connection was up a
    /// moment ago.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conn(_) | Error::SessionExpired(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unreachable(m) | Error::Conn(m) | Error::SessionExpired(m) => f.write_str(m),
            Error::Zk { server, path, code } => {
                write!(f, "{server}: {path}: {}", jute::code_name(*code))
            }
        }
    }
}

/// What `ensure_connected` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    /// The connection was already up.
    Existing,
    /// Reconnected within the same session: our ephemerals are intact.
    Resumed,
    /// A session we did not have before: ephemerals of any earlier one are
    /// gone (or going), everything must be re-created.
    NewSession,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    id: i64,
    passwd: Vec<u8>,
    /// As negotiated by the server.
    timeout_ms: u32,
}

struct Live<C> {
    conn: C,
    server: String,
    last_send_ns: u64,
}

pub struct Client<E: Env> {
    env: E,
    servers: Vec<String>,
    /// Where to start the next connect: the server that worked last.
    next: usize,
    session_timeout_ms: u32,
    timeout_ns: u64,
    live: Option<Live<E::Conn>>,
    session: Option<Session>,
    /// The newest zxid seen, sent when reconnecting so that a server that
    /// lags behind what we saw refuses us and we try another.
    last_zxid: i64,
    xid: i32,
}

impl<E: Env> Client<E> {
    pub fn new(env: E, servers: Vec<String>, session_timeout_ms: u32, timeout_ms: u32) -> Self {
        Client {
            env,
            servers,
            next: 0,
            session_timeout_ms,
            timeout_ns: u64::from(timeout_ms.max(1)) * 1_000_000,
            live: None,
            session: None,
            last_zxid: 0,
            xid: 0,
        }
    }

    pub fn env(&self) -> &E {
        &self.env
    }

    pub fn is_connected(&self) -> bool {
        self.live.is_some()
    }

    /// The current session's id, if one is open.
    pub fn session_id(&self) -> Option<i64> {
        self.session.as_ref().map(|s| s.id)
    }

    /// The current session's id and password (tests use them to expire it
    /// from another connection, as an operator's `zkCli` could).
    pub fn session_credentials(&self) -> Option<(i64, Vec<u8>)> {
        self.session.as_ref().map(|s| (s.id, s.passwd.clone()))
    }

    /// The timeout the server granted, in milliseconds.
    pub fn negotiated_timeout_ms(&self) -> Option<u32> {
        self.session.as_ref().map(|s| s.timeout_ms)
    }

    /// Drops the connection but keeps the session to resume.
    pub fn disconnect(&mut self) {
        self.live = None;
    }

    /// Connects if needed, trying each server once, starting with the last
    /// one that worked.
    pub fn ensure_connected(&mut self) -> Result<Connected, Error> {
        if self.live.is_some() {
            return Ok(Connected::Existing);
        }
        let n = self.servers.len();
        let mut errors = Vec::new();
        for i in 0..n {
            let idx = (self.next + i) % n;
            let server = self.servers[idx].clone();
            let before = self.session_id();
            match self.handshake(&server) {
                Ok(new) => {
                    self.next = idx;
                    let id = self.session_id().unwrap_or(0);
                    let timeout = self.negotiated_timeout_ms().unwrap_or(0);
                    let what = match (new, before) {
                        (false, _) => "resumed",
                        (true, Some(_)) => "opened a new",
                        (true, None) => "opened",
                    };
                    self.env.log(
                        if new && before.is_some() {
                            Level::Warn
                        } else {
                            Level::Info
                        },
                        &format!("{server}: {what} session 0x{id:x} (timeout {timeout}ms)"),
                    );
                    return Ok(if new {
                        Connected::NewSession
                    } else {
                        Connected::Resumed
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        Err(Error::Unreachable(errors.join("; ")))
    }

    /// Opens a connection to `server` and presents the session (or asks for
    /// a new one). Returns whether the session is new.
    fn handshake(&mut self, server: &str) -> Result<bool, String> {
        let deadline = self.env.now_ns().saturating_add(self.timeout_ns);
        let mut conn = self
            .env
            .connect(server, deadline)
            .map_err(|e| format!("{server}: {e}"))?;
        let (sent_id, passwd) = match &self.session {
            Some(s) => (s.id, s.passwd.clone()),
            None => (0, vec![0; 16]),
        };
        let req = ConnectRequest {
            last_zxid_seen: self.last_zxid,
            timeout_ms: i32::try_from(self.session_timeout_ms).unwrap_or(i32::MAX),
            session_id: sent_id,
            passwd,
        };
        let mut w = Writer::default();
        req.encode_frame(&mut w);
        conn.write_all(&w.buf, deadline)
            .map_err(|e| format!("{server}: {e}"))?;
        let frame = read_frame(&mut conn, deadline).map_err(|e| format!("{server}: {e}"))?;
        let resp = ConnectResponse::decode(&frame)
            .map_err(|e| format!("{server}: bad handshake reply: {e}"))?;
        if resp.timeout_ms <= 0 || resp.session_id == 0 {
            if sent_id == 0 {
                return Err(format!("{server}: server refused to open a session"));
            }
            // The server closes this connection after saying so; ask for a
            // fresh session on a new one.
            self.env.log(
                Level::Warn,
                &format!("{server}: session 0x{sent_id:x} has expired"),
            );
            self.session = None;
            return self.handshake(server).map(|_| true);
        }
        if resp.read_only {
            return Err(format!("{server}: server is read-only"));
        }
        self.session = Some(Session {
            id: resp.session_id,
            passwd: resp.passwd,
            timeout_ms: u32::try_from(resp.timeout_ms).unwrap_or(0),
        });
        self.live = Some(Live {
            conn,
            server: server.to_string(),
            last_send_ns: self.env.now_ns(),
        });
        Ok(resp.session_id != sent_id)
    }

    /// Drops the connection after an I/O or protocol failure.
    fn fail(&mut self, msg: impl std::fmt::Display) -> Error {
        let server = self.live.take().map(|l| l.server).unwrap_or_default();
        Error::Conn(format!("{server}: {msg}"))
    }

    /// Forgets the session the server says is gone.
    fn expired(&mut self) -> Error {
        let server = self.live.take().map(|l| l.server).unwrap_or_default();
        let id = self.session.take().map_or(0, |s| s.id);
        Error::SessionExpired(format!("{server}: session 0x{id:x} expired"))
    }

    fn next_xid(&mut self) -> i32 {
        // Non-negative xids are ours; negative ones are the server's
        // special replies, so wrap to 1, never into them.
        self.xid = if self.xid >= i32::MAX - 1 {
            1
        } else {
            self.xid + 1
        };
        self.xid
    }

    fn server(&self) -> String {
        self.live
            .as_ref()
            .map(|l| l.server.clone())
            .unwrap_or_default()
    }

    /// One request, one reply. The inner `Err` is ZooKeeper's error code.
    pub fn call(&mut self, req: Request) -> Result<Result<Response, i32>, Error> {
        let mut out = self.pipeline(std::slice::from_ref(&req))?;
        out.pop()
            .ok_or_else(|| Error::Conn("no reply to a request".into()))
    }

    /// Sends the requests in rounds of `WINDOW` and returns one result per
    /// request, in order. The server executes a session's requests in the
    /// order sent, so a create of a parent followed by one of its child
    /// works in one round.
    pub fn pipeline(&mut self, reqs: &[Request]) -> Result<Vec<Result<Response, i32>>, Error> {
        let mut out = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(WINDOW) {
            self.round(chunk, &mut out)?;
        }
        Ok(out)
    }

    fn round(
        &mut self,
        chunk: &[Request],
        out: &mut Vec<Result<Response, i32>>,
    ) -> Result<(), Error> {
        if self.live.is_none() {
            return Err(Error::Conn("not connected".into()));
        }
        let mut w = Writer::default();
        let mut xids = Vec::with_capacity(chunk.len());
        for req in chunk {
            let x = self.next_xid();
            xids.push(x);
            req.encode_frame(x, &mut w);
        }
        self.send(&w.buf)?;
        for (req, want_xid) in chunk.iter().zip(xids) {
            let (header, frame) = self.read_reply()?;
            if header.xid != want_xid {
                return Err(self.fail(format!(
                    "reply out of order (xid {} for {want_xid})",
                    header.xid
                )));
            }
            let mut r = Reader::new(&frame);
            // The header was read from the same frame; skip its 16 bytes.
            if ReplyHeader::decode(&mut r).is_err() {
                return Err(self.fail("truncated reply header"));
            }
            match header.err {
                code::OK => match req.decode_reply(&mut r) {
                    Ok(resp) => out.push(Ok(resp)),
                    Err(e) => return Err(self.fail(format!("{}: {e}", req.path()))),
                },
                code::SESSION_EXPIRED => return Err(self.expired()),
                code::SESSION_MOVED => {
                    return Err(self.fail("session moved to another server"));
                }
                err => {
                    // A failed multi may carry per-op results; their first
                    // real error says more than the header's.
                    if req.op_code() == op::MULTI && r.remaining() > 0 {
                        if let Ok(Response::Multi(results)) = req.decode_reply(&mut r) {
                            out.push(Err(jute::multi_error(&results).unwrap_or(err)));
                            continue;
                        }
                    }
                    out.push(Err(err));
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, buf: &[u8]) -> Result<(), Error> {
        let deadline = self.env.now_ns().saturating_add(self.timeout_ns);
        let now = self.env.now_ns();
        let Some(live) = self.live.as_mut() else {
            return Err(Error::Conn("not connected".into()));
        };
        match live.conn.write_all(buf, deadline) {
            Ok(()) => {
                live.last_send_ns = now;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Reads the next reply that answers a request, skipping watch
    /// notifications, stray ping answers and auth replies. Returns the
    /// header and the whole frame.
    fn read_reply(&mut self) -> Result<(ReplyHeader, Vec<u8>), Error> {
        loop {
            let deadline = self.env.now_ns().saturating_add(self.timeout_ns);
            let Some(live) = self.live.as_mut() else {
                return Err(Error::Conn("not connected".into()));
            };
            let frame = match read_frame(&mut live.conn, deadline) {
                Ok(f) => f,
                Err(e) => return Err(self.fail(e)),
            };
            let header = match ReplyHeader::decode(&mut Reader::new(&frame)) {
                Ok(h) => h,
                Err(e) => return Err(self.fail(format!("bad reply header: {e}"))),
            };
            if header.zxid > self.last_zxid {
                self.last_zxid = header.zxid;
            }
            match header.xid {
                xid::NOTIFICATION | xid::AUTH => continue,
                xid::PING if header.err == code::SESSION_EXPIRED => return Err(self.expired()),
                _ => return Ok((header, frame)),
            }
        }
    }

    /// Whether a third of the session timeout has passed since the last
    /// request: the server expires a silent session after the whole of it.
    pub fn ping_due(&self) -> bool {
        let (Some(live), Some(session)) = (&self.live, &self.session) else {
            return false;
        };
        let third_ns = u64::from(session.timeout_ms) * 1_000_000 / 3;
        self.env.now_ns().saturating_sub(live.last_send_ns) >= third_ns
    }

    /// Sends a ping and waits for its answer.
    pub fn ping(&mut self) -> Result<(), Error> {
        let mut w = Writer::default();
        header_only_frame(xid::PING, op::PING, &mut w);
        self.send(&w.buf)?;
        let (header, _) = self.read_reply()?;
        if header.xid != xid::PING {
            return Err(self.fail(format!("unexpected reply (xid {}) to a ping", header.xid)));
        }
        Ok(())
    }

    /// Ends the session: the server deletes its ephemeral nodes now rather
    /// than after the timeout.
    pub fn close_session(&mut self) -> Result<(), Error> {
        if self.live.is_none() {
            return Ok(());
        }
        let x = self.next_xid();
        let mut w = Writer::default();
        header_only_frame(x, op::CLOSE_SESSION, &mut w);
        self.send(&w.buf)?;
        let result = self.read_reply().map(|_| ());
        self.live = None;
        self.session = None;
        result
    }

    /// The server of the live connection, for error messages.
    pub fn zk_error(&self, path: &str, code: i32) -> Error {
        Error::Zk {
            server: self.server(),
            path: path.to_string(),
            code,
        }
    }
}

fn read_frame<C: Conn>(conn: &mut C, deadline_ns: u64) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len, deadline_ns)?;
    let len = i32::from_be_bytes(len);
    let len = usize::try_from(len).map_err(|_| format!("bad frame length {len}"))?;
    if len > MAX_FRAME {
        return Err(format!("reply of {len} bytes is too large"));
    }
    let mut frame = vec![0u8; len];
    conn.read_exact(&mut frame, deadline_ns)?;
    Ok(frame)
}
