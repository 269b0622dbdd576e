//! The JSON log of runc and youki (`--log-format json`): the message of its last error,
//! which is what a failed call has to say. Code that needs only `core` and `alloc`, so the monitor
//! (which has no standard library) compiles this same file.

use alloc::format;
use alloc::string::String;

/// The message of the last error in a runtime's JSON log, one object per line: runc's
/// `{"level":"error","msg":"…"}`, youki's `{"level":"ERROR","message":"…"}`.
/// youki says the cause apart, in an `"err"` field of its first error: it is added.
pub fn last_error(log: &str) -> Option<String> {
    let is_error =
        |line: &&str| line.contains("\"level\":\"error\"") || line.contains("\"level\":\"ERROR\"");
    let message = log
        .lines()
        .rev()
        .filter(is_error)
        .find_map(|line| string_field(line, "msg").or_else(|| string_field(line, "message")))?;
    let cause = log
        .lines()
        .filter(is_error)
        .find_map(|line| string_field(line, "err"));
    Some(match cause {
        Some(cause) if !message.contains(&cause) => format!("{message} ({cause})"),
        _ => message,
    })
}

/// The string value of `"field":"…"` in one line of JSON, unescaped.
fn string_field(line: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\":\"");
    let start = line.find(&key)? + key.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let mut code = hex4(&mut chars)?;
                    // A pair of UTF-16 surrogates is one character.
                    if (0xd800..0xdc00).contains(&code) {
                        let mut ahead = chars.clone();
                        if ahead.next() == Some('\\')
                            && ahead.next() == Some('u')
                            && let Some(low) = hex4(&mut ahead)
                            && (0xdc00..0xe000).contains(&low)
                        {
                            code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                            chars = ahead;
                        }
                    }
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The four hexadecimal digits of a `\u` escape.
fn hex4(chars: &mut core::str::Chars<'_>) -> Option<u32> {
    let digits = chars.as_str().get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    *chars = chars.as_str()[4..].chars();
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_is_found_and_unescaped() {
        let log = "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"container_linux.go: starting container process caused: exec: no such file\"}\n";
        assert_eq!(
            last_error(log).as_deref(),
            Some("container_linux.go: starting container process caused: exec: no such file")
        );
        let log = "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"/no\\\": not found\\n\\tat \\u00e9 \\ud83d\\ude00\",\"time\":\"t\"}\n{\"level\":\"info\",\"msg\":\"later\"}\n";
        assert_eq!(
            last_error(log).as_deref(),
            Some("exec: \"/no\": not found\n\tat é 😀")
        );
        assert_eq!(last_error("{\"level\":\"info\",\"msg\":\"x\"}\n"), None);
        assert_eq!(last_error("{\"level\":\"error\",\"msg\":\"cut \\u12"), None);
        assert_eq!(last_error("not json"), None);
        // youki's: upper-case levels, the text under "message".
        let log = "{\"timestamp\":\"t\",\"level\":\"ERROR\",\"message\":\"failed to wait for init ready\",\"target\":\"libcontainer\"}\n{\"timestamp\":\"t\",\"level\":\"ERROR\",\"message\":\"error in executing command: executable '/no' not found in $PATH\",\"target\":\"youki\"}\n";
        assert_eq!(
            last_error(log).as_deref(),
            Some("error in executing command: executable '/no' not found in $PATH")
        );
        let log = "{\"level\":\"ERROR\",\"message\":\"failed to prepare rootfs\",\"err\":\"UnknownRootfsPropagation(\\\"x\\\")\"}\n{\"level\":\"ERROR\",\"message\":\"failed to create container: failed to prepare rootfs\"}\n";
        assert_eq!(
            last_error(log).as_deref(),
            Some(
                "failed to create container: failed to prepare rootfs (UnknownRootfsPropagation(\"x\"))"
            )
        );
    }
}
