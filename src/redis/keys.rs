//! Redis key names: `{prefix}:{algo}:{<escaped user key>}`.
//!
//! The user key becomes the *hash tag* (the part between the first `{` and the next `}`), so
//! every Redis key belonging to one user key lands in one Cluster slot and multi-key scripts work.
//! Hostile keys (binary, braces, megabytes) are made safe by an injective escape:
//!
//! * bytes in `[A-Za-z0-9]` and `-_.~:@/` are kept as they are (readable keys stay readable);
//! * every other byte, including `{`, `}` and `%`, becomes `%XX` (upper-case hex);
//! * the empty key becomes a lone `%` (which no escaped non-empty key can be), so the tag is never
//!   empty (Redis hashes the whole name when a tag is `{}`).
//!
//! The escaped key therefore never contains `{` or `}`, and the prefix is validated to contain
//! neither, so the tag is always exactly the escaped user key. Escaping costs at most 3× the key's
//! length; keys are not truncated (a 1 MB key makes a ≤ 3 MB Redis key name).

use std::io::{self, Write};

/// Algorithm part of the key name, so two algorithms never read each other's state.
pub(crate) fn algo_segment(algorithm: super::RedisAlgorithm) -> &'static str {
    match algorithm {
        super::RedisAlgorithm::Gcra => "gcra",
        super::RedisAlgorithm::FixedWindow => "fw",
        super::RedisAlgorithm::SlidingWindow => "sw",
        super::RedisAlgorithm::SlidingLog => "log",
    }
}

/// Whether `prefix` can be used: free of braces (so the key's hash tag is the user key).
pub(crate) fn prefix_is_valid(prefix: &str) -> bool {
    !prefix.contains(['{', '}'])
}

fn keep(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b':' | b'@' | b'/')
}

/// Writes the escaped form of `key` (see the module docs) to `out`, in runs of kept bytes.
/// Errors come only from `out` (writing into a `Vec` or a command buffer never fails).
pub(crate) fn escape_into(key: &[u8], out: &mut impl Write) -> io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if key.is_empty() {
        return out.write_all(b"%");
    }
    let mut rest = key;
    while !rest.is_empty() {
        let kept = rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len());
        out.write_all(&rest[..kept])?;
        let Some(&byte) = rest.get(kept) else { break };
        out.write_all(&[b'%', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xF)]])?;
        rest = &rest[kept + 1..];
    }
    Ok(())
}

/// Writes the full Redis key to `out`: `head` (`"{prefix}:{algo}:"`) then `{escaped key}`.
pub(crate) fn write_redis_key(head: &[u8], key: &[u8], out: &mut impl Write) -> io::Result<()> {
    out.write_all(head)?;
    out.write_all(b"{")?;
    escape_into(key, out)?;
    out.write_all(b"}")
}

/// The full Redis key as bytes (see [`write_redis_key`]).
pub(crate) fn redis_key(head: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + key.len() + 2);
    // Writing into a Vec cannot fail.
    let _ = write_redis_key(head, key, &mut out);
    out
}

/// A user key's Redis key as a command argument, escaped straight into the command's buffer (no
/// intermediate allocation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyArg<'a> {
    /// `"{prefix}:{algo}:"`.
    pub(crate) head: &'a [u8],
    /// The user key.
    pub(crate) key: &'a [u8],
    /// `key` is written as it is, not escaped: only [`KeyArg::probe`]'s.
    verbatim: bool,
}

/// The hash tag of the key `connect` probes: `%` followed by no two hex digits, which no
/// escaped user key is (a user key's `%` is always `%25`, and the empty key is a lone `%`), so
/// the probe never touches a user's state.
pub(crate) const PROBE_TAG: &[u8] = b"%probe";

impl<'a> KeyArg<'a> {
    /// The Redis key of user key `key`.
    pub(crate) fn new(head: &'a [u8], key: &'a [u8]) -> KeyArg<'a> {
        KeyArg { head, key, verbatim: false }
    }

    /// The probe's key, `{prefix}:{algo}:{%probe}`, outside every user key's.
    pub(crate) fn probe(head: &'a [u8]) -> KeyArg<'a> {
        KeyArg { head, key: PROBE_TAG, verbatim: true }
    }
}

impl redis::ToRedisArgs for KeyArg<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        let mut arg = out.writer_for_next_arg();
        // Writing into a command buffer cannot fail.
        let _ = if self.verbatim {
            arg.write_all(self.head)
                .and_then(|()| arg.write_all(b"{"))
                .and_then(|()| arg.write_all(self.key))
                .and_then(|()| arg.write_all(b"}"))
        } else {
            write_redis_key(self.head, self.key, &mut arg)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(key: &[u8]) -> String {
        let mut out = Vec::new();
        escape_into(key, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_are_injective_and_brace_free() {
        assert_eq!(esc(b"alice"), "alice");
        assert_eq!(esc(b""), "%");
        assert_eq!(esc(b"%"), "%25");
        assert_eq!(esc(b"{a}"), "%7Ba%7D");
        assert_eq!(esc(&[0, 255, b' ']), "%00%FF%20");
        assert_eq!(esc("é".as_bytes()), "%C3%A9");
        // Injective over every 1- and 2-byte key.
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(esc(b"")));
        for a in 0..=255u8 {
            assert!(seen.insert(esc(&[a])));
            for b in 0..=255u8 {
                let e = esc(&[a, b]);
                assert!(!e.contains(['{', '}']));
                assert!(seen.insert(e));
            }
        }
        assert_eq!(seen.len(), 1 + 256 + 256 * 256);
    }

    #[test]
    fn key_layout() {
        assert_eq!(redis_key(b"rl:gcra:", b"a}b{"), b"rl:gcra:{a%7Db%7B}".to_vec());
        let mut cmd = redis::cmd("GET");
        cmd.arg(KeyArg::new(b"rl:gcra:", b"a}b{"));
        assert_eq!(cmd.get_packed_command(), b"*2\r\n$3\r\nGET\r\n$18\r\nrl:gcra:{a%7Db%7B}\r\n".to_vec());
        assert_eq!(redis_key(b"h:", b"x y"), b"h:{x%20y}".to_vec());
        assert!(prefix_is_valid("tollgate"));
        assert!(!prefix_is_valid("a{b"));
        assert!(!prefix_is_valid("}"));
    }
}
