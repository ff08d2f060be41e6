//! A minimal HTTP server for benchmarks: answers every request with
//! `200 OK` and a constant body, closing the connection, from a few
//! threads blocking on one listener. Usage: `http-target ADDR [THREADS]`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".into());
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(4);
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http-target: binding {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("http-target: listening on {addr} with {threads} threads");
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let listener = listener.try_clone().expect("cloning the listener");
            std::thread::spawn(move || serve(listener))
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

fn serve(listener: TcpListener) {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let mut buf = [0u8; 4096];
    loop {
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = conn.write_all(RESPONSE);
    }
}
