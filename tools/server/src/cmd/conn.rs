//! The commands about the connection itself: PING, AUTH, HELLO, SELECT and CLIENT.
//! (ECHO and QUIT are one line each in the dispatch.)

use duplex_proto::{array_len, bulk, codes, error, integer, null_bulk, simple};

use super::{bulk_str, lossy, ConnState, ErrLine};
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

/// `HELLO [proto [AUTH user pass] [SETNAME name]]`: RESP2 only.
pub fn hello(sh: &Shared, conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    if let Some(v) = args.get(1) {
        match *v {
            b"2" => {}
            b"3" => {
                return error(
                    out,
                    &codes::line(
                        codes::NOPROTO,
                        "sorry, this protocol version is not supported (duplexd speaks RESP2)",
                    ),
                )
            }
            _ => {
                return error(
                    out,
                    &codes::line(codes::NOPROTO, "unsupported protocol version"),
                )
            }
        }
    }
    let mut i = 2;
    while i < args.len() {
        let o = args[i].to_ascii_uppercase();
        if o == b"AUTH" && i + 2 < args.len() {
            if !auth(sh, conn, args[i + 1], args[i + 2], out, false) {
                return;
            }
            i += 3;
        } else if o == b"SETNAME" && i + 1 < args.len() {
            conn.name = Some(args[i + 1].to_vec());
            i += 2;
        } else {
            return error(out, "ERR syntax error in HELLO option");
        }
    }
    if !conn.authed {
        return error(out, &codes::line(codes::NOAUTH, "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
    }
    array_len(out, 14);
    bulk_str(out, "server");
    bulk_str(out, "duplexd");
    bulk_str(out, "version");
    bulk_str(out, env!("CARGO_PKG_VERSION"));
    bulk_str(out, "proto");
    integer(out, 2);
    bulk_str(out, "id");
    integer(out, conn.id as i64);
    bulk_str(out, "mode");
    bulk_str(out, "standalone");
    bulk_str(out, "role");
    bulk_str(out, "master");
    bulk_str(out, "modules");
    array_len(out, 0);
}

/// CLIENT SETNAME | GETNAME | ID | INFO | LIST, and a few accepted no-ops.
pub fn client(sh: &Shared, conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    let sub = args[1].to_ascii_uppercase();
    match sub.as_slice() {
        b"SETNAME" if args.len() == 3 => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                error(
                    out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            } else {
                conn.name = (!args[2].is_empty()).then(|| args[2].to_vec());
                simple(out, "OK");
            }
        }
        b"GETNAME" => match &conn.name {
            Some(n) => bulk(out, n),
            None => null_bulk(out),
        },
        b"ID" => integer(out, conn.id as i64),
        b"SETINFO" | b"NO-EVICT" | b"NO-TOUCH" | b"REPLY" => simple(out, "OK"),
        b"INFO" | b"LIST" => {
            let name = conn.name.as_deref().map(lossy).unwrap_or_default();
            bulk_str(
                out,
                &format!(
                    "id={} name={} db={} clients={}\n",
                    conn.id,
                    name,
                    conn.db,
                    sh.stats().clients
                ),
            );
        }
        _ => ErrLine::err(format!(
            "unknown subcommand '{}' for CLIENT in duplexd",
            lossy(args[1])
        ))
        .send(out),
    }
}
