//! A child's output cut into lines the launcher can hold: each at most
//! [`MAX_LINE`] bytes, whatever the child writes. `tokio`'s `lines()` would
//! buffer a line without end until its newline, and stop at the first byte
//! that is not UTF-8; the pipe's read end then closes, and the child dies of
//! SIGPIPE on its next write. journald cuts lines for the same reason (at 48 KiB).

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest line kept and printed whole; the rest of a longer one is dropped.
pub const MAX_LINE: usize = 8 * 1024;

/// Reads one line from `reader`: `None` at the end of the output. Bytes
/// that are not UTF-8 are replaced; a line over `MAX_LINE` bytes is cut, and
/// says how much of it was dropped.
pub async fn next_line<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    buf.clear();
    let read = (&mut *reader).take(MAX_LINE as u64).read_until(b'\n', buf).await?;
    if read == 0 {
        return Ok(None);
    }
    let cut = if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        0
    } else if read == MAX_LINE {
        skip_line(reader).await?
    } else {
        0 // the last line, without its newline
    };
    let mut line = String::from_utf8_lossy(buf).into_owned();
    if cut > 0 {
        line.push_str(&format!(" … ({cut} more bytes of this line dropped)"));
    }
    Ok(Some(line))
}

/// Drops the rest of the current line, newline included; returns how many
/// bytes were dropped before the newline.
async fn skip_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(skipped);
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                reader.consume(newline + 1);
                return Ok(skipped + newline as u64);
            }
            None => {
                let len = available.len();
                reader.consume(len);
                skipped += len as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all_lines(output: &[u8]) -> Vec<String> {
        let mut reader = tokio::io::BufReader::new(output);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut reader, &mut buf).await.expect("in-memory read") {
            lines.push(line);
        }
        lines
    }

    #[tokio::test]
    async fn lines_are_split_and_their_endings_dropped() {
        assert_eq!(all_lines(b"one\ntwo\r\n\nlast").await, ["one", "two", "", "last"]);
        assert!(all_lines(b"").await.is_empty());
    }

    #[tokio::test]
    async fn a_line_without_end_is_cut_and_the_next_one_kept() {
        let mut output = vec![b'x'; MAX_LINE + 100_000];
        output.extend_from_slice(b"\nnext\n");
        let lines = all_lines(&output).await;
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE)));
        assert!(
            lines[0].ends_with(" … (100000 more bytes of this line dropped)"),
            "{}",
            &lines[0][MAX_LINE..]
        );
        assert_eq!(lines[1], "next");
        // Exactly MAX_LINE bytes before the newline: nothing is dropped but the newline.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.extend_from_slice(b"\nafter\n");
        let lines = all_lines(&exact).await;
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1..], ["after"]);
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_do_not_stop_the_output() {
        assert_eq!(
            all_lines(b"bad \xff\xfe byte\nstill read\n").await,
            ["bad \u{fffd}\u{fffd} byte", "still read"]
        );
    }
}
