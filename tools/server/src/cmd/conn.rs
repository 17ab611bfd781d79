//! The commands about the connection itself: PING, AUTH, HELLO, SELECT, CLIENT and TIME.
//! (ECHO and QUIT are one line each in the dispatch.)

use duplex_proto::{array_len, bulk, codes, error, integer, null_bulk, simple, Reply};

use super::{bulk_str, lossy, ConnState, ErrLine};
use crate::shared::clients::ClientRow;
use crate::shared::Shared;

/// `PING [msg]`.
pub fn ping(args: &[&[u8]], out: &mut Vec<u8>) {
    match args.get(1) {
        Some(m) => bulk(out, m),
        None => simple(out, "PONG"),
    }
}

/// `SELECT db`: databases 0..16, as in Redis.
pub fn select(conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    match super::parse::parse_i64(args[1]) {
        None => error(out, "ERR value is not an integer or out of range"),
        Some(n) => match u8::try_from(n).ok().filter(|d| *d < crate::keyspace::DBS) {
            Some(d) => {
                conn.db = d;
                simple(out, "OK");
            }
            None => error(out, "ERR DB index is out of range"),
        },
    }
}

/// `AUTH [user] pass`.
pub fn auth_cmd(sh: &Shared, conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    let (user, pass) = if args.len() == 3 {
        (args[1], args[2])
    } else {
        (&b"default"[..], args[1])
    };
    auth(sh, conn, user, pass, out, true);
}

