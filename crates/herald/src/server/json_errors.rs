//! hyper's own rejections, in the API's JSON error shape.
//!
//! When a request cannot be parsed at all (a malformed request line, a URI over hyper's limit,
//! too many headers, conflicting `Content-Length` headers) hyper answers by itself, before any
//! handler runs, with a head and an empty body (`400`, `414` or `431`), and then closes the
//! connection; it offers no hook to shape that answer. [`JsonErrors`] wraps the connection's
//! stream and replaces exactly such a head with the same status and a JSON error body.
//!
//! It recognises hyper's answer by its form: one of those three statuses with
//! `content-length: 0`. The API itself never sends that form: every error it answers goes
//! through `ApiError`, which always has a body, and the fallback layer in `api` gives a JSON
//! body to any other error response (a test in `tests/it/hostile.rs` checks both).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose writes of hyper's empty error answers are replaced by JSON ones.
pub struct JsonErrors<T> {
    inner: T,
    /// A replacement answer still being written, and how much of it has been.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonErrors<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written, replaced by its JSON form, if it is one of hyper's own answers.
    fn replaces(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<io::Result<usize>> {
        let replacement = json_answer(buf)?;
        self.pending = Some((replacement, 0));
        match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Some(Err(e)),
            // The rest is written by the next write, flush or shutdown, which hyper always makes.
            _ => Some(Ok(buf.len())),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(result) = self.replaces(cx, buf) {
            return Poll::Ready(result);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // An answer's head is always the first slice hyper passes.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(result) = self.replaces(cx, first)
        {
            return Poll::Ready(result);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The JSON form of `head` if it is a whole answer head of hyper's own: status 400, 414 or 431,
/// `content-length: 0`, no `content-type`.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let text = text.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let (code, message) = match rest.get(..3)? {
        "400" => (
            "malformed_request",
            "the request is not valid HTTP/1.1 (its request line, a header, or conflicting Content-Length headers)",
        ),
        "414" => (
            "uri_too_long",
            "the request target (path and query) is longer than the server accepts",
        ),
        "431" => (
            "headers_too_large",
            "the request has more headers, or larger ones, than the server accepts",
        ),
        _ => return None,
    };
    let mut kept = Vec::new();
    let mut empty_body = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "content-length" => empty_body = value.trim() == "0",
            "content-type" | "transfer-encoding" => return None,
            "connection" => {}
            _ => kept.push(line),
        }
    }
    if !empty_body {
        return None;
    }
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for line in kept {
        answer.push_str(line);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn hypers_empty_error_heads_become_json() {
        for (head, code) in [
            ("HTTP/1.1 400 Bad Request", "malformed_request"),
            ("HTTP/1.1 414 URI Too Long", "uri_too_long"),
            (
                "HTTP/1.1 431 Request Header Fields Too Large",
                "headers_too_large",
            ),
        ] {
            let raw = format!(
                "{head}\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 01:00:00 GMT\r\n\r\n"
            );
            let answer = String::from_utf8(json_answer(raw.as_bytes()).unwrap()).unwrap();
            let (head_part, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head_part.starts_with(head), "{answer}");
            assert!(head_part.contains("content-type: application/json"));
            assert!(head_part.contains(&format!("content-length: {}", body.len())));
            assert!(head_part.contains("date: Sun, 06 Dec 2026"));
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["error"]["code"], code);
        }
    }

    #[test]
    fn answers_with_a_body_or_another_status_pass_unchanged() {
        for raw in [
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{\"partial",
            "not http at all",
        ] {
            assert_eq!(json_answer(raw.as_bytes()), None, "{raw}");
        }
    }

    #[tokio::test]
    async fn the_replacement_is_written_through_the_stream() {
        let (client, server) = tokio::io::duplex(16);
        let mut wrapped = JsonErrors::new(server);
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let writer = tokio::spawn(async move {
            // The small duplex buffer makes the replacement go out over several writes.
            let n = wrapped.write(head).await.unwrap();
            assert_eq!(n, head.len());
            wrapped.shutdown().await.unwrap();
        });
        let mut client = client;
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
        assert!(got.ends_with("}}"), "{got}");
    }
}
