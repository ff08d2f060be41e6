//! The part of ZooKeeper's wire protocol (jute records, as in
//! `zookeeper-jute/src/main/resources/zookeeper.jute`) this exporter needs.
//!
//! Jute is big-endian throughout: `int` is 4 bytes, `long` 8, `boolean` one
//! byte, `buffer`/`ustring` a 4-byte length (-1 for null) then the bytes,
//! `vector` a 4-byte count (-1 for null) then the items. Every message on
//! the socket is one frame: a 4-byte length, then the record(s).
//!
//! Plain Rust, no I/O: the client in `client.rs` frames and sends these.

/// Operation codes (`ZooDefs.OpCode`).
pub mod op {
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_CHILDREN: i32 = 8;
    pub const PING: i32 = 11;
    pub const MULTI: i32 = 14;
    pub const CLOSE_SESSION: i32 = -11;
    /// The type of a multi result that failed, and of the closing header.
    pub const ERROR: i32 = -1;
}

/// Special xids the server uses in reply headers.
pub mod xid {
    /// A watch notification (we set no watches, so these are skipped).
    pub const NOTIFICATION: i32 = -1;
    /// The answer to a ping.
    pub const PING: i32 = -2;
    /// The answer to an auth packet (never sent, skipped if seen).
    pub const AUTH: i32 = -4;
}

/// Error codes (`KeeperException.Code`) the exporter reacts to.
pub mod code {
    pub const OK: i32 = 0;
    pub const RUNTIME_INCONSISTENCY: i32 = -2;
    pub const NO_NODE: i32 = -101;
    pub const BAD_VERSION: i32 = -103;
    pub const NODE_EXISTS: i32 = -110;
    pub const NOT_EMPTY: i32 = -111;
    pub const SESSION_EXPIRED: i32 = -112;
    pub const SESSION_MOVED: i32 = -118;
}

/// `world:anyone` with every permission (READ|WRITE|CREATE|DELETE|ADMIN),
/// what Registrator's `zk.WorldACL(zk.PermAll)` asks for.
pub const PERM_ALL: i32 = 31;

/// ZooKeeper's name for an error code, as its clients print it.
pub fn code_name(code: i32) -> String {
    let name = match code {
        0 => "ok",
        -1 => "system error",
        -2 => "runtime inconsistency",
        -3 => "data inconsistency",
        -4 => "connection loss",
        -5 => "marshalling error",
        -6 => "unimplemented",
        -7 => "operation timeout",
        -8 => "bad arguments",
        -12 => "unknown session",
        -13 => "new config no quorum",
        -14 => "reconfig in progress",
        -100 => "API error",
        -101 => "node does not exist",
        -102 => "not authenticated",
        -103 => "bad version",
        -108 => "ephemeral nodes may not have children",
        -110 => "node already exists",
        -111 => "node has children",
        -112 => "session expired",
        -113 => "invalid callback",
        -114 => "invalid ACL",
        -115 => "authentication failed",
        -118 => "session moved",
        -119 => "not a read-only call",
        -120 => "ephemeral node on local session",
        -121 => "no watcher",
        -122 => "request timeout",
        -123 => "reconfig disabled",
        -124 => "session closed, SASL authentication required",
        -125 => "quota exceeded",
        -127 => "throttled",
        _ => return format!("error {code}"),
    };
    format!("{name} ({code})")
}

/// The metadata ZooKeeper keeps for a znode (`org.apache.zookeeper.data.Stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    /// The session that owns an ephemeral node; 0 for a persistent one.
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

/// Appends jute-encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn int(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn long(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn boolean(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }
    pub fn buffer(&mut self, v: &[u8]) {
        // Lengths come from our own paths and service JSON, far below 2 GiB;
        // saturating keeps this total, and the server would reject the frame.
        self.int(i32::try_from(v.len()).unwrap_or(i32::MAX));
        self.buf.extend_from_slice(v);
    }
    pub fn string(&mut self, v: &str) {
        self.buffer(v.as_bytes());
    }

    /// Starts a length-prefixed frame; returns the position to `end_frame`.
    pub fn begin_frame(&mut self) -> usize {
        let at = self.buf.len();
        self.int(0);
        at
    }

    /// Writes the length of the frame begun at `at`.
    pub fn end_frame(&mut self, at: usize) {
        let len = self.buf.len() - at - 4;
        let len = i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes();
        self.buf[at..at + 4].copy_from_slice(&len);
    }
}