/// Checks a user and password; on success marks the connection authenticated (and
/// answers OK if `reply_ok`). Returns whether it succeeded.
fn auth(
    sh: &Shared,
    conn: &mut ConnState,
    user: &[u8],
    pass: &[u8],
    out: &mut Vec<u8>,
    reply_ok: bool,
) -> bool {
    let Some(want) = sh.cfg().requirepass.as_deref() else {
        error(out, "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        return false;
    };
    // Compare without an early exit on the first differing byte.
    let w = want.as_bytes();
    let mut diff = (w.len() ^ pass.len()) as u8 | u8::from(w.len() != pass.len());
    for (i, &b) in pass.iter().enumerate() {
        diff |= b ^ w.get(i).copied().unwrap_or(0);
    }
    if diff == 0 && user == b"default" {
        conn.authed = true;
        if reply_ok {
            simple(out, "OK");
        }
        true
    } else {
        error(
            out,
            &codes::line(
                codes::WRONGPASS,
                "invalid username-password pair or user is disabled.",
            ),
        );
        false
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: RESP2 or RESP3 (`HELLO 3`: the
/// connection's replies are RESP3 from here on, [`crate::resp3`]); the reply is a map in
/// RESP3, a flat array in RESP2, as in Redis.
pub fn hello(sh: &Shared, conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    let mut proto = None;
    if let Some(v) = args.get(1) {
        match super::parse::parse_i64(v) {
            None => {
                return error(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                )
            }
            Some(2) => proto = Some(false),
            Some(3) => proto = Some(true),
            Some(_) => {
                return error(
                    out,
                    &codes::line(codes::NOPROTO, "unsupported protocol version"),
                )
            }
        }
    }
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        let o = args[i].to_ascii_uppercase();
        if o == b"AUTH" && i + 2 < args.len() {
            if !auth(sh, conn, args[i + 1], args[i + 2], out, false) {
                return;
            }
            i += 3;
        } else if o == b"SETNAME" && i + 1 < args.len() {
            name = Some(args[i + 1]);
            i += 2;
        } else {
            return ErrLine::err(format!("Syntax error in HELLO option '{}'", lossy(args[i])))
                .send(out);
        }
    }
    if !conn.authed {
        return error(out, &codes::line(codes::NOAUTH, "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
    }
    if let Some(n) = name {
        if let Err(e) = check_name(n) {
            return e.send(out);
        }
        conn.name = (!n.is_empty()).then(|| n.to_vec());
    }
    if let Some(p) = proto {
        conn.resp3 = p;
    }
    if conn.resp3 {
        out.extend_from_slice(b"%7\r\n");
    } else {
        array_len(out, 14);
    }
    bulk_str(out, "server");
    bulk_str(out, "redis");
    bulk_str(out, "version");
    bulk_str(out, super::info::REDIS_VERSION);
    bulk_str(out, "proto");
    integer(out, if conn.resp3 { 3 } else { 2 });
    bulk_str(out, "id");
    integer(out, conn.id as i64);
    bulk_str(out, "mode");
    bulk_str(out, "standalone");
    bulk_str(out, "role");
    bulk_str(out, "master");
    bulk_str(out, "modules");
    array_len(out, 0);
}

/// Redis's check of a client name.
fn check_name(n: &[u8]) -> Result<(), ErrLine> {
    if n.iter().any(|&b| b <= b' ' || b > b'~') {
        Err(ErrLine::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ))
    } else {
        Ok(())
    }
}

/// `TIME`: the server's time as Redis answers it, seconds and microseconds as strings.
pub fn time_reply() -> Reply {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::Bulk(d.as_secs().to_string().into_bytes()),
        Reply::Bulk(d.subsec_micros().to_string().into_bytes()),
    ])
}

/// Publishes what CLIENT LIST shows of this connection (after SELECT, CLIENT, HELLO, EXEC).
pub fn publish(sh: &Shared, conn: &ConnState) {
    sh.client_table().update(conn.id, |r| {
        r.name = conn.name.clone().unwrap_or_default();
        r.db = conn.db;
        r.resp = if conn.resp3 { 3 } else { 2 };
    });
}

/// One CLIENT LIST line, in Redis 7's field order (the fields duplexd does not track are
/// zero).
fn client_line(sh: &Shared, id: u64, r: &ClientRow) -> String {
    let addr = r.addr.map_or_else(|| "?:0".to_string(), |a| a.to_string());
    format!(
        "id={id} addr={addr} laddr={} fd=-1 name={} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
        sh.addr(),
        lossy(&r.name),
        r.since.elapsed().as_secs(),
        r.db,
        r.resp,
        lossy(&r.lib.0),
        lossy(&r.lib.1),
    )
}

/// CLIENT SETNAME | GETNAME | ID | INFO | LIST | SETINFO | NO-EVICT | NO-TOUCH | REPLY.
pub fn client(sh: &Shared, conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"SETNAME", 3) => match check_name(args[2]) {
            Err(e) => e.send(out),
            Ok(()) => {
                conn.name = (!args[2].is_empty()).then(|| args[2].to_vec());
                simple(out, "OK");
            }
        },
        (b"GETNAME", 2) => match &conn.name {
            Some(n) => bulk(out, n),
            None => null_bulk(out),
        },
        (b"ID", 2) => integer(out, conn.id as i64),
        (b"SETINFO", 4) => {
            let attr = args[2].to_ascii_uppercase();
            let (v, id) = (args[3].to_vec(), conn.id);
            match attr.as_slice() {
                b"LIB-NAME" => sh.client_table().update(id, |r| r.lib.0 = v),
                b"LIB-VER" => sh.client_table().update(id, |r| r.lib.1 = v),
                _ => {
                    return ErrLine::err(format!("Unrecognized option '{}'", lossy(args[2])))
                        .send(out)
                }
            }
            simple(out, "OK");
        }
        (b"NO-EVICT" | b"NO-TOUCH", 3) => {
            let v = args[2].to_ascii_uppercase();
            if matches!(v.as_slice(), b"ON" | b"OFF") {
                simple(out, "OK");
            } else {
                error(out, "ERR syntax error");
            }
        }
        // Replies are always sent: OFF and SKIP (no reply at all) are refused, not
        // pretended (a client counting on silence would read replies it does not expect).
        (b"REPLY", 3) => match args[2].to_ascii_uppercase().as_slice() {
            b"ON" => simple(out, "OK"),
            b"OFF" | b"SKIP" => error(
                out,
                "ERR CLIENT REPLY OFF and SKIP are not supported by duplexd (every command is answered)",
            ),
            _ => error(out, "ERR syntax error"),
        },
        (b"INFO", 2) => {
            publish(sh, conn);
            let rows = sh.client_table().rows(Some(conn.id));
            let text: String = rows.iter().map(|(i, r)| client_line(sh, *i, r)).collect();
            bulk_str(out, &text);
        }
        (b"LIST", _) => {
            publish(sh, conn);
            let rows = sh.client_table().rows(None);
            let text: String = rows.iter().map(|(i, r)| client_line(sh, *i, r)).collect();
            bulk_str(out, &text);
        }
        _ => ErrLine::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            lossy(args[1])
        ))
        .send(out),
    }
}
