//! Just enough HTTP for fetching a directory from a web service: an HTTP/1.0 GET (so that
//! the answer is neither chunked nor kept alive) and its response, read whole and bounded.

/// An `http://host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // Not echoed: the URL is logged, and what precedes the `@` would be a password.
        if authority.contains('@') {
            return Err("credentials in the URL (user:password@) are not supported".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{s:?}: not a valid URL"));
        }
        Ok(Url {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// The request to send.
    pub fn get_request(&self) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: ctid\r\n\r\n",
            self.path, self.host
        )
        .into_bytes()
    }
}

/// The body of a `200 OK` response, or why there is none.
pub fn response_body(response: &[u8]) -> Result<&[u8], String> {
    let end =
        memchr::memmem::find(response, b"\r\n\r\n").ok_or("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&response[..end]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, status) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "not an HTTP response: {:?}",
            status_line.chars().take(40).collect::<String>()
        ));
    }
    if status != "200" {
        return Err(format!(
            "HTTP {}",
            status_line.split_once(' ').map_or(status, |(_, rest)| rest)
        ));
    }
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    if header("Transfer-Encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        return Err("chunked responses are not supported".into());
    }
    let body = &response[end + 4..];
    match header("Content-Length").map(|l| l.parse::<usize>()) {
        Some(Ok(len)) if len > body.len() => {
            Err(format!("truncated body ({} of {len} bytes)", body.len()))
        }
        Some(Ok(len)) => Ok(&body[..len]),
        Some(Err(_)) => Err("bad Content-Length".into()),
        None => Ok(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://dir.example:8080/ctid/directory.json").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("dir.example", 8080, "/ctid/directory.json")
        );
        assert_eq!(Url::parse("http://localhost").unwrap().path, "/");
        assert_eq!(Url::parse("http://[::1]:81/x").unwrap().host, "::1");
        assert!(Url::parse("https://x/")
            .unwrap_err()
            .contains("only http://"));
        assert!(Url::parse("http://x:port/").is_err());
        assert!(Url::parse("http://x/a b").is_err());
        let err = Url::parse("http://ctid:s3cret@dir.example/d.json").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn responses() {
        assert_eq!(
            response_body(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap(),
            b"{}"
        );
        assert_eq!(
            response_body(b"HTTP/1.0 200 OK\r\n\r\n{\"a\":1}").unwrap(),
            b"{\"a\":1}"
        );
        assert_eq!(
            response_body(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err(),
            "HTTP 404 Not Found"
        );
        assert!(
            response_body(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}")
                .unwrap_err()
                .contains("truncated")
        );
        assert!(response_body(b"SSH-2.0\r\n\r\n").is_err());
        assert!(
            response_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}").is_err()
        );
    }
}