/// Reads jute-encoded values from a frame, failing (never panicking) on
/// truncated or malformed input.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Why a reply could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type DResult<T> = Result<T, DecodeError>;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> DResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(DecodeError(format!(
                "truncated reply: wanted {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> DResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn int(&mut self) -> DResult<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub fn long(&mut self) -> DResult<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    pub fn boolean(&mut self) -> DResult<bool> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A `buffer`; null (-1) reads as empty, which is how every ZooKeeper
    /// client treats a znode without data.
    pub fn buffer(&mut self) -> DResult<&'a [u8]> {
        let len = self.int()?;
        if len < 0 {
            return Ok(&[]);
        }
        self.take(len as usize)
    }

    pub fn string(&mut self) -> DResult<String> {
        let bytes = self.buffer()?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| DecodeError("reply holds a string that is not UTF-8".into()))
    }

    pub fn string_vec(&mut self) -> DResult<Vec<String>> {
        let n = self.int()?;
        if n < 0 {
            return Ok(Vec::new());
        }
        // Each string takes at least its 4-byte length: a count larger than
        // that allows is corrupt, and must not drive a huge allocation.
        if n as usize > self.remaining() / 4 {
            return Err(DecodeError(format!("reply claims {n} strings")));
        }
        (0..n).map(|_| self.string()).collect()
    }

    pub fn stat(&mut self) -> DResult<Stat> {
        Ok(Stat {
            czxid: self.long()?,
            mzxid: self.long()?,
            ctime: self.long()?,
            mtime: self.long()?,
            version: self.int()?,
            cversion: self.int()?,
            aversion: self.int()?,
            ephemeral_owner: self.long()?,
            data_length: self.int()?,
            num_children: self.int()?,
            pzxid: self.long()?,
        })
    }
}

/// How a znode is created (`CreateMode` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent = 0,
    Ephemeral = 1,
}

/// A request this exporter sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create {
        path: String,
        data: Vec<u8>,
        mode: CreateMode,
    },
    /// `version` -1 deletes whatever version is there.
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
    },
    GetData {
        path: String,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    GetChildren {
        path: String,
    },
    /// All or nothing; only Create, Delete and SetData may be inside.
    Multi(Vec<Request>),
}

impl Request {
    pub fn op_code(&self) -> i32 {
        match self {
            Request::Create { .. } => op::CREATE,
            Request::Delete { .. } => op::DELETE,
            Request::Exists { .. } => op::EXISTS,
            Request::GetData { .. } => op::GET_DATA,
            Request::SetData { .. } => op::SET_DATA,
            Request::GetChildren { .. } => op::GET_CHILDREN,
            Request::Multi(_) => op::MULTI,
        }
    }

    /// The path it concerns, for error messages.
    pub fn path(&self) -> &str {
        match self {
            Request::Create { path, .. }
            | Request::Delete { path, .. }
            | Request::Exists { path }
            | Request::GetData { path }
            | Request::SetData { path, .. }
            | Request::GetChildren { path } => path,
            Request::Multi(ops) => ops.first().map_or("/", Request::path),
        }
    }

