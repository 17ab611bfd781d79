//! Redis-style glob matching for `SCAN ... MATCH` and `CONFIG GET`: `*` (any run), `?` (one
//! byte), `[abc]`, `[^abc]`, `[a-z]` classes and `\x` escapes, over bytes. Linear-time
//! backtracking on the last `*` only, so no pattern can make it exponential.

/// Parses one pattern element at `p`: returns (matches `c`?, element length). `p < pat.len()`.
fn element(pat: &[u8], p: usize, c: u8) -> (bool, usize) {
    match pat[p] {
        b'?' => (true, 1),
        b'\\' if p + 1 < pat.len() => (pat[p + 1] == c, 2),
        b'[' => {
            let mut i = p + 1;
            let negate = pat.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            let mut first = true;
            while i < pat.len() && (pat[i] != b']' || first) {
                first = false;
                if pat[i] == b'\\' && i + 1 < pat.len() {
                    hit |= pat[i + 1] == c;
                    i += 2;
                } else if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
                    let (lo, hi) = (pat[i].min(pat[i + 2]), pat[i].max(pat[i + 2]));
                    hit |= (lo..=hi).contains(&c);
                    i += 3;
                } else {
                    hit |= pat[i] == c;
                    i += 1;
                }
            }
            // An unclosed class runs to the end of the pattern (as in Redis).
            let len = (i + 1).min(pat.len()) - p;
            (hit != negate, len)
        }
        x => (x == c, 1),
    }
}

/// Whether `s` matches the glob `pat`.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            while p < pat.len() && pat[p] == b'*' {
                p += 1;
            }
            if p == pat.len() {
                return true;
            }
            star = Some((p, i));
            continue;
        }
        if p < pat.len() {
            let (ok, len) = element(pat, p, s[i]);
            if ok {
                p += len;
                i += 1;
                continue;
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match as m;

    #[test]
    fn globs() {
        assert!(m(b"*", b""));
        assert!(m(b"*", b"abc"));
        assert!(m(b"key:*", b"key:12"));
        assert!(!m(b"key:*", b"ke"));
        assert!(m(b"h?llo", b"hello"));
        assert!(!m(b"h?llo", b"hllo"));
        assert!(m(b"h[ae]llo", b"hallo"));
        assert!(!m(b"h[^e]llo", b"hello"));
        assert!(m(b"h[a-b]llo", b"hbllo"));
        assert!(m(b"*a*b*c", b"xxaxxbxxc"));
        assert!(!m(b"*a*b*c", b"xxaxxbxx"));
        assert!(m(b"a\\*", b"a*"));
        assert!(!m(b"a\\*", b"ab"));
        assert!(m(b"", b""));
        assert!(!m(b"", b"a"));
        assert!(m(b"[", b"x") || !m(b"[", b"x"));
        let long = vec![b'a'; 5000];
        assert!(!m(b"*a*a*a*a*a*a*a*b", &long));
    }
}
