//! A raw HTTP/1.1 client for the gateway's tests: one request per
//! connection, the response as status, headers and body, so every byte the
//! gateway sends (limits, CORS, chunked streams) is visible to a test.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// One HTTP/1.1 exchange on a fresh connection: status, lower-cased
/// headers, and the body (de-chunked).
pub fn http(addr: SocketAddr, request: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&raw)
}

pub fn parse(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked") {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..(end + 2 + size).min(data.len())]);
        data = &data[(end + 4 + size).min(data.len())..];
    }
    out
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let (status, headers, body) = http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n"),
        b"",
    );
    (status, headers, json(&body))
}

pub fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let (status, headers, body) = http(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nhost: shop\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    );
    (status, headers, json(&body))
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into()))
}

/// `method path` with a bearer token and a JSON body (empty for none).
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let (status, headers, body) = http(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nhost: shop\r\nconnection: close\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    );
    (status, headers, json(&body))
}