    /// Appends the request body (no header).
    pub fn encode_body(&self, w: &mut Writer) {
        match self {
            Request::Create { path, data, mode } => {
                w.string(path);
                w.buffer(data);
                // vector<ACL> with one entry: perms, Id{scheme, id}.
                w.int(1);
                w.int(PERM_ALL);
                w.string("world");
                w.string("anyone");
                w.int(*mode as i32);
            }
            Request::Delete { path, version } => {
                w.string(path);
                w.int(*version);
            }
            Request::Exists { path }
            | Request::GetData { path }
            | Request::GetChildren { path } => {
                w.string(path);
                w.boolean(false); // no watch
            }
            Request::SetData {
                path,
                data,
                version,
            } => {
                w.string(path);
                w.buffer(data);
                w.int(*version);
            }
            Request::Multi(ops) => {
                // Each op: MultiHeader{type, done=false, err=-1} then its
                // body; the list ends with MultiHeader{-1, true, -1}.
                for sub in ops {
                    w.int(sub.op_code());
                    w.boolean(false);
                    w.int(-1);
                    sub.encode_body(w);
                }
                w.int(op::ERROR);
                w.boolean(true);
                w.int(-1);
            }
        }
    }

    /// Appends a whole frame: length, RequestHeader{xid, type}, body.
    pub fn encode_frame(&self, xid: i32, w: &mut Writer) {
        let at = w.begin_frame();
        w.int(xid);
        w.int(self.op_code());
        self.encode_body(w);
        w.end_frame(at);
    }

    /// Decodes the body of a successful reply to this request.
    pub fn decode_reply(&self, r: &mut Reader<'_>) -> DResult<Response> {
        Ok(match self {
            Request::Create { .. } => Response::Created(r.string()?),
            Request::Delete { .. } => Response::Deleted,
            Request::Exists { .. } => Response::Stat(r.stat()?),
            Request::GetData { .. } => {
                let data = r.buffer()?.to_vec();
                Response::Data(data, r.stat()?)
            }
            Request::SetData { .. } => Response::Stat(r.stat()?),
            Request::GetChildren { .. } => Response::Children(r.string_vec()?),
            Request::Multi(_) => Response::Multi(decode_multi(r)?),
        })
    }
}

/// The answer to a successful request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Create: the path created.
    Created(String),
    Deleted,
    /// Exists, SetData.
    Stat(Stat),
    /// GetData.
    Data(Vec<u8>, Stat),
    /// GetChildren: names, not paths.
    Children(Vec<String>),
    /// Multi: one result per op, in order; Err holds the op's error code.
    Multi(Vec<Result<Response, i32>>),
}

/// Decodes a MultiResponse: per op a MultiHeader{type, done, err} then the
/// op's own response (CreateResponse, nothing, SetDataResponse, or
/// ErrorResponse{err} when type is -1), until a header with done set.
fn decode_multi(r: &mut Reader<'_>) -> DResult<Vec<Result<Response, i32>>> {
    let mut out = Vec::new();
    loop {
        let kind = r.int()?;
        let done = r.boolean()?;
        let err = r.int()?;
        if done {
            return Ok(out);
        }
        out.push(match kind {
            op::CREATE => Ok(Response::Created(r.string()?)),
            op::DELETE => Ok(Response::Deleted),
            op::SET_DATA => Ok(Response::Stat(r.stat()?)),
            op::ERROR => {
                let body_err = r.int()?;
                Err(if body_err != 0 { body_err } else { err })
            }
            other => {
                return Err(DecodeError(format!(
                    "multi reply holds an unexpected op type {other}"
                )))
            }
        });
    }
}

/// The first failure inside a multi result, skipping the
/// "runtime inconsistency" that marks ops rolled back because of another.
pub fn multi_error(results: &[Result<Response, i32>]) -> Option<i32> {
    let mut rolled_back = None;
    for r in results {
        match r {
            Err(code::OK) | Ok(_) => {}
            Err(code::RUNTIME_INCONSISTENCY) => rolled_back = Some(code::RUNTIME_INCONSISTENCY),
            Err(c) => return Some(*c),
        }
    }
    rolled_back
}

/// The session handshake's request. `readOnly` is not part of the jute
/// record but every 3.x client appends it, and servers read it if present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
}

impl ConnectRequest {
    pub fn encode_frame(&self, w: &mut Writer) {
        let at = w.begin_frame();
        w.int(0); // protocolVersion
        w.long(self.last_zxid_seen);
        w.int(self.timeout_ms);
        w.long(self.session_id);
        w.buffer(&self.passwd);
        w.boolean(false); // readOnly: we write, so only a read-write server will do
        w.end_frame(at);
    }
}

