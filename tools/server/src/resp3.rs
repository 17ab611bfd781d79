//! RESP3 for the connections that asked for it with `HELLO 3`. The commands write RESP2
//! (the maps of HELLO, CONFIG GET and COMMAND DOCS excepted: they know the connection's
//! protocol); [`to_resp3`] then turns what differs into RESP3 as Redis 7 sends it: a nil
//! bulk string or a nil array becomes the RESP3 null `_`. Everything else (simple strings,
//! errors, integers, bulk strings, arrays) is the same in both protocols.

/// Rewrites the replies in `out[from..]` (complete replies this server encoded) for RESP3.
/// Bytes it cannot walk (there should be none) are left as they are.
pub fn to_resp3(out: &mut Vec<u8>, from: usize) {
    let Some(tail) = out.get(from..) else { return };
    if !tail.windows(4).any(|w| w == b"$-1\r" || w == b"*-1\r") {
        return;
    }
    let mut conv = Vec::with_capacity(tail.len());
    let mut i = 0;
    while i < tail.len() {
        let mark = conv.len();
        match step(tail, i, &mut conv) {
            Some(next) => i = next,
            None => {
                conv.truncate(mark);
                conv.extend_from_slice(&tail[i..]);
                break;
            }
        }
    }
    out.truncate(from);
    out.extend_from_slice(&conv);
}

/// The header line at `i`: its type byte, its text and where the next item starts.
fn line(b: &[u8], i: usize) -> Option<(u8, &[u8], usize)> {
    let t = *b.get(i)?;
    let rest = b.get(i + 1..)?;
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((t, &rest[..cr], i + 1 + cr + 2))
}

fn num(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Copies (converted) one item at `i` to `conv`; returns where the next item starts.
/// Aggregates are walked without recursion: a count of items still to copy.
fn step(b: &[u8], mut i: usize, conv: &mut Vec<u8>) -> Option<usize> {
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let (t, text, next) = line(b, i)?;
        match t {
            b'$' | b'=' | b'!' | b'*' | b'~' | b'>' | b'%' | b'|' if text == b"-1" => {
                conv.extend_from_slice(b"_\r\n");
                i = next;
            }
            b'$' | b'=' | b'!' => {
                let n = usize::try_from(num(text)?).ok()?;
                let end = next.checked_add(n)?.checked_add(2)?;
                conv.extend_from_slice(b.get(i..end)?);
                i = end;
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = u64::try_from(num(text)?).ok()?;
                let n = if matches!(t, b'%' | b'|') {
                    n.checked_mul(2)?
                } else {
                    n
                };
                pending = pending.checked_add(n)?;
                conv.extend_from_slice(&b[i..next]);
                i = next;
            }
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                conv.extend_from_slice(&b[i..next]);
                i = next;
            }
            _ => return None,
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nils_become_nulls_and_the_rest_stays() {
        let mut out = b"+OK\r\n".to_vec();
        out.extend_from_slice(b"$-1\r\n*2\r\n$3\r\n$-1\r\n*-1\r\n:5\r\n%1\r\n$1\r\na\r\n$-1\r\n");
        to_resp3(&mut out, 5);
        assert_eq!(
            out,
            b"+OK\r\n_\r\n*2\r\n$3\r\n$-1\r\n_\r\n:5\r\n%1\r\n$1\r\na\r\n_\r\n".to_vec()
        );
        // Malformed bytes are left alone, never a panic.
        let mut bad = b"$-1\r\n*3\r\n:1\r\n".to_vec();
        to_resp3(&mut bad, 0);
        assert_eq!(bad, b"_\r\n*3\r\n:1\r\n".to_vec());
        let mut bad = b"$99\r\nab$-1\r".to_vec();
        to_resp3(&mut bad, 0);
        assert_eq!(bad, b"$99\r\nab$-1\r".to_vec());
    }
}
