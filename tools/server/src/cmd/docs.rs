//! COMMAND and its subcommands (COUNT, LIST, INFO, DOCS): what Redis 7 answers, built from
//! [`super::TABLE`] (so that every command that exists is listed and COUNT agrees) and a
//! row of documentation per command (`DOCS`: group, since, summary and a syntax line in
//! Redis's documentation notation, turned into COMMAND DOCS's argument tree for
//! `redis-cli`'s hints).

use duplex_proto::{array_len, bulk, error, integer, null_array, simple};

use super::{bulk_str, lookup, Cmd, TABLE};

/// (name, group, since, summary, syntax after the name).
const DOCS: &[(&str, &str, &str, &str, &str)] = &[
    ("PING", "connection", "1.0.0", "Returns the server's liveliness response.", "[message]"),
    ("ECHO", "connection", "1.0.0", "Returns the given string.", "message"),
    ("HELLO", "connection", "6.0.0", "Handshakes with the Redis server.", "[protover [AUTH username password] [SETNAME clientname]]"),
    ("AUTH", "connection", "1.0.0", "Authenticates the connection.", "[username] password"),
    ("SELECT", "connection", "1.0.0", "Changes the selected database.", "index"),
    ("QUIT", "connection", "1.0.0", "Closes the connection.", ""),
    ("CLIENT", "connection", "2.4.0", "A container for client connection commands (SETNAME, GETNAME, ID, INFO, LIST, SETINFO, NO-EVICT, NO-TOUCH, REPLY).", "subcommand [arg...]"),
    ("GET", "string", "1.0.0", "Returns the string value of a key.", "key"),
    ("SET", "string", "1.0.0", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]"),
    ("MGET", "string", "1.0.0", "Atomically returns the string values of one or more keys.", "key..."),
    ("MSET", "string", "1.0.1", "Atomically creates or modifies the string values of one or more keys.", "data..."),
    ("MSETNX", "string", "1.0.1", "Atomically modifies the string values of one or more keys only when all keys don't exist.", "data..."),
    ("SETNX", "string", "1.0.0", "Set the string value of a key only when the key doesn't exist.", "key value"),
    ("SETEX", "string", "2.0.0", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.", "key seconds value"),
    ("PSETEX", "string", "2.6.0", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.", "key milliseconds value"),
    ("GETSET", "string", "1.0.0", "Returns the previous string value of a key after setting it to a new value.", "key value"),
    ("GETDEL", "string", "6.2.0", "Returns the string value of a key after deleting the key.", "key"),
    ("GETEX", "string", "6.2.0", "Returns the string value of a key after setting its expiration time.", "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]"),
    ("APPEND", "string", "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist.", "key value"),
    ("STRLEN", "string", "2.2.0", "Returns the length of a string value.", "key"),
    ("GETRANGE", "string", "2.4.0", "Returns a substring of the string stored at a key.", "key start end"),
    ("SETRANGE", "string", "2.2.0", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", "key offset value"),
    ("INCR", "string", "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "key"),
    ("DECR", "string", "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "key"),
    ("INCRBY", "string", "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "key increment"),
    ("DECRBY", "string", "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", "key decrement"),
    ("INCRBYFLOAT", "string", "2.6.0", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "key increment"),
    ("DEL", "generic", "1.0.0", "Deletes one or more keys.", "key..."),
    ("UNLINK", "generic", "4.0.0", "Asynchronously deletes one or more keys.", "key..."),
    ("EXISTS", "generic", "1.0.0", "Determines whether one or more keys exist.", "key..."),
    ("TYPE", "generic", "1.0.0", "Determines the type of value stored at a key.", "key"),
    ("KEYS", "generic", "1.0.0", "Returns all key names that match a pattern.", "pattern"),
    ("SCAN", "generic", "2.8.0", "Iterates over the key names in the database.", "cursor [MATCH pattern] [COUNT count] [TYPE type]"),
    ("RENAME", "generic", "1.0.0", "Renames a key and overwrites the destination.", "key newkey"),
    ("RENAMENX", "generic", "1.0.0", "Renames a key only when the target key name doesn't exist.", "key newkey"),
    ("COPY", "generic", "6.2.0", "Copies the value of a key to a new key.", "source destination [DB destination-db] [REPLACE]"),
    ("MOVE", "generic", "1.0.0", "Moves a key to another database.", "key db"),
    ("TOUCH", "generic", "3.2.1", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", "key..."),
    ("RANDOMKEY", "generic", "1.0.0", "Returns a random key name from the database.", ""),
    ("OBJECT", "generic", "2.2.3", "A container for object introspection commands (ENCODING, FREQ, IDLETIME, REFCOUNT, HELP).", "subcommand [key]"),
    ("EXPIRE", "generic", "1.0.0", "Sets the expiration time of a key in seconds.", "key seconds [NX|XX|GT|LT]"),
    ("PEXPIRE", "generic", "2.6.0", "Sets the expiration time of a key in milliseconds.", "key milliseconds [NX|XX|GT|LT]"),
    ("EXPIREAT", "generic", "1.2.0", "Sets the expiration time of a key to a Unix timestamp.", "key unix-time-seconds [NX|XX|GT|LT]"),
    ("PEXPIREAT", "generic", "2.6.0", "Sets the expiration time of a key to a Unix milliseconds timestamp.", "key unix-time-milliseconds [NX|XX|GT|LT]"),
    ("PERSIST", "generic", "2.2.0", "Removes the expiration time of a key.", "key"),
    ("TTL", "generic", "1.0.0", "Returns the expiration time in seconds of a key.", "key"),
    ("PTTL", "generic", "2.6.0", "Returns the expiration time in milliseconds of a key.", "key"),
    ("EXPIRETIME", "generic", "7.0.0", "Returns the expiration time of a key as a Unix timestamp.", "key"),
    ("PEXPIRETIME", "generic", "7.0.0", "Returns the expiration time of a key as a Unix milliseconds timestamp.", "key"),
    ("DBSIZE", "server", "1.0.0", "Returns the number of keys in the database.", ""),
    ("FLUSHDB", "server", "1.0.0", "Removes all keys from the current database.", "[ASYNC|SYNC]"),
    ("FLUSHALL", "server", "1.0.0", "Removes all keys from all databases.", "[ASYNC|SYNC]"),
    ("SWAPDB", "server", "4.0.0", "Swaps two Redis databases (refused by duplexd: see docs/COMMANDS.md).", "index1 index2"),
    ("MULTI", "transactions", "1.2.0", "Starts a transaction.", ""),
    ("EXEC", "transactions", "1.2.0", "Executes all commands in a transaction.", ""),
    ("DISCARD", "transactions", "2.0.0", "Discards a transaction.", ""),
    ("WATCH", "transactions", "2.2.0", "Monitors changes to keys to determine the execution of a transaction.", "key..."),
    ("UNWATCH", "transactions", "2.2.0", "Forgets about watched keys of a transaction.", ""),
    ("INFO", "server", "1.0.0", "Returns information and statistics about the server.", "[section...]"),
    ("COMMAND", "server", "2.8.13", "Returns detailed information about all commands (COUNT, LIST, INFO, DOCS).", "[subcommand [arg...]]"),
    ("CONFIG", "server", "2.0.0", "A container for server configuration commands (GET only in duplexd).", "GET parameter..."),
    ("TIME", "server", "2.6.0", "Returns the server time.", ""),
    ("SAVE", "server", "1.0.0", "Synchronously saves the database(s) to disk (duplexd: a backup).", ""),
    ("BGSAVE", "server", "1.0.0", "Asynchronously saves the database(s) to disk (duplexd: a backup).", "[SCHEDULE]"),
    ("LASTSAVE", "server", "1.0.0", "Returns the Unix timestamp of the last successful save to disk.", ""),
    ("DUPLEX.STATE", "server", "duplex", "The server's operating state, epoch, node id and health.", ""),
    ("DUPLEX.BACKUP", "server", "duplex", "Takes a backup now.", "[name] [INCREMENTAL|BASE base]"),
    ("DUPLEX.CHECKPOINT", "server", "duplex", "Takes a checkpoint now.", ""),
    ("DUPLEX.FENCE", "server", "duplex", "Fences the server: it refuses writes.", ""),
    ("DUPLEX.UNFENCE", "server", "duplex", "Lifts the fence.", ""),
    ("DUPLEX.DIGEST", "server", "duplex", "The stamped digest of all keys or of a range of stored keys.", "[start end]"),
    ("DUPLEX.CONFLICTS", "server", "duplex", "The conflict journal of replication.", "[count]"),
    ("DUPLEX.PEERS", "server", "duplex", "The peer links.", ""),
    ("DUPLEX.TOKEN", "server", "duplex", "A session token: where this server's writes stand.", ""),
    ("DUPLEX.WAIT", "server", "duplex", "Waits until a session token's writes are here.", "origin position timeout"),
];

/// The documentation row of a command.
fn doc(
    name: &str,
) -> Option<&'static (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
)> {
    DOCS.iter().find(|d| d.0 == name)
}

/// `COMMAND [COUNT | LIST | INFO name... | DOCS name...]`.
pub fn command(resp3: bool, args: &[&[u8]], out: &mut Vec<u8>) {
    let sub = args.get(1).map(|s| s.to_ascii_uppercase());
    let names: Vec<&str> = TABLE.iter().map(|t| t.0).collect();
    let asked = |args: &[&[u8]]| -> Vec<Option<&'static str>> {
        args.iter()
            .map(|a| {
                let (c, ..) = lookup(a);
                (c != Cmd::Unknown)
                    .then(|| TABLE.iter().find(|t| t.1 == c).map(|t| t.0))
                    .flatten()
            })
            .collect()
    };
    match sub.as_deref() {
        None => {
            array_len(out, names.len());
            for n in names {
                info_entry(n, out);
            }
        }
        Some(b"COUNT") if args.len() == 2 => integer(out, TABLE.len() as i64),
        Some(b"LIST") => {
            array_len(out, names.len());
            for n in names {
                bulk_str(out, &n.to_ascii_lowercase());
            }
        }
        Some(b"INFO") => {
            let want = if args.len() == 2 {
                names.iter().map(|n| Some(*n)).collect()
            } else {
                asked(&args[2..])
            };
            array_len(out, want.len());
            for w in want {
                match w {
                    Some(n) => info_entry(n, out),
                    None => null_array(out),
                }
            }
        }
        Some(b"DOCS") => {
            let want: Vec<&str> = if args.len() == 2 {
                names
            } else {
                asked(&args[2..]).into_iter().flatten().collect()
            };
            map_len(out, want.len(), resp3);
            for n in want {
                bulk_str(out, &n.to_ascii_lowercase());
                docs_entry(n, resp3, out);
            }
        }
        Some(_) => error(
            out,
            &format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try COMMAND HELP.",
                super::lossy(args[1])
            ),
        ),
    }
}

/// A map header: `%n` in RESP3, an array of 2n in RESP2.
pub(crate) fn map_len(out: &mut Vec<u8>, n: usize, resp3: bool) {
    if resp3 {
        out.extend_from_slice(format!("%{n}\r\n").as_bytes());
    } else {
        array_len(out, 2 * n);
    }
}

/// One COMMAND INFO entry (Redis 7's ten fields).
fn info_entry(name: &str, out: &mut Vec<u8>) {
    let (c, lo, hi, _) = lookup(name.as_bytes());
    let arity = if lo == hi { lo as i64 } else { -(lo as i64) };
    let flags: &[&str] = if c.is_write() {
        &["write"]
    } else if c.is_read() {
        &["readonly", "fast"]
    } else {
        &["fast"]
    };
    let (first, last, step) = key_positions(c);
    array_len(out, 10);
    bulk_str(out, &name.to_ascii_lowercase());
    integer(out, arity);
    array_len(out, flags.len());
    for f in flags {
        simple(out, f);
    }
    integer(out, first);
    integer(out, last);
    integer(out, step);
    array_len(out, 0);
    array_len(out, 0);
    array_len(out, 0);
    array_len(out, 0);
}

/// COMMAND INFO's first key, last key and step.
fn key_positions(c: Cmd) -> (i64, i64, i64) {
    match c {
        Cmd::MSet | Cmd::MSetNx => (1, -1, 2),
        Cmd::MGet | Cmd::Del | Cmd::Unlink | Cmd::Exists | Cmd::Touch | Cmd::Watch => (1, -1, 1),
        Cmd::Rename | Cmd::RenameNx | Cmd::Copy => (1, 2, 1),
        Cmd::Object => (2, 2, 1),
        c if c.is_read() || c.is_write() => (1, 1, 1),
        _ => (0, 0, 0),
    }
}

/// One COMMAND DOCS entry: summary, since, group, complexity and the argument tree.
fn docs_entry(name: &str, resp3: bool, out: &mut Vec<u8>) {
    let Some(&(_, group, since, summary, syntax)) = doc(name) else {
        map_len(out, 0, resp3);
        return;
    };
    let args = parse_syntax(syntax);
    map_len(out, if args.is_empty() { 3 } else { 4 }, resp3);
    bulk_str(out, "summary");
    bulk_str(out, summary);
    bulk_str(out, "since");
    bulk_str(out, since);
    bulk_str(out, "group");
    bulk_str(out, group);
    if !args.is_empty() {
        bulk_str(out, "arguments");
        encode_args(&args, resp3, out);
    }
}

/// One argument of COMMAND DOCS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Arg {
    name: String,
    kind: &'static str,
    token: Option<String>,
    optional: bool,
    multiple: bool,
    sub: Vec<Arg>,
}

impl Arg {
    fn word(w: &str) -> Arg {
        let token = w.chars().all(|c| c.is_ascii_uppercase() || c == '-');
        let kind = if token {
            "pure-token"
        } else if matches!(w, "key" | "newkey" | "source" | "destination") {
            "key"
        } else if matches!(w, "pattern") {
            "pattern"
        } else if w.starts_with("unix-time") {
            "unix-time"
        } else if matches!(
            w,
            "seconds"
                | "milliseconds"
                | "index"
                | "db"
                | "count"
                | "increment"
                | "decrement"
                | "offset"
                | "start"
                | "end"
                | "cursor"
                | "protover"
                | "destination-db"
        ) {
            "integer"
        } else {
            "string"
        };
        Arg {
            name: w.to_ascii_lowercase(),
            kind,
            token: token.then(|| w.to_string()),
            optional: false,
            multiple: false,
            sub: Vec::new(),
        }
    }
}

/// Parses a syntax line (`key value [NX|XX] [EX seconds|KEEPTTL] key...`) into arguments:
/// `[...]` is optional, `|` separates the choices of a one-of, a word in capitals is a
/// token, a token followed by one argument is that argument with a token, `...` after a
/// word makes it multiple.
fn parse_syntax(s: &str) -> Vec<Arg> {
    let toks: Vec<String> = s
        .replace('[', " [ ")
        .replace(']', " ] ")
        .replace('|', " | ")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut i = 0;
    seq(&toks, &mut i)
}

/// A sequence up to `]`, `|` or the end.
fn seq(t: &[String], i: &mut usize) -> Vec<Arg> {
    let mut out = Vec::new();
    while let Some(w) = t.get(*i) {
        match w.as_str() {
            "]" | "|" => break,
            "[" => {
                *i += 1;
                let mut choices = vec![seq(t, i)];
                while t.get(*i).map(String::as_str) == Some("|") {
                    *i += 1;
                    choices.push(seq(t, i));
                }
                *i += 1; // the `]`
                let mut a = if choices.len() == 1 {
                    group(choices.remove(0))
                } else {
                    Arg {
                        name: "choice".into(),
                        kind: "oneof",
                        token: None,
                        optional: false,
                        multiple: false,
                        sub: choices.into_iter().map(group).collect(),
                    }
                };
                a.optional = true;
                out.push(a);
            }
            w => {
                *i += 1;
                let (w, multiple) = match w.strip_suffix("...") {
                    Some(b) => (b, true),
                    None => (w, false),
                };
                let mut a = Arg::word(w);
                a.multiple = multiple;
                out.push(a);
            }
        }
    }
    out
}

/// One argument out of a sequence: itself, a token with its argument, or a block.
fn group(mut s: Vec<Arg>) -> Arg {
    if s.len() == 1 {
        return s.remove(0);
    }
    if s.len() == 2 && s[0].kind == "pure-token" && s[1].kind != "pure-token" && s[1].sub.is_empty()
    {
        let mut a = s.remove(1);
        a.token = s.remove(0).token;
        return a;
    }
    Arg {
        name: s.first().map_or_else(String::new, |a| a.name.clone()),
        kind: "block",
        token: None,
        optional: false,
        multiple: false,
        sub: s,
    }
}

fn encode_args(args: &[Arg], resp3: bool, out: &mut Vec<u8>) {
    array_len(out, args.len());
    for a in args {
        let mut flags = Vec::new();
        if a.optional {
            flags.push("optional");
        }
        if a.multiple {
            flags.push("multiple");
        }
        let n = 2
            + usize::from(a.token.is_some())
            + usize::from(!flags.is_empty())
            + usize::from(!a.sub.is_empty());
        map_len(out, n, resp3);
        bulk_str(out, "name");
        bulk_str(out, &a.name);
        bulk_str(out, "type");
        bulk_str(out, a.kind);
        if let Some(t) = &a.token {
            bulk_str(out, "token");
            bulk(out, t.as_bytes());
        }
        if !flags.is_empty() {
            bulk_str(out, "flags");
            array_len(out, flags.len());
            for f in flags {
                simple(out, f);
            }
        }
        if !a.sub.is_empty() {
            bulk_str(out, "arguments");
            encode_args(&a.sub, resp3, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_its_documentation_row() {
        for (n, ..) in TABLE {
            assert!(doc(n).is_some(), "{n} has no documentation row");
        }
        assert_eq!(DOCS.len(), TABLE.len());
    }

    #[test]
    fn syntax_lines_become_argument_trees() {
        let a = parse_syntax("key value [NX|XX] [EX seconds|KEEPTTL] [GET]");
        assert_eq!(a.len(), 5);
        assert_eq!((a[0].kind, a[1].kind), ("key", "string"));
        assert_eq!(
            (a[2].kind, a[2].optional, a[2].sub.len()),
            ("oneof", true, 2)
        );
        assert_eq!(a[3].sub[0].token.as_deref(), Some("EX"));
        assert_eq!(a[3].sub[0].kind, "integer");
        assert_eq!((a[4].kind, a[4].optional), ("pure-token", true));
        let m = parse_syntax("key...");
        assert!(m[0].multiple);
        let h = parse_syntax("[protover [AUTH username password] [SETNAME clientname]]");
        assert_eq!((h[0].kind, h[0].sub.len()), ("block", 3));
    }
}