/// The server's answer to the handshake. A `timeout_ms` of 0 (with session
/// 0) means the session we tried to resume has expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: bool,
}

impl ConnectResponse {
    pub fn decode(frame: &[u8]) -> DResult<Self> {
        let mut r = Reader::new(frame);
        let protocol_version = r.int()?;
        let timeout_ms = r.int()?;
        let session_id = r.long()?;
        let passwd = r.buffer()?.to_vec();
        // Old servers leave the flag out.
        let read_only = if r.remaining() > 0 {
            r.boolean()?
        } else {
            false
        };
        Ok(ConnectResponse {
            protocol_version,
            timeout_ms,
            session_id,
            passwd,
            read_only,
        })
    }
}

/// ReplyHeader{xid, zxid, err}.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
}

impl ReplyHeader {
    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(ReplyHeader {
            xid: r.int()?,
            zxid: r.long()?,
            err: r.int()?,
        })
    }
}

/// A frame with just a RequestHeader: ping and closeSession.
pub fn header_only_frame(xid: i32, op_code: i32, w: &mut Writer) {
    let at = w.begin_frame();
    w.int(xid);
    w.int(op_code);
    w.end_frame(at);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_bytes(s: &Stat) -> Vec<u8> {
        let mut w = Writer::default();
        w.long(s.czxid);
        w.long(s.mzxid);
        w.long(s.ctime);
        w.long(s.mtime);
        w.int(s.version);
        w.int(s.cversion);
        w.int(s.aversion);
        w.long(s.ephemeral_owner);
        w.int(s.data_length);
        w.int(s.num_children);
        w.long(s.pzxid);
        w.buf
    }

    fn sample_stat() -> Stat {
        Stat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 0x0102_0304_0506_0708,
            data_length: 9,
            num_children: 10,
            pzxid: 11,
        }
    }

    #[test]
    fn stat_is_68_bytes_in_field_order() {
        let bytes = stat_bytes(&sample_stat());
        assert_eq!(bytes.len(), 68);
        // ephemeralOwner sits after 4 longs and 3 ints.
        assert_eq!(&bytes[44..52], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.stat().unwrap(), sample_stat());
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn create_frame_layout() {
        let req = Request::Create {
            path: "/a".into(),
            data: b"xy".to_vec(),
            mode: CreateMode::Ephemeral,
        };
        let mut w = Writer::default();
        req.encode_frame(7, &mut w);
        let mut want = Vec::new();
        let body: Vec<u8> = [
            &7i32.to_be_bytes()[..],
            &1i32.to_be_bytes(),
            &2i32.to_be_bytes(),
            b"/a",
            &2i32.to_be_bytes(),
            b"xy",
            &1i32.to_be_bytes(),
            &31i32.to_be_bytes(),
            &5i32.to_be_bytes(),
            b"world",
            &6i32.to_be_bytes(),
            b"anyone",
            &1i32.to_be_bytes(),
        ]
        .concat();
        want.extend_from_slice(&(body.len() as i32).to_be_bytes());
        want.extend_from_slice(&body);
        assert_eq!(w.buf, want);
    }

    #[test]
    fn connect_request_layout() {
        let req = ConnectRequest {
            last_zxid_seen: 5,
            timeout_ms: 10_000,
            session_id: 0,
            passwd: vec![0; 16],
        };
        let mut w = Writer::default();
        req.encode_frame(&mut w);
        // 4 (len) + 4 + 8 + 4 + 8 + (4 + 16) + 1
        assert_eq!(w.buf.len(), 49);
        assert_eq!(&w.buf[0..4], &45i32.to_be_bytes());
        assert_eq!(&w.buf[16..20], &10_000i32.to_be_bytes());
        assert_eq!(*w.buf.last().unwrap(), 0);
    }

    #[test]
    fn connect_response_with_and_without_read_only() {
        let mut w = Writer::default();
        w.int(0);
        w.int(4000);
        w.long(0x77);
        w.buffer(&[9; 16]);
        let old = ConnectResponse::decode(&w.buf).unwrap();
        assert_eq!(old.timeout_ms, 4000);
        assert_eq!(old.session_id, 0x77);
        assert_eq!(old.passwd, vec![9; 16]);
        assert!(!old.read_only);
        w.boolean(true);
        assert!(ConnectResponse::decode(&w.buf).unwrap().read_only);
        assert!(ConnectResponse::decode(&w.buf[..10]).is_err());
    }

    #[test]
    fn multi_request_and_reply() {
        let req = Request::Multi(vec![
            Request::Delete {
                path: "/a".into(),
                version: 3,
            },
            Request::Create {
                path: "/a".into(),
                data: vec![],
                mode: CreateMode::Ephemeral,
            },
        ]);
        let mut w = Writer::default();
        req.encode_body(&mut w);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.int().unwrap(), op::DELETE);
        assert!(!r.boolean().unwrap());
        assert_eq!(r.int().unwrap(), -1);
        assert_eq!(r.string().unwrap(), "/a");
        assert_eq!(r.int().unwrap(), 3);
        assert_eq!(r.int().unwrap(), op::CREATE);

        // Success: delete, create("/a"), end.
        let mut w = Writer::default();
        w.int(op::DELETE);
        w.boolean(false);
        w.int(0);
        w.int(op::CREATE);
        w.boolean(false);
        w.int(0);
        w.string("/a");
        w.int(-1);
        w.boolean(true);
        w.int(-1);
        let got = req.decode_reply(&mut Reader::new(&w.buf)).unwrap();
        assert_eq!(
            got,
            Response::Multi(vec![
                Ok(Response::Deleted),
                Ok(Response::Created("/a".into()))
            ])
        );

        // Failure: bad version on the delete, the create rolled back.
        let mut w = Writer::default();
        for err in [code::BAD_VERSION, code::RUNTIME_INCONSISTENCY] {
            w.int(op::ERROR);
            w.boolean(false);
            w.int(err);
            w.int(err);
        }
        w.int(-1);
        w.boolean(true);
        w.int(-1);
        let Response::Multi(results) = req.decode_reply(&mut Reader::new(&w.buf)).unwrap() else {
            panic!("not a multi reply");
        };
        assert_eq!(multi_error(&results), Some(code::BAD_VERSION));
    }

    #[test]
    fn children_reply_and_corrupt_counts() {
        let mut w = Writer::default();
        w.int(2);
        w.string("a:1");
        w.string("b:2");
        let req = Request::GetChildren { path: "/x".into() };
        assert_eq!(
            req.decode_reply(&mut Reader::new(&w.buf)).unwrap(),
            Response::Children(vec!["a:1".into(), "b:2".into()])
        );
        let mut w = Writer::default();
        w.int(i32::MAX);
        assert!(req.decode_reply(&mut Reader::new(&w.buf)).is_err());
        let mut w = Writer::default();
        w.int(1);
        w.int(100); // string longer than the frame
        assert!(req.decode_reply(&mut Reader::new(&w.buf)).is_err());
    }

    #[test]
    fn get_data_reply() {
        let mut w = Writer::default();
        w.buffer(b"{}");
        w.buf.extend_from_slice(&stat_bytes(&sample_stat()));
        let req = Request::GetData { path: "/x".into() };
        assert_eq!(
            req.decode_reply(&mut Reader::new(&w.buf)).unwrap(),
            Response::Data(b"{}".to_vec(), sample_stat())
        );
        // A null buffer is empty data.
        let mut w = Writer::default();
        w.int(-1);
        w.buf.extend_from_slice(&stat_bytes(&sample_stat()));
        assert_eq!(
            req.decode_reply(&mut Reader::new(&w.buf)).unwrap(),
            Response::Data(vec![], sample_stat())
        );
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(-110), "node already exists (-110)");
        assert_eq!(code_name(-999), "error -999");
    }
}
