//! A small blocking RESP client for `duplexctl`: one TCP connection to one `duplexd`,
//! requests encoded and replies parsed with `duplex-proto`, every read and write bounded by
//! a timeout, AUTH sent first when a password is given. Unlike `duplex-client` (a failover
//! client that only talks to *usable* servers), it talks to a server whatever its state, so
//! an operator can inspect a fenced or failed one. Errors are [`ToolError`]s naming the
//! server (exit code 3, operational).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use duplex_proto::{encode_request, parse_reply, Limits, Reply};

use crate::exit::ToolError;

/// How to reach servers: the password for AUTH and the timeouts.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Sent with AUTH right after connecting, when set.
    pub password: Option<String>,
    /// Bound on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Bound on each read and write (a digest of a large range may take a while).
    pub io_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            password: None,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(60),
        }
    }
}

/// One connection to one server.
#[derive(Debug)]
pub struct Conn {
    addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
    limits: Limits,
    calls: u64,
}

/// Read chunk size.
const CHUNK: usize = 16 << 10;

impl Conn {
    /// Connects to `addr` (`host:port`) and, with a password, authenticates. A server that
    /// cannot be reached or refuses the password is an operational error naming it.
    pub fn open(addr: &str, opts: &ConnectOptions) -> Result<Conn, ToolError> {
        let mut c = Conn::connect(addr, opts)?;
        c.auth(opts)?;
        Ok(c)
    }

    /// Connects to `addr` without authenticating (`DUPLEX.STATE` is allowed before AUTH).
    pub fn connect(addr: &str, opts: &ConnectOptions) -> Result<Conn, ToolError> {
        let stream = connect(addr, opts).map_err(|e| {
            ToolError::operational(format!(
                "cannot reach {addr}: {e} (is duplexd running there, and is the address right?)"
            ))
        })?;
        Ok(Conn {
            addr: addr.to_owned(),
            stream,
            buf: Vec::with_capacity(CHUNK),
            limits: Limits::default(),
            calls: 0,
        })
    }

    /// Sends AUTH with the options' password, if there is one.
    pub fn auth(&mut self, opts: &ConnectOptions) -> Result<(), ToolError> {
        if let Some(p) = opts.password.as_deref() {
            self.call(&[b"AUTH", p.as_bytes()])?;
        }
        Ok(())
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How many requests were sent so far (AUTH included).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Sends one request and reads its reply. An error reply becomes an error naming the
    /// server and the command; so does a broken connection.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, ToolError> {
        let name = args
            .first()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        match self.exchange(args) {
            Ok(Reply::Error(e)) => {
                let hint = match duplex_proto::codes::classify(&e) {
                    duplex_proto::codes::ErrorClass::Auth => {
                        " (the server needs the right password: --password or DUPLEX_PASSWORD)"
                    }
                    _ => "",
                };
                Err(ToolError::operational(format!(
                    "{} answered {name} with: {e}{hint}",
                    self.addr
                )))
            }
            Ok(r) => Ok(r),
            Err(e) => Err(ToolError::operational(format!(
                "{name} on {}: {e}",
                self.addr
            ))),
        }
    }

    fn exchange(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        self.calls += 1;
        let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        encode_request(&mut out, args);
        self.stream.write_all(&out).map_err(|e| io_text(&e))?;
        loop {
            match parse_reply(&self.buf, &self.limits) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("invalid reply: {e}")),
            }
            let len = self.buf.len();
            self.buf.resize(len + CHUNK, 0);
            let got = self.stream.read(&mut self.buf[len..]);
            match got {
                Ok(0) => {
                    self.buf.truncate(len);
                    return Err("the server closed the connection".into());
                }
                Ok(n) => self.buf.truncate(len + n),
                Err(e) if e.kind() == ErrorKind::Interrupted => self.buf.truncate(len),
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(io_text(&e));
                }
            }
        }
    }
}

fn connect(addr: &str, opts: &ConnectOptions) -> std::io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = std::io::Error::new(ErrorKind::NotFound, "the name resolves to nothing");
    for a in addrs {
        match TcpStream::connect_timeout(&a, opts.connect_timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(opts.io_timeout))?;
                s.set_write_timeout(Some(opts.io_timeout))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn io_text(e: &std::io::Error) -> String {
    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        "no reply within the timeout".into()
    } else {
        e.to_string()
    }
}

/// A reply as text: bulk and simple strings (lossy UTF-8), integers in decimal, nil empty.
pub fn text(r: &Reply) -> String {
    match r {
        Reply::Simple(s) | Reply::Error(s) => s.clone(),
        Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Integer(n) => n.to_string(),
        Reply::Null | Reply::NullArray => String::new(),
        Reply::Array(_) => format!("{r:?}"),
    }
}

/// A reply that is an array of field, value pairs, as pairs of text.
pub fn pairs(r: &Reply) -> Option<Vec<(String, String)>> {
    match r {
        Reply::Array(items) if items.len() % 2 == 0 => Some(
            items
                .chunks(2)
                .map(|kv| (text(&kv[0]), text(&kv[1])))
                .collect(),
        ),
        _ => None,
    }
}

/// An `INFO` text's `field:value` lines (section headers and blank lines skipped).
pub fn info_fields(info: &str) -> Vec<(String, String)> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim_end().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_info_fields_parse() {
        let r = Reply::Array(vec![
            Reply::Bulk(b"state".to_vec()),
            Reply::Bulk(b"running".to_vec()),
            Reply::Bulk(b"epoch".to_vec()),
            Reply::Integer(3),
        ]);
        assert_eq!(
            pairs(&r),
            Some(vec![
                ("state".into(), "running".into()),
                ("epoch".into(), "3".into())
            ])
        );
        let f = info_fields("# Persistence\r\nlast_lsn:5\r\narchive_dir:/a:b\r\n\r\n");
        assert_eq!(
            f,
            vec![
                ("last_lsn".into(), "5".into()),
                ("archive_dir".into(), "/a:b".into())
            ]
        );
    }

    #[test]
    fn an_unreachable_server_is_an_operational_error_naming_it() {
        // Port 1 on loopback: nothing listens there in a test environment.
        let e = Conn::open("127.0.0.1:1", &ConnectOptions::default()).unwrap_err();
        assert_eq!(e.code, crate::exit::Code::Operational);
        assert!(e.message.contains("127.0.0.1:1"), "{e}");
    }
}
